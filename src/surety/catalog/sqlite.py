"""The SQLite catalog (stdlib ``sqlite3``; WAL journal, one short transaction per write).

Schema (``PRAGMA user_version`` = 1)::

    verifications(repository TEXT, point TEXT, status TEXT,   -- verified | failed
                  at TEXT,                                    -- ISO time, UTC
                  proof TEXT, summary TEXT,
                  PRIMARY KEY (repository, point, at))

Several processes may write at once (concurrent verifications): SQLite's
own locking with a busy timeout serialises them.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from surety.core.errors import TargetError

__all__ = ["Catalog", "Verification", "default_catalog_path"]

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS verifications (
    repository TEXT NOT NULL, point TEXT NOT NULL, status TEXT NOT NULL,
    at TEXT NOT NULL, proof TEXT NOT NULL, summary TEXT NOT NULL,
    PRIMARY KEY (repository, point, at)
);
"""


def default_catalog_path() -> Path:
    return Path(os.environ.get("SURETY_CATALOG", "/var/lib/surety/catalog.sqlite"))


@dataclass(frozen=True)
class Verification:
    point: str
    status: str  # verified | failed
    at: str
    proof: str
    summary: str


class Catalog:
    def __init__(self, path: Path) -> None:
        self.path = path

    def _connect(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=30)
            conn.execute("PRAGMA journal_mode=WAL")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise TargetError(f"catalog {self.path} is of a newer surety (schema {version})")
            conn.executescript(_SCHEMA)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except (OSError, sqlite3.Error) as exc:
            raise TargetError(f"cannot open the catalog {self.path}: {exc}") from exc
        return conn

    def record_verification(self, repository: str, verification: Verification) -> None:
        conn = self._connect()
        try:
            with conn:
                conn.execute(
                    "INSERT OR REPLACE INTO verifications VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        repository,
                        verification.point,
                        verification.status,
                        verification.at,
                        verification.proof,
                        verification.summary,
                    ),
                )
        except sqlite3.Error as exc:
            raise TargetError(f"cannot write the catalog {self.path}: {exc}") from exc
        finally:
            conn.close()

    def latest_verifications(
        self, repository: str, points: Iterable[str] | None = None
    ) -> dict[str, Verification]:
        """Point id -> its latest verification (nothing for never-verified points)."""
        if not self.path.exists():
            return {}
        conn = self._connect()
        try:
            rows = conn.execute(
                "SELECT point, status, at, proof, summary FROM verifications "
                "WHERE repository = ? ORDER BY at",
                (repository,),
            ).fetchall()
        except sqlite3.Error as exc:
            raise TargetError(f"cannot read the catalog {self.path}: {exc}") from exc
        finally:
            conn.close()
        wanted = set(points) if points is not None else None
        latest = {row[0]: Verification(*row) for row in rows}
        return {k: v for k, v in latest.items() if wanted is None or k in wanted}
