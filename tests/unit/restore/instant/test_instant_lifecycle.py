"""Instant recovery's state machine on the fake hypervisor: finish, a rerun, abort, resume.

The instant VM is a transient ``FakeDomain`` running on its overlay, with the
record ``start_instant`` would have left (phase ``running``); no NBD server
runs (finish and abort stop none, resume finds none to restart when every disk
is on its copy). What is asserted is the invariant of DESIGN.md: at every
step the guest's writes are in the file the VM uses - the overlay until the
pivot, the copy after it - and there is the running instant VM or the
finished, defined one.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import NoReturn

import pytest

from surety.core.errors import TargetError, UsageError
from surety.core.progress import NullProgress
from surety.restore.instant import (
    FinishOptions,
    InstantDisk,
    InstantVm,
    ResumeOptions,
    abort_instant,
    finish_instant,
    instant_status,
    resume_instant,
)
from surety.restore.instant.state import FINISHING, RUNNING, load_instant_vm, save_instant_vm
from surety.testing.fake_hypervisor import FakeHypervisor

UUID = "5b0e9c2a-3f1d-4c8e-9a7b-2d4f6e8a0c11"
NAME = "iv1"


class Instant:
    """One instant VM: its record and overlay under ``root``, its domain on ``host``."""

    def __init__(self, tmp_path: Path) -> None:
        self.root = tmp_path / "instant"
        self.storage = tmp_path / "production"
        self.storage.mkdir()
        vm_dir = self.root / NAME
        (vm_dir / "serve-vda").mkdir(parents=True)
        self.overlay = vm_dir / "vda.qcow2"
        self.overlay.write_bytes(b"the guest's writes")
        self.copy = str(self.storage / f"{NAME}-vda.qcow2")
        self.record = InstantVm(
            NAME,
            str(vm_dir),
            "ab" * 32,
            "db01",
            str(tmp_path / "repo"),
            "clone",
            RUNNING,
            time.time(),
            uuid=UUID,
            disks=(
                InstantDisk("vda", 1 << 30, 1 << 20, str(self.overlay), str(vm_dir / "serve-vda")),
            ),
        )
        save_instant_vm(self.record)
        self.live_xml = (
            f"<domain type='kvm'><name>{NAME}</name><uuid>{UUID}</uuid>"
            "<memory unit='MiB'>1024</memory><os><type>hvm</type></os><devices>"
            "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
            f"<source file='{self.overlay}'/>"
            "<backingStore type='network'><format type='raw'/>"
            f"<source protocol='nbd'><host transport='unix' socket='{vm_dir}/serve-vda/nbd.sock'/>"
            "</source></backingStore>"
            "<target dev='vda' bus='virtio'/></disk></devices></domain>"
        )
        (vm_dir / "domain.xml").write_text(self.live_xml)  # what start saves for resume
        self.host = FakeHypervisor()
        self.host.copy_step = self.host.disk_bytes // 2  # ready on the second poll
        self.domain = self.host.create_transient(self.live_xml)
        self.host.events.clear()

    def finish(self) -> int:
        options = FinishOptions(NAME, self.storage, self.root)
        return finish_instant(options, NullProgress(), host=self.host).copied

    def state(self) -> InstantVm | None:
        return load_instant_vm(self.root, NAME)


def _source(xml: str) -> str:
    source = ET.fromstring(xml).find("./devices/disk/source")
    assert source is not None
    return str(source.get("file"))


@pytest.fixture
def instant(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Instant:
    monkeypatch.setattr("surety.restore.instant.finish.POLL", 0)
    return Instant(tmp_path)


def test_finish_copies_pivots_defines_then_cleans_up(instant: Instant) -> None:
    assert instant.finish() == instant.host.disk_bytes
    assert instant.host.events == [f"block copy {NAME} vda", f"pivot {NAME} vda", f"define {NAME}"]
    domain = instant.host.domain(NAME)
    assert (domain.is_running(), domain.is_persistent(), domain.uuid()) == (True, True, UUID)
    assert _source(domain.xml()) == instant.copy  # the running VM writes to the copy
    defined = domain.xml(inactive=True)
    assert _source(defined) == instant.copy  # and starts from it next time
    assert "nbd" not in defined  # nothing persistent points at the repository
    assert not Path(instant.record.directory).exists()  # record, overlay, servers: gone
    assert instant_status(instant.root, host=instant.host) == []


def test_a_finish_that_fails_at_the_pivot_leaves_the_vm_on_its_overlay_and_a_rerun_ends_it(
    instant: Instant,
) -> None:
    instant.host.inject("block_job_abort", TargetError("switching to the copy of vda: boom"))
    with pytest.raises(TargetError, match="boom"):
        instant.finish()
    domain = instant.host.domain(NAME)
    assert (domain.is_running(), domain.is_persistent()) == (True, False)
    assert _source(domain.xml()) == str(instant.overlay)  # writes still go to the overlay
    record = instant.state()
    assert record is not None
    assert record.phase == FINISHING
    assert record.disks[0].copy == instant.copy
    assert record.disks[0].on_copy  # ready and mirrored: a resume would start on the copy

    instant.host.events.clear()
    instant.finish()  # the rerun: the stale copy job is aborted, a new one pivots
    assert instant.host.events == [
        f"abort block job {NAME} vda",
        f"block copy {NAME} vda",
        f"pivot {NAME} vda",
        f"define {NAME}",
    ]
    assert _source(domain.xml()) == instant.copy
    assert domain.is_persistent()


def test_finish_refuses_a_vm_that_does_not_run_and_changes_nothing(instant: Instant) -> None:
    instant.domain.power_off()  # transient: gone with its QEMU; the overlay keeps the writes
    with pytest.raises(TargetError, match=r"is not running .*resume"):
        instant.finish()
    assert instant.state() == instant.record
    assert instant.overlay.read_bytes() == b"the guest's writes"


def test_a_vm_stopped_after_its_copy_was_ready_resumes_on_the_copy_and_finishes(
    instant: Instant,
) -> None:
    instant.host.inject("block_job_abort", TargetError("switching to the copy of vda: boom"))
    with pytest.raises(TargetError, match="boom"):
        instant.finish()  # the copy was ready (on_copy recorded), the pivot failed
    instant.domain.power_off()  # then the guest stopped: its newest writes are on the copy too
    instant.host.events.clear()

    def no_repository(location: str) -> NoReturn:
        raise AssertionError("no server needs restarting: the disk is on its copy")

    options = ResumeOptions(NAME, instant.root, wait=False)
    resume_instant(options, no_repository, NullProgress(), host=instant.host)
    domain = instant.host.domain(NAME)
    assert (domain.uuid(), domain.is_persistent()) == (UUID, False)  # same identity, transient
    assert _source(domain.xml()) == instant.copy
    instant.finish()  # the disk is on its copy already: kept, no new copy
    assert instant.host.events == [f"create {NAME}", f"define {NAME}"]
    assert domain.is_persistent()
    assert _source(domain.xml(inactive=True)) == instant.copy


def test_abort_destroys_the_vm_and_deletes_everything(instant: Instant) -> None:
    abort_instant(NAME, instant.root, host=instant.host)
    assert instant.host.events == [f"destroy {NAME}"]
    assert instant.host.find_domain(name=NAME) is None
    assert not Path(instant.record.directory).exists()
    with pytest.raises(UsageError, match="no instant VM named"):
        abort_instant(NAME, instant.root, host=instant.host)


def test_abort_refuses_a_vm_that_a_killed_finish_already_defined(instant: Instant) -> None:
    instant.host.define_domain(instant.domain.xml())  # finish was killed right after its define
    instant.host.events.clear()
    with pytest.raises(UsageError, match="is finished"):
        abort_instant(NAME, instant.root, host=instant.host)
    assert instant.host.events == []
    assert instant.domain.is_running()
    instant.finish()  # the rerun only cleans up
    assert instant.host.events == []
    assert not Path(instant.record.directory).exists()


def test_status_reads_the_vm_from_the_host(instant: Instant) -> None:
    (status,) = instant_status(instant.root, host=instant.host)
    assert (status.vm.name, status.running, status.servers_alive) == (NAME, True, 0)
    instant.domain.power_off()
    (status,) = instant_status(instant.root, host=instant.host)
    assert not status.running


def test_a_vm_of_that_name_with_another_uuid_is_not_ours(instant: Instant) -> None:
    instant.domain.power_off()
    instant.host.create_transient(instant.live_xml.replace(UUID, "0" * 8 + UUID[8:]))
    instant.host.events.clear()
    with pytest.raises(TargetError, match="is not running"):
        instant.finish()
    abort_instant(NAME, instant.root, host=instant.host)  # discards the record only
    assert not Path(instant.record.directory).exists()
    assert instant.host.events == []  # the stranger runs on
    assert instant.host.domain(NAME).is_running()
