"""CLI commands for the webgen area: `crystalmix webgen` (registered on the main app by `register`).

The options are turned into frozen configs here, at the edge; the loop itself lives in `sft_builder.webgen`.
"""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from sft_builder.errors import UserError


class BackendKind(str, Enum):
    openai = "openai"
    transformers = "transformers"


class EndpointKind(str, Enum):
    chat = "chat"
    completions = "completions"


def webgen(
    out: Path = typer.Option(..., "--out", help="Output JSONL (alpaca form). Re-running continues it."),
    num: int = typer.Option(..., "--num", help="Records wanted in --out, counting those already there."),
    seed: int = typer.Option(0, "--seed", help="Seeds the sampling of seed tasks and the model's sampling."),
    backend: BackendKind = typer.Option(BackendKind.openai, "--backend"),
    model: str = typer.Option(..., "--model", help="Model name on the server, or a local folder / hub id."),
    base_url: str = typer.Option("", "--base-url", help="OpenAI-compatible base URL, e.g. http://localhost:8000/v1"),
    api_key_env: str = typer.Option("OPENAI_API_KEY", "--api-key-env", help="Environment variable with the key."),
    endpoint: EndpointKind = typer.Option(EndpointKind.chat, "--endpoint", help="chat or completions."),
    batch_size: int = typer.Option(5, "--batch-size", help="Prompts per batch (one commit; local: one forward)."),
    concurrency: int = typer.Option(4, "--concurrency", help="Batches in flight at once (HTTP backend)."),
    similarity: float = typer.Option(0.7, "--similarity", help="Reject when ROUGE-L F is above this."),
    seeds: Path | None = typer.Option(None, "--seeds", help="Seed tasks JSONL (default: the bundled ones)."),
    prompt: Path | None = typer.Option(None, "--prompt", help="Jinja prompt template (default: bundled)."),
    prompt_tasks: int = typer.Option(3, "--prompt-tasks", help="Seed tasks shown in each prompt."),
    temperature: float = typer.Option(1.0, "--temperature"),
    top_p: float = typer.Option(1.0, "--top-p"),
    max_tokens: int = typer.Option(3072, "--max-tokens", help="Generation length limit per prompt."),
    timeout: float = typer.Option(120.0, "--timeout", help="Seconds per HTTP request."),
    retries: int = typer.Option(6, "--retries", help="Retries on 429/5xx/connection errors."),
    max_prompts: int | None = typer.Option(None, "--max-prompts", help="Stop after this many prompts in total."),
) -> None:
    """Generate website-creation instructions with an Alpaca-style self-instruct loop."""
    from sft_builder.webgen.backends.local import LocalConfig
    from sft_builder.webgen.backends.openai_compat import HTTPConfig
    from sft_builder.webgen.generate import Generator, RunConfig, RunState
    from sft_builder.webgen.prompt import DEFAULT_PROMPT, PromptTemplate
    from sft_builder.webgen.seeds import DEFAULT_SEEDS, load_seeds

    if batch_size < 1 or concurrency < 1 or num < 0:
        raise UserError("--num must be >= 0, --batch-size and --concurrency >= 1")
    if backend is BackendKind.openai:
        if not base_url:
            raise UserError("--backend openai needs --base-url (e.g. http://localhost:8000/v1)")
        http = HTTPConfig(base_url=base_url, model=model, api_key=os.environ.get(api_key_env) or None,
                          endpoint=endpoint.value, temperature=temperature, top_p=top_p, max_tokens=max_tokens,
                          timeout=timeout, max_retries=retries, concurrency=concurrency)
        backend_id = {"kind": "openai", "model": model, "endpoint": endpoint.value, "temperature": temperature,
                      "top_p": top_p, "max_tokens": max_tokens}
    else:
        local = LocalConfig(model=model, temperature=temperature, top_p=top_p, max_new_tokens=max_tokens,
                            batch_size=batch_size)
        backend_id = {"kind": "transformers", "model": model, "temperature": temperature, "top_p": top_p,
                      "max_tokens": max_tokens}
    cfg = RunConfig(out=out, num=num, seed=seed, seeds=load_seeds(seeds or DEFAULT_SEEDS),
                    prompt=PromptTemplate(prompt or DEFAULT_PROMPT), backend_id=backend_id,
                    prompt_tasks=prompt_tasks, batch_size=batch_size, concurrency=concurrency,
                    similarity=similarity, max_prompts=max_prompts)
    console = Console(stderr=True)
    # Validate the output and its state before loading a model or opening connections.
    from sft_builder.webgen.generate import load_state

    load_state(cfg)
    if backend is BackendKind.openai:
        from sft_builder.webgen.backends.openai_compat import OpenAICompatBackend

        client = OpenAICompatBackend(http)
    else:
        from sft_builder.webgen.backends.local import TransformersBackend

        client = TransformersBackend(local)

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=False) as bar:
        task = bar.add_task("webgen", total=num)

        def show(state: RunState) -> None:
            rejected = sum(state.rejected.values())
            bar.update(task, completed=min(state.kept, num),
                       description=f"kept {state.kept} | rejected {rejected} | prompts {state.prompts}")

        try:
            gen = Generator(cfg, client, on_progress=show)
            show(gen.state)
            state = gen.run()
        finally:
            client.close()
    console.print(summary_table(state))
    if state.stopped:
        raise UserError(f"stopped before --num {num}: {state.stopped} (see the reasons above; re-run to continue)")


def summary_table(state: object) -> Table:
    """Kept and rejected counts by reason; every parsed candidate is in exactly one row."""
    table = Table(title="webgen summary", show_header=True)
    table.add_column("outcome")
    table.add_column("candidates", justify="right")
    table.add_row("kept", str(state.kept))  # type: ignore[attr-defined]
    for reason, n in sorted(state.rejected.items(), key=lambda kv: (-kv[1], kv[0])):  # type: ignore[attr-defined]
        table.add_row(f"rejected: {reason}", str(n))
    table.add_row("total", str(state.candidates))  # type: ignore[attr-defined]
    return table


def register(app: typer.Typer) -> None:
    """Add this area's commands to the main app."""
    app.command("webgen")(webgen)
