"""Instant recovery on a real guest: boot from the repository, finish under a kill, abort.

One PostgreSQL test VM is backed up once. Its restore point is started as an
instant clone (transient, on overlays over detached NBD servers): the time to
guest-ping and to PostgreSQL ready is printed. Data written in the instant VM
must survive a ``finish`` that is killed with SIGKILL mid-copy and run again,
and the finished VM must boot again with the servers gone and the repository
moved away. A second instant VM is stopped with its server killed (a power-off,
a host reboot), resumed, then aborted, and leaves nothing.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt
import pytest

from surety.core.errors import RepositoryLocked
from surety.repo.lock import hold_lock
from surety.repo.storage import LocalStorage
from tests.cli import Cli, cli_for
from tests.guests import agent, apps, testvm
from tests.processes import alive
from tests.vm.conftest import Guest, server_pids

pytestmark = pytest.mark.vm

BOOT_TIMEOUT = 900  # TCG guests; other engineers' VMs share the two cores
MARKER = "instant-marker"


@dataclass
class Source:
    name: str
    point: str
    cli: Cli
    instant_dir: Path


@pytest.fixture(scope="module")
def source(
    libvirt_conn: libvirt.virConnect, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Source]:
    tag = secrets.token_hex(3)
    name = f"iv-{tag}"
    instant_dir = testvm.VM_ROOT / f"instant-{tag}"
    try:
        testvm.up(name, app="postgresql", timeout=BOOT_TIMEOUT)
        guest = Guest(name, libvirt_conn)
        guest.sh(f"echo {MARKER} > /root/marker.txt && sync")
        apps.psql(
            guest, "CREATE TABLE instant_t (v text); INSERT INTO instant_t VALUES ('before');"
        )
        cli = cli_for(tmp_path_factory.mktemp("instant") / "repo", dict(os.environ))
        cli.env["SURETY_INSTANT_DIR"] = str(instant_dir)
        cli.run("init")
        point = cli.json("backup", "vm", name, "--consistency", "filesystem")
        testvm.down(name)  # the original is gone: only the repository holds it
        yield Source(name, point["id"], cli, instant_dir)
    finally:
        testvm.down(name)
        shutil.rmtree(instant_dir, ignore_errors=True)


@pytest.fixture
def storage() -> Iterator[Path]:
    path = testvm.VM_ROOT / f"iv-store-{secrets.token_hex(3)}"
    testvm.make_public_dir(path)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _instant(source: Source, name: str, *extra: str) -> Any:
    proc = source.cli.run(
        "instant-recover", source.point, "--as", name, "--json", *extra, timeout=BOOT_TIMEOUT
    )
    return json.loads(proc.stdout)


def _prune_may_run(repo: Path) -> None:
    """An exclusive lock can be taken (stale locks are removed on the way)."""
    deadline = time.monotonic() + 30  # a killed server may wait a moment to be reaped
    while True:
        try:
            with hold_lock(LocalStorage(repo), exclusive=True, operation="test"):
                return
        except RepositoryLocked:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def _source_of(dom: libvirt.virDomain) -> str:
    return str(dom.XMLDesc(0).split("<source file='")[1].split("'")[0])


def _kill_mid_copy(source: Source, name: str, storage: Path, dom: libvirt.virDomain) -> None:
    finish = source.cli.popen("instant-recover", "finish", name, "--storage", storage)
    deadline = time.monotonic() + 120
    while not dom.blockJobInfo("vda", 0):
        assert finish.poll() is None, finish.communicate()
        assert time.monotonic() < deadline, "the copy never started"
        time.sleep(0.05)
    time.sleep(0.5)
    finish.send_signal(signal.SIGKILL)
    finish.communicate()  # reaps it and closes its pipes


def test_instant_clone_survives_a_killed_finish_and_runs_without_the_repository(
    source: Source, libvirt_conn: libvirt.virConnect, storage: Path
) -> None:
    name = f"{source.name}-i"
    try:
        started = _instant(source, name, "--ready-command", "pg_isready -q")
        print(
            f"\ninstant recovery: running after {started['seconds_to_start']} s, guest-ping "
            f"after {started['seconds_to_ping']} s, PostgreSQL ready after "
            f"{started['seconds_to_ready']} s"
        )
        assert started["seconds_to_ping"] is not None
        assert started["seconds_to_ready"] is not None
        dom = libvirt_conn.lookupByName(name)
        assert dom.isActive()
        assert not dom.isPersistent()
        assert dom.UUIDString() == started["uuid"]
        servers = server_pids(started)
        assert all(alive(pid) for pid in servers)
        guest = Guest(name, libvirt_conn)
        assert guest.sh("cat /root/marker.txt").stdout.decode().strip() == MARKER
        guest.sh("echo written-after-boot > /root/after.txt && sync")
        apps.psql(guest, "INSERT INTO instant_t VALUES ('after');")

        _kill_mid_copy(source, name, storage, dom)
        assert dom.isActive()
        assert not dom.isPersistent()
        assert _source_of(dom) == started["disks"][0]["overlay"]
        assert guest.sh("cat /root/after.txt").stdout.decode().strip() == "written-after-boot"

        began = time.monotonic()
        done = source.cli.run("instant-recover", "finish", name, "--json", timeout=BOOT_TIMEOUT)
        finished = json.loads(done.stdout)
        print(
            f"finish (rerun after SIGKILL): {time.monotonic() - began:.1f} s, "
            f"{finished['copied'] / 2**20:.0f} MiB copied for a "
            f"{finished['disks'][0]['size'] / 2**30:.0f} GiB disk"
        )
        copy = storage / f"{name}-vda.qcow2"
        assert [d["copy"] for d in finished["disks"]] == [str(copy)]
        assert dom.isActive()
        assert dom.isPersistent()
        assert _source_of(dom) == str(copy)
        assert not any(alive(pid) for pid in servers)
        assert not (source.instant_dir / name).exists()
        assert not list((source.cli.repo / "locks").iterdir())

        moved = source.cli.repo.with_name("repo.away")
        source.cli.repo.rename(moved)  # the finished VM must not need it
        try:
            dom.destroy()
            dom.create()
            agent.wait_for_agent(dom, timeout=BOOT_TIMEOUT)
            assert guest.sh("cat /root/after.txt").stdout.decode().strip() == "written-after-boot"
            apps.wait_postgresql_ready(guest, timeout=BOOT_TIMEOUT)
            rows = apps.psql(guest, "SELECT v FROM instant_t ORDER BY v;")
            assert rows.split() == ["after", "before"]
        finally:
            moved.rename(source.cli.repo)
    finally:
        testvm.down(name)


def test_a_stopped_instant_vm_resumes_and_abort_discards_it(
    source: Source, libvirt_conn: libvirt.virConnect
) -> None:
    name = f"{source.name}-a"
    try:
        started = _instant(source, name, "--no-wait")
        assert started["seconds_to_ping"] is None
        servers = server_pids(started)
        listed = source.cli.json("instant-recover", "list")
        assert [(v["name"], v["running"], v["servers_alive"]) for v in listed] == [(name, True, 1)]
        refused = source.cli.run("instant-recover", source.point, "--as", name, check=False)
        assert refused.returncode == 11, refused.stderr
        assert "exists already" in refused.stderr

        # the transient VM ends (power-off) and its server with it (host reboot): resume
        uuid = libvirt_conn.lookupByName(name).UUIDString()
        libvirt_conn.lookupByName(name).destroy()
        os.kill(servers[0], signal.SIGKILL)
        listed = source.cli.json("instant-recover", "list")
        assert [(v["running"], v["servers_alive"]) for v in listed] == [(False, 0)]
        source.cli.run("instant-recover", "resume", name, "--no-wait")
        dom = libvirt_conn.lookupByName(name)
        assert dom.isActive()
        assert not dom.isPersistent()
        assert dom.UUIDString() == uuid
        servers = server_pids(started)
        assert all(alive(pid) for pid in servers)

        source.cli.run("instant-recover", "abort", name)
        assert testvm.lookup(libvirt_conn, name) is None
        assert not any(alive(pid) for pid in servers)
        assert not (source.instant_dir / name).exists()
        _prune_may_run(source.cli.repo)  # the killed server's lock is stale, the others gone
        gone = source.cli.run("instant-recover", "abort", name, check=False)
        assert gone.returncode == 2
        assert "no instant VM" in gone.stderr
        assert "Traceback" not in gone.stderr
    finally:
        testvm.down(name)
