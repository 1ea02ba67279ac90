"""Application-aware backup of real guests: PostgreSQL, MariaDB and script writers.

Each class boots its own guest (class scope, so no more than two test VMs
run at once: the source and, for a restore test, the restored copy). A
restore test boots the restored disk as a fresh VM and asks the database
itself: it starts, its own checker finds no damage, the marker row of the
restore point is there, and a single-client, commit-ordered load holds
exactly the ids 1..k with nothing written after the backup returned.
"""

from __future__ import annotations

import json
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli import Cli
from tests.guests import apps, testvm
from tests.vm.conftest import Guest

pytestmark = pytest.mark.vm

WINDOW = 5
"""--freeze-window of the hanging-writer tests (seconds)."""
FALLBACK_WINDOW = 10
"""--freeze-window when the file-system freeze must still succeed after a writer hung
through its share: the default window, so the share left to fs-freeze (25 %) stays
above a guest-agent round trip of a TCG guest on a loaded host."""
HANG_BUDGET = FALLBACK_WINDOW + 60
"""A backup with a writer that hangs must return within this many seconds."""


# --------------------------------------------------------------------------
# helpers


def _backup(cli: Cli, guest: Guest, *options: str, timeout: float = 300) -> dict[str, Any]:
    """``backup vm GUEST --consistency application OPTIONS --json``; the point."""
    proc = cli.run(
        "backup", "vm", guest.name, "--consistency", "application", *options, "--json",
        timeout=timeout,
    )  # fmt: skip
    return dict(json.loads(proc.stdout))


def _failed_backup(cli: Cli, guest: Guest, *options: str) -> tuple[int, str, str]:
    """A backup expected to fail: (exit code, last stderr line, all of stderr)."""
    proc = cli.run(
        "backup", "vm", guest.name, "--consistency", "application", *options,
        check=False, timeout=HANG_BUDGET + 60,
    )  # fmt: skip
    lines = proc.stderr.strip().splitlines()
    return proc.returncode, lines[-1] if lines else "", proc.stderr


def _packs(cli: Cli) -> list[Path]:
    return [p for p in (cli.repo / "data").rglob("*") if p.is_file() and p.name[0] != "."]


def _kill_after_snapshot(cli: Cli, guest: Guest, *options: str) -> None:
    """Start an application backup, SIGKILL it once it stores data, wait for the job end.

    A pack file exists only once the snapshot is taken and copying runs.
    """
    proc = cli.popen("backup", "vm", guest.name, "--consistency", "application", *options)
    deadline = time.monotonic() + 180
    while not _packs(cli):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "backup wrote no pack"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    deadline = time.monotonic() + 15  # the guardian ends the libvirt job
    while guest.dom.jobInfo()[0] != 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert guest.dom.jobInfo()[0] == 0, "libvirt still holds the backup job"
    assert guest.freeze_status() == "thawed"
    assert cli.json("points") == []


def _restore_raw(cli: Cli, point: dict[str, Any], tmp_path: Path) -> Path:
    raw = tmp_path / "vda.img"
    cli.run("restore", "image", point["id"], "--to", raw)
    return raw


def _assert_commit_prefix(ids: list[int], after_backup: int) -> None:
    """Restored load ids are exactly 1..k (k >= 1), all below the post-backup row."""
    assert ids, "the restored load table is empty"
    missing = sorted(set(range(1, ids[-1] + 1)) - set(ids))
    assert ids == list(range(1, len(ids) + 1)), f"holes in the restored load: missing {missing}"
    assert ids[-1] < after_backup, (
        f"row {after_backup}, inserted after the backup returned, or a later one is in the "
        f"restore point (restored ids 1..{ids[-1]})"
    )


def _debugfs(image: Path, request: str) -> subprocess.CompletedProcess[bytes]:
    """Read an ext4 image offline (no mount): ``debugfs -R REQUEST IMAGE``."""
    return subprocess.run(["debugfs", "-R", request, str(image)], capture_output=True, check=False)


def _in_image(image: Path, path: str) -> bool:
    return b"not found" not in _debugfs(image, f"stat {path}").stderr.lower()


@pytest.fixture(scope="class")
def pg_guest(libvirt_conn: object) -> Iterator[Guest]:
    """A guest running PostgreSQL 15 that archives its WAL to apps.WAL_ARCHIVE."""
    name = f"wpg-{secrets.token_hex(3)}"
    try:
        testvm.up(name, app="postgresql")
        guest = Guest(name, libvirt_conn)
        apps.enable_wal_archiving(guest)
        yield guest
    finally:
        testvm.down(name)


@pytest.fixture(scope="class")
def mariadb_guest(libvirt_conn: object) -> Iterator[Guest]:
    """A guest running MariaDB 10.11 with the binary log on."""
    name = f"wmy-{secrets.token_hex(3)}"
    try:
        testvm.up(name, app="mariadb")
        guest = Guest(name, libvirt_conn)
        apps.enable_binlog(guest)
        yield guest
    finally:
        testvm.down(name)


# --------------------------------------------------------------------------
# PostgreSQL


class TestPostgresql:
    def test_point_under_load_restores_to_a_consistent_cluster(
        self, pg_guest: Guest, vm_cli: Cli, tmp_path: Path
    ) -> None:
        apps.start_pgbench(pg_guest, seconds=600)
        apps.start_pg_load(pg_guest)
        try:
            point = _backup(vm_cli, pg_guest)
            after_backup = apps.pg_insert_load_row(pg_guest)
        finally:
            apps.stop_pg_load(pg_guest)
            apps.stop_pgbench(pg_guest)
        assert point["consistency"] == "application", point["consistency_reason"]
        postgresql = point["applications"]["postgresql"]
        assert postgresql["state"] == "thawed", postgresql
        (cluster,) = postgresql["clusters"]
        assert (cluster["cluster"], cluster["port"], cluster["role"]) == (
            "15/main",
            5432,
            "primary",
        )
        assert apps.WAL_SEGMENT_RE.fullmatch(cluster["redo_wal_file"]), cluster
        assert "START WAL LOCATION" in cluster["backup_label"], cluster
        token = cluster["marker"]["token"]
        (listed,) = vm_cli.json("points")
        assert listed["consistency"] == "application"
        assert listed["applications"]["postgresql"]["clusters"][0]["marker"]["token"] == token

        raw = _restore_raw(vm_cli, point, tmp_path)
        with apps.restored_guest(f"{pg_guest.name}-r", raw, app="postgresql") as restored:
            apps.pg_amcheck(restored)
            assert apps.pg_marker(restored, token), f"marker {token} missing from the restore"
            ids = apps.pg_load_ids(restored)
        _assert_commit_prefix(ids, after_backup)

    def test_after_commit_truncates_the_archive_up_to_the_redo_segment(
        self, pg_guest: Guest, vm_cli: Cli
    ) -> None:
        apps.switch_wal(pg_guest, 3)
        before = apps.wal_segments(pg_guest)
        point = _backup(vm_cli, pg_guest, "--truncate-logs", "after-commit")
        (cluster,) = point["applications"]["postgresql"]["clusters"]
        redo = cluster["redo_wal_file"]
        assert cluster["archive_dir"] == apps.WAL_ARCHIVE, cluster
        assert point["log_truncation"]["postgresql"]["done"] is True, point["log_truncation"]
        after = apps.wal_segments(pg_guest)
        assert [s for s in before if s < redo], f"nothing older than {redo} to truncate: {before}"
        assert [s for s in after if s < redo] == [], f"left before {redo}: {after}"
        assert {s for s in before if s >= redo} <= set(after), (before, after)
        assert redo in after, f"the redo segment {redo} itself is gone: {after}"

    def test_truncate_logs_never_keeps_the_archive(self, pg_guest: Guest, vm_cli: Cli) -> None:
        apps.switch_wal(pg_guest, 2)
        before = apps.wal_archive(pg_guest)
        point = _backup(vm_cli, pg_guest, "--truncate-logs", "never")
        assert point["consistency"] == "application", point["consistency_reason"]
        assert not point.get("log_truncation"), point["log_truncation"]
        after = apps.wal_archive(pg_guest)
        assert set(before) <= set(after), sorted(set(before) - set(after))

    def test_killed_backup_truncates_nothing(self, pg_guest: Guest, vm_cli: Cli) -> None:
        apps.write_random_file(pg_guest, "/root/filler.bin", 256)  # copying takes a while
        apps.switch_wal(pg_guest, 2)
        pg_guest.sh("rm -f /run/after-commit-ran")
        before = apps.wal_archive(pg_guest)
        _kill_after_snapshot(
            vm_cli, pg_guest,
            "--truncate-logs", "after-commit", "--after-commit", "date > /run/after-commit-ran",
        )  # fmt: skip
        after = apps.wal_archive(pg_guest)
        assert set(before) <= set(after), f"truncated: {sorted(set(before) - set(after))}"
        assert not apps.guest_file_exists(pg_guest, "/run/after-commit-ran")


# --------------------------------------------------------------------------
# MariaDB


class TestMariadb:
    def test_point_under_load_restores_to_consistent_tables(
        self, mariadb_guest: Guest, vm_cli: Cli, tmp_path: Path
    ) -> None:
        apps.start_mariadb_load(mariadb_guest)
        try:
            point = _backup(vm_cli, mariadb_guest)
            after_backup = apps.mariadb_insert_load_row(mariadb_guest)
        finally:
            apps.stop_mariadb_load(mariadb_guest)
        assert point["consistency"] == "application", point["consistency_reason"]
        mariadb = point["applications"]["mariadb"]
        assert mariadb["state"] == "thawed", mariadb
        assert (mariadb["server_id"], mariadb["gtid_domain_id"]) == (apps.MARIADB_SERVER_ID, 0)
        assert mariadb["binlog_file"] in apps.binlogs(mariadb_guest), mariadb
        assert mariadb["gtid_binlog_pos"].startswith(f"0-{apps.MARIADB_SERVER_ID}-"), mariadb
        token = mariadb["marker"]["token"]
        (listed,) = vm_cli.json("points")
        assert listed["applications"]["mariadb"]["marker"]["token"] == token

        raw = _restore_raw(vm_cli, point, tmp_path)
        with apps.restored_guest(f"{mariadb_guest.name}-r", raw, app="mariadb") as restored:
            report = apps.mysqlcheck(restored)
            assert apps.mariadb_marker(restored, token), f"marker {token} missing from the restore"
            ids = apps.mariadb_load_ids(restored)
        damaged = [line for line in report.splitlines() if not line.endswith(" OK")]
        assert damaged == [], report
        _assert_commit_prefix(ids, after_backup)

    def test_after_commit_purges_binlogs_before_the_points_binlog(
        self, mariadb_guest: Guest, vm_cli: Cli
    ) -> None:
        before = apps.flush_binlogs(mariadb_guest, 3)
        point = _backup(vm_cli, mariadb_guest, "--truncate-logs", "after-commit")
        binlog_file = point["applications"]["mariadb"]["binlog_file"]
        assert point["log_truncation"]["mariadb"]["done"] is True, point["log_truncation"]
        assert [b for b in before if b < binlog_file], f"nothing before {binlog_file}: {before}"
        after = apps.binlogs(mariadb_guest)
        assert after[0] == binlog_file, f"point at {binlog_file}, binlogs now {after}"

    def test_truncate_logs_never_keeps_binlogs(self, mariadb_guest: Guest, vm_cli: Cli) -> None:
        before = apps.flush_binlogs(mariadb_guest, 2)
        point = _backup(vm_cli, mariadb_guest, "--truncate-logs", "never")
        assert not point.get("log_truncation"), point["log_truncation"]
        after = apps.binlogs(mariadb_guest)
        assert set(before) <= set(after), f"purged: {sorted(set(before) - set(after))}"

    def test_killed_backup_purges_nothing(self, mariadb_guest: Guest, vm_cli: Cli) -> None:
        apps.write_random_file(mariadb_guest, "/root/filler.bin", 256)
        before = apps.flush_binlogs(mariadb_guest, 2)
        _kill_after_snapshot(vm_cli, mariadb_guest, "--truncate-logs", "after-commit")
        after = apps.binlogs(mariadb_guest)
        assert set(before) <= set(after), f"purged: {sorted(set(before) - set(after))}"

    def test_writer_that_cannot_quiesce_fails_and_leaves_the_guest_running(
        self, mariadb_guest: Guest, vm_cli: Cli
    ) -> None:
        with apps.flush_tables_blocked(mariadb_guest):
            start = time.monotonic()
            code, message, stderr = _failed_backup(
                vm_cli, mariadb_guest, "--freeze-window", str(WINDOW),
                "--on-quiesce-failure", "fail",
            )  # fmt: skip
            took = time.monotonic() - start
            assert mariadb_guest.freeze_status() == "thawed"
            apps.mariadb_insert_load_row(mariadb_guest, timeout=10)  # writes flow again
        assert code == 10, stderr
        assert "mariadb" in message.lower(), stderr
        assert "Traceback" not in stderr
        assert took < HANG_BUDGET, f"the backup took {took:.0f} s"
        assert vm_cli.json("points") == []

    def test_writer_that_cannot_quiesce_falls_back_to_filesystem(
        self, mariadb_guest: Guest, vm_cli: Cli
    ) -> None:
        with apps.flush_tables_blocked(mariadb_guest):
            start = time.monotonic()
            point = _backup(
                vm_cli, mariadb_guest, "--freeze-window", str(FALLBACK_WINDOW),
                "--on-quiesce-failure", "filesystem", timeout=HANG_BUDGET + 60,
            )  # fmt: skip
            took = time.monotonic() - start
            apps.mariadb_insert_load_row(mariadb_guest, timeout=10)
        assert point["consistency"] == "filesystem", point["consistency_reason"]
        mariadb = point["applications"]["mariadb"]
        assert mariadb["state"] == "failed", mariadb
        assert mariadb["warnings"], mariadb
        assert took < HANG_BUDGET, f"the backup took {took:.0f} s"
        (listed,) = vm_cli.json("points")
        assert (listed["id"], listed["consistency"]) == (point["id"], "filesystem")


# --------------------------------------------------------------------------
# script writer (on the plain guest of conftest: no database)


class TestScriptWriter:
    def test_failing_pre_freeze_script_fails_the_backup(self, guest: Guest, vm_cli: Cli) -> None:
        guest.sh("rm -f /run/after-commit-ran")
        code, message, stderr = _failed_backup(
            vm_cli,
            guest,
            "--pre-freeze",
            "exit 3",
            "--after-commit",
            "date > /run/after-commit-ran",
        )
        assert code == 10, stderr
        assert "pre-freeze" in message or "exit 3" in message, stderr
        assert "Traceback" not in stderr
        assert vm_cli.json("points") == []
        assert guest.freeze_status() == "thawed"
        assert not apps.guest_file_exists(guest, "/run/after-commit-ran")

    def test_ignored_script_failure_commits_with_a_warning(self, guest: Guest, vm_cli: Cli) -> None:
        point = _backup(vm_cli, guest, "--pre-freeze", "exit 3", "--script-failure", "ignore")
        script = point["applications"]["script"]
        assert script["warnings"], script
        (listed,) = vm_cli.json("points")
        assert listed["id"] == point["id"]
        assert listed["applications"]["script"]["warnings"] == script["warnings"]

    def test_scripts_run_before_freeze_after_thaw_and_after_commit(
        self, guest: Guest, vm_cli: Cli, tmp_path: Path
    ) -> None:
        guest.sh("rm -f /root/pre-freeze-ran /root/post-thaw-ran /run/after-commit-ran; sync")
        point = _backup(
            vm_cli, guest,
            "--pre-freeze", "touch /root/pre-freeze-ran",
            "--post-thaw", "touch /root/post-thaw-ran",
            "--after-commit", "date > /run/after-commit-ran",
        )  # fmt: skip
        assert point["consistency"] == "application", point["consistency_reason"]
        assert point["applications"]["script"]["state"] == "thawed", point["applications"]
        assert apps.guest_file_exists(guest, "/root/post-thaw-ran")
        apps.wait_in_guest(guest, "test -s /run/after-commit-ran", "the after-commit script")
        raw = _restore_raw(vm_cli, point, tmp_path)
        assert _in_image(raw, "/root/pre-freeze-ran"), "pre-freeze ran after the snapshot"
        assert not _in_image(raw, "/root/post-thaw-ran"), "post-thaw ran before the snapshot"
