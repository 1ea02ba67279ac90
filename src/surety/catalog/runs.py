"""What the catalog records about jobs: runs, their logs and progress, the service's
heartbeat, run requests from front ends, repository usage.

The records every part of the service work shares; the SQLite catalog
(``catalog.sqlite.Catalog``) stores them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["RUN_STATES", "Heartbeat", "Run", "RunResult"]

RUN_STATES = (
    "queued",
    "running",
    "succeeded",
    "warning",
    "failed",
    "interrupted",
    "skipped",
    "missed",
)
"""queued -> running -> succeeded | warning (succeeded with a warning, e.g. a fall-back)
| failed | interrupted (the process died or was stopped: never succeeded, nothing truncated);
skipped (e.g. the VM was deleted while the job waited); missed (a slot passed outside
its start window)."""


@dataclass
class RunResult:
    """What a finished job run reports (the worker fills it, the catalog stores it)."""

    status: str  # succeeded | warning | failed | interrupted | skipped
    point: str | None = None
    consistency: str | None = None
    bytes_read: int | None = None
    bytes_stored: int | None = None
    error: str | None = None  # one line
    hint: str | None = None  # what to do
    warnings: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)  # e.g. log truncation, verify proof


@dataclass(frozen=True)
class Run:
    id: int
    job: str  # "<policy>:<kind>" e.g. "nightly:backup"
    kind: str  # backup | verify | check | prune
    policy: str
    vm: str | None
    host: str
    attempt: int
    scheduled_for: str | None  # ISO UTC of the slot, None for a run started by hand
    state: str  # RUN_STATES
    started: str | None  # ISO UTC
    ended: str | None
    pid: int | None
    result: RunResult | None


@dataclass(frozen=True)
class Heartbeat:
    host: str
    pid: int
    started: str  # ISO UTC
    beat: str  # ISO UTC of the last beat
    config: str  # path of the configuration in use
    version: str
