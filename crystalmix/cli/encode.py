"""CLI for the encode area: ``encode``, ``tokenizer demo``, ``validate`` and ``inspect``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

from crystalmix.cli.common import Quiet, Verbose, out_option, set_verbosity
from crystalmix.core.errors import UserError

console = Console()
log = logging.getLogger(__name__)


def show_tokens(tokenizer: Any, ids: Sequence[int], mask: Sequence[int], title: str,
                segments: Sequence[int] | None = None) -> None:
    """Print one sequence with trained tokens highlighted and packed-document boundaries marked.

    Token texts come from `token_pieces`: a character spread over several byte tokens is decoded whole and
    shown on the token that completes it (styled by that token's mask).
    """
    from crystalmix.core.tokenizer import token_pieces

    text = Text()
    prev_seg = None
    special = {i for i, t in tokenizer.backend_tokenizer.get_added_tokens_decoder().items() if t.special}
    for k, (piece, m) in enumerate(zip(token_pieces(tokenizer, ids), mask, strict=True)):
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
        out: Annotated[Path, out_option("Output JSONL of {id, input_ids, loss_mask}.")],
        tokenizer: Annotated[str, typer.Option(help="Tokenizer folder, hub id, or 'demo'.")] = "demo",
        template: Annotated[str, typer.Option(help="Name in templates/, a .jinja path, or 'tokenizer'.")]
        = "crystalchat",
        train_on: Annotated[str, typer.Option(help="Train on 'all' assistant turns or the 'last'.")] = "all",
        train_on_prompt: Annotated[bool, typer.Option(help="Also train on system and user turns.")] = False,
        show: Annotated[bool, typer.Option("--show", help="Print with trained tokens highlighted.")] = False,
        show_limit: Annotated[int, typer.Option(help="With --show, how many conversations to print.")] = 20,
        rejects: Annotated[Path | None, typer.Option("--rejects", help="Rejects JSONL [OUT.rejects.jsonl].")]
        = None,
        quiet: Quiet = False,
        verbose: Verbose = False,
    ) -> None:
        """Tokenize conversations with a chat template: input_ids BOS..EOS, loss_mask[k]=1 on targets.

        A bad record (not JSON, not a valid conversation, nothing to train on) goes to the rejects file with
        its line and reason, and the run goes on.
        """
        set_verbosity(quiet, verbose)
        if not input_path.is_file():  # before loading a tokenizer, which takes seconds
            raise UserError("no such file", path=input_path)
        from sft_builder.encode import TokenizeConfig, encode_file

        cfg = TokenizeConfig.from_mapping({"tokenizer": tokenizer, "template": template, "train_on": train_on,
                                           "train_on_prompt": train_on_prompt, "workers": 1}, where="encode")
        shown = 0

        def show_one(item: Any) -> None:
            nonlocal shown
            if shown < show_limit:
                show_tokens(tok, item.input_ids, item.loss_mask, f"{item.id} ({item.source})")
                shown += 1

        tok = None
        if show:
            from crystalmix.core.tokenizer import load_tokenizer

            tok = load_tokenizer(cfg.tokenizer)
        report = encode_file(input_path, out, cfg, rejects=rejects, on_encoded=show_one if show else None)
        reasons = ", ".join(f"{r} {n}" for r, n in report["reasons"].items())
        log.info("encoded %d of %d conversations into %s; rejected %d%s -> %s", report["kept"], report["read"],
                 out, report["rejected"], f" ({reasons})" if reasons else "", report["rejects"])

    tok_app = typer.Typer(help="Tokenizer utilities.", no_args_is_help=True)

    @tok_app.command("demo")
    def tokenizer_demo(
        out: Annotated[Path, out_option("Folder to write the tokenizer into.")],
        quiet: Quiet = False,
        verbose: Verbose = False,
        force: Annotated[bool, typer.Option("--force", help="Overwrite another tokenizer's files there.")] = False,
    ) -> None:
        """Write the bundled demo tokenizer (what 'demo' names; CrystalCoder special tokens) into a folder."""
        set_verbosity(quiet, verbose)
        from crystalmix.core.tokenizer import DEMO_FILES, demo_tokenizer_file, save_demo_tokenizer

        if out.exists() and not out.is_dir():
            raise UserError("--out names an existing file; give a folder", path=out)
        clash = [n for n in DEMO_FILES if (out / n).is_file()
                 and (out / n).read_text(encoding="utf-8", errors="replace") != demo_tokenizer_file(n)]
        if clash and not force:
            raise UserError(f"--out holds another tokenizer ({', '.join(clash)}) that this would overwrite; "
                            "pick another folder, or pass --force", path=out)
        path = save_demo_tokenizer(out)
        log.info("demo tokenizer written to %s", path)

    app.add_typer(tok_app, name="tokenizer")

    @app.command("validate")
    def validate_cmd(
        folder: Annotated[Path, typer.Argument(metavar="DIR", help="Searched recursively for data-*.h5.")],
        quiet: Quiet = False,
        verbose: Verbose = False,
    ) -> None:
        """Check every HDF5 training file under DIR against its metadata.json; exit 0 only if all valid, else 1."""
        set_verbosity(quiet, verbose)
        from crystalmix.core import hdf5

        if not folder.is_dir():
            raise UserError("not a folder", path=folder)
        folders = hdf5.data_folders(folder)
        if not folders:
            raise UserError("no data-*.h5 files found under this folder", path=folder)
        bad = 0
        for f in folders:
            rows, problems = hdf5.validate_folder(f, check_tokenizer=True)
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
        quiet: Quiet = False,
        verbose: Verbose = False,
    ) -> None:
        """Decode one row and show which labels are trained (the mask applies to the label, input k+1)."""
        set_verbosity(quiet, verbose)
        from crystalmix.core import hdf5
        from crystalmix.core.tokenizer import DEMO, demo_tokenizer_id, load_tokenizer

        data, segs = hdf5.read_row(file, row)  # a file we cannot show is one line naming why
        spec, meta = tokenizer, {}
        if spec is None:
            try:
                meta = hdf5.load_metadata(file.parent)
            except UserError as exc:
                raise UserError(f"{exc}; pass --tokenizer") from None
            spec = meta.get("tokenizer")
            if not isinstance(spec, str) or not spec:
                raise UserError(f"{hdf5.METADATA_NAME} beside the file names no tokenizer; pass --tokenizer",
                                path=file)
        tok = load_tokenizer(spec)
        ids_seen = data[[hdf5.ROW_INPUT, hdf5.ROW_LABELS]]
        outside = ids_seen[(ids_seen < 0) | (ids_seen >= len(tok))]
        if outside.size:
            raise UserError(f"row {row} holds ids outside the tokenizer's vocabulary 0..{len(tok) - 1} "
                            f"(e.g. {int(outside[0])}); pass the tokenizer it was built with, or run "
                            "`crystalmix validate`", path=file)
        if tokenizer is None and spec == DEMO and meta.get("demo_tokenizer") not in (None, demo_tokenizer_id()):
            log.warning("this file was written by another release's demo tokenizer; the decoded text may be wrong")
        # Show the mask on the token it trains: label k is input k+1 (plus the row's final label).
        ids = [*[int(x) for x in data[0]], int(data[2, -1])]
        mask = [0, *[int(x) for x in data[1]]]
        seg = None if segs is None else [*[int(x) for x in segs], int(segs[-1])]
        show_tokens(tok, ids, mask, f"{file.name} row {row}: {int(sum(mask))} trained tokens", seg)
