"""Results the catalog keeps per repository: verifications (with boot-to-ready time),
integrity checks, usage after each run, and which notifications were sent.

Invariants:
- These are records, never the truth about restore points (the repository is):
  losing them loses history, not data.
- ``mark_notified`` is idempotent by (target, key): a notifier that asks
  ``notified`` first sends each message once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from surety.catalog.db import Store, iso

__all__ = ["CheckRecord", "RecordStore", "Verification"]


@dataclass(frozen=True)
class Verification:
    point: str
    status: str  # verified | failed
    at: str
    proof: str
    summary: str
    boot_seconds: float | None = None  # boot to ready, measured in the lab


@dataclass(frozen=True)
class CheckRecord:
    at: str
    status: str  # ok | damaged | failed
    summary: str
    part: str | None  # "n/m" of a rolling read-data subset; None: structure only or all
    policy: str | None


def _at(at: datetime | str) -> str:
    return iso(at) if isinstance(at, datetime) else at


class RecordStore(Store):
    def record_verification(self, repository: str, verification: Verification) -> None:
        self.write(
            "INSERT OR REPLACE INTO verifications"
            " (repository, point, status, at, proof, summary, boot_seconds)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                repository,
                verification.point,
                verification.status,
                verification.at,
                verification.proof,
                verification.summary,
                verification.boot_seconds,
            ),
        )

    def latest_verifications(
        self, repository: str, points: Iterable[str] | None = None
    ) -> dict[str, Verification]:
        """Point id -> its latest verification (nothing for never-verified points)."""
        rows = self.query(
            "SELECT point, status, at, proof, summary, boot_seconds FROM verifications "
            "WHERE repository = ? ORDER BY at",
            (repository,),
        )
        wanted = set(points) if points is not None else None
        latest = {row[0]: Verification(*row) for row in rows}
        return {k: v for k, v in latest.items() if wanted is None or k in wanted}

    def record_usage(self, repository: str, at: datetime | str, logical: int, stored: int) -> None:
        """After a run: the bytes the points of ``repository`` stand for vs the bytes stored."""
        self.write("INSERT INTO usage VALUES (?, ?, ?, ?)", (repository, _at(at), logical, stored))

    def usage(self, repository: str, limit: int = 100) -> list[tuple[str, int, int]]:
        """(at, logical, stored) of the latest ``limit`` records, oldest first (for a chart)."""
        rows = self.query(
            "SELECT at, logical, stored FROM usage WHERE repository = ? ORDER BY at DESC LIMIT ?",
            (repository, limit),
        )
        return [(row[0], row[1], row[2]) for row in reversed(rows)]

    def record_check(
        self,
        repository: str,
        at: datetime | str,
        status: str,
        summary: str,
        part: str | None,
        *,
        policy: str | None = None,
    ) -> None:
        self.write(
            "INSERT INTO checks VALUES (?, ?, ?, ?, ?, ?)",
            (repository, _at(at), status, summary, part, policy),
        )

    def checks(self, repository: str, limit: int = 20) -> list[CheckRecord]:
        """The latest checks of ``repository``, newest first."""
        rows = self.query(
            "SELECT at, status, summary, part, policy FROM checks WHERE repository = ?"
            " ORDER BY at DESC, rowid DESC LIMIT ?",
            (repository, limit),
        )
        return [CheckRecord(*row) for row in rows]

    def count_checks(self, repository: str, policy: str | None = None) -> int:
        """Rolling read-data checks of ``repository`` so far (a part was read), for the next
        part's number; counts ``policy``'s and those recorded without a policy."""
        rows = self.query(
            "SELECT count(*) FROM checks WHERE repository = ? AND part IS NOT NULL"
            " AND (policy IS NULL OR ? IS NULL OR policy = ?)",
            (repository, policy, policy),
        )
        return int(rows[0][0]) if rows else 0

    def notified(self, target: str, key: str) -> str | None:
        """When ``target`` was sent the message ``key`` (ISO UTC), or None if never."""
        rows = self.query(
            "SELECT at FROM notifications WHERE target = ? AND key = ?", (target, key)
        )
        return str(rows[0][0]) if rows else None

    def mark_notified(self, target: str, key: str, at: datetime | str) -> None:
        self.write("INSERT OR REPLACE INTO notifications VALUES (?, ?, ?)", (target, key, _at(at)))
