"""The hypervisor port's contract, stage 1: the fake, and libvirt's ``test:///default``.

The fake runs both suites; ``test:///default`` (python3-libvirt, no daemon)
runs the part its driver supports. The guest part's real twin is
``tests/vm/test_hypervisor_contract.py`` (a real libvirtd, QEMU and guest).
Below the suites: what only the fake can show (progress, fault injection).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from surety.app.hypervisor import connect_host
from surety.core.errors import SourceError, TargetError
from surety.hypervisor.libvirt_host import LibvirtHost, connect
from surety.hypervisor.port import GuestAgentError, HypervisorHost
from surety.testing.fake_hypervisor import FakeHypervisor
from surety.testing.hypervisor_contract import HypervisorContract, HypervisorGuestContract
from tests.prerequisites import require_import

GUEST = "contract-guest"


def _disk_vm(name: str, disk: str) -> str:
    return (
        f"<domain type='kvm'><name>{name}</name><memory unit='MiB'>64</memory>"
        "<os><type>hvm</type></os><devices><disk type='file' device='disk'>"
        f"<driver name='qemu' type='qcow2'/><source file='{disk}'/>"
        "<target dev='vda' bus='virtio'/></disk></devices></domain>"
    )


def _fake_with_guest() -> FakeHypervisor:
    host = FakeHypervisor()
    host.add_domain(_disk_vm(GUEST, "/var/lib/guest/vda.qcow2"))
    return host


class TestFakeHypervisor(HypervisorContract):
    @pytest.fixture
    def open_host(self) -> Callable[[], FakeHypervisor]:
        return FakeHypervisor

    @pytest.fixture
    def domain_type(self) -> str:
        return "kvm"


class TestFakeHypervisorGuest(HypervisorGuestContract):
    @pytest.fixture
    def open_host(self) -> Callable[[], FakeHypervisor]:
        return _fake_with_guest

    @pytest.fixture
    def guest_name(self) -> str:
        return GUEST

    @pytest.fixture
    def qemu_dir(self, tmp_path: Path) -> Path:
        return tmp_path

    @pytest.fixture
    def tiny_xml(self, tmp_path: Path) -> Callable[[str], str]:
        return lambda name: _disk_vm(name, str(tmp_path / f"{name}.qcow2"))


class TestLibvirtTestDriver(HypervisorContract):
    @pytest.fixture
    def open_host(self) -> Callable[[], LibvirtHost]:
        require_import("libvirt", "libvirt's Python bindings (python3-libvirt)")
        return lambda: connect("test:///default")  # one in-memory host per process

    @pytest.fixture
    def domain_type(self) -> str:
        return "test"


# -- the fake alone ------------------------------------------------------------------------


def test_a_block_copy_advances_with_each_poll() -> None:
    host = _fake_with_guest()
    host.copy_step = host.disk_bytes // 4
    domain = host.domain(GUEST)
    domain.block_copy("vda", "<disk type='file'><source file='/new/vda.qcow2'/></disk>")
    polls = [domain.block_job("vda") for _ in range(5)]
    quarter = host.disk_bytes // 4
    assert polls == [(quarter * n, host.disk_bytes) for n in (1, 2, 3, 4, 4)]
    with pytest.raises(TargetError):
        FakeHypervisor().create_transient(_disk_vm("x", "/x")).block_job_abort("vda", pivot=True)
    domain.block_job_abort("vda", pivot=True)
    assert "/new/vda.qcow2" in domain.xml()
    assert host.events == [f"block copy {GUEST} vda", f"pivot {GUEST} vda"]


def test_pivot_before_ready_is_refused_and_the_copy_goes_on() -> None:
    host = _fake_with_guest()
    domain = host.domain(GUEST)
    domain.block_copy("vda", "<disk type='file'><source file='/new/vda.qcow2'/></disk>")
    with pytest.raises(TargetError, match="not ready"):
        domain.block_job_abort("vda", pivot=True)
    assert domain.block_job("vda") is not None


def test_injected_faults_change_nothing() -> None:
    host = FakeHypervisor()
    host.inject("define_domain", TargetError("defining the VM: boom"))
    with pytest.raises(TargetError, match="boom"):
        host.define_domain("<domain><name>a</name></domain>")
    assert host.domain_names() == []
    assert host.events == []
    host.define_domain("<domain><name>a</name></domain>")  # once only
    assert host.domain_names() == ["a"]


def test_the_agent_answers_scripted_replies_and_records_every_call() -> None:
    host = _fake_with_guest()
    domain = host.domain(GUEST)
    domain.agent_replies["guest-exec"] = lambda arguments: {"pid": len(arguments or {})}
    domain.agent_replies["guest-info"] = {"version": "fake"}
    assert domain.agent("guest-exec", {"path": "/bin/true"}) == {"pid": 1}
    assert domain.agent("guest-info") == {"version": "fake"}
    domain.agent_up = False
    with pytest.raises(GuestAgentError):
        domain.fs_thaw()
    assert domain.agent_calls == [
        ("guest-exec", {"path": "/bin/true"}),
        ("guest-info", None),
        ("guest-fsfreeze-thaw", None),
    ]


def test_a_closed_fake_refuses_calls() -> None:
    host = _fake_with_guest()
    domain = host.domain(GUEST)
    host.close()
    with pytest.raises(SourceError, match="closed"):
        host.domain_names()
    with pytest.raises(SourceError, match="closed"):
        domain.is_running()


def test_a_guest_power_off_ends_a_transient_vm_and_its_jobs() -> None:
    host = FakeHypervisor()
    domain = host.create_transient(_disk_vm("t", "/t.qcow2"))
    domain.backup_begin("<domainbackup mode='pull'/>", "<domaincheckpoint><name>c</name>"
                        "</domaincheckpoint>")  # fmt: skip
    domain.power_off()
    assert host.find_domain(name="t") is None
    assert not domain.backup


class TestWiredHost(HypervisorContract):
    """The host the CLI hands to use cases (``app.hypervisor``): connected at first use."""

    @pytest.fixture
    def open_host(self) -> Callable[[], HypervisorHost]:
        require_import("libvirt", "libvirt's Python bindings (python3-libvirt)")
        return lambda: connect_host("test:///default")

    @pytest.fixture
    def domain_type(self) -> str:
        return "test"


def test_the_wired_host_connects_at_first_use() -> None:
    host = connect_host("qemu+unix:///system?socket=/nonexistent/libvirt-sock")
    assert host.uri.startswith("qemu+unix:")
    host.close()  # never connected: nothing to close
    with pytest.raises(SourceError, match="cannot connect to libvirt"):
        host.domain_names()
