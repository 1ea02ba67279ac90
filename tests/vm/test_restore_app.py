"""Application-aware restore of one real guest: restore mode, then the app's procedure.

A PostgreSQL guest with WAL archiving is backed up application-consistently.
Restored as a clone with the default role (``primary``: a deliberate roll-back),
the cluster must come up held (restore mode), then recover on a *new timeline*
with the marker row of the instant present and no damage (pg_amcheck). (What a
naive restore does instead - the old timeline, re-used - is shown on replicated
pairs by tests/scenarios/test_replication.py.) At most two VMs run at once.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from tests.cli import Cli, cli_for
from tests.guests import apps, testvm
from tests.vm.conftest import Guest

pytestmark = pytest.mark.vm

RESTORE_TIMEOUT = 1500


@pytest.fixture(scope="module")
def pg_point(
    libvirt_conn: libvirt.virConnect, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Guest, Cli, dict[str, Any]]]:
    name = f"ra-{secrets.token_hex(3)}"
    try:
        testvm.up(name, app="postgresql")
        guest = Guest(name, libvirt_conn)
        apps.enable_wal_archiving(guest)
        apps.switch_wal(guest, 1)
        cli = cli_for(tmp_path_factory.mktemp("restore-app") / "repo", dict(os.environ))
        cli.run("init")
        proc = cli.run("backup", "vm", name, "--consistency", "application", "--json")
        point = json.loads(proc.stdout)
        assert point["consistency"] == "application", point["consistency_reason"]
        yield guest, cli, point
    finally:
        testvm.down(name)


@pytest.fixture
def storage() -> Iterator[Path]:
    path = testvm.VM_ROOT / f"ra-store-{secrets.token_hex(3)}"
    testvm.make_public_dir(path)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _restore(cli: Cli, point: dict[str, Any], name: str, storage: Path, *extra: str) -> Any:
    proc = cli.run(
        "restore", "vm", point["id"], "--as", name, "--identity", "clone",
        "--storage", storage, "--start", "--json", *extra, timeout=RESTORE_TIMEOUT,
    )  # fmt: skip
    return json.loads(proc.stdout)


def _timeline(guest: Guest) -> int:
    out = apps.psql(guest, "SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8);")
    return int(out, 16)


def test_aware_restore_holds_postgresql_then_recovers_on_a_new_timeline(
    pg_point: tuple[Guest, Cli, dict[str, Any]], libvirt_conn: libvirt.virConnect, storage: Path
) -> None:
    _source, cli, point = pg_point
    (cluster,) = point["applications"]["postgresql"]["clusters"]
    name = f"ra-r-{secrets.token_hex(2)}"
    try:
        result = _restore(cli, point, name, storage)
        evidence = result["applications_restore"]
        mode = evidence["restore_mode"]
        assert mode["held"] == ["postgresql@.service"], mode
        assert mode["held_at_boot"] is True, mode
        assert mode["lifted"] is True, mode
        (restored,) = evidence["procedures"]["postgresql"]["clusters"]
        assert restored["timeline_at_backup"] == cluster["timeline"] == 1, restored
        assert restored["timeline"] > 1, restored
        assert restored["history_file"] == f"{restored['timeline']:08X}.history", restored
        guest = Guest(name, libvirt_conn)
        assert _timeline(guest) == restored["timeline"]
        assert apps.pg_marker(guest, cluster["marker"]["token"]), "marker row missing"
        apps.pg_amcheck(guest)
        assert not apps.guest_file_exists(guest, "/etc/surety-restore-hold")
        held_dir = "/etc/systemd/system/postgresql@.service.d"
        assert not apps.guest_file_exists(guest, f"{held_dir}/50-surety-restore-hold.conf")
    finally:
        testvm.down(name)


def test_aware_restore_without_start_is_refused_before_anything_is_written(
    pg_point: tuple[Guest, Cli, dict[str, Any]], storage: Path
) -> None:
    _source, cli, point = pg_point
    proc = cli.run(
        "restore", "vm", point["id"], "--as", "ra-never", "--storage", storage, check=False
    )
    assert proc.returncode == 2, proc.stderr
    assert "--start" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert list(storage.iterdir()) == []
    proc = cli.run(
        "restore", "vm", point["id"], "--as", "ra-never", "--storage", storage,
        "--start", "--role", "replica", check=False,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "--partner" in proc.stderr
