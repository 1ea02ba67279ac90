"""The guardian: a process outside the backup job that cleans up if the job dies.

A backup job spawns ``python -m surety.hypervisor.guardian URI DOMAIN WINDOW``
just before it freezes the guest, in its own session (a signal to the job's
process group does not reach it), and talks to it over the guardian's stdin:

* ``freezing`` - the job starts to freeze the guest: the window opens.
* ``thawed``   - the job thawed the guest itself (within the window).
* ``done``     - the job ended its backup job itself; the guardian exits.
* ``started-paused`` - the job is about to start the shut-off VM paused (its
  QEMU serves the disks; no guest code runs): the guardian now holds it.
* ``released`` - the job powered that paused VM off again itself.

The guardian acts on its own when

* the freeze window ends before ``thawed`` arrives: it thaws the guest, so a
  guest is never frozen longer than the window, whatever the job is doing;
* its stdin reaches EOF before ``done`` (the job died, e.g. kill -9): it thaws
  the guest if a freeze was under way and aborts the libvirt backup job, so no
  NBD export or scratch file outlives the job; and if it holds a VM the job
  started paused, it powers that VM off (destroy) - but only while it still
  runs paused: a VM someone resumed since is left running, and a VM that is
  not running is left alone (the start never happened, or it stopped).

Application writers' guest-side scripts keep their own deadline (the same
window), so they release their applications without the guardian.

It prints one JSON line per action to stdout (the job reads it afterwards when
it is still alive) and logs to stderr, which the job points at a log file.

A guardian started ahead (``start_waiting``; the service's spare worker does it
while it waits for its run): ``python -m surety.hypervisor.guardian --wait``
imports what it needs and waits for its first line, ``{"arm": [URI, DOMAIN,
WINDOW]}``; from there it is the guardian above. The next ``Guardian`` of the
process arms it instead of starting one (~0.07 s saved on a backup's set-up);
one that is gone is replaced by a fresh start, so it never fails a backup. It
exits when its stdin closes before the arm (the waiting process ended).
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from contextlib import suppress
from typing import IO

from surety.core.errors import SuretyError
from surety.hypervisor.port import BackupSource, GuestAgent, HypervisorDomain

__all__ = ["Guardian", "start_waiting"]

_WAIT = "--wait"
_waiting: subprocess.Popen[bytes] | None = None  # started ahead by ``start_waiting``


def start_waiting() -> None:
    """Start a guardian ahead of need; the next ``Guardian`` without a log arms it."""
    global _waiting  # noqa: PLW0603 - one per process, like the process's own children
    if _waiting is None or _waiting.poll() is not None:
        _waiting = _spawn([_WAIT], None)


def _spawn(args: list[str], log: IO[bytes] | None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "surety.hypervisor.guardian", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log or subprocess.DEVNULL,
        start_new_session=True,
    )


def _armed(proc: subprocess.Popen[bytes]) -> bytes:
    """The guardian's first line (``{"armed": ...}`` once connected); b"" if it died."""
    assert proc.stdout is not None
    return proc.stdout.readline()


def _arm_waiting(uri: str, domain: str, window: float) -> subprocess.Popen[bytes] | None:
    """The guardian started ahead, armed for ``domain``; None if there is none (or it is gone)."""
    global _waiting
    proc, _waiting = _waiting, None
    if proc is None:
        return None
    assert proc.stdin is not None
    try:
        if proc.poll() is None:
            proc.stdin.write(json.dumps({"arm": [uri, domain, window]}).encode() + b"\n")
            proc.stdin.flush()
            return proc
    except OSError:
        pass
    _discard(proc)
    return None


def _discard(proc: subprocess.Popen[bytes]) -> None:
    """Kill and reap a guardian that will not serve; its pipes closed."""
    proc.kill()
    proc.wait()
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            with suppress(OSError):
                pipe.close()


class Guardian:
    """The job's side: start the guardian, tell it what was done."""

    def __init__(self, uri: str, domain: str, window: float, log: IO[bytes] | None = None):
        waiting = _arm_waiting(uri, domain, window) if log is None else None
        if waiting is not None:
            ready = _armed(waiting)
            if ready.startswith(b'{"armed"'):
                self.proc = waiting
                return
            _discard(waiting)  # gone since: a guardian of its own, as without one waiting
        self.proc = _spawn([uri, domain, str(window)], log)
        ready = _armed(self.proc)  # the guardian is connected and armed
        if not ready.startswith(b'{"armed"'):
            self.proc.kill()
            raise SuretyError(f"the thaw guardian did not start ({ready!r})")

    def _say(self, word: str) -> None:
        assert self.proc.stdin is not None
        with suppress(BrokenPipeError):
            self.proc.stdin.write(word.encode() + b"\n")
            self.proc.stdin.flush()

    def freezing(self) -> None:
        self._say("freezing")

    def thawed(self) -> None:
        self._say("thawed")

    def started_paused(self) -> None:
        """Say this before starting the shut-off VM paused (the guardian then powers
        it off if the job dies; a start that never happened leaves nothing to do)."""
        self._say("started-paused")

    def released(self) -> None:
        self._say("released")

    def done(self) -> list[dict[str, object]]:
        """Release the guardian; returns the actions it had to take itself."""
        self._say("done")
        out, _ = self.proc.communicate(timeout=30)
        return [json.loads(line) for line in out.splitlines() if line.strip()]


def _report(action: str, **fields: object) -> None:
    sys.stdout.write(json.dumps({action: True, **fields}) + "\n")
    sys.stdout.flush()


def _wait_line(deadline: float | None) -> str | None:
    """Next stdin line; ``""`` on EOF; ``None`` when the deadline passes first."""
    timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
    ready, _, _ = select.select([sys.stdin], [], [], timeout)
    if not ready:
        return None
    line = b""  # byte by byte: a buffered reader would hide lines from select()
    while not line.endswith(b"\n"):
        byte = os.read(sys.stdin.fileno(), 1)
        if not byte:
            return line.decode()
        line += byte
    return line.decode()


def _arguments(argv: list[str]) -> tuple[str, str, float] | None:
    """URI, domain and window: from ``argv``, or (``--wait``) from the arm line (None: EOF)."""
    if argv != [_WAIT]:
        return argv[0], argv[1], float(argv[2])
    line = _wait_line(None)
    if not line:
        return None
    uri, name, window = json.loads(line)["arm"]
    return str(uri), str(name), float(window)


def main(argv: list[str]) -> int:
    from surety.hypervisor.libvirt_host import connect  # noqa: PLC0415 - keep import lazy

    try:
        arguments = _arguments(argv)
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        sys.stderr.write(f"guardian: bad arguments: {exc!r}\n")
        return 2
    if arguments is None:  # started ahead, and the process that started it ended first
        return 0
    uri, name, window = arguments
    domain = connect(uri).domain(name)
    deadline: float | None = None
    holding = False  # the job started the VM paused and has not powered it off yet
    _report("armed", window=window)
    while True:
        line = _wait_line(deadline)
        if line is None:  # the window ended before the job thawed
            _thaw(domain, "freeze window ended")
            deadline = None
        elif line == "":  # EOF: the job died
            if deadline is not None:
                _thaw(domain, "job died while frozen")
            _abort(domain)
            if holding:
                _release(domain)
            return 0
        elif line == "started-paused\n":
            holding = True
        elif line == "released\n":
            holding = False
        elif line == "freezing\n":
            deadline = time.monotonic() + window
        elif line == "thawed\n":
            deadline = None
        elif line == "done\n":
            return 0


def _thaw(domain: GuestAgent, why: str) -> None:
    for attempt in range(5):
        try:
            thawed = domain.fs_thaw()
            _report("thawed", reason=why, filesystems=thawed)
            return
        except SuretyError as exc:
            sys.stderr.write(f"guardian: thaw attempt {attempt + 1} failed: {exc}\n")
            time.sleep(1)
    _report("thaw_failed", reason=why)


def _release(domain: HypervisorDomain) -> None:
    """Power off the VM the dead job started paused, if it still runs paused."""
    try:
        if domain.is_running() and domain.is_paused():
            domain.destroy()
            _report("destroyed_paused", reason="job died while it held the VM paused")
    except SuretyError as exc:
        sys.stderr.write(f"guardian: powering off the paused VM failed: {exc}\n")


def _abort(domain: BackupSource) -> None:
    try:
        if domain.has_job():
            domain.abort_job()
            _report("aborted_job", reason="job died")
    except SuretyError as exc:
        sys.stderr.write(f"guardian: abort failed: {exc}\n")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
