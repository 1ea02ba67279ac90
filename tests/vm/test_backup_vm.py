"""Live VM backup of a real guest: data at the instant, incrementals, faults, consistency."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from surety.hypervisor.guest_agent import AgentChannel, GuestTimeout
from surety.hypervisor.libvirt_host import connect
from tests.cli import Cli, cli_for
from tests.guests import agent
from tests.vm.conftest import Guest

pytestmark = pytest.mark.vm


def _debugfs(image: Path, request: str) -> subprocess.CompletedProcess[bytes]:
    """Read an ext4 image offline (no mount): ``debugfs -R REQUEST IMAGE``."""
    return subprocess.run(["debugfs", "-R", request, str(image)], capture_output=True, check=False)


def _packs(cli: Cli) -> list[Path]:
    return [p for p in (cli.repo / "data").rglob("*") if p.is_file() and p.name[0] != "."]


def test_restore_point_holds_the_data_of_its_instant(
    guest: Guest, vm_cli: Cli, tmp_path: Path
) -> None:
    guest.sh("head -c 8M /dev/urandom > /root/before.bin && sync")
    digest = guest.sh("sha256sum /root/before.bin").stdout.split()[0].decode()
    point = vm_cli.json("backup", "vm", guest.name, "--consistency", "filesystem")
    assert point["consistency"] == "filesystem", point
    assert "frozen" in point["consistency_reason"]
    guest.sh("head -c 1M /dev/urandom > /root/after.bin && sync")

    raw = tmp_path / "vda.img"
    vm_cli.run("restore", "image", point["id"], "--disk", "vda", "--to", raw)
    assert hashlib.sha256(_debugfs(raw, "cat /root/before.bin").stdout).hexdigest() == digest
    assert b"not found" in _debugfs(raw, "stat /root/after.bin").stderr.lower()

    qcow2 = tmp_path / "vda.qcow2"
    vm_cli.run("restore", "image", point["id"], "--format", "qcow2", "--to", qcow2)
    info = json.loads(
        subprocess.run(
            ["qemu-img", "info", "--output=json", str(qcow2)], capture_output=True, check=True
        ).stdout
    )
    assert info["format"] == "qcow2"
    assert (
        subprocess.run(["qemu-img", "compare", "-q", str(raw), str(qcow2)], check=False).returncode
        == 0
    )

    (listed,) = vm_cli.json("points")
    assert listed["kind"] == "vm"
    assert listed["source"]["uuid"] == guest.dom.UUIDString()
    assert "domain.xml" in listed["config"]
    assert listed["source"]["modes"] == {"vda": "full"}


def test_successive_incrementals_restore_exactly(guest: Guest, vm_cli: Cli, tmp_path: Path) -> None:
    """Each incremental equals a full read of the paused disk at the same instant."""
    truth = cli_for(tmp_path / "truth", vm_cli.env)
    truth.run("init")
    points, truths = [], []
    for round_ in range(3):
        guest.sh(
            f"head -c {2 + round_}M /dev/urandom > /root/inc{round_}.bin; "
            "dd if=/dev/urandom of=/root/before.bin bs=64k count=4 seek=8 "
            "conv=notrunc 2>/dev/null; sync"
        )
        guest.dom.suspend()
        try:
            point = vm_cli.json("backup", "vm", guest.name, "--consistency", "crash")
            reference = truth.json("backup", "vm", guest.name, "--consistency", "crash", "--full")
        finally:
            guest.dom.resume()
        points.append(point)
        truths.append(reference)
    modes = [p["source"]["modes"]["vda"] for p in points]
    assert modes == ["full", "incremental", "incremental"], modes
    assert points[1]["read_bytes"] < points[0]["read_bytes"] / 4
    for point, reference in zip(points, truths, strict=True):
        mine, theirs = tmp_path / f"{point['id'][:8]}.img", tmp_path / f"t{reference['id'][:8]}"
        vm_cli.run("restore", "image", point["id"], "--to", mine)
        truth.run("restore", "image", reference["id"], "--to", theirs)
        assert subprocess.run(["cmp", str(mine), str(theirs)], check=False).returncode == 0
        mine.unlink()
        theirs.unlink()
    vm_cli.run("check", "--read-data")


def test_checkpoint_removed_behind_our_back_falls_back_to_full(guest: Guest, vm_cli: Cli) -> None:
    first = vm_cli.json("backup", "vm", guest.name, "--consistency", "crash")
    checkpoint = first["source"]["checkpoint"]
    guest.dom.checkpointLookupByName(checkpoint).delete(0)
    second = vm_cli.run("backup", "vm", guest.name, "--consistency", "crash", "--json")
    assert f"libvirt checkpoint {checkpoint} no longer exists" in second.stderr
    assert json.loads(second.stdout)["source"]["modes"] == {"vda": "full"}
    third = vm_cli.json("backup", "vm", guest.name, "--consistency", "crash")
    assert third["source"]["modes"] == {"vda": "incremental"}


def test_kill_9_during_copy(guest: Guest, vm_cli: Cli, tmp_path: Path) -> None:
    proc = vm_cli.popen("backup", "vm", guest.name, "--consistency", "filesystem")
    deadline = time.monotonic() + 120
    while not _packs(vm_cli):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "backup wrote no pack"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    deadline = time.monotonic() + 15  # the guardian sees EOF at once and ends the job
    while guest.dom.jobInfo()[0] != 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert guest.dom.jobInfo()[0] == 0, "libvirt still holds the backup job"
    assert guest.freeze_status() == "thawed"
    assert vm_cli.json("points") == []
    vm_cli.run("check")
    point = vm_cli.json("backup", "vm", guest.name, "--consistency", "filesystem")
    assert point["consistency"] == "filesystem"
    vm_cli.run("restore", "image", point["id"], "--to", tmp_path / "after-kill.img")


GUARDED_FREEZE = """
import sys, time
from surety.hypervisor.guardian import Guardian
from surety.hypervisor.libvirt_host import connect
name, window = sys.argv[1], float(sys.argv[2])
domain = connect("qemu:///system").domain(name)
guardian = Guardian("qemu:///system", name, window)
guardian.freezing()
domain.fs_freeze(10)
print("frozen", flush=True)
time.sleep(600)
"""


def _frozen_script(guest: Guest, window: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", GUARDED_FREEZE, guest.name, str(window)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "frozen"
    return proc


def _wait_thawed(guest: Guest, within: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < within:
        if guest.freeze_status() == "thawed":
            return time.monotonic() - start
        time.sleep(0.1)
    raise AssertionError(f"guest still frozen after {within} s")


def test_guardian_thaws_when_the_job_is_killed_while_frozen(guest: Guest) -> None:
    proc = _frozen_script(guest, window=60)
    try:
        assert guest.freeze_status() == "frozen"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert _wait_thawed(guest, within=10) < 10
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout:
            proc.stdout.close()
        guest.dom.fsThaw()


def test_guardian_thaws_at_the_end_of_the_window_while_the_job_hangs(guest: Guest) -> None:
    proc = _frozen_script(guest, window=3)
    try:
        waited = _wait_thawed(guest, within=15)
        assert proc.poll() is None  # the job is still "hanging"; the guest is thawed anyway
        assert waited < 6
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout:
            proc.stdout.close()
        guest.dom.fsThaw()


def test_agent_channel_runs_commands_and_moves_files(guest: Guest) -> None:
    """The real twin of surety.testing.fake_guest.FakeGuest: the GuestChannel over the agent."""
    host = connect("qemu:///system")
    try:
        channel = AgentChannel(host.domain(guest.name))
        result = channel.run(["sh", "-c", "cat; echo err >&2; exit 3"], stdin=b"in")
        assert (result.exitcode, result.stdout, result.stderr) == (3, b"in", b"err\n")
        payload = bytes(range(256)) * 600  # more than one guest-file-write
        channel.write_file("/run/surety-channel-test", payload)
        assert channel.read_file("/run/surety-channel-test") == payload
        assert channel.read_file("/run/surety-no-such-file") is None
        pid = channel.spawn(["sleep", "30"])
        assert channel.poll(pid) is None
        channel.kill(pid)
        deadline = time.monotonic() + 10
        while (done := channel.poll(pid)) is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert done is not None
        assert done.exitcode == 128 + signal.SIGKILL
        with pytest.raises(GuestTimeout, match="still running"):
            channel.run(["sleep", "30"], timeout=1)
        channel.run(["rm", "-f", "/run/surety-channel-test"])
    finally:
        host.close()


def test_guest_agent_missing_fails_or_falls_back_as_asked(guest: Guest, vm_cli: Cli) -> None:
    """Runs last in this module: it stops the guest agent for good."""
    agent.stop_agent(guest.dom)
    failed = vm_cli.run("backup", "vm", guest.name, check=False)
    assert failed.returncode == 10, failed.stderr
    assert "guest agent" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert vm_cli.json("points") == []
    point = vm_cli.json("backup", "vm", guest.name, "--on-quiesce-failure", "crash")
    (listed,) = vm_cli.json("points")
    assert listed["consistency"] == "crash"
    assert "fell back to crash consistency" in listed["consistency_reason"]
    assert point["id"] == listed["id"]
