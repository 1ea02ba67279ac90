"""Schema 3: a version-2 catalog migrates in place to the web console's tables and keeps its
runs; users, sessions, tokens, audit and login failures behave as the web relies on."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from surety.catalog import Catalog
from surety.catalog.db import _MIGRATIONS, SCHEMA_VERSION, iso


def _v2_catalog(path: Path) -> None:
    conn = sqlite3.connect(path)
    for step in _MIGRATIONS[:2]:
        conn.executescript(step)
    conn.execute(
        "INSERT INTO runs (job, kind, policy, vm, host, attempt, state, created)"
        " VALUES ('n:backup', 'backup', 'n', 'web1', 'h1', 1, 'succeeded',"
        " '2026-11-01T10:00:00+00:00')"
    )
    conn.execute("PRAGMA user_version = 2")
    conn.commit()
    conn.close()


def test_a_version_2_catalog_migrates_to_3_and_keeps_its_runs(tmp_path: Path) -> None:
    path = tmp_path / "catalog.sqlite"
    _v2_catalog(path)
    catalog = Catalog(path)
    assert [r.vm for r in catalog.runs()] == ["web1"]
    catalog.put_user("ann", "admin", "$argon2id$x")
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
    conn.close()
    assert catalog.user("ann") is not None


def test_sessions_tokens_audit_and_failures(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "fresh.sqlite")
    now = datetime.now(UTC)
    catalog.put_user("bob", "viewer", "h1")
    catalog.put_user("bob", "operator", "h2")  # replaced, not duplicated
    assert [(u.name, u.role, u.password_hash) for u in catalog.users()] == [
        ("bob", "operator", "h2")
    ]
    catalog.open_session("tok", "bob", "c1", iso(now + timedelta(hours=1)), "127.0.0.1")
    catalog.open_session("old", "bob", "c2", iso(now - timedelta(seconds=1)), "127.0.0.1")
    assert catalog.session("tok") is not None
    assert catalog.session("old") is None  # expired
    catalog.close_session("tok")
    assert catalog.session("tok") is None
    rows = sqlite3.connect(tmp_path / "fresh.sqlite").execute("SELECT * FROM sessions").fetchall()
    assert all("tok" not in map(str, row) for row in rows)  # only hashes are stored
    catalog.add_api_token("secret-token", "bob", "cron")
    assert catalog.api_token_user("secret-token") == "bob"
    assert catalog.api_token_user("other") is None
    catalog.audit("bob", "run", "n:backup web1", "ok", "127.0.0.1")
    catalog.audit("bob", "login", None, "refused", "127.0.0.1")
    assert [(a.action, a.result) for a in catalog.audit_rows()] == [
        ("login", "refused"),
        ("run", "ok"),
    ]
    since = iso(now - timedelta(minutes=1))
    for _ in range(3):
        catalog.record_login_failure("bob", "10.0.0.1")
    assert len(catalog.login_failures("bob", "10.0.0.1", since)) == 3
    assert catalog.login_failures("bob", "10.0.0.2", since) == []
    catalog.clear_login_failures("bob", "10.0.0.1")
    assert catalog.login_failures("bob", "10.0.0.1", since) == []
