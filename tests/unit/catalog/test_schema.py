"""The catalog's schema: a version-1 file migrates in place, a newer one is refused,
and two processes write at once without losing a write."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from surety.catalog import Catalog, Verification
from surety.catalog.db import SCHEMA_VERSION
from surety.core.errors import TargetError

V1_SCHEMA = """
CREATE TABLE verifications (
    repository TEXT NOT NULL, point TEXT NOT NULL, status TEXT NOT NULL,
    at TEXT NOT NULL, proof TEXT NOT NULL, summary TEXT NOT NULL,
    PRIMARY KEY (repository, point, at)
);
"""


def _v1_catalog(path: Path) -> None:
    """A catalog as surety wrote it before the service: only verifications, version 1."""
    conn = sqlite3.connect(path)
    conn.executescript(V1_SCHEMA)
    conn.execute(
        "INSERT INTO verifications VALUES ('repo1', 'p1', 'verified',"
        " '2026-11-01T10:00:00+00:00', '/proofs/1/proof.json', 'heartbeat ok')"
    )
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()


def _version(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


def test_a_version_1_catalog_migrates_in_place_and_keeps_its_verifications(
    tmp_path: Path,
) -> None:
    path = tmp_path / "catalog.sqlite"
    _v1_catalog(path)
    catalog = Catalog(path)
    old = catalog.latest_verifications("repo1")["p1"]
    assert (old.status, old.proof, old.boot_seconds) == ("verified", "/proofs/1/proof.json", None)
    assert _version(path) == SCHEMA_VERSION == 4
    catalog.record_verification(
        "repo1", Verification("p2", "verified", "2026-11-02T10:00:00+00:00", "b", "", 41.5)
    )
    assert catalog.latest_verifications("repo1")["p2"].boot_seconds == 41.5
    run_id = catalog.create_run(job="n:backup", kind="backup", policy="n", vm="db1", host="h")
    assert catalog.run(run_id).state == "queued"


def test_a_failed_migration_leaves_the_version_1_catalog_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "catalog.sqlite"
    _v1_catalog(path)
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE runs (x)")  # in the way of the migration's CREATE TABLE runs
    conn.commit()
    conn.close()
    with pytest.raises(TargetError, match="cannot open the catalog"):
        Catalog(path).latest_verifications("repo1")
    assert _version(path) == 1
    conn = sqlite3.connect(path)
    columns = [row[1] for row in conn.execute("PRAGMA table_info(verifications)")]
    conn.close()
    assert "boot_seconds" not in columns


def test_a_catalog_of_a_newer_surety_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "catalog.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(TargetError, match="newer surety"):
        Catalog(path).create_run(job="j", kind="backup", policy="p", vm=None, host="h")
    assert _version(path) == 99


def test_reading_a_missing_catalog_creates_nothing(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "none" / "catalog.sqlite")
    assert catalog.runs() == []
    assert catalog.heartbeats() == []
    assert catalog.last_slot("j") is None
    assert not (tmp_path / "none").exists()


WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from surety.catalog import Catalog, RunResult
    catalog = Catalog(Path(sys.argv[1]))
    for i in range(int(sys.argv[3])):
        vm = sys.argv[2]
        run = catalog.create_run(job="p:backup", kind="backup", policy="p", vm=vm, host="h")
        catalog.mark_running(run, 1)
        catalog.append_log(run, f"{sys.argv[2]} {i}")
        catalog.finish_run(run, RunResult(status="succeeded"))
    """
)


def test_two_processes_write_at_once_and_no_write_is_lost(tmp_path: Path) -> None:
    path = tmp_path / "catalog.sqlite"
    count = 40
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(path), vm, str(count)])
        for vm in ("a", "b")
    ]
    assert [w.wait(timeout=60) for w in writers] == [0, 0]
    catalog = Catalog(path)
    runs = catalog.runs(limit=1000)
    assert len(runs) == 2 * count
    assert {r.state for r in runs} == {"succeeded"}
    assert sorted(r.vm or "" for r in runs).count("a") == count
    assert all(len(catalog.run_log(r.id)) == 1 for r in runs)


def test_a_catalog_created_while_another_process_holds_its_lock_waits_for_it(
    tmp_path: Path,
) -> None:
    # SQLite refuses PRAGMA journal_mode=WAL at once while another connection holds a
    # lock (no busy handler): the catalog's creation must wait, not fail
    path = tmp_path / "catalog.sqlite"
    with subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE, text=True
    ) as holder:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        started = time.monotonic()
        catalog = Catalog(path)
        run = catalog.create_run(job="p:backup", kind="backup", policy="p", vm="a", host="h")
        assert holder.wait(timeout=30) == 0
    assert time.monotonic() - started >= 0.5  # it waited for the holder's commit
    assert [r.id for r in catalog.runs(limit=10)] == [run]


HOLDER = textwrap.dedent(
    """
    import sqlite3, sys, time
    conn = sqlite3.connect(sys.argv[1], isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("CREATE TABLE early (x)")
    print("locked", flush=True)
    time.sleep(1.0)
    conn.execute("DROP TABLE early")
    conn.execute("COMMIT")
    """
)
