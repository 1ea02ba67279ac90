"""A scripted ``GuestChannel`` for unit tests of writers and the requester.

Commands are answered by handlers keyed on ``argv[0]`` (or the whole command
line for ``sh -c``); files live in a dict; freeze/thaw are counted and, like
qemu-guest-agent, everything but thaw is refused while frozen. Its real twin
is ``AgentChannel``, exercised against a real guest in ``tests/vm``; handlers
answer with the real channel's ``GuestResult`` (re-exported here).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from surety.core.errors import SourceError
from surety.hypervisor.guest_agent import GuestResult

__all__ = ["FakeGuest", "GuestResult", "Handler"]

Handler = Callable[[Sequence[str]], GuestResult]
"""Answers one command: its argv in, the real channel's result type out."""


@dataclass
class FakeGuest:
    name: str = "fake"
    handlers: dict[str, Handler] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)
    commands: list[list[str]] = field(default_factory=list)
    frozen: bool = False
    freezes: int = 0
    thaws: int = 0
    reachable: bool = True
    fail_freeze: bool = False

    def _check(self, what: str) -> None:
        if not self.reachable:
            raise SourceError(f"{self.name}: guest agent {what}: not responding")
        if self.frozen:
            raise SourceError(f"{self.name}: guest agent {what}: refused while frozen")

    def ping(self, timeout: int = 5) -> None:
        if not self.reachable:
            raise SourceError(f"{self.name}: guest agent guest-ping: not responding")

    def run(
        self, argv: Sequence[str], stdin: bytes | None = None, timeout: float = 60.0
    ) -> GuestResult:
        self._check("guest-exec")
        self.commands.append(list(argv))
        key = argv[2] if argv[:2] == ["sh", "-c"] else argv[0]
        handler = self.handlers.get(key) or self.handlers.get("*")
        return handler(argv) if handler else GuestResult(127, stderr=b"not found")

    def spawn(self, argv: Sequence[str], stdin: bytes | None = None) -> int:
        self._check("guest-exec")
        self.commands.append(list(argv))
        return len(self.commands)

    def poll(self, pid: int) -> GuestResult | None:
        return None

    def kill(self, pid: int) -> None:
        pass

    def write_file(self, path: str, data: bytes) -> None:
        self._check("guest-file-open")
        self.files[path] = data

    def read_file(self, path: str) -> bytes | None:
        self._check("guest-file-open")
        return self.files.get(path)

    def freeze_filesystems(self, timeout: int) -> int:
        self._check("guest-fsfreeze-freeze")
        if self.fail_freeze:
            raise SourceError(f"{self.name}: fs-freeze: a file system refused to freeze")
        self.frozen, self.freezes = True, self.freezes + 1
        return 1

    def thaw_filesystems(self) -> int:
        self.frozen, self.thaws = False, self.thaws + 1
        return 1
