"""CLI commands for the webgen area: `crystalmix webgen` (registered on the main app by `register`).

The options are turned into frozen configs here, at the edge; the loop itself lives in `sft_builder.webgen`.
"""

from __future__ import annotations

import logging
import os
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from crystalmix.cli.common import Quiet, Verbose, out_option, set_verbosity
from crystalmix.core.errors import UserError

if TYPE_CHECKING:
    from rich.table import Table

    from sft_builder.webgen.backends import Backend, Usage
    from sft_builder.webgen.generate import RunState

log = logging.getLogger(__name__)


class BackendKind(str, Enum):
    openai = "openai"
    transformers = "transformers"
    replay = "replay"


class EndpointKind(str, Enum):
    chat = "chat"
    completions = "completions"


def webgen(
    out: Annotated[Path, out_option("Output JSONL (alpaca form); re-running continues it.")],
    num: Annotated[int, typer.Option("--num", help="Records wanted in --out, counting those already there.")],
    model: Annotated[
        str,
        typer.Option(
            "--model",
            help="Model name on the server, or a local folder/hub id; for --backend replay, a JSONL of "
            "recorded answers (default: the bundled ones).",
        ),
    ] = "",
    seed: Annotated[int, typer.Option("--seed", help="Seeds the seed-task sampling and the model's.")] = 0,
    backend: Annotated[
        BackendKind,
        typer.Option("--backend", help="openai (any OpenAI-compatible server), transformers, or replay."),
    ] = BackendKind.openai,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Same as --backend replay: recorded answers, no model, no server, no GPU."
        ),
    ] = False,
    base_url: Annotated[
        str, typer.Option("--base-url", envvar="OPENAI_BASE_URL", help="e.g. http://localhost:8000/v1")
    ] = "",
    api_key_env: Annotated[
        str, typer.Option("--api-key-env", help="Env variable holding the key.")
    ] = "OPENAI_API_KEY",
    endpoint: Annotated[
        EndpointKind, typer.Option("--endpoint", help="chat or completions.")
    ] = EndpointKind.chat,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Prompts per batch (one commit).")] = 5,
    concurrency: Annotated[int, typer.Option("--concurrency", help="Batches in flight (HTTP backend).")] = 4,
    similarity: Annotated[float, typer.Option("--similarity", help="Reject when ROUGE-L F is above.")] = 0.7,
    seeds: Annotated[
        str | None, typer.Option("--seeds", help="Seed tasks JSONL, a path or a URL (default: bundled).")
    ] = None,
    prompt: Annotated[Path | None, typer.Option("--prompt", help="Jinja prompt (default: bundled).")] = None,
    prompt_tasks: Annotated[int, typer.Option("--prompt-tasks", help="Seed tasks shown per prompt.")] = 3,
    temperature: Annotated[float, typer.Option("--temperature")] = 1.0,
    top_p: Annotated[float, typer.Option("--top-p")] = 1.0,
    max_tokens: Annotated[int, typer.Option("--max-tokens", help="Generation limit per prompt.")] = 3072,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds per HTTP request.")] = 120.0,
    retries: Annotated[int, typer.Option("--retries", help="Retries on 429/5xx/connection errors.")] = 6,
    device: Annotated[str, typer.Option("--device", help="Local backend device, e.g. cuda:0.")] = "cpu",
    max_prompts: Annotated[
        int | None, typer.Option("--max-prompts", help="Stop after this many prompts.")
    ] = None,
    price_in: Annotated[
        float | None, typer.Option("--price-in", min=0, help="Price per million prompt tokens, to print the cost.")
    ] = None,
    price_out: Annotated[
        float | None,
        typer.Option("--price-out", min=0, help="Price per million completion tokens, to print the cost."),
    ] = None,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Generate website-creation instructions with an Alpaca-style self-instruct loop."""
    show_progress = set_verbosity(quiet, verbose)
    try:
        import httpx  # noqa: F401
        import rapidfuzz  # noqa: F401
    except ImportError as exc:
        raise UserError(f"webgen needs its extra: pip install 'crystalmix[webgen]' ({exc})") from None
    from sft_builder.webgen.backends.local import LocalConfig
    from sft_builder.webgen.backends.openai_compat import HTTPConfig
    from sft_builder.webgen.generate import Generator, RunConfig
    from sft_builder.webgen.prompt import DEFAULT_PROMPT, PromptTemplate
    from sft_builder.webgen.seeds import DEFAULT_SEEDS, load_seeds

    if batch_size < 1 or concurrency < 1 or num < 0:
        raise UserError("--num must be >= 0, --batch-size and --concurrency >= 1")
    if dry_run:
        if backend not in (BackendKind.openai, BackendKind.replay):  # openai is only the default here
            raise UserError(f"--dry-run replays recorded answers; it cannot be used with --backend {backend.value}")
        backend = BackendKind.replay
    if backend is not BackendKind.replay and not model:
        raise UserError(f"--backend {backend.value} needs --model (the model's name on the server, or its folder)")
    if backend is BackendKind.replay:
        from sft_builder.webgen.backends.replay import DEFAULT_RECORDING, ReplayBackend

        replay = ReplayBackend(model or DEFAULT_RECORDING)  # reads the recording: a bad one stops here
        backend_id = {"kind": "replay", "model": replay.model}
    elif backend is BackendKind.openai:
        if not base_url:
            raise UserError("--backend openai needs --base-url or OPENAI_BASE_URL (e.g. http://localhost:8000/v1)")
        http = HTTPConfig(
            base_url=base_url,
            model=model,
            api_key=os.environ.get(api_key_env) or None,
            endpoint=endpoint.value,
            temperature=temperature,
            top_p=top_p,
            max_tokens=max_tokens,
            timeout=timeout,
            max_retries=retries,
            concurrency=concurrency,
        )
        backend_id = {
            "kind": "openai",
            "model": model,
            "endpoint": endpoint.value,
            "temperature": temperature,
            "top_p": top_p,
            "max_tokens": max_tokens,
        }
    else:
        local = LocalConfig(
            model=model,
            temperature=temperature,
            top_p=top_p,
            max_new_tokens=max_tokens,
            batch_size=batch_size,
            device=device,
        )
        backend_id = {
            "kind": "transformers",
            "model": model,
            "temperature": temperature,
            "top_p": top_p,
            "max_tokens": max_tokens,
        }
    cfg = RunConfig(
        out=out,
        num=num,
        seed=seed,
        seeds=load_seeds(seeds or DEFAULT_SEEDS),
        prompt=PromptTemplate(prompt or DEFAULT_PROMPT),
        backend_id=backend_id,
        prompt_tasks=prompt_tasks,
        batch_size=batch_size,
        concurrency=concurrency,
        similarity=similarity,
        max_prompts=max_prompts,
    )
    # Validate the output and its state before loading a model or opening connections.
    from sft_builder.webgen.generate import load_state

    load_state(cfg)
    client: Backend
    if backend is BackendKind.replay:
        client = replay
    elif backend is BackendKind.openai:
        from sft_builder.webgen.backends.openai_compat import OpenAICompatBackend

        client = OpenAICompatBackend(http)
    else:
        from sft_builder.webgen.backends.local import TransformersBackend

        client = TransformersBackend(local)

    from rich.console import Console

    from crystalmix.core.progress import Progress

    with Progress(show_progress, label="webgen") as bar:  # its ETA counts this run's pace only

        def show(state: RunState) -> None:
            bar("webgen", min(state.kept, num), num, "records",
                rejected=f"rejected {sum(state.rejected.values())}", prompts=f"prompts {state.prompts}")

        try:
            gen = Generator(cfg, client, on_progress=show)
            show(gen.state)
            state = gen.run()
        finally:
            client.close()
    if show_progress:  # messages, like the bar: --quiet leaves the warnings and errors only
        console = Console(stderr=True)
        console.print(summary_table(state))
        console.print(usage_table(gen.spent, state.usage, price_in, price_out))
    if state.stopped and not state.stalled:
        log.warning("stopped before --num %d: %s; re-run to continue", num, state.stopped)
    if state.stalled:
        raise UserError(
            f"stopped before --num {num}: {state.stopped} (see the reasons above; re-run to continue)"
        )


def summary_table(state: RunState) -> Table:
    """Kept and rejected counts by reason; every parsed candidate is in exactly one row."""
    from rich.table import Table

    table = Table(title="webgen summary", show_header=True)
    table.add_column("outcome")
    table.add_column("candidates", justify="right")
    table.add_row("kept", str(state.kept))
    for reason, n in sorted(state.rejected.items(), key=lambda kv: (-kv[1], kv[0])):
        table.add_row(f"rejected: {reason}", str(n))
    table.add_row("total", str(state.candidates))
    return table


def usage_table(spent: Usage, total: Usage, price_in: float | None, price_out: float | None) -> Table:
    """Tokens this run spent (every answer received) and what the whole output cost (committed batches of
    every run); with a price, the cost. Requests whose answer carried no usage make the numbers a minimum."""
    from rich.table import Table

    priced = price_in is not None or price_out is not None
    table = Table(title="webgen tokens", show_header=True)
    for name in ("", "requests", "prompt tokens", "completion tokens", *(("cost",) if priced else ())):
        table.add_column(name, justify="left" if not name else "right")
    for label, u in (("this run", spent), ("output total", total)):
        row = [label, f"{u.requests:,}", f"{u.prompt_tokens:,}", f"{u.completion_tokens:,}"]
        if priced:
            row.append(f"{u.cost(price_in or 0.0, price_out or 0.0):,.4f}")
        table.add_row(*row)
    if spent.unreported or total.unreported:
        table.caption = (f"{max(spent.unreported, total.unreported):,} request(s) without usage from the server: "
                         "the counts are a minimum")
    return table


def register(app: typer.Typer) -> None:
    """Add this area's commands to the main app."""
    app.command("webgen")(webgen)
