"""Real guests for VM tests: a Debian guest under libvirt, built once and cached.

These tests need root, libvirt, QEMU and the cached test guest (``make guest``);
they run in CI's second stage (``make test-vm``).
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli import Cli, cli_for
from tests.guests import agent, testvm

SUMMARY: list[str] = []
"""Lines a test module wants in the run's output (measurements): printed at the end."""


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if SUMMARY:
        terminalreporter.write_line("")
        for line in SUMMARY:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def libvirt_conn() -> Iterator[object]:
    testvm.ensure_libvirtd()
    testvm.build_guest()
    conn = agent.connect()
    yield conn
    conn.close()


class Guest:
    """A running test VM: its libvirt name and domain handle, plus helpers."""

    def __init__(self, name: str, conn: object) -> None:
        self.name = name
        self.dom = conn.lookupByName(name)  # type: ignore[attr-defined]

    def sh(self, script: str, timeout: float = 300) -> agent.ExecResult:
        return agent.guest_shell(self.dom, script, timeout=timeout).check()

    def freeze_status(self) -> str:
        return str(agent.agent_command(self.dom, "guest-fsfreeze-status"))


@pytest.fixture(scope="module")
def guest(libvirt_conn: object) -> Iterator[Guest]:
    name = f"st-{secrets.token_hex(3)}"
    testvm.up(name, app="none")
    try:
        yield Guest(name, libvirt_conn)
    finally:
        testvm.down(name)


@pytest.fixture
def vm_cli(tmp_path: Path) -> Cli:
    cli = cli_for(tmp_path / "repo", dict(os.environ))
    cli.run("init")
    return cli


class LabPoints:
    """Restore points of one PostgreSQL VM for lab tests (verify, items).

    PostgreSQL listens on every address (the lab's TCP probe reaches it) and
    archives its WAL to ``apps.WAL_ARCHIVE``. ``good``: application-consistent,
    taken with ``--truncate-logs after-verify`` while pgbench and a load ran;
    its ``victim`` table (ids 1..500, ``v = md5(id)``) is intact. ``damaged``:
    the next point, after the heap file of ``victim`` was overwritten with
    garbage (PostgreSQL stopped: the damage is on disk, not in shared buffers).
    The source VM ``source`` is then powered off (kept defined, removed at the
    end of the session): the lab uses the repository only; a test that needs
    the source (log truncation after verification) starts it again.
    """

    def __init__(self, cli: Cli, good: str, damaged: str, address: str, source: str) -> None:
        self.cli, self.good, self.damaged, self.address = cli, good, damaged, address
        self.source = source


@pytest.fixture(scope="session")
def lab_points(
    libvirt_conn: object, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LabPoints]:
    from tests.guests import apps  # noqa: PLC0415 - only the lab tests need it

    base = tmp_path_factory.mktemp("lab")
    cli = cli_for(base / "repo", {**os.environ, "SURETY_CATALOG": str(base / "catalog.sqlite")})
    cli.run("init")
    name = f"lab-{secrets.token_hex(3)}"
    testvm.up(name, app="postgresql", net=True)
    try:
        guest = Guest(name, libvirt_conn)
        apps.psql(guest, "alter system set listen_addresses = '*'")  # a server, not a desktop
        apps.enable_wal_archiving(guest)  # restarts PostgreSQL
        apps.psql(guest, "create table victim as select g as id, md5(g::text) as v "
                  "from generate_series(1, 500) g")  # fmt: skip
        apps.switch_wal(guest, 3)
        apps.start_pgbench(guest, seconds=600)
        good = _backup_point(cli, name, "--truncate-logs", "after-verify")
        apps.stop_pgbench(guest)
        heap = apps.psql(guest, "select pg_relation_filepath('victim')").strip()
        apps.psql(guest, "checkpoint")
        # pg_ctlcluster waits for the shutdown: no buffer can write the page back
        guest.sh("pg_ctlcluster 15 main stop -m fast && ! pg_isready -q")
        garbage = "dd if=/dev/urandom bs=8192 count=1 conv=notrunc status=none"
        guest.sh(f"cd /var/lib/postgresql/15/main && {garbage} of={heap} && sync")
        guest.sh("pg_ctlcluster 15 main start")
        apps.wait_postgresql_ready(guest)
        seen = guest.sh(
            "runuser -u postgres -- psql -XAtc 'select count(*) from victim' 2>&1 || true"
        ).stdout.decode()
        assert "invalid page" in seen, f"the damage did not land in the source: {seen}"
        damaged = _backup_point(cli, name)
        listed = json.loads(cli.run("points", "--json").stdout)
        address = listed[-1]["source"]["guest_network"][0]["ipv4"][0]
        guest.dom.destroy()  # type: ignore[attr-defined]
        yield LabPoints(cli, good, damaged, address, name)
    finally:
        testvm.down(name)


def _backup_point(cli: Cli, name: str, *options: str) -> str:
    proc = cli.run(
        "backup", "vm", name, "--consistency", "application", *options, "--json", timeout=600
    )
    return str(json.loads(proc.stdout)["id"])


def server_pids(started: Any) -> list[int]:
    """The NBD server pids of an instant VM, from ``instant-recover --json``'s disks."""
    return [
        int((Path(d["server_dir"]) / "server.pid").read_text().split()[0]) for d in started["disks"]
    ]


@pytest.fixture(scope="session")
def ad_lab(libvirt_conn: object) -> Iterator[Any]:
    """DC1 + DC2 of LAB.TEST replicating both ways (``tests.guests.ad.AdPair``; ``make
    test-ad``, marker ``ad``); removed at the end of the session."""
    from tests.guests import ad  # noqa: PLC0415 -- only the AD tests need it

    with ad.ad_pair(conn=libvirt_conn) as pair:
        SUMMARY.append(
            f"AD pair ({'from cache' if pair.from_cache else 'provisioned'}): {pair.timings}"
        )
        yield pair
