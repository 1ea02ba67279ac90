"""The libvirt adapter of the hypervisor port: the only module that imports ``libvirt``.

``LibvirtHost`` and ``LibvirtDomain`` implement ``port.HypervisorHost`` and
``port.HypervisorDomain`` (guarantees there; both pass
``surety.testing.hypervisor_contract``) with the few calls surety needs, and
turn libvirt's exceptions into surety's error tree with one-line messages.
libvirt's Python bindings come from Debian (python3-libvirt) or pip
(libvirt-python, built against libvirt-dev). ``connect`` is called by the
wiring (``surety.app``) and by the guardian process, nowhere else.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, TypeVar

from surety.core.errors import SourceError, SuretyError, TargetError
from surety.hypervisor.domain import parse_tags, tags_xml
from surety.hypervisor.port import (
    SHUTOFF_REASONS,
    TAGS_NS,
    GuestAgentError,
    HypervisorDomain,
    HypervisorHost,
)

__all__ = ["GuestAgentError", "LibvirtDomain", "LibvirtHost", "connect"]

T = TypeVar("T")


def _libvirt() -> Any:
    try:
        import libvirt  # noqa: PLC0415 - optional system binding

        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # no stderr noise
        return libvirt
    except ImportError as exc:  # pragma: no cover - depends on the host
        raise SourceError(
            "libvirt's Python bindings are missing (apt install python3-libvirt)"
        ) from exc


def _call(what: str, fn: Callable[[], T], error: type[SuretyError] = SourceError) -> T:
    libvirt = _libvirt()
    try:
        return fn()
    except libvirt.libvirtError as exc:
        raise error(f"{what}: {exc.get_error_message()}") from exc


AGENT_ATTEMPTS = 3
"""Sends of one agent command whose guest-sync timed out (a busy guest)."""


def never_sent(exc: Any, elapsed: float, timeout: float) -> bool:
    """Did libvirt give up on its guest-sync, before the command was sent?

    libvirt sends ``guest-sync`` before every agent command and waits at most
    5 s (less when the command's timeout is shorter) for it; a command sent
    and not answered waits the command's full ``timeout``. Both report "Guest
    agent not available for now". Failing in less than ``timeout`` therefore
    means the command never reached the guest, and asking again is safe; a
    command that was sent is not repeated (``guest-exec`` would run twice,
    ``guest-exec-status`` would find its process already reaped).
    """
    libvirt = _libvirt()
    return (
        exc.get_error_code() == libvirt.VIR_ERR_AGENT_UNRESPONSIVE
        and "not available for now" in (exc.get_error_message() or "")
        and elapsed < timeout - 0.5
    )


def connect(uri: str) -> LibvirtHost:
    """Open libvirt at ``uri``; ``SourceError`` when it cannot be reached."""
    libvirt = _libvirt()
    conn = _call(f"cannot connect to libvirt at {uri}", lambda: libvirt.open(uri))
    return LibvirtHost(conn, uri)


class LibvirtHost:
    """A ``HypervisorHost`` over one libvirt connection."""

    def __init__(self, conn: Any, uri: str) -> None:
        self.conn, self.uri = conn, uri
        self._closed = False

    def domain(self, name: str) -> LibvirtDomain:
        libvirt = _libvirt()
        try:
            return LibvirtDomain(self.conn.lookupByName(name), self)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                raise SourceError(f"no VM named {name!r} on {self.uri}") from exc
            raise SourceError(f"looking up {name!r}: {exc.get_error_message()}") from exc

    def network_xml(self, name: str) -> str | None:
        libvirt = _libvirt()
        try:
            return str(self.conn.networkLookupByName(name).XMLDesc(0))
        except libvirt.libvirtError:
            return None

    def close(self) -> None:
        if not self._closed:  # libvirt refuses a second close
            self._closed = True
            self.conn.close()

    # -- restore: look up, define and remove ------------------------------------
    def find_domain(self, name: str | None = None, uuid: str | None = None) -> LibvirtDomain | None:
        """The domain of this name (or UUID), or None."""
        libvirt = _libvirt()
        try:
            dom = self.conn.lookupByName(name) if name else self.conn.lookupByUUIDString(uuid)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise SourceError(f"looking up {name or uuid!r}: {exc.get_error_message()}") from exc
        return LibvirtDomain(dom, self)

    def create_transient(self, xml: str, paused: bool = False) -> LibvirtDomain:
        """Start a VM that libvirt forgets when it stops (``paused``: CPUs not yet running)."""
        flags = _libvirt().VIR_DOMAIN_START_PAUSED if paused else 0
        dom = _call("starting a transient VM", lambda: self.conn.createXML(xml, flags), TargetError)
        return LibvirtDomain(dom, self)

    def domain_names(self) -> list[str]:
        """Names of every VM libvirt knows (running or defined)."""
        return [str(d.name()) for d in _call("listing VMs", self.conn.listAllDomains)]

    def define_domain(self, xml: str) -> LibvirtDomain:
        dom = _call("defining the VM", lambda: self.conn.defineXML(xml), TargetError)
        return LibvirtDomain(dom, self)

    def networks(self) -> dict[str, tuple[bool, str]]:
        """Every network libvirt knows: name -> (active, XML).

        A network removed by someone else while we read is left out, not an error.
        """
        found = {}
        for net in _call("listing networks", lambda: self.conn.listAllNetworks(0)):
            try:
                found[str(net.name())] = (bool(net.isActive()), str(net.XMLDesc(0)))
            except _libvirt().libvirtError as exc:
                if exc.get_error_code() != _libvirt().VIR_ERR_NO_NETWORK:
                    raise SourceError(f"reading networks: {exc.get_error_message()}") from exc
        return found

    def create_network(self, xml: str) -> str:
        """Define and start a network; its name."""
        net = _call("defining a network", lambda: self.conn.networkDefineXML(xml), TargetError)
        name = str(net.name())
        try:
            _call(f"starting network {name}", net.create, TargetError)
        except TargetError:
            _call(f"removing network {name}", net.undefine, TargetError)
            raise
        return name

    def remove_network(self, name: str) -> None:
        net = _call(f"network {name}", lambda: self.conn.networkLookupByName(name), TargetError)
        if net.isActive():
            _call(f"stopping network {name}", net.destroy, TargetError)
        _call(f"removing network {name}", net.undefine, TargetError)


class LibvirtDomain:
    """A ``HypervisorDomain``: one libvirt domain."""

    def __init__(self, dom: Any, host: LibvirtHost) -> None:
        self.dom, self.host = dom, host
        self.name = str(dom.name())

    def xml(self, inactive: bool = False) -> str:
        libvirt = _libvirt()
        flags = libvirt.VIR_DOMAIN_XML_SECURE | (libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0)
        return str(_call(f"{self.name}: domain XML", lambda: self.dom.XMLDesc(flags)))

    def is_running(self) -> bool:
        return bool(_call(f"{self.name}: state", self.dom.isActive))

    def uuid(self) -> str:
        return str(self.dom.UUIDString())

    def start(self, paused: bool = False) -> None:
        flags = _libvirt().VIR_DOMAIN_START_PAUSED if paused else 0
        _call(f"{self.name}: starting", lambda: self.dom.createWithFlags(flags), TargetError)

    def _state(self) -> tuple[int, int]:
        state, reason = _call(f"{self.name}: state", lambda: self.dom.state(0))
        return int(state), int(reason)

    def is_paused(self) -> bool:
        return bool(self._state()[0] == _libvirt().VIR_DOMAIN_PAUSED)

    def shutoff_reason(self) -> str | None:
        state, reason = self._state()
        if state != _libvirt().VIR_DOMAIN_SHUTOFF:
            return None
        return SHUTOFF_REASONS[reason] if 0 <= reason < len(SHUTOFF_REASONS) else "unknown"

    def tags(self) -> tuple[str, ...]:
        libvirt = _libvirt()
        try:
            xml = self.dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, TAGS_NS, 0)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_METADATA:
                return ()
            raise SourceError(f"{self.name}: tags: {exc.get_error_message()}") from exc
        return parse_tags(str(xml))

    def set_tags(self, tags: tuple[str, ...]) -> None:
        libvirt = _libvirt()
        flags = 0
        if self.is_persistent():
            flags |= libvirt.VIR_DOMAIN_AFFECT_CONFIG
        if self.is_running():
            flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
        xml = tags_xml(tags) if tags else None
        _call(
            f"{self.name}: setting tags",
            lambda: self.dom.setMetadata(
                libvirt.VIR_DOMAIN_METADATA_ELEMENT, xml, "surety", TAGS_NS, flags
            ),
            TargetError,
        )

    def resume(self) -> None:
        _call(f"{self.name}: resuming", self.dom.resume, TargetError)

    def destroy(self) -> None:
        """Power off at once (no guest shutdown)."""
        _call(f"{self.name}: stopping", self.dom.destroy, TargetError)

    def undefine(self) -> None:
        """Remove the definition with its snapshot/checkpoint metadata and managed
        save; NVRAM and TPM state files are kept."""
        libvirt = _libvirt()
        basic = (
            libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
            | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
        )
        flags = basic
        for flag in ("CHECKPOINTS_METADATA", "KEEP_NVRAM", "KEEP_TPM"):
            flags |= getattr(libvirt, f"VIR_DOMAIN_UNDEFINE_{flag}", 0)
        try:
            self.dom.undefineFlags(flags)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_INVALID_ARG:
                raise TargetError(
                    f"{self.name}: removing the definition: {exc.get_error_message()}"
                ) from exc
            # a driver without checkpoints, NVRAM or TPM (libvirt's test driver) refuses
            # the flags about them: it has none of them to keep or remove
            _call(
                f"{self.name}: removing the definition",
                lambda: self.dom.undefineFlags(basic),
                TargetError,
            )

    def is_persistent(self) -> bool:
        """Defined (kept when it stops), not transient."""
        return bool(_call(f"{self.name}: persistence", self.dom.isPersistent))

    # -- block copy (instant recovery: move disks while the VM runs) -----------------
    def block_copy(self, disk: str, destination_xml: str) -> None:
        """Start a full copy of ``disk`` (its whole backing chain, flattened) to the
        file ``destination_xml`` describes; guest writes go to both (synchronous
        writes where libvirt offers it, so the copy converges under load)."""
        flags = getattr(_libvirt(), "VIR_DOMAIN_BLOCK_COPY_SYNCHRONOUS_WRITES", 0)
        _call(
            f"{self.name}: starting the copy of {disk}",
            lambda: self.dom.blockCopy(disk, destination_xml, None, flags),
            TargetError,
        )

    def block_job(self, disk: str) -> tuple[int, int] | None:
        """(cur, end) of the block job on ``disk``, None when there is none."""
        info = _call(f"{self.name}: block job of {disk}", lambda: self.dom.blockJobInfo(disk, 0))
        if not info:
            return None
        return int(info["cur"]), int(info["end"])

    def block_job_abort(self, disk: str, pivot: bool = False) -> None:
        """End the block job on ``disk``; ``pivot``: switch the disk to the copy
        (synchronous: returns once QEMU uses the copy)."""
        flags = _libvirt().VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT if pivot else 0
        what = "switching to the copy of" if pivot else "ending the block job of"
        _call(
            f"{self.name}: {what} {disk}",
            lambda: self.dom.blockJobAbort(disk, flags),
            TargetError,
        )

    # -- guest agent ------------------------------------------------------------
    def agent(
        self, command: str, arguments: dict[str, Any] | None = None, timeout: int = 10
    ) -> Any:
        """One guest-agent command; ``GuestAgentError`` if it does not answer in time."""
        import libvirt_qemu  # noqa: PLC0415 - part of the libvirt bindings

        libvirt = _libvirt()
        request = json.dumps(
            {"execute": command, **({"arguments": arguments} if arguments else {})}
        )
        for attempt in range(1, AGENT_ATTEMPTS + 1):
            started = time.monotonic()
            try:
                reply = libvirt_qemu.qemuAgentCommand(self.dom, request, timeout, 0)
                break
            except libvirt.libvirtError as exc:
                elapsed = time.monotonic() - started
                if attempt == AGENT_ATTEMPTS or not never_sent(exc, elapsed, timeout):
                    message = exc.get_error_message()
                    raise GuestAgentError(f"{self.name}: guest agent {command}: {message}") from exc
        return json.loads(reply).get("return")

    def fs_freeze(self, timeout: int) -> int:
        """Freeze every guest file system (runs the guest's fsfreeze hooks)."""
        libvirt = _libvirt()
        deadline = time.monotonic() + timeout
        while True:
            seconds = max(1, int(deadline - time.monotonic()))
            self._agent_timeout(seconds)
            started = time.monotonic()
            try:
                return int(self.dom.fsFreeze(None, 0))
            except libvirt.libvirtError as exc:
                # a freeze that never reached the guest (its guest-sync timed out on a
                # slow guest) is asked again while the window leaves time
                unsent = never_sent(exc, time.monotonic() - started, seconds)
                if not unsent or deadline - time.monotonic() < 1:
                    message = exc.get_error_message()
                    raise GuestAgentError(f"{self.name}: fs-freeze: {message}") from exc

    def _agent_timeout(self, seconds: int) -> None:
        _call(
            f"{self.name}: agent timeout",
            lambda: self.dom.agentSetResponseTimeout(seconds, 0),
            GuestAgentError,
        )

    def fs_thaw(self) -> int:
        return int(
            _call(f"{self.name}: fs-thaw", lambda: self.dom.fsThaw(None, 0), GuestAgentError)
        )

    def fs_frozen(self) -> bool:
        status = self.agent("guest-fsfreeze-status", timeout=5)
        return bool(status == "frozen")

    # -- checkpoints and pull-mode backup --------------------------------------------
    def checkpoint_names(self) -> list[str]:
        return [
            str(c.getName())
            for c in _call(f"{self.name}: checkpoints", lambda: self.dom.listAllCheckpoints(0))
        ]

    def delete_checkpoint(self, name: str, metadata_only: bool = False) -> None:
        libvirt = _libvirt()
        flags = libvirt.VIR_DOMAIN_CHECKPOINT_DELETE_METADATA_ONLY if metadata_only else 0
        checkpoint = _call(
            f"{self.name}: checkpoint {name}", lambda: self.dom.checkpointLookupByName(name, 0)
        )
        _call(f"{self.name}: deleting checkpoint {name}", lambda: checkpoint.delete(flags))

    def backup_begin(self, backup_xml: str, checkpoint_xml: str | None) -> None:
        _call(
            f"{self.name}: starting the backup job",
            lambda: self.dom.backupBegin(backup_xml, checkpoint_xml, 0),
        )

    def backup_xml(self) -> str:
        return str(_call(f"{self.name}: backup job", lambda: self.dom.backupGetXMLDesc(0)))

    def abort_job(self) -> None:
        _call(f"{self.name}: ending the backup job", self.dom.abortJob)

    def has_job(self) -> bool:
        info: list[int] = _call(f"{self.name}: job info", self.dom.jobInfo)
        return info[0] != 0

    def qmp(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        """A QMP command, for what libvirt does not expose (e.g. bitmap state)."""
        import libvirt_qemu  # noqa: PLC0415

        request = json.dumps(
            {"execute": command, **({"arguments": arguments} if arguments else {})}
        )
        reply = _call(
            f"{self.name}: QMP {command}",
            lambda: libvirt_qemu.qemuMonitorCommand(self.dom, request, 0),
        )
        return json.loads(reply).get("return")


# mypy holds the adapter to the port
_HOST: type[HypervisorHost] = LibvirtHost
_DOMAIN: type[HypervisorDomain] = LibvirtDomain
