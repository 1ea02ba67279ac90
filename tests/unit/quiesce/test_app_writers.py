"""Host-side parsing and guards of the PostgreSQL and MariaDB writers (the guest side is
exercised against real guests in tests/vm/test_writers.py)."""

from __future__ import annotations

import pytest

from surety.core.errors import UsageError
from surety.quiesce.session import GuestSession, guest_script
from surety.quiesce.writer import QuiesceJob, WriterFailed, load_writers
from surety.quiesce.writers.mariadb import MariadbWriter
from surety.quiesce.writers.postgresql import (
    PostgresqlWriter,
    archive_dir_from_command,
    parse_backup_label,
    parse_clusters,
)
from surety.testing.fake_guest import FakeGuest, GuestResult

LABEL = """START WAL LOCATION: 0/9000028 (file 000000020000000000000009)
CHECKPOINT LOCATION: 0/9000060
BACKUP METHOD: streamed
BACKUP FROM: primary
START TIME: 2026-11-22 02:55:53 UTC
LABEL: surety abc
START TIMELINE: 2
"""


def test_backup_label_gives_redo_file_and_timeline() -> None:
    assert parse_backup_label(LABEL) == {
        "start_lsn": "0/9000028",
        "redo_wal_file": "000000020000000000000009",
        "timeline": 2,
    }
    assert parse_backup_label("garbage")["redo_wal_file"] is None


def test_only_online_clusters_are_found() -> None:
    text = (
        "15 main 5432 online postgres /var/lib/postgresql/15/main /var/log/x.log\n"
        "15 other 5433 down postgres /var/lib/postgresql/15/other /var/log/y.log\n"
        "16 replica 5434 online,recovery postgres /srv/pg16 /var/log/z.log\n"
    )
    clusters = parse_clusters(text)
    assert [(c.id, c.port, c.data_dir) for c in clusters] == [
        ("15/main", 5432, "/var/lib/postgresql/15/main"),
        ("16/replica", 5434, "/srv/pg16"),
    ]
    assert clusters[1].bindir == "/usr/lib/postgresql/16/bin"


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (
            "test ! -f /var/lib/pg/wal_archive/%f && cp %p /var/lib/pg/wal_archive/%f",
            "/var/lib/pg/wal_archive",
        ),
        ("cp %p /mnt/archive/%f", "/mnt/archive"),
        ("pgbackrest --stanza=main archive-push %p", None),
        ("rsync %p backup:/archive/%f", None),
        ("unbalanced 'quote", None),
    ],
)
def test_archive_directory_only_when_the_command_says_it_plainly(
    command: str, expected: str | None
) -> None:
    assert archive_dir_from_command(command) == expected


def test_binlog_purge_refuses_a_strange_file_name() -> None:
    guest = FakeGuest(handlers={"*": lambda _argv: GuestResult(0)})
    writer = MariadbWriter(guest, QuiesceJob("t"))
    writer.record.metadata["binlog_file"] = "x'; DROP DATABASE y; --"
    with pytest.raises(WriterFailed, match="unexpected binlog file name"):
        writer.after_commit("p", truncate_logs=True)
    assert guest.commands == []
    writer.record.metadata["binlog_file"] = "mariadb-bin.000007"
    assert writer.after_commit("p", truncate_logs=True)["kept_from"] == "mariadb-bin.000007"
    assert guest.commands[-1][-1] == "PURGE BINARY LOGS TO 'mariadb-bin.000007'"
    assert writer.after_commit("p", truncate_logs=False) == {}


def test_built_in_writers_are_plugins_and_ship_their_guest_scripts() -> None:
    assert {"fsfreeze", "postgresql", "mariadb", "script"} <= set(load_writers())
    for name in ("postgresql", "mariadb"):
        script = guest_script(name).decode()
        assert script.startswith("# surety: guest side of a writer")
        assert "wait_go thaw" in script


def test_unknown_writer_is_a_usage_error() -> None:

    with pytest.raises(UsageError, match="unknown writer"):
        load_writers(["oracle"])


def test_deferred_truncation_works_from_the_recorded_metadata_only() -> None:
    cleanup = GuestResult(
        0, b"", b'pg_archivecleanup: removing file "/a/000000010000000000000003"\n'
    )
    guest = FakeGuest(handlers={"*": lambda _argv: cleanup})
    recorded = {
        "clusters": [
            {
                "cluster": "15/main",
                "archive_dir": "/a",
                "redo_wal_file": "000000010000000000000004",
            },
            {
                "cluster": "15/other",
                "archive_dir": None,
                "redo_wal_file": "000000010000000000000009",
            },
        ]
    }
    report = PostgresqlWriter.truncate_recorded(guest, recorded)
    assert guest.commands == [
        ["runuser", "-u", "postgres", "--", "/usr/lib/postgresql/15/bin/pg_archivecleanup",
         "-d", "/a", "000000010000000000000004"],
    ]  # fmt: skip
    assert report["clusters"][0]["removed"] == ["000000010000000000000003"]
    assert report["done"] is False  # the second cluster has no local archive
    with pytest.raises(WriterFailed, match="unexpected cluster"):
        PostgresqlWriter.truncate_recorded(
            guest, {"clusters": [{"cluster": "15; rm", "archive_dir": "/a", "redo_wal_file": "x"}]}
        )
    purged = MariadbWriter.truncate_recorded(guest, {"binlog_file": "mariadb-bin.000002"})
    assert purged["kept_from"] == "mariadb-bin.000002"


def test_a_wait_that_times_out_names_the_guest_sides_last_event() -> None:
    guest = FakeGuest(handlers={"*": lambda _argv: GuestResult(0)})
    session = GuestSession(guest, "postgresql", "t0k3n")
    session.start(b"#!/bin/sh\n", 10, [])
    guest.files[f"{session.dir}/events"] = b"started\t1\nconnected\tpid 42\n"
    with pytest.raises(
        WriterFailed, match=r"'prepared' in time \(its last event: connected pid 42\)"
    ):
        session.wait("prepared", deadline=0)
