"""User-facing errors: a bad file, manifest or option stops the run with one clear line and exit code 2.

Anything raised as `UserError` is printed by the CLI without a traceback; every other exception is a bug
and is allowed to crash loudly.
"""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """A problem the user can fix (bad input file, manifest, option). Printed as one line, exit code 2."""

    def __init__(self, message: str, *, path: str | Path | None = None, line: int | None = None) -> None:
        where = ""
        if path is not None:
            where = f"{path}"
            if line is not None:
                where += f":{line}"
            where += ": "
        super().__init__(where + message)
        self.path = None if path is None else str(path)
        self.line = line
