"""The ``GuestChannel`` port: how writers act inside a guest.

Implemented over qemu-guest-agent by ``surety.hypervisor.guest_agent``;
tests use fakes. Every method raises a ``SourceError`` (a subclass of it)
when the guest cannot be reached or refuses; ``run`` raises when its
deadline passes (after killing the command).

While the guest's file systems are frozen, only ``thaw_filesystems`` may be
called: the agent refuses everything else.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

__all__ = ["GuestChannel", "GuestOutput"]


class GuestOutput(Protocol):
    @property
    def exitcode(self) -> int: ...

    @property
    def stdout(self) -> bytes: ...

    @property
    def stderr(self) -> bytes: ...

    @property
    def ok(self) -> bool: ...

    def text(self) -> str: ...


class GuestChannel(Protocol):
    name: str

    def ping(self, timeout: int = 5) -> None:
        """Return when the agent answers; raise when it does not within ``timeout``."""

    def run(
        self, argv: Sequence[str], stdin: bytes | None = None, timeout: float = 60.0
    ) -> GuestOutput:
        """Run ``argv`` (found on the guest's PATH), wait; a non-zero exit is not an error."""

    def spawn(self, argv: Sequence[str], stdin: bytes | None = None) -> int:
        """Start ``argv`` in the background; return its guest pid for ``poll``/``kill``."""

    def poll(self, pid: int) -> GuestOutput | None:
        """The result of a spawned command, ``None`` while it runs."""

    def kill(self, pid: int) -> None:
        """Best effort SIGKILL of a spawned command."""

    def write_file(self, path: str, data: bytes) -> None:
        """Create or replace ``path`` in the guest with ``data``."""

    def read_file(self, path: str) -> bytes | None:
        """``path``'s bytes, ``None`` if it does not exist."""

    def freeze_filesystems(self, timeout: int) -> int:
        """Freeze every guest file system (runs the guest's fsfreeze hooks); count frozen."""

    def thaw_filesystems(self) -> int:
        """Thaw every guest file system; count thawed."""
