"""Host side of a guest-side writer script that holds an application session.

Some applications can only be quiesced by a client session that stays open
across the snapshot (MariaDB's ``FLUSH TABLES WITH READ LOCK``, PostgreSQL's
``pg_backup_start``/``pg_backup_stop``). ``GuestSession`` pushes such a script
(``writers/guest/common.sh`` + the writer's own part) into a private tmpfs
directory of the guest, starts it with ``guest-exec``, and steps it through
its states by files (protocol in ``common.sh``): the host creates
``go.<step>``, the script appends events. The script keeps its own deadlines,
so a host that dies mid-way never leaves the application held.
"""

from __future__ import annotations

import math
import time
from importlib.resources import files

from surety.quiesce.channel import GuestChannel
from surety.quiesce.writer import WriterFailed

__all__ = ["GuestSession", "guest_script"]

POLL = 0.02
FATAL = ("expired", "aborted")


def guest_script(name: str) -> bytes:
    """``common.sh`` followed by ``writers/guest/<name>.sh``, as pushed to the guest."""
    folder = files("surety.quiesce.writers") / "guest"
    return (folder / "common.sh").read_bytes() + (folder / f"{name}.sh").read_bytes()


class GuestSession:
    def __init__(self, guest: GuestChannel, writer: str, token: str, tag: str = "") -> None:
        self.guest, self.writer = guest, writer
        self.dir = f"/run/surety-{token[:16]}-{writer}{tag}"
        self.pid: int | None = None
        self.events: list[tuple[str, str]] = []
        self.exit_text = ""

    def start(self, script: bytes, window: float, args: list[str]) -> None:
        made = self.guest.run(["mkdir", "-m", "700", "-p", self.dir], timeout=30)
        if not made.ok:
            raise WriterFailed(self.writer, f"cannot create {self.dir}: {made.text()}")
        self.guest.write_file(f"{self.dir}/writer.sh", script)
        self.pid = self.guest.spawn(
            ["bash", f"{self.dir}/writer.sh", self.dir, str(math.ceil(window)), *args]
        )

    def go(self, step: str, left: float | None = None) -> None:
        text = "" if left is None else str(max(1, math.ceil(left)))
        self.guest.write_file(f"{self.dir}/go.{step}", text.encode())

    def abort(self) -> None:
        self.guest.write_file(f"{self.dir}/abort", b"")

    def wait(self, event: str, deadline: float, fatal: tuple[str, ...] = FATAL) -> str:
        """The value of ``event`` once the script reports it; ``WriterFailed`` when it
        reports an error (or one of ``fatal``), ends, or the deadline passes."""
        while True:
            found = self._read()
            if event in found:
                return found[event]
            if "error" in found:
                raise WriterFailed(self.writer, found["error"])
            for other in fatal:
                if other in found:
                    raise WriterFailed(self.writer, f"the guest side {other} at {found[other]}")
            if self._exited():
                raise WriterFailed(
                    self.writer, f"the guest side ended unexpectedly: {self.exit_text}"
                )
            if time.monotonic() >= deadline:
                last = f"{self.events[-1][0]} {self.events[-1][1]}".strip() if self.events else ""
                raise WriterFailed(
                    self.writer,
                    f"the guest side did not reach {event!r} in time"
                    f" (its last event: {last or 'none'})",
                )
            time.sleep(POLL)

    def value(self, event: str) -> str | None:
        return dict(self.events).get(event)

    def _read(self) -> dict[str, str]:
        data = self.guest.read_file(f"{self.dir}/events") or b""
        self.events = [
            (name, value)
            for name, _, value in (
                line.partition("\t") for line in data.decode(errors="replace").splitlines()
            )
        ]
        return dict(self.events)

    def _exited(self) -> bool:
        if self.pid is None:
            return True
        result = self.guest.poll(self.pid)
        if result is None:
            return False
        self.exit_text = result.text() or f"exit {result.exitcode}"
        self.pid = None
        self._read()
        return True

    def remove(self) -> None:
        """Stop the script if it still runs and remove its directory (never raises)."""
        try:
            if self.pid is not None and self.guest.poll(self.pid) is None:
                self.abort()
                time.sleep(0.2)
                if self.guest.poll(self.pid) is None:
                    self.guest.kill(self.pid)
            self.guest.run(["rm", "-rf", self.dir], timeout=30)
        except Exception:  # noqa: BLE001 - cleanup is best effort; the script also self-removes
            return
