"""Calendar expressions: systemd OnCalendar style, its shorthands, and ``every N{m,h,d}``.

(Skeleton: the interface the service codes against; implemented in the config/schedule work.)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

__all__ = ["Schedule", "parse_schedule"]


@dataclass(frozen=True)
class Schedule:
    text: str  # as the admin wrote it
    tz: ZoneInfo

    def next_after(self, after: datetime) -> datetime:
        """The first slot strictly after ``after`` (aware), as an aware datetime in ``tz``.
        Slots that a DST change skips run at the first instant after the gap; slots a DST
        change repeats run once."""
        raise NotImplementedError

    def describe(self) -> str:
        """One line for humans, e.g. 'Mon..Fri 22:30 (Europe/Berlin, DST observed)'."""
        raise NotImplementedError


def parse_schedule(text: str, tz: ZoneInfo) -> Schedule:
    """``UsageError`` with the reason when ``text`` is not a schedule surety understands."""
    raise NotImplementedError
