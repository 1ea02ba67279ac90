"""Progress events: the core is silent, adapters render.

Long operations take a ``Progress`` sink and report *phases* (with an optional
total in bytes) and *advances*. The CLI renders them as rich progress bars or
JSON lines; tests record them. ``NullProgress`` discards everything.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["NullProgress", "Progress"]


class Progress(Protocol):
    def phase(self, name: str, total: int | None = None) -> None:
        """A new phase starts (``total`` bytes/items if known)."""

    def advance(self, amount: int) -> None:
        """``amount`` more units of the current phase are done."""

    def note(self, message: str) -> None:
        """A one-line remark the user should see (e.g. a fallback taken)."""


class NullProgress:
    def phase(self, name: str, total: int | None = None) -> None:
        pass

    def advance(self, amount: int) -> None:
        pass

    def note(self, message: str) -> None:
        pass
