"""The hypervisor port's contract against a real libvirtd, QEMU and guest (the fake's twin).

``HypervisorContract`` runs with small diskless ``qemu`` VMs of its own;
``HypervisorGuestContract`` uses this module's test guest (the ``guest``
fixture: booted once for the module, left running as found) for the agent,
freeze and backup-job tests, and small transient VMs started paused, each
with an empty 16 MiB qcow2 disk, for block copies. Every test removes what it
made; the scratch directory goes at the end of the module.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from surety.hypervisor.libvirt_host import LibvirtHost, connect
from surety.testing.hypervisor_contract import HypervisorContract, HypervisorGuestContract
from tests.guests import testvm
from tests.vm.conftest import Guest

pytestmark = pytest.mark.vm


@pytest.fixture(scope="module")
def scratch(libvirt_conn: object) -> Iterator[Path]:
    """A short directory QEMU's user can create files in (NBD sockets, copies)."""
    path = testvm.make_qemu_dir(testvm.VM_ROOT / f"hc-{secrets.token_hex(3)}")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _open_libvirtd() -> LibvirtHost:
    return connect(testvm.URI)


class TestLibvirtd(HypervisorContract):
    @pytest.fixture
    def open_host(self, libvirt_conn: object) -> Callable[[], LibvirtHost]:
        return _open_libvirtd

    @pytest.fixture
    def domain_type(self) -> str:
        return "qemu"  # TCG: runs wherever QEMU does


class TestLibvirtdGuest(HypervisorGuestContract):
    @pytest.fixture
    def open_host(self, libvirt_conn: object) -> Callable[[], LibvirtHost]:
        return _open_libvirtd

    @pytest.fixture
    def guest_name(self, guest: Guest) -> str:
        return guest.name

    @pytest.fixture
    def qemu_dir(self, scratch: Path) -> Path:
        return testvm.make_qemu_dir(scratch / secrets.token_hex(3))

    @pytest.fixture
    def tiny_xml(self, qemu_dir: Path) -> Callable[[str], str]:
        def make(name: str) -> str:
            disk = qemu_dir / f"{name}.qcow2"
            subprocess.run(
                ["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "16M"], check=True
            )
            return (
                f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory>"
                "<vcpu>1</vcpu><os><type>hvm</type></os><devices>"
                "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
                f"<source file='{disk}'/><target dev='vda' bus='virtio'/></disk>"
                "<controller type='usb' model='none'/><memballoon model='none'/>"
                "</devices></domain>"
            )

        return make
