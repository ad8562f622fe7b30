"""One reader of /proc/self/status for the benches' memory figures.

A process's own peak is ``VmHWM``, not ``ru_maxrss``: Linux keeps ``ru_maxrss`` across exec, so a child a
bench starts would report the bench's own peak instead of its own.
"""

from __future__ import annotations


def status_kb(field: str) -> int:
    """A ``Vm*`` line of /proc/self/status in KB (``field`` with its colon, e.g. ``"VmHWM:"``)."""
    with open("/proc/self/status", encoding="ascii") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(field))
