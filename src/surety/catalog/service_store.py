"""What the service keeps in the catalog between ticks and restarts: the slots each job
last ran for, when it first saw a job, its heartbeat, and run requests from front ends.

Invariants:
- ``record_slot`` never moves a job's last slot backwards (a late writer of an older
  slot changes nothing): a slot is run at most once.
- A run request is taken once: ``take_requests`` selects and marks in one
  transaction, so two takers never both get it.
- One heartbeat per host; ``clear_heartbeat`` removes it only if it is still the
  given pid's (a new service's beat survives the old one's late goodbye).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from surety.catalog.db import Store, iso, parse_iso
from surety.catalog.runs import Heartbeat

__all__ = ["ServiceStore"]


class ServiceStore(Store):
    def last_slot(self, job: str) -> datetime | None:
        rows = self.query("SELECT last_slot FROM jobs WHERE job = ?", (job,))
        return parse_iso(rows[0][0]) if rows and rows[0][0] else None

    def record_slot(self, job: str, slot: datetime, outcome: str) -> None:
        """``job`` ran (or was skipped, or missed) for ``slot``; ``outcome`` says which."""
        self.write(
            "INSERT INTO jobs (job, last_slot, slot_outcome, slot_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (job) DO UPDATE SET last_slot = excluded.last_slot,"
            " slot_outcome = excluded.slot_outcome, slot_at = excluded.slot_at"
            " WHERE last_slot IS NULL OR excluded.last_slot >= last_slot",
            (job, iso(slot), outcome, self.now()),
        )

    def first_seen(self, job: str, now: datetime) -> datetime:
        """When the service first saw ``job``: ``now`` on the first call, that value after."""
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO jobs (job, first_seen) VALUES (?, ?) ON CONFLICT (job) DO UPDATE"
                " SET first_seen = excluded.first_seen WHERE first_seen IS NULL",
                (job, iso(now)),
            )
            seen = conn.execute("SELECT first_seen FROM jobs WHERE job = ?", (job,)).fetchone()
        return parse_iso(seen[0])

    def beat(self, hb: Heartbeat) -> None:
        self.write(
            "INSERT OR REPLACE INTO heartbeats VALUES (?, ?, ?, ?, ?, ?)",
            (hb.host, hb.pid, hb.started, hb.beat, hb.config, hb.version),
        )

    def heartbeats(self) -> list[Heartbeat]:
        rows = self.query(
            "SELECT host, pid, started, beat, config, version FROM heartbeats ORDER BY host"
        )
        return [Heartbeat(*row) for row in rows]

    def clear_heartbeat(self, host: str, pid: int) -> None:
        self.write("DELETE FROM heartbeats WHERE host = ? AND pid = ?", (host, pid))

    def request_run(
        self,
        job: str,
        vm: str | None = None,
        by: str = "cli",
        options: dict[str, Any] | None = None,
    ) -> int:
        """Ask the running service to start ``job`` now (for ``vm`` only, if given);
        ``options``: what the run is asked to do beyond its job (a restore's point)."""
        request_id = self.write(
            "INSERT INTO requests (job, vm, by, at, options) VALUES (?, ?, ?, ?, ?)",
            (job, vm, by, self.now(), None if options is None else json.dumps(options)),
        )
        assert request_id is not None
        return request_id

    def request_options(self, request_id: int) -> dict[str, Any] | None:
        """The options a request was made with (None: none)."""
        rows = self.query("SELECT options FROM requests WHERE id = ?", (request_id,))
        if not rows or rows[0][0] is None:
            return None
        found: dict[str, Any] = json.loads(rows[0][0])
        return found

    def take_requests(self, host: str) -> list[tuple[int, str, str | None]]:
        """The requests nobody took yet, oldest first, now marked taken by ``host``."""
        with self.transaction() as conn:
            rows = conn.execute(
                "SELECT id, job, vm FROM requests WHERE taken_by IS NULL ORDER BY id"
            ).fetchall()
            conn.executemany(
                "UPDATE requests SET taken_by = ?, taken_at = ? WHERE id = ?",
                [(host, self.now(), row[0]) for row in rows],
            )
        return [(row[0], row[1], row[2]) for row in rows]
