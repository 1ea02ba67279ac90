"""Backups of a shut-off real guest: no boot, incrementals across starts, the shut-off reason."""

from __future__ import annotations

import contextlib
import hashlib
import subprocess
import time
from pathlib import Path

import pytest

from surety.backup.shutoff import CLEAN_SHUTDOWN
from tests.cli import Cli
from tests.guests import agent, testvm
from tests.vm.conftest import Guest

pytestmark = pytest.mark.vm

SHUTOFF = 5  # libvirt.VIR_DOMAIN_SHUTOFF


def _shut_down_cleanly(guest: Guest) -> None:
    # the agent goes away with the guest before it answers
    with contextlib.suppress(Exception):
        agent.agent_command(guest.dom, "guest-shutdown")
    _wait_off(guest)


def _wait_off(guest: Guest, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while guest.dom.state()[0] != SHUTOFF:  # type: ignore[attr-defined]
        assert time.monotonic() < deadline, "the guest did not stop"
        time.sleep(1)


def _console(guest: Guest) -> bytes:
    return (testvm.VM_ROOT / guest.name / "console.log").read_bytes()


def _debugfs_cat(image: Path, path: str) -> bytes:
    return subprocess.run(
        ["debugfs", "-R", f"cat {path}", str(image)], capture_output=True, check=True
    ).stdout


def test_a_shut_off_guest_is_backed_up_without_booting_and_keeps_its_chain(
    guest: Guest, vm_cli: Cli, tmp_path: Path
) -> None:
    guest.sh("echo one > /root/one.txt && sync")
    _shut_down_cleanly(guest)
    assert b"Linux version" in _console(guest)  # what a boot writes on the serial console

    first = vm_cli.json("backup", "vm", guest.name, "--consistency", "application")
    assert (first["consistency"], first["consistency_reason"]) == ("filesystem", CLEAN_SHUTDOWN)
    assert first["source"]["power"] == "shut off"
    assert first["source"]["modes"] == {"vda": "full"}
    assert guest.dom.state()[0] == SHUTOFF  # type: ignore[attr-defined]  # not left paused
    # libvirt starts a new console log at each start: the paused QEMU's is empty,
    # the guest's kernel never ran
    assert b"Linux version" not in _console(guest)

    # started, changed and shut down cleanly between runs: the chain goes on
    guest.dom.create()  # type: ignore[attr-defined]
    agent.wait_for_agent(guest.dom, timeout=180)
    guest.sh("head -c 1M /dev/urandom > /root/two.bin && sync")
    digest = guest.sh("sha256sum /root/two.bin").stdout.split()[0].decode()
    _shut_down_cleanly(guest)
    second = vm_cli.json("backup", "vm", guest.name)
    assert second["source"]["modes"] == {"vda": "incremental"}, second
    assert second["consistency"] == "filesystem"
    # the changed blocks (1 MiB of data + metadata), not the disk the full read
    assert 0 < second["read_bytes"] < first["read_bytes"] // 10, (first, second)

    raw = tmp_path / "vda.img"
    vm_cli.run("restore", "image", second["id"], "--disk", "vda", "--to", raw)
    assert hashlib.sha256(_debugfs_cat(raw, "/root/two.bin")).hexdigest() == digest
    assert _debugfs_cat(raw, "/root/one.txt") == b"one\n"

    # powered off from the host: crash-consistent, and said why
    guest.dom.create()  # type: ignore[attr-defined]
    agent.wait_for_agent(guest.dom, timeout=180)
    guest.dom.destroy()  # type: ignore[attr-defined]
    third = vm_cli.json("backup", "vm", guest.name)
    assert third["consistency"] == "crash"
    assert "libvirt: destroyed" in third["consistency_reason"]
    assert third["source"]["modes"] == {"vda": "incremental"}
    assert guest.dom.state()[0] == SHUTOFF  # type: ignore[attr-defined]
