"""The `crystalmix` command line: a typer app; each feature area registers its commands from its own module.

The contract, the same for every command (`main` keeps it; the tests run the installed script):

- exit 0 on success; 1 when the command ran and found the data bad (`validate`);
- exit 2 for a user error (usage, a missing or bad file, a bad manifest or option): one line on stderr, naming
  the file and line where there is one, no traceback;
- exit 130 on Ctrl-C, with one line saying what was interrupted and what a rerun does;
- anything else is a bug in crystalmix: the traceback, a one-line hint, exit 70 (EX_SOFTWARE).

Top-level imports stay light (typer, rich): each command imports what it needs when it runs.
"""

from __future__ import annotations

import errno
import sys
import traceback
from collections.abc import Sequence
from typing import Annotated

import typer

from crystalmix import __version__
from crystalmix.core.errors import DiskFullError, UserError, is_disk_full
from crystalmix.core.interrupt import INTERRUPTED, watch_ctrl_c
from crystalmix.core.redact import redact

BUG = 70  # EX_SOFTWARE (sysexits.h): an internal error, told apart from bad data (1) and user errors (2)
USER_ERROR = 2
BUG_HINT = f"this is a bug in crystalmix {__version__}; please report it with the traceback above"

# What a rerun does after Ctrl-C, for commands that keep finished work; the others write atomically.
RERUN = {
    "build": "finished stages are kept; rerun the same command to resume",
    "pretrain build": "finished shards are kept; rerun the same command to resume",
    "webgen": "the records already in --out are kept; rerun the same command to continue",
}
RERUN_DEFAULT = "nothing was left half-written; rerun the same command to start again"
GROUPS = ("pretrain", "tokenizer")
# Failures of the machine or of the user's files, not of crystalmix: reported as one line, exit 2.
ENVIRONMENT_ERRNOS = {errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EMFILE}

app = typer.Typer(
    name="crystalmix",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)

# The exception classes of the click that typer uses: its own vendored copy from typer 0.26 on, click before.
_click = sys.modules[typer.BadParameter.__module__]


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"crystalmix {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool | None, typer.Option("--version", callback=_show_version, is_eager=True,
                                                help="Print the version and exit.")] = None,
) -> None:
    """Rebuild LLM360's CrystalCoder/CrystalChat data: SFT mixes, website-creation samples, pretraining data."""


def _register_all() -> None:
    # Each module owns one feature area's commands; keeping them apart keeps this file small.
    from crystalmix.cli import build, convert, encode, export, report, webgen
    from crystalmix.cli.pretrain import app as pretrain_app

    for module in (convert, build, report, encode, export, webgen):
        module.register(app)

    app.add_typer(pretrain_app, name="pretrain", help="Pretraining stages 1-3: tokenize, FIM, pack to HDF5.")


_register_all()


def _say(prefix: str, message: str) -> None:
    """One line on stderr, whatever the message holds (paths like `name[train]` are not rich markup)."""
    from rich.console import Console
    from rich.markup import escape

    line = " ".join(redact(message).split("\n"))  # a server may echo the API key; a URL may hold user:pass
    Console(stderr=True, highlight=False, soft_wrap=True).print(f"[bold red]{prefix}[/] {escape(line)}")


def command_path(args: Sequence[str]) -> str:
    """``crystalmix build`` or ``crystalmix pretrain build`` from the arguments (options before it skipped)."""
    words = [a for a in args if not a.startswith("-")][:2]
    if not words:
        return "crystalmix"
    return "crystalmix " + (" ".join(words) if words[0] in GROUPS and len(words) > 1 else words[0])


def _interrupted(args: Sequence[str]) -> int:
    path = command_path(args)
    note = RERUN.get(path.removeprefix("crystalmix "), RERUN_DEFAULT)
    _say("interrupted:", f"{path} stopped by Ctrl-C; {note}")
    return INTERRUPTED


def _bug(exc: BaseException) -> int:
    sys.stderr.write(redact("".join(traceback.format_exception(type(exc), exc, exc.__traceback__))))
    _say("internal error:", BUG_HINT)
    return BUG


def run(argv: Sequence[str] | None = None) -> int:
    """Run the command line on `argv` (default ``sys.argv[1:]``) and return its exit code."""
    from crystalmix.cli.common import logging_to_stderr

    args = list(sys.argv[1:] if argv is None else argv)
    with watch_ctrl_c() as ctrl_c, logging_to_stderr():
        try:
            code = app(args=args, prog_name="crystalmix", standalone_mode=False)
        except SystemExit:
            raise
        except BaseException as exc:
            # after a Ctrl-C, whatever came out (a library may turn KeyboardInterrupt into its own error) is it
            return _interrupted(args) if ctrl_c.pressed else _failure(exc, args)
    if code == INTERRUPTED:  # typer 0.26+ turns KeyboardInterrupt into Exit(130) and returns its code
        return _interrupted(args)
    return code if isinstance(code, int) else 0


def _failure(exc: BaseException, args: list[str]) -> int:
    """The exit code of a run that raised `exc`, after printing what the contract says for it."""
    if isinstance(exc, KeyboardInterrupt):
        return _interrupted(args)
    if isinstance(exc, UserError):
        _say("error:", str(exc))
        return USER_ERROR
    if isinstance(exc, _click.ClickException):
        no_args_help = getattr(_click, "NoArgsIsHelpError", None)
        if no_args_help is not None and isinstance(exc, no_args_help):  # `crystalmix` alone: its help
            typer.echo(exc.format_message())
            return 0
        message = exc.format_message()
        ctx = getattr(exc, "ctx", None)
        if isinstance(exc, _click.UsageError) and ctx is not None:
            message += f" (see '{ctx.command_path} --help')"
        _say("error:", message)
        return exc.exit_code
    if isinstance(exc, typer.Abort):
        # click turns EOFError (and, before typer 0.26, KeyboardInterrupt) into Abort; the cause tells them apart
        cause = exc.__cause__ or exc.__context__
        if cause is None or isinstance(cause, KeyboardInterrupt):
            return _interrupted(args)
        return _bug(cause)
    if is_disk_full(exc):  # a write no writer wrapped (a folder, an append): still the rerun hint
        _say("error:", str(DiskFullError.from_os_error(exc)))
        return USER_ERROR
    if isinstance(exc, OSError) and exc.errno in ENVIRONMENT_ERRNOS:
        where = f"{exc.filename}: " if exc.filename else ""
        _say("error:", f"{where}{exc.strerror or exc}")
        return USER_ERROR
    return _bug(exc)


def main() -> None:
    """Console-script entry point: returns on success, else exits with the contract's code."""
    try:
        code = run()
    except KeyboardInterrupt:  # Ctrl-C while the error or summary lines were being printed
        code = INTERRUPTED
    if code:
        sys.exit(code)
