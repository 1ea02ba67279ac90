"""``restore_vm`` end to end on an in-memory repository and the fake hypervisor.

Plan, write, switch over, hooks and start - the whole use case, with the
host's side observed through ``FakeHypervisor.events``: a clone beside the
original, an in-place restore over the running original, and a start that
fails after the define.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path

import pytest

from surety.core.errors import TargetError
from surety.core.progress import NullProgress
from surety.hypervisor.port import HypervisorDomain
from surety.repo.manifest import DiskRecord, Manifest
from surety.repo.repository import Repository
from surety.restore.vm import RestoredVm, VmRestoreOptions, restore_vm
from surety.testing.fake_hypervisor import FakeHypervisor
from tests.unit.backup.test_pipeline import CHUNK, MemoryDisk, _backup
from tests.unit.hypervisor.test_restore_xml import DOMAIN, NETWORK

UUID = "d97958ed-ccc5-4a61-903d-aef83abeb5a0"  # the original's, in DOMAIN
DATA = random.Random(7).randbytes(3 * CHUNK) + bytes(CHUNK)  # the last chunk is zeros


class Recorder:
    """A restore hook that writes down when it ran and what it saw."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, bool]] = []

    def before_first_boot(self, vm: RestoredVm, domain: HypervisorDomain) -> None:
        self.calls.append(("before_first_boot", vm.uuid, domain.is_running()))

    def after_boot(self, vm: RestoredVm, domain: HypervisorDomain) -> None:
        self.calls.append(("after_boot", vm.uuid, domain.is_running()))


def _point(repo: Repository) -> str:
    image = _backup(repo, MemoryDisk(DATA))
    now = datetime.now(UTC)
    return repo.commit(
        Manifest(
            name="rv-probe",
            kind="vm",
            started=now,
            finished=now,
            host="h",
            disks=(DiskRecord("vda", len(DATA), repo.put_image(image), "/nowhere/vda.qcow2"),),
            consistency="filesystem",
            config={"domain.xml": DOMAIN, "network/rv-net1.xml": NETWORK},
            source={"uuid": UUID},
        )
    )


def _host(original_running: bool) -> FakeHypervisor:
    host = FakeHypervisor()
    host.add_network(NETWORK)
    if original_running:
        host.add_domain(DOMAIN)
    return host


def test_a_clone_is_defined_beside_the_original_and_started(
    repo: Repository, tmp_path: Path
) -> None:
    point, host, hook = _point(repo), _host(original_running=True), Recorder()
    options = VmRestoreOptions(point, name="rv-copy", storage=tmp_path, format="raw", start=True)
    result = restore_vm(repo, options, NullProgress(), [hook], host=host)
    assert host.events == ["define rv-copy", "start rv-copy"]
    clone = host.domain("rv-copy")
    assert clone.uuid() == result.vm.uuid != UUID
    assert clone.is_persistent()
    assert host.domain("rv-probe").is_running()  # the original is untouched
    assert (tmp_path / "rv-copy-vda.img").read_bytes() == DATA
    assert hook.calls == [
        ("before_first_boot", result.vm.uuid, False),
        ("after_boot", result.vm.uuid, True),
    ]
    assert result.started
    assert result.replaced == ()


def test_in_place_replaces_the_running_original(repo: Repository, tmp_path: Path) -> None:
    point, host = _point(repo), _host(original_running=True)
    options = VmRestoreOptions(point, storage=tmp_path, format="raw", force=True)
    result = restore_vm(repo, options, NullProgress(), host=host)
    assert host.events == ["destroy rv-probe", "undefine rv-probe", "define rv-probe"]
    restored = host.domain("rv-probe")
    assert (restored.uuid(), restored.is_running()) == (UUID, False)  # not started: no --start
    assert str(tmp_path / "rv-probe-vda.img") in restored.xml(inactive=True)
    assert [d.name for d in result.replaced] == ["rv-probe"]
    assert not result.started


def test_a_failed_start_leaves_the_restored_vm_defined(repo: Repository, tmp_path: Path) -> None:
    point, host = _point(repo), _host(original_running=False)
    host.inject("start", TargetError("rv-probe: starting: no emulator"))
    options = VmRestoreOptions(point, storage=tmp_path, format="raw", start=True)
    with pytest.raises(TargetError, match="is restored and defined, but did not start"):
        restore_vm(repo, options, NullProgress(), host=host)
    assert host.events == ["define rv-probe"]
    assert host.domain("rv-probe").is_persistent()
    assert (tmp_path / "rv-probe-vda.img").read_bytes() == DATA


def test_a_refused_restore_changes_nothing_on_the_host(repo: Repository, tmp_path: Path) -> None:
    point, host = _point(repo), _host(original_running=True)
    options = VmRestoreOptions(point, storage=tmp_path, format="raw")  # in place, no --force
    with pytest.raises(TargetError):
        restore_vm(repo, options, NullProgress(), host=host)
    assert host.events == []
    assert list(tmp_path.iterdir()) == []
