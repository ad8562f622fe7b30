"""The `crystalmix` command line: a typer app; each feature area registers its commands from its own module.

User errors (`UserError`) are printed as one line with exit code 2; anything else is a bug and crashes.
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.markup import escape

from crystalmix.core.errors import UserError

app = typer.Typer(
    name="crystalmix",
    help="Rebuild LLM360's CrystalCoder/CrystalChat data: SFT mixes, website-creation samples, pretraining data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True)


def _register_all() -> None:
    # Each module owns one feature area's commands; keeping them apart keeps this file small.
    from crystalmix.cli import build, convert, encode, export, report, webgen
    from crystalmix.cli.pretrain import app as pretrain_app

    for module in (convert, build, report, encode, export, webgen):
        module.register(app)

    app.add_typer(pretrain_app, name="pretrain", help="Pretraining stages 1-3: tokenize, FIM, pack to HDF5.")


_register_all()


def main() -> None:
    """Console-script entry point."""
    try:
        app(standalone_mode=False)
    except UserError as exc:
        # escaped: messages name files and hub splits like `name[train]`, which rich would take as markup
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except Exception as exc:  # click usage errors carry their own exit code
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Exit):
            sys.exit(exc.exit_code)
        raise
