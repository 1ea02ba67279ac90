"""An in-memory hypervisor: ``FakeHypervisor`` (a ``HypervisorHost``) and ``FakeDomain``.

It keeps what libvirt keeps - VMs by name and UUID, persistent or transient,
running (CPUs paused or not), the definition and the live XML, networks,
checkpoints, one backup job per VM, block copy jobs - and refuses what
libvirt refuses, with the same error classes (``surety.hypervisor.port``).
Its real twin is ``LibvirtHost``: both pass ``surety.testing.hypervisor_contract``
(the fake in stage 1, libvirt's ``test:///default`` for what that driver
offers, a real libvirtd + QEMU in ``tests/vm``).

For tests it adds what a real host would need a guest for:

* an agent answering scripted replies (``FakeDomain.agent_replies``: a value,
  or a function of the arguments that returns one or raises) and recording
  every call (``agent_calls``); ``guest-ping`` and ``guest-fsfreeze-status``
  answer by themselves; while frozen, like qemu-guest-agent, everything but
  ping, status and thaw is refused; ``agent_up = False`` makes it silent;
* freeze/thaw counters (``freezes``, ``thaws``) and the frozen state;
* block copies that advance by ``FakeHypervisor.copy_step`` bytes per
  ``block_job`` poll and show ``<mirror ready='yes'>`` when complete;
* ``inject(operation, error)``: the next call of that method raises ``error``
  before it changes anything (``times`` calls in a row);
* ``events``: every change made through the port, in order ("define NAME",
  "destroy NAME", "create network NET", ...), for tests of ordering and undo;
* ``power_off(reason)`` on a domain: the guest stopped by itself (``shutdown``,
  a clean shutdown) or QEMU died (``crashed``, ``failed``); ``shutoff`` holds the
  reason libvirt would report (``add_domain(..., shutoff_reason=...)`` sets it
  for a VM added stopped; ``"unknown"`` by default, as after a libvirtd restart);
* tags live in the domain XML's ``<metadata>``, as libvirt keeps them.

Not modelled: files (a block copy's destination, backup scratch files and the
NBD export are never created - read disks through the repository or a real
NBD server), guest contents and ``guest-exec``/``guest-file-*`` semantics
(script them), dirty-bitmap contents (``query-named-block-nodes`` shows one
consistent, recording bitmap per checkpoint and disk), memory, devices other
than disks, events and job progress of the backup job, autostart, a second
connection to the same host (each ``FakeHypervisor`` is its own host), time
(nothing blocks or times out), threads (no locking).
"""

from __future__ import annotations

import uuid as uuid_module
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

from surety.core.errors import SourceError, SuretyError, TargetError
from surety.hypervisor.domain import domain_tags, with_tags
from surety.hypervisor.port import (
    SHUTOFF_REASONS,
    GuestAgentError,
    HypervisorDomain,
    HypervisorHost,
)

__all__ = ["FakeBackupJob", "FakeBlockJob", "FakeDomain", "FakeHypervisor"]

# what qemu-guest-agent still answers while the guest's file systems are frozen
_WHILE_FROZEN = {
    "guest-ping",
    "guest-sync",
    "guest-sync-delimited",
    "guest-info",
    "guest-fsfreeze-status",
    "guest-fsfreeze-thaw",
}


@dataclass(frozen=True)
class FakeBackupJob:
    """One ``backup_begin``: the XML as given and what it asked for."""

    backup_xml: str
    checkpoint: str | None
    incremental: str | None
    disks: tuple[str, ...]


@dataclass
class FakeBlockJob:
    destination: str
    end: int
    cur: int = 0

    @property
    def ready(self) -> bool:
        return self.cur >= self.end


def _parse(xml: str, what: str) -> ET.Element:
    try:
        return ET.fromstring(xml)  # noqa: S314 - XML written by the test or by surety
    except ET.ParseError as exc:
        raise TargetError(f"{what}: XML error: {exc}") from exc


def _text(root: ET.Element, path: str) -> str | None:
    found = root.findtext(path)
    return found.strip() if found and found.strip() else None


class FakeDomain:
    """One VM of a ``FakeHypervisor``; the handle and the VM's state are one object."""

    def __init__(self, hypervisor: FakeHypervisor, name: str, uuid: str) -> None:
        self._hv = hypervisor
        self.name, self._uuid = name, uuid
        self.exists = True
        self.persistent = False
        self.running = False
        self.paused = False
        self.shutoff = "unknown"  # libvirt's reason while stopped
        self.config_xml: str | None = None  # the definition (persistent VMs)
        self.live_xml: str | None = None  # while running
        self.checkpoints: list[str] = []
        self.backup: FakeBackupJob | None = None
        self.backups: list[FakeBackupJob] = []  # every job begun, in order
        self.block_jobs: dict[str, FakeBlockJob] = {}
        # the guest agent
        self.agent_up = True
        self.agent_replies: dict[str, Any] = {}
        self.agent_calls: list[tuple[str, dict[str, Any] | None]] = []
        self.qmp_replies: dict[str, Any] = {}
        self.qmp_calls: list[tuple[str, dict[str, Any] | None]] = []
        self.filesystems = 1
        self.frozen = False
        self.freezes = 0
        self.thaws = 0

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        kind = "persistent" if self.persistent else "transient"
        return f"FakeDomain({self.name!r}, {self._uuid}, {state}, {kind})"

    # -- checks shared by every call --------------------------------------------------
    def _alive(self, what: str, error: type[SuretyError] = SourceError) -> None:
        self._hv._check_open()
        self._hv._fault(what)
        if not self.exists:
            raise error(f"{self.name}: {what}: no domain with matching uuid '{self._uuid}'")

    def _active(self, what: str, error: type[SuretyError]) -> None:
        self._alive(what, error)
        if not self.running:
            raise error(f"{self.name}: {what}: domain is not running")

    # -- identity, XML, lifecycle -------------------------------------------------------
    def uuid(self) -> str:
        return self._uuid  # known to the handle, like libvirt's: no call to the host

    def xml(self, inactive: bool = False) -> str:
        self._alive("xml")
        if self.running and self.live_xml is not None and not (inactive and self.persistent):
            return self.live_xml
        assert self.config_xml is not None
        return self.config_xml

    def is_running(self) -> bool:
        self._alive("is_running")
        return self.running

    def is_persistent(self) -> bool:
        self._alive("is_persistent")
        return self.persistent

    def is_paused(self) -> bool:
        self._alive("is_paused")
        return self.running and self.paused

    def shutoff_reason(self) -> str | None:
        self._alive("shutoff_reason")
        return None if self.running else self.shutoff

    def tags(self) -> tuple[str, ...]:
        return domain_tags(self.xml())

    def set_tags(self, tags: tuple[str, ...]) -> None:
        self._alive("set_tags", TargetError)
        self._hv._event(f"set tags {self.name} {','.join(tags)}")
        if self.config_xml is not None:
            self.config_xml = with_tags(self.config_xml, tuple(tags))
        if self.live_xml is not None:
            self.live_xml = with_tags(self.live_xml, tuple(tags))

    def start(self, paused: bool = False) -> None:
        self._alive("start", TargetError)
        if self.running:
            raise TargetError(f"{self.name}: starting: domain is already active")
        assert self.config_xml is not None
        self._hv._event(f"start {self.name}{' (paused)' if paused else ''}")
        self.running, self.paused, self.live_xml = True, paused, self.config_xml

    def resume(self) -> None:
        self._active("resume", TargetError)
        if not self.paused:
            raise TargetError(f"{self.name}: resuming: domain is already running")
        self._hv._event(f"resume {self.name}")
        self.paused = False

    def destroy(self) -> None:
        self._active("destroy", TargetError)
        self._hv._event(f"destroy {self.name}")
        self._stopped("destroyed")

    def power_off(self, reason: str = "shutdown") -> None:
        """Test hook: the guest powered itself off (``shutdown``) or QEMU died
        (``crashed``, ``failed``)."""
        if not self.running:
            raise TargetError(f"{self.name} is not running")
        if reason not in SHUTOFF_REASONS:
            raise ValueError(f"unknown shut-off reason {reason!r}")
        self._hv._event(f"power-off {self.name}")
        self._stopped(reason)

    def _stopped(self, reason: str) -> None:
        self.shutoff = reason
        self.running = self.paused = self.frozen = False
        self.live_xml, self.backup = None, None
        self.block_jobs.clear()
        if not self.persistent:
            self._hv._remove(self)

    def undefine(self) -> None:
        self._alive("undefine", TargetError)
        if not self.persistent:
            raise TargetError(
                f"{self.name}: removing the definition: cannot undefine transient domain"
            )
        self._hv._event(f"undefine {self.name}")
        self.persistent, self.config_xml = False, None
        self.checkpoints.clear()  # with their metadata, as LibvirtDomain.undefine asks
        if not self.running:
            self._hv._remove(self)

    # -- disks and block copy -------------------------------------------------------------
    def _disk_element(self, disk: str) -> tuple[ET.Element, ET.Element]:
        assert self.live_xml is not None
        root = ET.fromstring(self.live_xml)  # noqa: S314 - our own XML
        for element in root.findall("./devices/disk"):
            target = element.find("target")
            if target is not None and target.get("dev") == disk:
                return root, element
        raise TargetError(f"{self.name}: no disk {disk}")

    def disk_targets(self) -> list[str]:
        """Target names of the disks in the current XML (for tests)."""
        root = ET.fromstring(self.live_xml or self.config_xml or "<domain/>")  # noqa: S314
        return [str(t.get("dev")) for t in root.findall("./devices/disk/target") if t.get("dev")]

    def block_copy(self, disk: str, destination_xml: str) -> None:
        self._active("block_copy", TargetError)
        root, element = self._disk_element(disk)
        if disk in self.block_jobs:
            raise TargetError(f"{self.name}: starting the copy of {disk}: block job in progress")
        source = _parse(destination_xml, f"{self.name}: copy of {disk}").find("source")
        destination = source.get("file") if source is not None else None
        if not destination:
            raise TargetError(f"{self.name}: starting the copy of {disk}: no destination file")
        self._hv._event(f"block copy {self.name} {disk}")
        self.block_jobs[disk] = FakeBlockJob(destination, self._hv.disk_bytes)
        mirror = ET.SubElement(element, "mirror", type="file", file=destination, job="copy")
        ET.SubElement(mirror, "format", type="qcow2")
        ET.SubElement(mirror, "source", file=destination)
        self.live_xml = ET.tostring(root, encoding="unicode")

    def block_job(self, disk: str) -> tuple[int, int] | None:
        self._alive("block_job")
        job = self.block_jobs.get(disk)
        if job is None:
            return None
        if job.cur < job.end:
            job.cur = min(job.end, job.cur + self._hv.copy_step)
            if job.cur == job.end:
                root, element = self._disk_element(disk)
                mirror = element.find("mirror")
                assert mirror is not None
                mirror.set("ready", "yes")
                self.live_xml = ET.tostring(root, encoding="unicode")
        return job.cur, job.end

    def block_job_abort(self, disk: str, pivot: bool = False) -> None:
        self._active("block_job_abort", TargetError)
        job = self.block_jobs.get(disk)
        if job is None:
            raise TargetError(f"{self.name}: ending the block job of {disk}: no job")
        if pivot and not job.ready:
            raise TargetError(f"{self.name}: switching to the copy of {disk}: not ready")
        root, element = self._disk_element(disk)
        mirror = element.find("mirror")
        if mirror is not None:
            element.remove(mirror)
        if pivot:
            element.set("type", "file")
            for old in element.findall("source") + element.findall("backingStore"):
                element.remove(old)
            source = ET.Element("source", file=job.destination)
            element.insert(1 if element.find("driver") is not None else 0, source)
            driver = element.find("driver")
            if driver is not None:
                driver.set("type", "qcow2")
        self._hv._event(f"{'pivot' if pivot else 'abort block job'} {self.name} {disk}")
        del self.block_jobs[disk]
        self.live_xml = ET.tostring(root, encoding="unicode")

    # -- guest agent ----------------------------------------------------------------------
    def _agent_check(self, operation: str, command: str, arguments: Any = None) -> None:
        """Every call is recorded, answered or not; then the agent must answer."""
        self._alive(operation, GuestAgentError)
        self.agent_calls.append((command, arguments))
        if not self.running or self.paused or not self.agent_up:
            raise GuestAgentError(
                f"{self.name}: guest agent {command}: Guest agent is not responding"
            )

    def agent(
        self, command: str, arguments: dict[str, Any] | None = None, timeout: int = 10
    ) -> Any:
        self._agent_check("agent", command, arguments)
        if command == "guest-fsfreeze-freeze":
            return self._freeze()
        if command == "guest-fsfreeze-thaw":
            return self._thaw()
        if self.frozen and command not in _WHILE_FROZEN:
            raise GuestAgentError(
                f"{self.name}: guest agent {command}: Command {command} has been disabled"
            )
        if command in self.agent_replies:
            reply = self.agent_replies[command]
            return reply(arguments) if callable(reply) else reply
        if command == "guest-ping":
            return {}
        if command == "guest-fsfreeze-status":
            return "frozen" if self.frozen else "thawed"
        raise GuestAgentError(
            f"{self.name}: guest agent {command}: The command {command} has not been found"
        )

    def fs_freeze(self, timeout: int) -> int:
        self._agent_check("fs_freeze", "guest-fsfreeze-freeze")
        return self._freeze()

    def fs_thaw(self) -> int:
        self._agent_check("fs_thaw", "guest-fsfreeze-thaw")
        return self._thaw()

    def _freeze(self) -> int:
        if self.frozen:
            raise GuestAgentError(
                f"{self.name}: fs-freeze: Command guest-fsfreeze-freeze has been disabled"
            )
        self._hv._event(f"freeze {self.name}")
        self.frozen = True
        self.freezes += 1
        return self.filesystems

    def _thaw(self) -> int:
        self.thaws += 1
        if not self.frozen:
            return 0
        self._hv._event(f"thaw {self.name}")
        self.frozen = False
        return self.filesystems

    # -- checkpoints and the backup job -------------------------------------------------
    def checkpoint_names(self) -> list[str]:
        self._alive("checkpoint_names")
        return list(self.checkpoints)

    def delete_checkpoint(self, name: str) -> None:
        self._alive("delete_checkpoint")
        if name not in self.checkpoints:
            raise SourceError(
                f"{self.name}: checkpoint {name}: no domain checkpoint with matching name"
            )
        self._hv._event(f"delete checkpoint {self.name} {name}")
        self.checkpoints.remove(name)

    def backup_begin(self, backup_xml: str, checkpoint_xml: str | None) -> None:
        what = f"{self.name}: starting the backup job"
        self._active("backup_begin", SourceError)
        if self.backup is not None:
            raise SourceError(f"{what}: there is a backup job running already")
        try:
            backup = _parse(backup_xml, what)
            checkpoint = (
                _text(_parse(checkpoint_xml, what), "name") if checkpoint_xml is not None else None
            )
        except TargetError as exc:
            raise SourceError(str(exc)) from exc
        incremental = _text(backup, "incremental")
        if incremental is not None and incremental not in self.checkpoints:
            raise SourceError(f"{what}: no domain checkpoint with matching name '{incremental}'")
        if checkpoint_xml is not None and checkpoint is None:
            raise SourceError(f"{what}: the checkpoint has no name")
        if checkpoint is not None and checkpoint in self.checkpoints:
            raise SourceError(f"{what}: checkpoint {checkpoint!r} already exists")
        disks = tuple(
            str(d.get("name")) for d in backup.findall("./disks/disk") if d.get("backup") != "no"
        )
        have = self.disk_targets()
        unknown = [d for d in disks if d not in have]
        if unknown:
            raise SourceError(f"{what}: no disk {', '.join(unknown)}")
        self._hv._event(f"backup begin {self.name}")
        self.backup = FakeBackupJob(backup_xml, checkpoint, incremental, disks or tuple(have))
        self.backups.append(self.backup)
        if checkpoint is not None:
            self.checkpoints.append(checkpoint)

    def has_job(self) -> bool:
        self._alive("has_job")
        return self.backup is not None

    def abort_job(self) -> None:
        self._alive("abort_job")
        if self.backup is None:
            raise SourceError(f"{self.name}: ending the backup job: no job is active")
        self._hv._event(f"abort job {self.name}")
        self.backup = None

    def qmp(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        self._active("qmp", SourceError)
        self.qmp_calls.append((command, arguments))
        if command in self.qmp_replies:
            reply = self.qmp_replies[command]
            return reply(arguments) if callable(reply) else reply
        if command == "query-named-block-nodes":
            return self._block_nodes()
        raise SourceError(f"{self.name}: QMP {command}: The command {command} has not been found")

    def _block_nodes(self) -> list[dict[str, Any]]:
        nodes: list[dict[str, Any]] = []
        for number, target in enumerate(self.disk_targets()):
            bitmaps = [
                {"name": c, "recording": True, "busy": False, "persistent": True}
                for c in self.checkpoints
            ]
            nodes.append({"node-name": f"libvirt-{number}-format", "dirty-bitmaps": bitmaps})
            nodes.append({"node-name": f"libvirt-{number}-storage", "device": target})
        return nodes


class FakeHypervisor:
    """An in-memory ``HypervisorHost`` (see the module docstring)."""

    def __init__(self, uri: str = "fake:///", *, copy_step: int = 1 << 29) -> None:
        self.uri = uri
        self.copy_step = copy_step  # bytes a block copy advances per ``block_job`` poll
        self.disk_bytes = 1 << 30  # the size every disk has for block jobs
        self.closed = False
        self.events: list[str] = []
        self._domains: dict[str, FakeDomain] = {}  # by UUID
        self._networks: dict[str, tuple[bool, str]] = {}
        self._faults: dict[str, list[BaseException]] = {}

    # -- test hooks -------------------------------------------------------------------
    def add_domain(
        self,
        xml: str,
        *,
        running: bool = True,
        persistent: bool = True,
        paused: bool = False,
        shutoff_reason: str = "unknown",
    ) -> FakeDomain:
        """Put a VM on the host without recording an event (test setup)."""
        if not running and not persistent:
            raise ValueError("a transient VM exists only while it runs")
        if shutoff_reason not in SHUTOFF_REASONS:
            raise ValueError(f"unknown shut-off reason {shutoff_reason!r}")
        domain, xml = self._admit(xml, "adding a VM")
        domain.persistent, domain.running, domain.paused = persistent, running, paused
        domain.shutoff = shutoff_reason
        domain.config_xml = xml if persistent else None
        domain.live_xml = xml if running else None
        self._domains[domain._uuid] = domain
        return domain

    def add_network(self, xml: str, active: bool = True) -> str:
        name = _text(_parse(xml, "adding a network"), "name")
        assert name, "a network needs a <name>"
        self._networks[name] = (active, xml)
        return name

    def inject(self, operation: str, error: BaseException, times: int = 1) -> None:
        """The next ``times`` calls of ``operation`` (a method name of the host or of
        any of its domains) raise ``error`` before they change anything."""
        self._faults.setdefault(operation, []).extend([error] * times)

    def all_domains(self) -> list[FakeDomain]:
        return list(self._domains.values())

    # -- internals --------------------------------------------------------------------
    def _check_open(self) -> None:
        if self.closed:
            raise SourceError(f"{self.uri}: the connection is closed")

    def _fault(self, operation: str) -> None:
        pending = self._faults.get(operation)
        if pending:
            raise pending.pop(0)

    def _event(self, what: str) -> None:
        self.events.append(what)

    def _remove(self, domain: FakeDomain) -> None:
        domain.exists = False
        self._domains.pop(domain._uuid, None)

    def _by_name(self, name: str) -> FakeDomain | None:
        return next((d for d in self._domains.values() if d.name == name), None)

    def _admit(self, xml: str, what: str) -> tuple[FakeDomain, str]:
        """The VM ``xml`` describes (the existing one, or a new one) and the XML with
        its UUID; refuses a name or UUID held by another VM, as libvirt does."""
        root = _parse(xml, what)
        name = _text(root, "name")
        if root.tag != "domain" or name is None:
            raise TargetError(f"{what}: missing name information")
        given = _text(root, "uuid")
        try:
            uuid = str(uuid_module.UUID(given)) if given else None
        except ValueError:
            raise TargetError(f"{what}: malformed uuid element") from None
        uuid = uuid or str(uuid_module.uuid4())  # libvirt makes one up, then compares
        named = self._by_name(name)
        if named is not None and named._uuid != uuid:
            raise TargetError(f"{what}: domain '{name}' already exists with uuid {named._uuid}")
        held = self._domains.get(uuid)
        if held is not None and held.name != name:
            raise TargetError(f"{what}: domain '{held.name}' is already defined with uuid {uuid}")
        if given is None:
            element = ET.Element("uuid")
            element.text = uuid
            names = [child.tag for child in root]
            root.insert(names.index("name") + 1, element)
            xml = ET.tostring(root, encoding="unicode")
        return (held if held is not None else FakeDomain(self, name, uuid)), xml

    # -- HypervisorHost ---------------------------------------------------------------
    def domain(self, name: str) -> FakeDomain:
        self._check_open()
        self._fault("domain")
        found = self._by_name(name)
        if found is None:
            raise SourceError(f"no VM named {name!r} on {self.uri}")
        return found

    def find_domain(self, name: str | None = None, uuid: str | None = None) -> FakeDomain | None:
        self._check_open()
        self._fault("find_domain")
        if name:
            return self._by_name(name)
        return self._domains.get(str(uuid).lower())

    def domain_names(self) -> list[str]:
        self._check_open()
        self._fault("domain_names")
        return [d.name for d in self._domains.values()]

    def define_domain(self, xml: str) -> FakeDomain:
        self._check_open()
        self._fault("define_domain")
        domain, xml = self._admit(xml, "defining the VM")
        self._event(f"define {domain.name}")
        domain.persistent, domain.config_xml = True, xml
        self._domains[domain._uuid] = domain
        return domain

    def create_transient(self, xml: str, paused: bool = False) -> FakeDomain:
        self._check_open()
        self._fault("create_transient")
        domain, xml = self._admit(xml, "starting a transient VM")
        if domain.running:
            raise TargetError(f"starting a transient VM: domain '{domain.name}' is already active")
        self._event(f"create {domain.name}{' (paused)' if paused else ''}")
        domain.running, domain.paused, domain.live_xml = True, paused, xml
        self._domains[domain._uuid] = domain
        return domain

    def networks(self) -> dict[str, tuple[bool, str]]:
        self._check_open()
        self._fault("networks")
        return dict(self._networks)

    def network_xml(self, name: str) -> str | None:
        self._check_open()
        self._fault("network_xml")
        found = self._networks.get(name)
        return found[1] if found else None

    def create_network(self, xml: str) -> str:
        self._check_open()
        self._fault("create_network")
        name = _text(_parse(xml, "defining a network"), "name")
        if name is None:
            raise TargetError("defining a network: missing name information")
        if name in self._networks:
            raise TargetError(f"defining a network: network '{name}' already exists")
        self._event(f"create network {name}")
        self._networks[name] = (True, xml)
        return name

    def remove_network(self, name: str) -> None:
        self._check_open()
        self._fault("remove_network")
        if name not in self._networks:
            raise TargetError(f"network {name}: no network with matching name '{name}'")
        self._event(f"remove network {name}")
        del self._networks[name]

    def close(self) -> None:
        self.closed = True


# mypy holds the fake to the port
_HOST: type[HypervisorHost] = FakeHypervisor
_DOMAIN: type[HypervisorDomain] = FakeDomain
