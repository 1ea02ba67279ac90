"""The guest channel over qemu-guest-agent: run commands and move files in a guest.

``AgentChannel`` implements ``surety.quiesce.channel.GuestChannel`` with the
agent's own commands (``guest-exec``/``guest-exec-status``, ``guest-file-*``,
``guest-fsfreeze-*``), reached through the hypervisor port (``port.GuestAgent``).
Nothing is installed in the guest: writers push their scripts with
``write_file`` and remove them after.

Limits worth knowing (qemu-guest-agent): while the guest's file systems are
frozen the agent refuses everything but ping/status/thaw, so writers talk to
their guest-side scripts before the freeze and after the thaw, never during it;
``guest-exec`` output is returned only when the command ends.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from surety.hypervisor.port import GuestAgent, GuestAgentError

__all__ = ["AgentChannel", "GuestResult", "GuestTimeout", "guest_network", "parse_interfaces"]

_CHUNK = 48 * 1024  # guest-file-write payload per call (the agent caps requests)


class GuestTimeout(GuestAgentError):
    """A guest command did not finish before its deadline (it was killed)."""


@dataclass(frozen=True)
class GuestResult:
    exitcode: int
    stdout: bytes = b""
    stderr: bytes = b""

    @property
    def ok(self) -> bool:
        return self.exitcode == 0

    def text(self) -> str:
        """stdout and stderr, decoded and trimmed (for messages)."""
        return (self.stdout + self.stderr).decode(errors="replace").strip()


class AgentChannel:
    """A ``GuestChannel`` over one VM's agent (``port.GuestAgent``)."""

    def __init__(self, domain: GuestAgent) -> None:
        self.domain = domain
        self.name = domain.name

    def ping(self, timeout: int = 5) -> None:
        self.domain.agent("guest-ping", timeout=timeout)

    # -- processes ------------------------------------------------------------
    def spawn(self, argv: Sequence[str], stdin: bytes | None = None) -> int:
        arguments: dict[str, Any] = {
            "path": argv[0],
            "arg": list(argv[1:]),
            "capture-output": True,
        }
        if stdin is not None:
            arguments["input-data"] = base64.b64encode(stdin).decode()
        return int(self.domain.agent("guest-exec", arguments)["pid"])

    def poll(self, pid: int) -> GuestResult | None:
        status = self.domain.agent("guest-exec-status", {"pid": pid})
        if not status.get("exited"):
            return None
        signal = status.get("signal")
        return GuestResult(
            128 + int(signal) if signal is not None else int(status.get("exitcode", 0)),
            base64.b64decode(status.get("out-data") or ""),
            base64.b64decode(status.get("err-data") or ""),
        )

    def kill(self, pid: int) -> None:
        with suppress(GuestAgentError):
            self.spawn(["kill", "-9", str(pid)])

    def run(
        self, argv: Sequence[str], stdin: bytes | None = None, timeout: float = 60.0
    ) -> GuestResult:
        """Run ``argv`` and wait for it; kill it and raise ``GuestTimeout`` at the deadline."""
        pid = self.spawn(argv, stdin)
        deadline = time.monotonic() + timeout
        delay = 0.01
        while (result := self.poll(pid)) is None:
            if time.monotonic() >= deadline:
                self.kill(pid)
                raise GuestTimeout(f"{self.name}: {argv[0]} still running after {timeout:g} s")
            time.sleep(delay)
            delay = min(delay * 2, 0.25)
        return result

    # -- files ----------------------------------------------------------------
    def write_file(self, path: str, data: bytes) -> None:
        handle = self.domain.agent("guest-file-open", {"path": path, "mode": "w"})
        try:
            for start in range(0, max(len(data), 1), _CHUNK):
                piece = base64.b64encode(data[start : start + _CHUNK]).decode()
                self.domain.agent("guest-file-write", {"handle": handle, "buf-b64": piece})
        finally:
            self.domain.agent("guest-file-close", {"handle": handle})

    def read_file(self, path: str) -> bytes | None:
        """The file's bytes, or ``None`` if it does not exist (or cannot be opened)."""
        try:
            handle = self.domain.agent("guest-file-open", {"path": path, "mode": "r"})
        except GuestAgentError:
            return None
        data = b""
        try:
            while True:
                reply = self.domain.agent("guest-file-read", {"handle": handle, "count": 65536})
                data += base64.b64decode(reply.get("buf-b64") or "")
                if reply.get("eof") or not reply.get("count"):
                    return data
        finally:
            self.domain.agent("guest-file-close", {"handle": handle})

    # -- file systems ---------------------------------------------------------
    def freeze_filesystems(self, timeout: int) -> int:
        return self.domain.fs_freeze(timeout)

    def thaw_filesystems(self) -> int:
        return self.domain.fs_thaw()


def guest_network(domain: GuestAgent, timeout: int = 5) -> list[dict[str, Any]]:
    """The guest's NICs as its agent sees them (``[]`` when the agent does not answer):
    recorded in a restore point so the lab can give a clone its addresses back."""
    try:
        reply = domain.agent("guest-network-get-interfaces", timeout=timeout)
    except GuestAgentError:
        return []
    return parse_interfaces(reply)


def parse_interfaces(reply: Any) -> list[dict[str, Any]]:
    """``[{"name", "mac", "ipv4": ["a.b.c.d/p", ...]}]`` of every NIC but loopback."""
    found = []
    for iface in reply if isinstance(reply, list) else []:
        mac = str(iface.get("hardware-address") or "").lower()
        if not mac or mac == "00:00:00:00:00:00":
            continue
        ipv4 = [
            f"{a['ip-address']}/{a['prefix']}"
            for a in iface.get("ip-addresses") or []
            if a.get("ip-address-type") == "ipv4"
        ]
        found.append({"name": str(iface.get("name", "")), "mac": mac, "ipv4": ipv4})
    return found
