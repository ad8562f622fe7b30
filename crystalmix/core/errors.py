"""User-facing errors: a bad file, manifest or option stops the run with one clear line and exit code 2.

Anything raised as `UserError` is printed by the CLI without a traceback; every other exception is a bug
and is allowed to crash loudly. A full disk (or an exceeded quota) is a `DiskFullError`, also exit code 2:
the user frees space and reruns, and the rerun resumes from what was finished.
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import TypeGuard

DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


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


class DiskFullError(UserError):
    """`path` could not be written: no space left on its device, or the quota is exceeded.

    Raised by the writers (`crystalmix.core.atomic`, `crystalmix.core.hdf5`) in place of the OSError, after
    they removed the half-written temporary: nothing incomplete appears under a final name, so rerunning
    the same command once there is space again resumes (finished stages and shards are reused).
    """

    def __init__(self, path: str | Path | None, reason: str = "No space left on device") -> None:
        self.reason = reason
        super().__init__(f"cannot be written ({reason.lower()}): free some space and run the same command "
                         "again; finished work is reused, nothing half-written is kept",
                         path=path if path is not None else "a file")

    def __reduce__(self) -> tuple[type[DiskFullError], tuple[str | None, str]]:
        # across process pools: rebuild from the path, not from the formatted message
        return (DiskFullError, (self.path, self.reason))

    @classmethod
    def from_os_error(cls, exc: OSError, path: str | Path | None = None) -> DiskFullError:
        reason = "Disk quota exceeded" if exc.errno == errno.EDQUOT else "No space left on device"
        return cls(path if path is not None else exc.filename, reason)


def is_disk_full(exc: BaseException) -> TypeGuard[OSError]:
    """An OSError saying the device is full or the quota exceeded (h5py's write errors carry the errno too)."""
    return isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS
