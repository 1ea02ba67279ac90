"""The catalog's SQLite file: connections, the versioned schema and its migrations.

Schema version 4 (``PRAGMA user_version``)::

    verifications(repository, point, status, at, proof, summary, boot_seconds,
                  PRIMARY KEY (repository, point, at))          -- version 1 + boot_seconds
    runs(id INTEGER PRIMARY KEY AUTOINCREMENT, job, kind, policy, vm, host, attempt,
         scheduled_for, state, created, started, ended, pid, result)   -- result: RunResult JSON
    run_log(seq INTEGER PRIMARY KEY AUTOINCREMENT, run_id, at, line)
    run_progress(run_id PRIMARY KEY, phase, done, total, at)
    jobs(job PRIMARY KEY, first_seen, last_slot, slot_outcome, slot_at)
    heartbeats(host PRIMARY KEY, pid, started, beat, config, version)
    requests(id INTEGER PRIMARY KEY AUTOINCREMENT, job, vm, by, at, taken_by, taken_at,
             options)                                      -- version 4: options (JSON)
    usage(repository, at, logical, stored)
    checks(repository, at, status, summary, part, policy)
    notifications(target, key, at, PRIMARY KEY (target, key))
    users(name PRIMARY KEY, role, password_hash, created)                 -- version 3: web console
    sessions(token_hash PRIMARY KEY, user, csrf, created, expires, address)
    api_tokens(token_hash PRIMARY KEY, user, label, created, last_used)
    audit(id INTEGER PRIMARY KEY AUTOINCREMENT, at, who, action, target, result, address)
    login_failures(user, address, at)

Invariants:
- Times are ISO-8601 strings in UTC (``iso``), so text order is time order.
- A catalog of an older version migrates in place, every step in one
  ``BEGIN IMMEDIATE`` transaction (another process that opens it meanwhile waits,
  then finds it migrated); a newer version is refused, nothing written.
- Every write is one short ``BEGIN IMMEDIATE`` transaction on a fresh connection:
  the write lock is taken up front, so two writers never deadlock on a lock
  upgrade, and SQLite's busy timeout (30 s) serialises the service and its
  workers. The journal is WAL: readers never wait for a writer.
- Reading a catalog that does not exist yet reads nothing and creates nothing.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from surety.core.errors import TargetError

__all__ = ["SCHEMA_VERSION", "Store", "iso", "parse_iso"]

SCHEMA_VERSION = 4

_MIGRATIONS: tuple[str, ...] = (
    # 0 -> 1: the verifications of `surety verify`
    """
    CREATE TABLE IF NOT EXISTS verifications (
        repository TEXT NOT NULL, point TEXT NOT NULL, status TEXT NOT NULL,
        at TEXT NOT NULL, proof TEXT NOT NULL, summary TEXT NOT NULL,
        PRIMARY KEY (repository, point, at)
    );
    """,
    # 1 -> 2: jobs and runs of the service, their logs and progress, heartbeats,
    # run requests, repository usage, checks, notification dedupe; boot-to-ready
    """
    ALTER TABLE verifications ADD COLUMN boot_seconds REAL;
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT, job TEXT NOT NULL, kind TEXT NOT NULL,
        policy TEXT NOT NULL, vm TEXT, host TEXT NOT NULL, attempt INTEGER NOT NULL,
        scheduled_for TEXT, state TEXT NOT NULL, created TEXT NOT NULL, started TEXT,
        ended TEXT, pid INTEGER, result TEXT
    );
    CREATE INDEX runs_by_job ON runs (job, id);
    CREATE INDEX runs_by_vm ON runs (vm, id);
    CREATE INDEX runs_by_state ON runs (host, state);
    CREATE TABLE run_log (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, run_id INTEGER NOT NULL,
        at TEXT NOT NULL, line TEXT NOT NULL
    );
    CREATE INDEX run_log_by_run ON run_log (run_id, seq);
    CREATE TABLE run_progress (
        run_id INTEGER PRIMARY KEY, phase TEXT NOT NULL, done INTEGER NOT NULL,
        total INTEGER, at TEXT NOT NULL
    );
    CREATE TABLE jobs (
        job TEXT PRIMARY KEY, first_seen TEXT, last_slot TEXT, slot_outcome TEXT, slot_at TEXT
    );
    CREATE TABLE heartbeats (
        host TEXT PRIMARY KEY, pid INTEGER NOT NULL, started TEXT NOT NULL,
        beat TEXT NOT NULL, config TEXT NOT NULL, version TEXT NOT NULL
    );
    CREATE TABLE requests (
        id INTEGER PRIMARY KEY AUTOINCREMENT, job TEXT NOT NULL, vm TEXT,
        by TEXT NOT NULL, at TEXT NOT NULL, taken_by TEXT, taken_at TEXT
    );
    CREATE TABLE usage (
        repository TEXT NOT NULL, at TEXT NOT NULL, logical INTEGER NOT NULL,
        stored INTEGER NOT NULL
    );
    CREATE INDEX usage_by_repository ON usage (repository, at);
    CREATE TABLE checks (
        repository TEXT NOT NULL, at TEXT NOT NULL, status TEXT NOT NULL,
        summary TEXT NOT NULL, part TEXT, policy TEXT
    );
    CREATE INDEX checks_by_repository ON checks (repository, at);
    CREATE TABLE notifications (
        target TEXT NOT NULL, key TEXT NOT NULL, at TEXT NOT NULL,
        PRIMARY KEY (target, key)
    );
    """,
    # 2 -> 3: the web console's users, sessions, API tokens, audit log, login throttling
    """
    CREATE TABLE users (
        name TEXT PRIMARY KEY, role TEXT NOT NULL, password_hash TEXT NOT NULL,
        created TEXT NOT NULL
    );
    CREATE TABLE sessions (
        token_hash TEXT PRIMARY KEY, user TEXT NOT NULL, csrf TEXT NOT NULL,
        created TEXT NOT NULL, expires TEXT NOT NULL, address TEXT
    );
    CREATE TABLE api_tokens (
        token_hash TEXT PRIMARY KEY, user TEXT NOT NULL, label TEXT,
        created TEXT NOT NULL, last_used TEXT
    );
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, who TEXT NOT NULL,
        action TEXT NOT NULL, target TEXT, result TEXT NOT NULL, address TEXT
    );
    CREATE INDEX audit_by_at ON audit (at);
    CREATE TABLE login_failures (user TEXT NOT NULL, address TEXT NOT NULL, at TEXT NOT NULL);
    CREATE INDEX login_failures_by_user ON login_failures (user, address, at);
    """,
    # 3 -> 4: a run request's options (restore, instant recovery: the point, the confirmations)
    """
    ALTER TABLE requests ADD COLUMN options TEXT;
    """,
)
assert len(_MIGRATIONS) == SCHEMA_VERSION


def iso(moment: datetime) -> str:
    """``moment`` (aware) as the catalog stores it: ISO-8601 in UTC, whole seconds."""
    if moment.tzinfo is None:
        raise ValueError("the catalog stores aware datetimes only")
    return moment.astimezone(UTC).isoformat(timespec="seconds")


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text)


class Store:
    """The connection discipline every part of the catalog shares."""

    def __init__(self, path: Path, clock: Callable[[], datetime] | None = None) -> None:
        self.path = path
        self._clock = clock or (lambda: datetime.now(UTC))
        self._ready = False

    def now(self) -> str:
        return iso(self._clock())

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` write transaction: committed on success, else rolled back."""
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise TargetError(f"cannot write the catalog {self.path}: {exc}") from exc
        finally:
            conn.close()

    def write(self, sql: str, params: Sequence[Any] = ()) -> int | None:
        """One statement in its own transaction; the new row's id (for inserts)."""
        with self.transaction() as conn:
            return conn.execute(sql, params).lastrowid

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of one read; none when the catalog does not exist yet."""
        if not self._ready and not self.path.exists():
            return []
        conn = self._connect()
        try:
            return conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise TargetError(f"cannot read the catalog {self.path}: {exc}") from exc
        finally:
            conn.close()

    def _connect(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise TargetError(f"cannot open the catalog {self.path}: {exc}") from exc
        if not self._ready:
            try:
                self._prepare(conn)
            except BaseException:
                conn.close()
                raise
            self._ready = True
        return conn

    def _prepare(self, conn: sqlite3.Connection) -> None:
        try:
            if self._version(conn) < SCHEMA_VERSION:
                _wal(conn)
                self._migrate(conn)
            self._version(conn)  # a newer surety may have written it meanwhile
        except sqlite3.Error as exc:
            raise TargetError(f"cannot open the catalog {self.path}: {exc}") from exc

    def _version(self, conn: sqlite3.Connection) -> int:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise TargetError(
                f"the catalog {self.path} is of a newer surety (schema {version}; "
                f"this one knows {SCHEMA_VERSION}): upgrade surety"
            )
        return version

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = self._version(conn)  # again, under the write lock
            for step in _MIGRATIONS[version:]:
                for statement in step.split(";"):
                    if statement.strip():
                        conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


WAL_WAIT = 30.0
"""Seconds a catalog being created waits for another process's lock (as ``timeout`` does)."""


def _wal(conn: sqlite3.Connection) -> None:
    """Switch a new catalog to WAL, waiting out another process's lock.

    SQLite answers ``PRAGMA journal_mode=WAL`` with "database is locked" at once, without
    its busy handler, while another connection holds a lock: two processes that create
    the catalog at the same moment (the service and a command) would see one fail.
    """
    deadline = time.monotonic() + WAL_WAIT
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.05)
