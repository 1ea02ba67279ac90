"""Runs in the catalog: their life (queued -> running -> an end state), logs and progress.

Invariants:
- A run ends once: ``finish_run`` and ``interrupt_runs`` only change a run that is
  still queued or running (a late ``finish_run`` of a run already marked interrupted
  is ignored: an interrupted run never becomes succeeded afterwards).
- ``interrupt_runs`` decides and writes in one transaction, so two starting
  services cannot both claim the same run.
- The result is stored as JSON of ``RunResult``; unknown keys of a newer surety are dropped.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, fields
from typing import Any

from surety.catalog.db import Store
from surety.catalog.runs import Run, RunResult
from surety.core.errors import UsageError

__all__ = ["INTERRUPTED_ERROR", "INTERRUPTED_HINT", "RunStore"]

INTERRUPTED_ERROR = "the service stopped while this run was in flight (killed?)"
INTERRUPTED_HINT = (
    "it counts as not done: nothing was truncated for it; see `surety points` for what "
    "was committed and start it again with `surety jobs run JOB` or wait for its next slot"
)
_OPEN = ("queued", "running")
_ENDED = ("succeeded", "warning", "failed", "interrupted", "skipped", "missed")
_COLUMNS = (
    "id, job, kind, policy, vm, host, attempt, scheduled_for, state, started, ended, pid, result"
)
_SELECT = f"SELECT {_COLUMNS} FROM runs WHERE "  # noqa: S608 - constants, values are bound
_RESULT_FIELDS = frozenset(f.name for f in fields(RunResult))
_RUN_FIELDS = tuple(f.name for f in fields(Run) if f.name != "result")


class RunStore(Store):
    def create_run(
        self,
        *,
        job: str,
        kind: str,
        policy: str,
        vm: str | None,
        host: str,
        attempt: int = 1,
        scheduled_for: str | None = None,
        state: str = "queued",
    ) -> int:
        """A new run; ``state`` may also be an end state (e.g. ``missed``) for the history."""
        if state not in _OPEN + _ENDED:
            raise ValueError(f"unknown run state {state!r}")
        now = self.now()
        started = None if state == "queued" else now
        ended = now if state in _ENDED else None
        run_id = self.write(
            "INSERT INTO runs (job, kind, policy, vm, host, attempt, scheduled_for, state,"
            " created, started, ended) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (job, kind, policy, vm, host, attempt, scheduled_for, state, now, started, ended),
        )
        assert run_id is not None
        return run_id

    def mark_running(self, run_id: int, pid: int) -> None:
        self.write(
            "UPDATE runs SET state = 'running', pid = ?, started = ? WHERE id = ? AND state"
            " IN ('queued', 'running')",
            (pid, self.now(), run_id),
        )

    def finish_run(self, run_id: int, result: RunResult) -> None:
        """The run's end: state = ``result.status``, ended = now (an ended run stays as it is)."""
        if result.status not in _ENDED:
            raise ValueError(f"{result.status!r} is not an end state of a run")
        self.write(
            "UPDATE runs SET state = ?, ended = ?, result = ? WHERE id = ? AND state"
            " IN ('queued', 'running')",
            (result.status, self.now(), _encode(result), run_id),
        )

    def append_log(self, run_id: int, line: str) -> None:
        self.write(
            "INSERT INTO run_log (run_id, at, line) VALUES (?, ?, ?)", (run_id, self.now(), line)
        )

    def run_log(self, run_id: int) -> list[str]:
        rows = self.query("SELECT line FROM run_log WHERE run_id = ? ORDER BY seq", (run_id,))
        return [row[0] for row in rows]

    def set_progress(self, run_id: int, phase: str, done: int, total: int | None) -> None:
        self.write(
            "INSERT OR REPLACE INTO run_progress VALUES (?, ?, ?, ?, ?)",
            (run_id, phase, done, total, self.now()),
        )

    def progress(self, run_id: int) -> dict[str, Any] | None:
        """``{phase, done, total, at}`` of the run's last progress report, or None."""
        rows = self.query(
            "SELECT phase, done, total, at FROM run_progress WHERE run_id = ?", (run_id,)
        )
        if not rows:
            return None
        phase, done, total, at = rows[0]
        return {"phase": phase, "done": done, "total": total, "at": at}

    def interrupt_runs(self, host: str, alive: Callable[[int], bool]) -> list[Run]:
        """Runs of ``host`` still queued or running whose process is gone become interrupted."""
        result = RunResult(status="interrupted", error=INTERRUPTED_ERROR, hint=INTERRUPTED_HINT)
        with self.transaction() as conn:
            rows = conn.execute(
                _SELECT + "host = ? AND state IN ('queued', 'running') ORDER BY id",
                (host,),
            ).fetchall()
            gone = [row[0] for row in rows if row[11] is None or not alive(row[11])]
            now = self.now()
            for run_id in gone:
                conn.execute(
                    "UPDATE runs SET state = 'interrupted', ended = ?, result = ? WHERE id = ?",
                    (now, _encode(result), run_id),
                )
        return [self.run(run_id) for run_id in gone]

    def runs(
        self,
        *,
        job: str | None = None,
        policy: str | None = None,
        vm: str | None = None,
        states: Iterable[str] | None = None,
        limit: int = 100,
    ) -> list[Run]:
        """Runs matching every filter given, newest first."""
        where, params = ["1"], []
        for column, value in (("job", job), ("policy", policy), ("vm", vm)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if states is not None:
            wanted = list(states)
            where.append(f"state IN ({', '.join('?' * len(wanted))})")
            params.extend(wanted)
        rows = self.query(
            _SELECT + " AND ".join(where) + " ORDER BY id DESC LIMIT ?",
            (*params, limit),
        )
        return [_run(row) for row in rows]

    def run(self, run_id: int) -> Run:
        rows = self.query(_SELECT + "id = ?", (run_id,))
        if not rows:
            raise UsageError(
                f"no run {run_id} in the catalog {self.path} (see `surety jobs history`)"
            )
        return _run(rows[0])


def _encode(result: RunResult) -> str:
    return json.dumps(asdict(result), sort_keys=True, default=str)


def _decode(text: str | None) -> RunResult | None:
    if text is None:
        return None
    doc = json.loads(text)
    return RunResult(**{k: v for k, v in doc.items() if k in _RESULT_FIELDS})


def _run(row: tuple[Any, ...]) -> Run:
    """A ``runs`` row (columns in ``Run``'s field order, the result JSON last) as a ``Run``."""
    values = dict(zip(_RUN_FIELDS, row[:-1], strict=True))
    return Run(**values, result=_decode(row[-1]))
