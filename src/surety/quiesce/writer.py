"""The ``Writer`` protocol, what a writer reports, and how writers are found.

A writer knows one application (or the file systems): whether it runs in a
guest, how to prepare and freeze it for an instant, how to release it, and how
to truncate its logs once a restore point covering them is committed. Writers
are plugins: classes registered under the ``surety.writers`` entry-point group
(the built-ins are registered the same way in ``pyproject.toml``).

Each writer fills its ``WriterRecord``: the state it reached, the metadata it
captured (stored in the restore point under ``applications.<name>``), warnings
and step timings.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, ClassVar, Protocol

from surety.core.errors import SourceError, UsageError
from surety.quiesce.channel import GuestChannel

__all__ = [
    "APPLICATION",
    "FILESYSTEM",
    "QuiesceJob",
    "Writer",
    "WriterFailed",
    "WriterRecord",
    "load_writers",
]

APPLICATION, FILESYSTEM = "application", "filesystem"
ENTRY_POINT_GROUP = "surety.writers"


class WriterFailed(SourceError):
    """A writer could not do its step; the job's policy decides what follows."""

    def __init__(self, writer: str, message: str, *, required: bool = False) -> None:
        super().__init__(f"{writer} writer: {message}")
        self.writer, self.detail = writer, message
        self.required = required  # fail the job whatever the fallback policy says


@dataclass(frozen=True)
class QuiesceJob:
    """What one backup job asks of its writers (typed options in)."""

    token: str  # unique per job: the marker rows' key, also in the restore point
    window: float = 10.0  # longest time anything stays frozen (seconds)
    # prepare runs before the window opens (the application keeps serving): a busy cluster's
    # CHECKPOINT then pg_backup_start on a loaded host took over 120 s under TCG, and the
    # guest scripts allow each such statement 300 s.
    prepare_timeout: float = 300.0
    pre_freeze: str | None = None  # the `script` writer's commands (guest shell)
    post_thaw: str | None = None
    after_commit: str | None = None
    script_failure: str = "fail"  # fail | ignore
    settings: Mapping[str, str] = field(default_factory=dict)  # writer.option=value


@dataclass
class WriterRecord:
    """What a writer did, recorded in the restore point."""

    state: str = "discovered"  # discovered, prepared, frozen, thawed, failed, expired
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    @contextmanager
    def timed(self, step: str) -> Iterator[None]:
        start = time.monotonic()
        try:
            yield
        finally:
            self.timings[step] = round(time.monotonic() - start, 3)

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "warnings": list(self.warnings),
            "timings": dict(self.timings),
            **self.metadata,
        }


class Writer(Protocol):
    """One application's (or the file systems') side of the quiescing protocol.

    The requester calls, in order: ``applies`` (discover), ``prepare``,
    ``freeze`` (with a deadline, monotonic seconds), then ``thaw`` - always,
    once ``prepare`` was called, even after a failure - and, only after the
    restore point is committed, ``after_commit``. ``cleanup`` runs last in
    every case and removes whatever the writer put in the guest. Steps raise
    ``WriterFailed`` (or a ``SourceError``) on failure; ``thaw`` and
    ``cleanup`` never raise.
    """

    name: ClassVar[str]
    level: ClassVar[str]  # APPLICATION (app writers) or FILESYSTEM (fsfreeze)
    record: WriterRecord

    def applies(self) -> bool: ...

    def prepare(self) -> None: ...

    def freeze(self, deadline: float) -> None: ...

    def thaw(self) -> None: ...

    def after_commit(self, point_id: str, truncate_logs: bool) -> dict[str, Any]: ...

    def cleanup(self) -> None: ...


class WriterFactory(Protocol):
    name: ClassVar[str]

    def __call__(self, guest: GuestChannel, job: QuiesceJob) -> Writer: ...


def load_writers(names: list[str] | None = None) -> dict[str, WriterFactory]:
    """The installed writer plugins by name (all of them, or the ``names`` asked for)."""
    found: dict[str, WriterFactory] = {}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        found[entry.name] = entry.load()
    if names is None:
        return found
    unknown = sorted(set(names) - set(found))
    if unknown:
        raise UsageError(
            f"unknown writer(s) {', '.join(unknown)} (installed: {', '.join(sorted(found))})"
        )
    return {name: found[name] for name in names}
