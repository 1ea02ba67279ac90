"""Processes as ``/proc`` shows them: a pid and its start time name one process.

A pid alone is never proof that a process lives: once it exits, the kernel
may give the number to another process. The start time (clock ticks since
boot, field 22 of ``/proc/<pid>/stat``) tells them apart, so whoever records
a pid to judge later (repository locks, run directories, detached NBD
servers) records its start time too and compares both.

Linux only; a process that does not exist (or that we cannot see) answers "".
"""

from __future__ import annotations

__all__ = ["process_start_time", "process_state"]


def process_start_time(pid: int) -> str:
    """Start time of a process (clock ticks since boot), "" if it does not exist."""
    fields = _stat_fields(pid)
    return fields[19] if len(fields) > 19 else ""


def process_state(pid: int) -> str:
    """The process's state letter (``R``, ``S``, ``Z``: a zombie...), "" if it does not exist."""
    fields = _stat_fields(pid)
    return fields[0] if fields else ""


def _stat_fields(pid: int) -> list[str]:
    """The fields of ``/proc/<pid>/stat`` after the command name, from the state on.

    The command name (in parentheses) may itself hold spaces and ``)``: the
    fields start after the *last* ``)``.
    """
    try:
        with open(f"/proc/{pid}/stat") as handle:
            stat = handle.read()
    except OSError:
        return []
    return stat.rsplit(")", 1)[-1].split()
