"""CLI for the encode area: ``encode``, ``tokenizer demo``, ``validate`` and ``inspect``."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

from crystalmix.core.errors import UserError

console = Console()
_BYTE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def _read_conversations(path: Path) -> Iterator[Any]:
    """Interchange JSONL records as `Conversation`s; a bad line stops with its line number."""
    from crystalmix.core.records import Conversation, InvalidRecordError

    if not path.is_file():
        raise UserError("no such file", path=path)
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                yield Conversation.from_dict(json.loads(line))
            except json.JSONDecodeError as exc:
                raise UserError(f"not JSON ({exc.msg})", path=path, line=n) from None
            except InvalidRecordError as exc:
                raise UserError(f"not an interchange conversation: {exc}", path=path, line=n) from None


def token_text(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    """Printable text of each token (word markers as spaces, byte pieces as their character)."""
    out = []
    for t in tokenizer.convert_ids_to_tokens([int(i) for i in ids]):
        t = t or ""
        t = _BYTE.sub(lambda m: bytes([int(m.group(1), 16)]).decode("latin-1"), t)
        out.append(t.replace("▁", " ").replace("Ġ", " ").replace("Ċ", "\n"))
    return out


def show_tokens(tokenizer: Any, ids: Sequence[int], mask: Sequence[int], title: str,
                segments: Sequence[int] | None = None) -> None:
    """Print one sequence with trained tokens highlighted and packed-document boundaries marked."""
    text = Text()
    prev_seg = None
    special = {i for i, t in tokenizer.backend_tokenizer.get_added_tokens_decoder().items() if t.special}
    for k, (piece, m) in enumerate(zip(token_text(tokenizer, ids), mask, strict=True)):
        if segments is not None:
            seg = int(segments[k])
            if seg != prev_seg:
                text.append(f"⟦doc {seg}⟧" if seg else "⟦pad⟧", style="bold magenta")
                prev_seg = seg
        style = "bold black on green" if m else "grey50"
        text.append(piece, style=style + (" underline" if int(ids[k]) in special else ""))
    console.rule(title)
    console.print("[bold black on green]trained[/] [grey50]not trained[/] [underline]control token[/]")
    console.print(text)


def register(app: typer.Typer) -> None:
    """Add this area's commands to the main app."""

    @app.command("encode")
    def encode_cmd(
        input_path: Annotated[Path, typer.Argument(metavar="INPUT.jsonl", help="Interchange conversations.")],
        out: Annotated[Path, typer.Option("--out", help="Output JSONL of {id, input_ids, loss_mask}.")],
        tokenizer: Annotated[str, typer.Option(help="Tokenizer folder, hub id, or 'demo'.")] = "demo",
        template: Annotated[str, typer.Option(help="Name in templates/, a .jinja path, or 'tokenizer'.")]
        = "crystalchat",
        train_on: Annotated[str, typer.Option(help="Train on 'all' assistant turns or the 'last'.")] = "all",
        train_on_prompt: Annotated[bool, typer.Option(help="Also train on system and user turns.")] = False,
        show: Annotated[bool, typer.Option("--show", help="Print with trained tokens highlighted.")] = False,
        show_limit: Annotated[int, typer.Option(help="With --show, how many conversations to print.")] = 20,
    ) -> None:
        """Tokenize conversations with a chat template: input_ids BOS..EOS, loss_mask[k]=1 on targets."""
        from crystalmix.core.atomic import atomic_open
        from sft_builder.chat import Dropped
        from sft_builder.encode import BATCH, TokenizeConfig, batches, make_encoder

        cfg = TokenizeConfig.from_mapping({"tokenizer": tokenizer, "template": template, "train_on": train_on,
                                           "train_on_prompt": train_on_prompt}, where="encode")
        encoder = make_encoder(cfg)
        tok = encoder.tokenizer
        dropped: Counter[str] = Counter()
        written = shown = 0
        with atomic_open(out) as fh:
            for batch in batches(_read_conversations(input_path), BATCH):
                for item in encoder.encode(batch):
                    if isinstance(item, Dropped):
                        dropped[item.reason] += 1
                        continue
                    fh.write(json.dumps({"id": item.id, "input_ids": item.input_ids.tolist(),
                                         "loss_mask": item.loss_mask.tolist()}) + "\n")
                    written += 1
                    if show and shown < show_limit:
                        show_tokens(tok, item.input_ids, item.loss_mask, f"{item.id} ({item.source})")
                        shown += 1
        extra = f", dropped {dict(dropped)}" if dropped else ""
        typer.echo(f"encoded {written} conversations into {out}{extra}", err=True)

    tok_app = typer.Typer(help="Tokenizer utilities.", no_args_is_help=True)

    @tok_app.command("demo")
    def tokenizer_demo(
        out: Annotated[Path, typer.Option("--out", help="Folder to write the tokenizer into.")],
        vocab_size: Annotated[int, typer.Option(help="Learned vocabulary size.")] = 4000,
    ) -> None:
        """Train the small offline demo tokenizer (CrystalCoder special tokens included) on the demo data."""
        from crystalmix.core.tokenizer import demo_corpus, train_demo_tokenizer

        path = train_demo_tokenizer(demo_corpus(), out, vocab_size=vocab_size)
        typer.echo(f"demo tokenizer written to {path}")

    app.add_typer(tok_app, name="tokenizer")

    @app.command("validate")
    def validate_cmd(
        folder: Annotated[Path, typer.Argument(metavar="DIR", help="Searched recursively for data-*.h5.")],
    ) -> None:
        """Check every HDF5 training file under DIR against its metadata.json; exit 0 only if all valid."""
        from crystalmix.core import hdf5

        if not folder.is_dir():
            raise UserError("not a folder", path=folder)
        folders = hdf5.data_folders(folder)
        if not folders:
            raise UserError("no data-*.h5 files found under this folder", path=folder)
        bad = 0
        for f in folders:
            rows, problems = hdf5.validate_folder(f)
            if problems:
                bad += 1
                console.print(f"[red]INVALID[/] {f}", highlight=False)
                for p in problems:
                    console.print(f"  {p}", highlight=False, soft_wrap=True)
            else:
                console.print(f"[green]ok[/] {f}: {rows} rows", highlight=False)
        if bad:
            console.print(f"{bad} of {len(folders)} folders invalid", highlight=False)
            raise typer.Exit(1)

    @app.command("inspect")
    def inspect_cmd(
        file: Annotated[Path, typer.Argument(metavar="FILE.h5")],
        row: Annotated[int, typer.Option("--row", help="Row to show.")] = 0,
        tokenizer: Annotated[str | None, typer.Option(help="Tokenizer (default: metadata.json's).")] = None,
    ) -> None:
        """Decode one row and show which labels are trained (the mask applies to the label, input k+1)."""
        import h5py

        from crystalmix.core import hdf5
        from crystalmix.core.tokenizer import DEMO, demo_tokenizer_dir, resolve_tokenizer

        try:
            with h5py.File(file, "r") as fh:
                n = fh[hdf5.DATASET].shape[0]
                if not 0 <= row < n:
                    raise UserError(f"row {row} out of range; the file has {n} rows", path=file)
                data = fh[hdf5.DATASET][row]
                segs = fh[hdf5.SEGMENTS][row] if hdf5.SEGMENTS in fh else None
        except (OSError, KeyError) as exc:
            raise UserError(f"cannot read as a training HDF5 file ({exc})", path=file) from None
        spec, meta = tokenizer, {}
        if spec is None:
            try:
                meta = hdf5.read_metadata(file.parent)
                spec = meta["tokenizer"]
            except (OSError, KeyError, ValueError):
                raise UserError("no metadata.json with a tokenizer beside the file; pass --tokenizer",
                                path=file) from None
        tok = resolve_tokenizer(spec)
        if tokenizer is None and spec == DEMO and meta.get("demo_tokenizer") not in (None, demo_tokenizer_dir().name):
            console.print("[yellow]warning:[/] the demo corpus changed since this file was written; "
                          "the decoded text may be wrong")
        # Show the mask on the token it trains: label k is input k+1 (plus the row's final label).
        ids = [*[int(x) for x in data[0]], int(data[2, -1])]
        mask = [0, *[int(x) for x in data[1]]]
        seg = None if segs is None else [*[int(x) for x in segs], int(segs[-1])]
        show_tokens(tok, ids, mask, f"{file.name} row {row}: {int(sum(mask))} trained tokens", seg)
