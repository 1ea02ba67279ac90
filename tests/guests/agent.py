"""QEMU guest agent helpers for test guests, through libvirt.

All calls go through ``libvirt_qemu.qemuAgentCommand``: libvirt owns the agent
socket, sends ``guest-sync`` before each command and reports "agent not
connected" until the guest opened its end of the virtio port. The agent serves
one client at a time and may not answer a command sent while it starts, so
every call has a timeout and :func:`wait_for_agent` retries ``guest-ping``.

Typical use from a test::

    from tests.guests.agent import connect, guest_exec, wait_for_agent

    conn = connect()
    dom = conn.lookupByName("t1")
    wait_for_agent(dom)
    result = guest_exec(dom, ["psql", "--version"])
    assert result.exitcode == 0, result.stderr
"""

from __future__ import annotations

import base64
import contextlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from xml.etree import ElementTree

import libvirt
import libvirt_qemu

DEFAULT_URI = "qemu:///system"
"""The libvirt connection test guests live on."""

COMMAND_TIMEOUT = 30
"""Seconds libvirt waits for one agent reply (guest-sync plus the command)."""


class AgentError(Exception):
    """The guest agent failed, did not answer, or the guest is not running."""


class AgentTimeoutError(AgentError):
    """The agent (or a command run through it) did not finish in time."""


@dataclass(frozen=True)
class ExecResult:
    """Outcome of a command run with :func:`guest_exec`."""

    exitcode: int
    """Exit status; ``128 + signal`` when the command was killed by a signal."""
    stdout: bytes
    stderr: bytes
    truncated: bool = False
    """True when the agent cut the captured output (it keeps at most 16 MiB)."""

    @property
    def ok(self) -> bool:
        """True when the command exited with status 0."""
        return self.exitcode == 0

    def check(self) -> ExecResult:
        """Return self, or raise AgentError with stderr if the command failed."""
        if not self.ok:
            message = self.stderr.decode(errors="replace").strip()
            raise AgentError(f"guest command exited with {self.exitcode}: {message}")
        return self


def _ignore_libvirt_error(_ctx: object, _err: object) -> None:
    """Error handler that keeps libvirt from printing errors we handle anyway."""


def connect(uri: str = DEFAULT_URI) -> libvirt.virConnect:
    """Open a libvirt connection; libvirt errors are raised, not printed."""
    libvirt.registerErrorHandler(_ignore_libvirt_error, None)
    try:
        return libvirt.open(uri)
    except libvirt.libvirtError as exc:
        raise AgentError(f"cannot connect to {uri}: {exc}") from exc


UNSYNCED_ATTEMPTS = 4
"""Tries of an agent command whose libvirt guest-sync timed out (never sent)."""


def agent_command(
    dom: libvirt.virDomain,
    command: str,
    arguments: Mapping[str, Any] | None = None,
    timeout: int = COMMAND_TIMEOUT,
) -> Any:
    """Run one guest agent command and return its ``return`` value.

    Raises AgentTimeoutError when libvirt reports a timeout and AgentError for
    any other failure (agent not connected, command error, domain stopped).
    """
    request: dict[str, Any] = {"execute": command}
    if arguments:
        request["arguments"] = dict(arguments)
    for attempt in range(1, UNSYNCED_ATTEMPTS + 1):
        started = time.monotonic()
        try:
            reply = libvirt_qemu.qemuAgentCommand(dom, json.dumps(request), timeout, 0)
            break
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_OPERATION_TIMEOUT:
                raise AgentTimeoutError(f"{command}: {exc}") from exc
            if "not available for now" not in str(exc):
                raise AgentError(f"{command}: {exc}") from exc
            # libvirt waits at most 5 s for its guest-sync, then `timeout` for the
            # command, and says "not available for now" for both. Failing sooner than
            # `timeout` means the command was never sent: asking again is safe. A
            # command sent but unanswered is not repeated (a second guest-exec would
            # run twice; a second guest-exec-status finds its process reaped).
            if time.monotonic() - started >= timeout - 0.5:
                raise AgentTimeoutError(
                    f"{command}: sent, but the guest agent did not answer within {timeout}s"
                ) from exc
            if attempt == UNSYNCED_ATTEMPTS:
                raise AgentError(f"{command}: {exc}") from exc
            time.sleep(1)
    if reply is None:
        raise AgentError(f"{command}: empty reply")
    decoded = json.loads(reply)
    if "error" in decoded:
        raise AgentError(f"{command}: {decoded['error']}")
    return decoded.get("return")


def domain_state(dom: libvirt.virDomain) -> tuple[int, int]:
    """Return libvirt's (state, reason) pair for the domain."""
    state, reason = dom.state()
    return state, reason


def ensure_running(dom: libvirt.virDomain) -> None:
    """Raise AgentError unless the domain is running.

    A guest that hit a KVM emulation failure stays alive but paused, so paused
    is an error here too.
    """
    state, reason = domain_state(dom)
    if state != libvirt.VIR_DOMAIN_RUNNING:
        raise AgentError(f"domain {dom.name()} is not running (state={state}, reason={reason})")


def ping(dom: libvirt.virDomain, timeout: int = 5) -> None:
    """Send one ``guest-ping``; raises AgentError if it does not answer."""
    agent_command(dom, "guest-ping", timeout=timeout)


def wait_for_agent(dom: libvirt.virDomain, timeout: float = 180.0, interval: float = 1.0) -> float:
    """Retry ``guest-ping`` until the agent answers; return the seconds waited.

    Fails fast (AgentError) when the domain stops running, and raises
    AgentTimeoutError with the last error after ``timeout`` seconds.
    """
    start = time.monotonic()
    deadline = start + timeout
    last_error: Exception | None = None
    while True:
        ensure_running(dom)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AgentTimeoutError(
                f"guest agent of {dom.name()} did not answer within {timeout:.0f}s: {last_error}"
            )
        try:
            ping(dom, timeout=max(1, min(5, int(remaining))))
        except AgentError as exc:
            last_error = exc
            time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
        else:
            return time.monotonic() - start


AGENT_CHANNEL = "org.qemu.guest_agent.0"


def agent_channel_state(dom: libvirt.virDomain) -> str | None:
    """libvirt's view of the agent's virtio port: "connected", "disconnected" or None.

    libvirt learns it from QEMU's VSERPORT_CHANGE event when the guest opens or
    closes its end, so it needs no round trip through a (possibly busy) guest.
    """
    root = ElementTree.fromstring(dom.XMLDesc(0))
    for target in root.iterfind("./devices/channel/target"):
        if target.get("name") == AGENT_CHANNEL:
            return target.get("state")
    return None


def stop_agent(dom: libvirt.virDomain, timeout: float = 120.0) -> float:
    """Stop the guest's qemu-guest-agent for good; return the seconds it took.

    Returns once libvirt saw the agent close its port, so the next agent
    command fails for sure (a fixed sleep was not enough on a busy TCG guest).
    """
    start = time.monotonic()
    exec_start(dom, ["sh", "-c", "sleep 1; systemctl stop qemu-guest-agent"], capture=False)
    while agent_channel_state(dom) != "disconnected":
        if time.monotonic() - start > timeout:
            raise AgentTimeoutError(
                f"the guest agent of {dom.name()} still runs {timeout:.0f}s after it was stopped"
            )
        time.sleep(0.5)
    return time.monotonic() - start


def guest_shutdown(dom: libvirt.virDomain, timeout: float = 120.0) -> float:
    """Power the guest off through its agent; return seconds until it stopped.

    Uses libvirt's agent shutdown (``guest-shutdown`` itself never replies, so
    a raw agent_command() would report "agent disappeared"). Needs dbus in the
    guest. Raises AgentTimeoutError if the domain is still running at the end.
    """
    start = time.monotonic()
    try:
        dom.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_GUEST_AGENT)
    except libvirt.libvirtError as exc:
        raise AgentError(f"guest-shutdown: {exc}") from exc
    while dom.isActive():
        if time.monotonic() - start > timeout:
            raise AgentTimeoutError(f"{dom.name()} still running {timeout:.0f}s after shutdown")
        time.sleep(0.5)
    return time.monotonic() - start


def _b64decode(data: str | None) -> bytes:
    """Decode an optional base64 field of a guest-exec-status reply."""
    return base64.b64decode(data) if data else b""


def exec_start(
    dom: libvirt.virDomain,
    argv: Sequence[str],
    stdin: bytes | None = None,
    env: Mapping[str, str] | None = None,
    capture: bool = True,
) -> int:
    """Start ``argv`` in the guest with ``guest-exec``; return the guest PID.

    ``argv[0]`` is looked up on the agent's PATH. ``env`` replaces the agent's
    environment entirely when given.
    """
    if not argv:
        raise ValueError("argv must not be empty")
    arguments: dict[str, Any] = {
        "path": argv[0],
        "arg": list(argv[1:]),
        "capture-output": capture,
    }
    if stdin is not None:
        arguments["input-data"] = base64.b64encode(stdin).decode()
    if env is not None:
        arguments["env"] = [f"{key}={value}" for key, value in env.items()]
    reply = agent_command(dom, "guest-exec", arguments)
    return int(reply["pid"])


def exec_status(dom: libvirt.virDomain, pid: int) -> ExecResult | None:
    """Poll one ``guest-exec-status``; None while the command still runs."""
    status = agent_command(dom, "guest-exec-status", {"pid": pid})
    if not status.get("exited"):
        return None
    signal = status.get("signal")
    exitcode = 128 + int(signal) if signal is not None else int(status.get("exitcode", 0))
    return ExecResult(
        exitcode=exitcode,
        stdout=_b64decode(status.get("out-data")),
        stderr=_b64decode(status.get("err-data")),
        truncated=bool(status.get("out-truncated") or status.get("err-truncated")),
    )


def guest_exec(
    dom: libvirt.virDomain,
    argv: Sequence[str],
    stdin: bytes | None = None,
    timeout: float = 300.0,
    env: Mapping[str, str] | None = None,
) -> ExecResult:
    """Run ``argv`` in the guest, wait for it and return its exit code and output.

    On timeout the command is killed (``kill -9`` through the agent, best
    effort) and AgentTimeoutError is raised. A non-zero exit code is not an
    error; use :meth:`ExecResult.check` for that.
    """
    pid = exec_start(dom, argv, stdin=stdin, env=env)
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        result = exec_status(dom, pid)
        if result is not None:
            return result
        if time.monotonic() >= deadline:
            _kill_quietly(dom, pid)
            raise AgentTimeoutError(f"guest command {list(argv)} still running after {timeout}s")
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


def _kill_quietly(dom: libvirt.virDomain, pid: int) -> None:
    """Best-effort ``kill -9 PID`` in the guest (used after a timeout)."""
    with contextlib.suppress(AgentError):
        exec_start(dom, ["kill", "-9", str(pid)], capture=False)


def guest_shell(dom: libvirt.virDomain, script: str, timeout: float = 300.0) -> ExecResult:
    """Run ``sh -c SCRIPT`` in the guest (convenience for multi-step commands)."""
    return guest_exec(dom, ["sh", "-c", script], timeout=timeout)


def wait_for_command(
    dom: libvirt.virDomain,
    argv: Sequence[str],
    timeout: float = 120.0,
    interval: float = 1.0,
) -> float:
    """Re-run ``argv`` in the guest until it exits 0; return the seconds waited.

    Raises AgentTimeoutError with the last output when it never succeeds.
    """
    start = time.monotonic()
    deadline = start + timeout
    while True:
        remaining = deadline - time.monotonic()
        result = guest_exec(dom, argv, timeout=max(1.0, remaining))
        if result.ok:
            return time.monotonic() - start
        if time.monotonic() + interval > deadline:
            output = (result.stdout + result.stderr).decode(errors="replace").strip()
            raise AgentTimeoutError(
                f"{list(argv)} did not succeed within {timeout:.0f}s "
                f"(last exit {result.exitcode}: {output})"
            )
        time.sleep(interval)
