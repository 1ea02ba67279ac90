"""Backups of shut-off VMs on the fake hypervisor: the paused start, the copy, the power-off."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from surety.backup import vm as vm_module
from surety.backup.shutoff import CLEAN_SHUTDOWN, consistency_when_off
from surety.backup.vm import VmBackupOptions, backup_vm
from surety.core.errors import SourceError
from surety.core.progress import NullProgress
from surety.repo.format import CHUNK_SIZE_MIN
from surety.repo.repository import Repository
from surety.repo.storage import MemoryStorage
from surety.testing.fake_hypervisor import FakeDomain, FakeHypervisor
from tests.unit.conftest import CHEAP_KDF, PASSPHRASE

CHUNK = CHUNK_SIZE_MIN
SIZE = 8 * CHUNK
XML = """<domain type='kvm'><name>db01</name><uuid>6f1c0e5e-0000-4000-8000-0000000000d1</uuid>
<devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
<source file='/vm/db01.qcow2'/><target dev='vda' bus='virtio'/></disk></devices></domain>"""


class Disk:
    """The disk's bytes, as the NBD export would serve them, and what was read."""

    def __init__(self) -> None:
        self.data = bytearray(b"\x01" * SIZE)
        self.dirty: list[tuple[int, int]] = []
        self.fail = False
        self.reads_while: list[tuple[bool, bool]] = []  # (running, paused) at each read


class FakeNbd:
    def __init__(self, disk: Disk, domain: FakeDomain, name: str, bitmap: str | None) -> None:
        self.disk, self.domain, self.name, self.size = disk, domain, name, SIZE
        self.bitmap = bitmap

    def read(self, offset: int, length: int) -> bytes:
        self.disk.reads_while.append((self.domain.running, self.domain.paused))
        if self.disk.fail:
            raise SourceError("NBD read failed")
        return bytes(self.disk.data[offset : offset + length])

    def data_extents(self) -> Iterator[tuple[int, int]]:
        yield 0, SIZE

    def dirty_extents(self) -> list[tuple[int, int]]:
        return list(self.disk.dirty)

    def close(self) -> None:
        pass


class Guard:
    """The guardian's side as the job sees it (the real one is a process of its own)."""

    said: ClassVar[list[str]] = []

    def __init__(self, uri: str, domain: str, window: float) -> None:
        Guard.said = ["armed"]

    def started_paused(self) -> None:
        Guard.said.append("started-paused")

    def released(self) -> None:
        Guard.said.append("released")

    def freezing(self) -> None:
        Guard.said.append("freezing")

    def thawed(self) -> None:
        Guard.said.append("thawed")

    def done(self) -> list[dict[str, object]]:
        Guard.said.append("done")
        return []


@pytest.fixture
def setup(monkeypatch: pytest.MonkeyPatch) -> tuple[Repository, FakeHypervisor, FakeDomain, Disk]:
    repo = Repository.init(MemoryStorage(), PASSPHRASE, chunk_size=CHUNK, kdf=CHEAP_KDF)
    host = FakeHypervisor()
    domain = host.add_domain(XML, running=False, shutoff_reason="shutdown")
    disk = Disk()
    monkeypatch.setattr(vm_module, "Guardian", Guard)
    monkeypatch.setattr(
        vm_module, "NbdDisk", lambda _s, _e, name, bitmap: FakeNbd(disk, domain, name, bitmap)
    )
    return repo, host, domain, disk


def _back_up(repo: Repository, host: FakeHypervisor, tmp_path: Path, **options: Any) -> Any:
    opts = VmBackupOptions("db01", work_root=tmp_path, **options)
    return backup_vm(repo, opts, NullProgress(), host=host).point


def test_a_shut_off_vm_is_read_paused_and_powered_off_after(
    setup: tuple[Repository, FakeHypervisor, FakeDomain, Disk], tmp_path: Path
) -> None:
    repo, host, domain, disk = setup
    point = _back_up(repo, host, tmp_path, consistency="application")
    assert disk.reads_while
    assert set(disk.reads_while) == {(True, True)}
    assert host.events[0] == "start db01 (paused)"
    assert host.events[-1] == "destroy db01"
    assert "resume db01" not in host.events
    assert not domain.running
    assert domain.freezes == 0
    assert not domain.agent_calls
    assert (point.consistency, point.consistency_reason) == ("filesystem", CLEAN_SHUTDOWN)
    assert point.source["power"] == "shut off"
    assert point.source["shutoff_reason"] == "shutdown"
    assert point.source["modes"] == {"vda": "full"}
    assert point.source["checkpoint"] in domain.checkpoints
    assert Guard.said == ["armed", "started-paused", "released", "done"]


def test_the_chain_goes_on_while_off_and_unchanged_disks_keep_their_level(
    setup: tuple[Repository, FakeHypervisor, FakeDomain, Disk], tmp_path: Path
) -> None:
    repo, host, domain, disk = setup
    first = _back_up(repo, host, tmp_path)
    assert domain.shutoff_reason() == "destroyed"  # surety's own power-off
    second = _back_up(repo, host, tmp_path)  # nothing changed: the bitmap is empty
    assert second.source["modes"] == {"vda": "incremental"}
    assert second.stats["read_bytes"] == 0
    assert second.consistency == "filesystem"
    assert first.id[:12] in second.consistency_reason
    # the parent's checkpoint stays until the next run, which prunes it while paused
    # (libvirt cannot delete a checkpoint of a VM that is off)
    assert domain.checkpoints == [first.source["checkpoint"], second.source["checkpoint"]]
    # the guest ran, wrote, and was destroyed: a crash-consistent incremental
    domain.start()
    disk.data[CHUNK : CHUNK + 10] = b"\x02" * 10
    disk.dirty = [(CHUNK, 10)]
    domain.destroy()
    third = _back_up(repo, host, tmp_path)
    assert third.source["modes"] == {"vda": "incremental"}
    assert 0 < third.stats["read_bytes"] < SIZE
    assert third.consistency == "crash"
    assert "destroyed" in third.consistency_reason
    assert domain.checkpoints == [second.source["checkpoint"], third.source["checkpoint"]]


def test_a_failed_copy_powers_the_vm_off_and_commits_nothing(
    setup: tuple[Repository, FakeHypervisor, FakeDomain, Disk], tmp_path: Path
) -> None:
    repo, host, domain, disk = setup
    disk.fail = True
    with pytest.raises(SourceError, match="NBD read failed"):
        _back_up(repo, host, tmp_path)
    assert not domain.running
    assert host.events[-1] == "destroy db01"
    assert repo.points() == []
    assert Guard.said[-2:] == ["released", "done"]


def test_a_vm_started_by_someone_else_is_refused_while_held(
    setup: tuple[Repository, FakeHypervisor, FakeDomain, Disk], tmp_path: Path
) -> None:
    repo, host, domain, _disk = setup
    refused: list[str] = []

    def admin_starts(_arguments: Any = None) -> None:
        try:
            domain.start()
        except Exception as exc:  # noqa: BLE001 - record what the admin would see
            refused.append(str(exc))

    original = FakeNbd.read

    def read(self: FakeNbd, offset: int, length: int) -> bytes:
        if not refused:
            admin_starts()
        return original(self, offset, length)

    FakeNbd.read = read  # type: ignore[method-assign]
    try:
        _back_up(repo, host, tmp_path)
    finally:
        FakeNbd.read = original  # type: ignore[method-assign]
    assert refused
    assert "already active" in refused[0]
    assert not domain.running


@pytest.mark.parametrize(
    ("reason", "level", "words"),
    [
        ("shutdown", "filesystem", "shut off cleanly by the guest (libvirt: shutdown)"),
        ("destroyed", "crash", "libvirt: destroyed"),
        ("crashed", "crash", "libvirt: crashed"),
        ("failed", "crash", "libvirt: failed"),
        ("unknown", "crash", "after libvirtd restarts"),
        ("saved", "crash", "'saved'"),
    ],
)
def test_consistency_comes_from_the_shut_off_reason(reason: str, level: str, words: str) -> None:
    got, why = consistency_when_off(reason)
    assert got == level
    assert words in why


def test_a_running_vm_keeps_the_live_path(
    setup: tuple[Repository, FakeHypervisor, FakeDomain, Disk], tmp_path: Path
) -> None:
    repo, host, domain, _disk = setup
    domain.start()
    point = _back_up(repo, host, tmp_path, consistency="crash")
    assert "power" not in point.source
    assert domain.running  # a running VM stays running
