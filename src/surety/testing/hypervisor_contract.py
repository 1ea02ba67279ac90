"""The hypervisor contract: what every ``HypervisorHost`` must show.

Two suites, because libvirt's ``test:///default`` driver answers "not
supported" for the guest agent, QMP, block copy, pull-mode backup and paused
starts:

* ``HypervisorContract`` - VMs (define, transient, start, stop, undefine, XML,
  names and UUIDs), networks, checkpoints of a new VM, ``close``. Runs against
  the fake and ``test:///default`` in stage 1 (``tests/contract``) and against
  a real libvirtd in the VM stage (``tests/vm``).
* ``HypervisorGuestContract`` - the guest agent and fs freeze, the backup job
  and its checkpoint, QMP dirty bitmaps, paused starts, block copy and pivot.
  Runs against the fake in stage 1 and against a real libvirtd + QEMU and a
  real guest in the VM stage.

Use them by subclassing in a test module and providing fixtures::

    class TestFake(HypervisorContract):
        @pytest.fixture
        def open_host(self): return FakeHypervisor   # a callable -> HypervisorHost
        @pytest.fixture
        def domain_type(self): return "qemu"         # <domain type=...> of the VMs made

``HypervisorGuestContract`` also needs ``guest_name`` (a running, defined VM
with qemu-guest-agent answering and a qcow2 disk ``vda``; left as found),
``qemu_dir`` (a short directory QEMU can create files in) and ``tiny_xml``
(a callable ``name -> XML`` of a small VM with one empty qcow2 disk ``vda``).
Every test removes what it made, also when it fails: no VM, network,
checkpoint or job is left behind.
"""

from __future__ import annotations

import secrets
import time
import uuid as uuid_module
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest

from surety.core.errors import SourceError, SuretyError, TargetError
from surety.hypervisor.port import (
    SHUTOFF_REASONS,
    TAGS_NS,
    GuestAgentError,
    HypervisorDomain,
    HypervisorHost,
)
from surety.hypervisor.pullbackup import backup_xml, checkpoint_xml

__all__ = ["HypervisorContract", "HypervisorGuestContract", "Made"]

OpenHost = Callable[[], HypervisorHost]


class Made:
    """Names for what one test makes, and the removal of all of it afterwards."""

    def __init__(self, host: HypervisorHost, domain_type: str) -> None:
        self.host, self.domain_type = host, domain_type
        self.tag = secrets.token_hex(3)
        self.prefix = f"surety-ct-{self.tag}-"
        self._count = 0

    def name(self) -> str:
        self._count += 1
        return f"{self.prefix}{self._count}"

    def domain_xml(self, name: str, uuid: str | None = None, description: str = "") -> str:
        """A small VM without disks (libvirt fills in the emulator and machine)."""
        root = ET.Element("domain", type=self.domain_type)
        ET.SubElement(root, "name").text = name
        if uuid:
            ET.SubElement(root, "uuid").text = uuid
        if description:
            ET.SubElement(root, "description").text = description
        ET.SubElement(root, "memory", unit="MiB").text = "64"
        ET.SubElement(root, "vcpu").text = "1"
        ET.SubElement(ET.SubElement(root, "os"), "type").text = "hvm"
        ET.SubElement(root, "devices")
        return ET.tostring(root, encoding="unicode")

    def network_xml(self, name: str) -> str:
        """An isolated network (no forward, no address: no dnsmasq)."""
        self._count += 1
        return (
            f"<network><name>{name}</name>"
            f"<bridge name='stc{self.tag}{self._count}' stp='off'/></network>"
        )

    def remove_all(self) -> None:
        for name in self.host.domain_names():
            if name.startswith(self.prefix):
                domain = self.host.find_domain(name=name)
                with suppress(SuretyError):
                    if domain is not None and domain.is_running():
                        domain.destroy()
                with suppress(SuretyError):
                    if domain is not None and domain.is_persistent():
                        domain.undefine()
        for name in self.host.networks():
            if name.startswith(self.prefix):
                with suppress(SuretyError):
                    self.host.remove_network(name)


def _field(xml: str, path: str) -> str | None:
    return ET.fromstring(xml).findtext(path)  # noqa: S314 - XML from the host under test


def _wait(condition: Callable[[], bool], seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


class HypervisorContract:
    """VMs, networks and the connection: what every host shows, libvirt's test driver too."""

    @pytest.fixture
    def host(self, open_host: OpenHost) -> Iterator[HypervisorHost]:
        host = open_host()
        yield host
        host.close()

    @pytest.fixture
    def made(self, host: HypervisorHost, domain_type: str) -> Iterator[Made]:
        made = Made(host, domain_type)
        try:
            yield made
        finally:
            made.remove_all()

    # -- finding VMs --------------------------------------------------------------------
    def test_an_unknown_vm_is_not_found(self, host: HypervisorHost, made: Made) -> None:
        name = made.name()
        with pytest.raises(SourceError, match="no VM named"):
            host.domain(name)
        assert host.find_domain(name=name) is None
        assert host.find_domain(uuid=str(uuid_module.uuid4())) is None
        assert name not in host.domain_names()

    def test_a_defined_vm_is_found_by_name_and_uuid(self, host: HypervisorHost, made: Made) -> None:
        name = made.name()
        domain = host.define_domain(made.domain_xml(name))  # no UUID: one is made up
        uuid = domain.uuid()
        assert str(uuid_module.UUID(uuid)) == uuid
        assert domain.name == name
        assert (domain.is_persistent(), domain.is_running()) == (True, False)
        for found in (host.domain(name), host.find_domain(name=name), host.find_domain(uuid=uuid)):
            assert found is not None
            assert (found.name, found.uuid()) == (name, uuid)
        assert name in host.domain_names()
        for xml in (domain.xml(), domain.xml(inactive=True)):
            assert (_field(xml, "name"), _field(xml, "uuid")) == (name, uuid)

    def test_a_name_and_a_uuid_belong_to_one_vm(self, host: HypervisorHost, made: Made) -> None:
        first, second = made.name(), made.name()
        uuid = host.define_domain(made.domain_xml(first)).uuid()
        with pytest.raises(TargetError):
            host.define_domain(made.domain_xml(first, str(uuid_module.uuid4())))
        with pytest.raises(TargetError):
            host.define_domain(made.domain_xml(first))  # no UUID: a new one, another VM
        with pytest.raises(TargetError):
            host.define_domain(made.domain_xml(second, uuid))
        assert host.domain(first).uuid() == uuid
        assert host.find_domain(name=second) is None

    def test_refused_xml_is_a_target_error(self, host: HypervisorHost, made: Made) -> None:
        with pytest.raises(TargetError):
            host.define_domain("<domain")
        with pytest.raises(TargetError):
            host.create_transient(f"<domain type='{made.domain_type}'><vcpu>1</vcpu></domain>")
        assert not [n for n in host.domain_names() if n.startswith(made.prefix)]

    # -- lifecycle ----------------------------------------------------------------------
    def test_a_defined_vm_starts_and_stops_and_stays_defined(
        self, host: HypervisorHost, made: Made
    ) -> None:
        domain = host.define_domain(made.domain_xml(made.name()))
        domain.start()
        assert domain.is_running()
        with pytest.raises(TargetError):
            domain.start()
        domain.destroy()
        assert (domain.is_running(), domain.is_persistent()) == (False, True)
        assert host.find_domain(uuid=domain.uuid()) is not None
        with pytest.raises(TargetError):
            domain.destroy()  # not idempotent: it does not run

    def test_a_transient_vm_vanishes_when_it_stops(self, host: HypervisorHost, made: Made) -> None:
        name = made.name()
        domain = host.create_transient(made.domain_xml(name))
        assert (domain.is_running(), domain.is_persistent()) == (True, False)
        assert name in host.domain_names()
        assert _field(domain.xml(inactive=True), "name") == name  # its only XML
        domain.destroy()
        assert host.find_domain(name=name) is None
        assert name not in host.domain_names()
        with pytest.raises(SuretyError):
            domain.is_running()  # the handle of a VM that is gone

    def test_a_running_vm_keeps_its_name(self, host: HypervisorHost, made: Made) -> None:
        name = made.name()
        running = host.create_transient(made.domain_xml(name))
        with pytest.raises(TargetError):
            host.create_transient(made.domain_xml(name, running.uuid()))
        with pytest.raises(TargetError):
            host.create_transient(made.domain_xml(name))  # a new UUID
        assert host.domain_names().count(name) == 1

    def test_undefining_a_running_vm_makes_it_transient(
        self, host: HypervisorHost, made: Made
    ) -> None:
        name = made.name()
        domain = host.define_domain(made.domain_xml(name))
        domain.start()
        domain.undefine()
        assert (domain.is_running(), domain.is_persistent()) == (True, False)
        domain.destroy()
        assert host.find_domain(name=name) is None

    def test_undefining_a_stopped_vm_removes_it(self, host: HypervisorHost, made: Made) -> None:
        name = made.name()
        domain = host.define_domain(made.domain_xml(name))
        uuid = domain.uuid()
        domain.undefine()
        assert host.find_domain(name=name) is None
        assert host.find_domain(uuid=uuid) is None
        assert domain.uuid() == uuid  # the handle still knows it
        with pytest.raises(SuretyError):
            domain.start()

    def test_defining_a_running_transient_vm_makes_it_persistent(
        self, host: HypervisorHost, made: Made
    ) -> None:
        """What instant recovery's finish does: define the running VM from its live XML."""
        name = made.name()
        domain = host.create_transient(made.domain_xml(name))
        defined = host.define_domain(domain.xml())
        assert defined.uuid() == domain.uuid()
        assert (domain.is_running(), domain.is_persistent()) == (True, True)
        domain.destroy()
        assert host.find_domain(name=name) is not None

    def test_redefining_changes_the_next_start_not_the_running_vm(
        self, host: HypervisorHost, made: Made
    ) -> None:
        name = made.name()
        domain = host.define_domain(made.domain_xml(name, description="first"))
        uuid = domain.uuid()
        domain.start()
        again = host.define_domain(made.domain_xml(name, uuid, description="second"))
        assert again.uuid() == uuid
        assert _field(domain.xml(inactive=True), "description") == "second"
        assert _field(domain.xml(), "description") == "first"
        domain.destroy()
        assert _field(domain.xml(), "description") == "second"

    def test_the_shut_off_reason_follows_the_lifecycle(
        self, host: HypervisorHost, made: Made
    ) -> None:
        domain = host.define_domain(made.domain_xml(made.name()))
        assert domain.shutoff_reason() in SHUTOFF_REASONS  # never started
        domain.start()
        assert domain.shutoff_reason() is None
        assert not domain.is_paused()
        domain.destroy()
        assert domain.shutoff_reason() == "destroyed"
        assert not domain.is_paused()

    def test_tags_live_in_the_vms_metadata(self, host: HypervisorHost, made: Made) -> None:
        domain = host.define_domain(made.domain_xml(made.name()))
        assert domain.tags() == ()
        domain.set_tags(("nightly", "db"))
        assert domain.tags() == ("nightly", "db")
        assert TAGS_NS in domain.xml(inactive=True)
        domain.start()
        assert domain.tags() == ("nightly", "db")  # the running VM has them too
        domain.set_tags(("weekly",))
        assert domain.tags() == ("weekly",)
        domain.destroy()
        assert domain.tags() == ("weekly",)  # and the definition
        domain.set_tags(())
        assert domain.tags() == ()
        assert TAGS_NS not in domain.xml(inactive=True)

    # -- networks, checkpoints, the connection -----------------------------------------
    def test_networks_are_created_listed_and_removed(
        self, host: HypervisorHost, made: Made
    ) -> None:
        name = made.name()
        assert host.network_xml(name) is None
        assert host.create_network(made.network_xml(name)) == name
        active, xml = host.networks()[name]
        assert active
        assert _field(xml, "name") == name
        assert _field(host.network_xml(name) or "<network/>", "name") == name
        with pytest.raises(TargetError):
            host.create_network(made.network_xml(name))
        host.remove_network(name)
        assert name not in host.networks()
        assert host.network_xml(name) is None
        with pytest.raises(TargetError):
            host.remove_network(name)

    def test_a_new_vm_has_no_checkpoint(self, host: HypervisorHost, made: Made) -> None:
        domain = host.define_domain(made.domain_xml(made.name()))
        assert domain.checkpoint_names() == []
        with pytest.raises(SourceError):
            domain.delete_checkpoint("surety-none")

    def test_close_is_idempotent(self, open_host: OpenHost) -> None:
        host = open_host()
        host.close()
        host.close()


class HypervisorGuestContract:
    """The guest agent, backup jobs, checkpoints, block copy: a real QEMU's share."""

    @pytest.fixture
    def host(self, open_host: OpenHost) -> Iterator[HypervisorHost]:
        host = open_host()
        yield host
        host.close()

    @pytest.fixture
    def guest_vm(self, host: HypervisorHost, guest_name: str) -> HypervisorDomain:
        domain = host.domain(guest_name)
        assert domain.is_running(), f"{guest_name} must run for the guest contract"
        return domain

    @pytest.fixture
    def tiny(
        self, host: HypervisorHost, tiny_xml: Callable[[str], str]
    ) -> Iterator[HypervisorDomain]:
        """A transient VM started paused, with an empty qcow2 disk ``vda``."""
        domain = host.create_transient(tiny_xml(f"surety-ct-{secrets.token_hex(3)}"), paused=True)
        try:
            yield domain
        finally:
            with suppress(SuretyError):
                domain.destroy()  # ends its block jobs; a transient VM vanishes

    # -- guest agent --------------------------------------------------------------------
    def test_the_agent_answers_and_refuses_unknown_commands(
        self, guest_vm: HypervisorDomain
    ) -> None:
        assert guest_vm.agent("guest-ping") == {}
        with pytest.raises(GuestAgentError):
            guest_vm.agent("guest-surety-no-such-command")

    def test_freeze_then_thaw_and_thaw_again(self, guest_vm: HypervisorDomain) -> None:
        try:
            frozen = guest_vm.fs_freeze(10)
            assert frozen >= 1
            assert guest_vm.agent("guest-fsfreeze-status") == "frozen"
            assert guest_vm.agent("guest-ping") == {}
            with pytest.raises(GuestAgentError):
                guest_vm.fs_freeze(10)  # already frozen
            with pytest.raises(GuestAgentError):  # refused while frozen
                guest_vm.agent("guest-exec", {"path": "/bin/true", "capture-output": True})
        finally:
            thawed = guest_vm.fs_thaw()
        assert thawed >= 1
        assert guest_vm.agent("guest-fsfreeze-status") == "thawed"
        assert guest_vm.fs_thaw() == 0  # idempotent: the guardian may thaw after the job

    # -- backup job, checkpoints, dirty bitmaps -------------------------------------------
    def test_a_backup_job_fixes_a_checkpoint_and_ends(
        self, guest_vm: HypervisorDomain, qemu_dir: Path
    ) -> None:
        checkpoint = f"surety-ct-{secrets.token_hex(3)}"
        before = set(guest_vm.checkpoint_names())
        assert not guest_vm.has_job()
        try:
            guest_vm.backup_begin(
                backup_xml(str(qemu_dir / "nbd.sock"), ["vda"], ["vda"], None, str(qemu_dir)),
                checkpoint_xml(checkpoint, ["vda"], ["vda"]),
            )
            assert guest_vm.has_job()
            assert set(guest_vm.checkpoint_names()) == before | {checkpoint}
            with pytest.raises(SourceError):  # one backup job at a time
                guest_vm.backup_begin(
                    backup_xml(str(qemu_dir / "2.sock"), ["vda"], ["vda"], None, str(qemu_dir)),
                    None,
                )
            bitmaps = _bitmaps(guest_vm, checkpoint)  # what the next backup's chain check reads
            assert bitmaps
            assert all(b.get("recording") and not b.get("inconsistent") for b in bitmaps)
            guest_vm.abort_job()
            assert _wait(lambda: not guest_vm.has_job())
            assert checkpoint in guest_vm.checkpoint_names()  # the job's end keeps it
            guest_vm.delete_checkpoint(checkpoint)
            assert set(guest_vm.checkpoint_names()) == before
            assert not _bitmaps(guest_vm, checkpoint)
            with pytest.raises(SourceError):
                guest_vm.abort_job()  # no job
        finally:
            with suppress(SuretyError):
                if guest_vm.has_job():
                    guest_vm.abort_job()
                    _wait(lambda: not guest_vm.has_job())
            with suppress(SuretyError):
                if checkpoint in guest_vm.checkpoint_names():
                    guest_vm.delete_checkpoint(checkpoint)

    def test_an_incremental_from_an_unknown_checkpoint_is_refused(
        self, guest_vm: HypervisorDomain, qemu_dir: Path
    ) -> None:
        before = set(guest_vm.checkpoint_names())
        xml = backup_xml(str(qemu_dir / "nbd.sock"), ["vda"], ["vda"], "surety-none", str(qemu_dir))
        try:
            with pytest.raises(SourceError):
                guest_vm.backup_begin(xml, None)
            assert not guest_vm.has_job()
            assert set(guest_vm.checkpoint_names()) == before
        finally:
            with suppress(SuretyError):
                if guest_vm.has_job():
                    guest_vm.abort_job()

    # -- paused starts, transient VMs -----------------------------------------------------
    def test_a_paused_vm_runs_and_resumes(self, tiny: HypervisorDomain) -> None:
        assert (tiny.is_running(), tiny.is_persistent()) == (True, False)
        assert tiny.is_paused()
        assert tiny.shutoff_reason() is None
        with pytest.raises(GuestAgentError):
            tiny.agent("guest-ping", timeout=1)  # no agent answers in a paused VM
        tiny.resume()
        assert not tiny.is_paused()
        with pytest.raises(TargetError):
            tiny.resume()  # not idempotent: its CPUs run
        with pytest.raises(TargetError):
            tiny.undefine()  # transient already

    # -- block copy -----------------------------------------------------------------------
    def test_a_block_copy_becomes_ready_and_pivots(
        self, tiny: HypervisorDomain, qemu_dir: Path
    ) -> None:
        copy = str(qemu_dir / f"{tiny.name}-copy.qcow2")
        assert tiny.block_job("vda") is None
        with pytest.raises(TargetError):
            tiny.block_job_abort("vda")  # no job
        tiny.block_copy("vda", _destination(copy))
        with pytest.raises(TargetError):
            tiny.block_copy("vda", _destination(copy + ".2"))  # one job per disk
        assert _wait(lambda: _mirror_ready(tiny, "vda")), "the copy never became ready"
        job = tiny.block_job("vda")
        assert job is not None
        assert job[0] == job[1]
        tiny.block_job_abort("vda", pivot=True)
        assert _disk_source(tiny.xml(), "vda") == copy  # synchronous
        assert _wait(lambda: tiny.block_job("vda") is None)

    def test_a_block_copy_aborted_leaves_the_disk_as_it_was(
        self, tiny: HypervisorDomain, qemu_dir: Path
    ) -> None:
        source = _disk_source(tiny.xml(), "vda")
        tiny.block_copy("vda", _destination(str(qemu_dir / f"{tiny.name}-copy.qcow2")))
        assert tiny.block_job("vda") is not None  # a copy runs until it is ended
        tiny.block_job_abort("vda")
        assert _wait(lambda: tiny.block_job("vda") is None)
        assert _disk_source(tiny.xml(), "vda") == source
        assert _disk(tiny.xml(), "vda").find("mirror") is None


def _bitmaps(domain: HypervisorDomain, name: str) -> list[dict[str, Any]]:
    nodes = domain.qmp("query-named-block-nodes", {"flat": True}) or []
    return [b for n in nodes for b in n.get("dirty-bitmaps") or [] if b.get("name") == name]


def _destination(path: str) -> str:
    return f"<disk type='file'><source file='{path}'/><driver name='qemu' type='qcow2'/></disk>"


def _disk(xml: str, target: str) -> ET.Element:
    root = ET.fromstring(xml)  # noqa: S314 - XML from the host under test
    for disk in root.findall("./devices/disk"):
        found = disk.find("target")
        if found is not None and found.get("dev") == target:
            return disk
    raise AssertionError(f"no disk {target} in the XML")


def _disk_source(xml: str, target: str) -> str:
    source = _disk(xml, target).find("source")
    assert source is not None
    return str(source.get("file"))


def _mirror_ready(domain: HypervisorDomain, target: str) -> bool:
    domain.block_job(target)  # a poll (the fake advances its copy on polls)
    mirror = _disk(domain.xml(), target).find("mirror")
    return mirror is not None and mirror.get("ready") == "yes"
