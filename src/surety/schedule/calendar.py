"""Calendar expressions: systemd OnCalendar style, its shorthands, and ``every N{m,h,d}``.

What an admin writes, and what surety does with it:

* **OnCalendar expressions** — ``[WEEKDAYS] [DATE] [TIME]``, as ``systemd.time(7)`` defines
  them: ``Mon..Fri 22:30``, ``Sat,Sun 03:00``, ``*-*-* 02:00``, ``*-*-01 04:00:00``,
  ``Mon *-*-* 22:30``, ``Mon,Wed..Fri 8:05``, ``*-*-1..7 00:00`` (with a weekday: the
  first Monday of the month), ``*:0/15`` (every 15 minutes), ``*-*-* 01,13:00``. A missing
  date is ``*-*-*``, a missing time ``00:00:00``, missing seconds ``00``. A date is
  ``MONTH-DAY`` or ``*-MONTH-DAY``. Each component is ``*`` or a comma list of ``N``,
  ``N..M``, ``N/STEP`` (N, N+STEP, ... up to the field's end) and ``N..M/STEP``.
  These are *translated* to a six-field cron expression (minute hour day month weekday
  second) and iterated by **croniter** with ``day_or=False``, which gives systemd's rule
  that a day must match both the date and the weekdays (cron's own rule is OR).
* **Shorthands** with systemd's meanings: ``minutely`` ``hourly`` ``daily`` ``weekly``
  (Mon 00:00) ``monthly`` (the 1st, 00:00) ``quarterly`` ``semiannually`` ``yearly``
  (``annually``).
* **Intervals** — surety's own, since neither systemd nor cron has them: ``every 30m``,
  ``every 4h``, ``every 1d`` (``every 2d``...). Slots are anchored at local midnight
  (minutes and hours: midnight + k x interval within each day; days: every N-th day
  counted from 1970-01-01), so they do not drift when the service restarts.

Rejected with a ``UsageError`` that says why: a year other than ``*`` (year
restrictions), ``~`` (last days of a month), fractional seconds, ``*/STEP`` (systemd
refuses it too: write ``0/STEP``), weekday ranges that wrap (``Fri..Mon``), a time zone
inside the expression (the time zone is the service's ``timezone`` setting), and
expressions that never match (``*-02-30``).

Time zone and DST: slots are wall-clock times in the schedule's zone. croniter iterates
*naive* wall-clock times (pure calendar arithmetic); surety then places each on the
time line itself: a wall time that a spring-forward change skips runs at the first
instant after the gap (02:30 on the last Sunday of March in Europe/Berlin runs at
03:00 CEST — systemd would skip it), and a wall time that an autumn change repeats
runs once, at its first occurrence. Several skipped wall times coalesce into one slot.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import CroniterBadDateError, croniter

from surety.core.errors import UsageError

__all__ = ["SHORTHANDS", "Schedule", "parse_schedule"]

SHORTHANDS = {
    "minutely": "*-*-* *:*:00",
    "hourly": "*-*-* *:00:00",
    "daily": "*-*-* 00:00:00",
    "weekly": "Mon *-*-* 00:00:00",
    "monthly": "*-*-01 00:00:00",
    "quarterly": "*-01,04,07,10-01 00:00:00",
    "semiannually": "*-01,07-01 00:00:00",
    "yearly": "*-01-01 00:00:00",
    "annually": "*-01-01 00:00:00",
}
"""systemd's shorthands and the expressions they stand for."""

_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WEEKDAY_LONG = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_EVERY = re.compile(r"every\s+(\d+)\s*(m|min|mins|minutes?|h|hours?|d|days?)", re.IGNORECASE)
_ITEM = re.compile(r"(\d+)(?:\.\.(\d+))?(?:/(\d+))?")
_MAX_YEARS_BETWEEN_MATCHES = 50  # Feb 29 on a given weekday recurs within 40 years


@dataclass(frozen=True)
class Schedule:
    text: str  # as the admin wrote it
    tz: ZoneInfo
    cron: str = field(default="", compare=False)  # the croniter expression ("" for intervals)
    every: timedelta | None = field(default=None, compare=False)  # an interval schedule

    def __post_init__(self) -> None:
        if not self.cron and self.every is None:  # built from text alone: compile it
            compiled = parse_schedule(self.text, self.tz)
            object.__setattr__(self, "cron", compiled.cron)
            object.__setattr__(self, "every", compiled.every)

    def next_after(self, after: datetime) -> datetime:
        """The first slot strictly after ``after`` (aware), as an aware datetime in ``tz``.
        Slots that a DST change skips run at the first instant after the gap; slots a DST
        change repeats run once."""
        if after.tzinfo is None:
            raise ValueError("next_after needs an aware datetime")
        wall = after.astimezone(self.tz).replace(tzinfo=None, fold=0)
        # Placing wall times on the time line is monotonic, so no slot before ``wall``
        # can land after ``after``; the ones that land on or before it are skipped.
        for naive in self._wall_slots(wall):
            slot = _place(naive, self.tz)
            if slot > after:
                return slot
        raise AssertionError("unreachable: slot iteration is endless")

    def describe(self) -> str:
        """One line for humans, e.g. 'Mon..Fri 22:30 (Europe/Berlin, DST observed)'."""
        return f"{self.text} ({_zone_name(self.tz)}{', DST observed' if _has_dst(self.tz) else ''})"

    def _wall_slots(self, wall: datetime) -> Iterator[datetime]:
        """Naive wall-clock slots strictly after ``wall``, in order."""
        if self.every is not None:
            step = _interval_step(self.every)
            while True:
                wall = step(wall)
                yield wall
        it = croniter(
            self.cron,
            wall,
            day_or=False,
            ret_type=datetime,
            max_years_between_matches=_MAX_YEARS_BETWEEN_MATCHES,
        )
        while True:
            yield it.get_next(datetime)


def parse_schedule(text: str, tz: ZoneInfo) -> Schedule:
    """``UsageError`` with the reason when ``text`` is not a schedule surety understands."""
    spec = " ".join(text.split())
    if not spec:
        raise UsageError("empty schedule")
    every = _EVERY.fullmatch(spec)
    if every is not None:
        schedule = Schedule(spec, tz, every=_interval(int(every.group(1)), every.group(2)))
    else:
        zone = spec.split()[-1]
        if ("/" in zone and zone[0].isalpha()) or zone.upper() == "UTC":
            raise UsageError(
                f"schedule {spec!r}: a time zone in the expression ({zone}) is not supported; "
                "set [service] timezone"
            )
        if spec.lower().startswith("every"):
            raise UsageError(f"interval {spec!r} is not 'every N' with m, h or d (e.g. 'every 4h')")
        cron = _translate(SHORTHANDS.get(spec.lower(), spec))
        schedule = Schedule(spec, tz, cron=cron)
        try:
            schedule.next_after(datetime(2000, 1, 1, tzinfo=UTC))
        except CroniterBadDateError:
            raise UsageError(f"schedule {spec!r} never matches a date") from None
    return schedule


# -- intervals ------------------------------------------------------------------------------


def _interval(count: int, unit: str) -> timedelta:
    unit = unit.lower()[0]
    every = {"m": timedelta(minutes=count), "h": timedelta(hours=count)}.get(
        unit, timedelta(days=count)
    )
    if count <= 0:
        raise UsageError("an interval must be at least 1 (e.g. 'every 30m')")
    if unit != "d" and every > timedelta(days=1):
        raise UsageError(f"'every {count}{unit}' is longer than a day: use 'every Nd'")
    return every


def _interval_step(every: timedelta) -> Callable[[datetime], datetime]:
    """The next wall-clock slot strictly after a wall time, anchored at local midnight."""
    if every % timedelta(days=1) == timedelta(0):
        days = every.days

        def next_day(wall: datetime) -> datetime:
            ordinal = wall.date().toordinal() + 1
            ordinal += -(ordinal - _EPOCH_ORDINAL) % days
            return datetime.combine(date.fromordinal(ordinal), datetime.min.time())

        return next_day

    def next_in_day(wall: datetime) -> datetime:
        midnight = wall.replace(hour=0, minute=0, second=0, microsecond=0)
        slot = midnight + ((wall - midnight) // every + 1) * every
        return min(slot, midnight + timedelta(days=1))

    return next_in_day


_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


# -- OnCalendar -> cron -----------------------------------------------------------------------


def _translate(spec: str) -> str:
    """A six-field croniter expression for a systemd OnCalendar expression."""
    tokens = spec.split()
    weekdays = "*"
    if tokens and tokens[0][0].isalpha():
        weekdays = _weekdays(tokens.pop(0))
    day_spec = tokens.pop(0) if tokens and ("-" in tokens[0] or "~" in tokens[0]) else "*-*-*"
    time_spec = tokens.pop(0) if tokens and ":" in tokens[0] else "00:00:00"
    if tokens:
        raise UsageError(
            f"schedule {spec!r}: cannot understand {tokens[0]!r} "
            "(expected [WEEKDAYS] [DATE] [TIME])"
        )
    month, day = _date(day_spec)
    hour, minute, second = _time(time_spec)
    return f"{minute} {hour} {day} {month} {weekdays} {second}"


def _weekdays(text: str) -> str:
    days: set[int] = set()
    for item in text.split(","):
        first, _, last = item.partition("..")
        start, end = _weekday(first, text), _weekday(last or first, text)
        if end < start:
            raise UsageError(f"weekday range {item!r} wraps around; write e.g. 'Fri,Sat,Sun,Mon'")
        days.update(range(start, end + 1))
    return ",".join(str((d + 1) % 7) for d in sorted(days))  # cron: Sun=0, Mon=1


def _weekday(name: str, text: str) -> int:
    low = name.lower()
    for names in (_WEEKDAYS, _WEEKDAY_LONG):
        if low in names:
            return names.index(low)
    raise UsageError(f"{name!r} in {text!r} is not a weekday (Mon, Tue, ... Sun)")


def _date(text: str) -> tuple[str, str]:
    if "~" in text:
        raise UsageError(f"date {text!r}: '~' (last days of a month) is not supported")
    parts = text.split("-")
    if len(parts) == 3:
        if parts[0] != "*":
            raise UsageError(f"date {text!r}: year restrictions are not supported; use '*'")
        parts = parts[1:]
    if len(parts) != 2:
        raise UsageError(f"date {text!r} is not [*-]MONTH-DAY (e.g. '*-*-01')")
    return _field(parts[0], "month", 1, 12), _field(parts[1], "day", 1, 31)


def _time(text: str) -> tuple[str, str, str]:
    parts = text.split(":")
    if len(parts) == 2:
        parts.append("00")
    if len(parts) != 3:
        raise UsageError(f"time {text!r} is not HOUR:MINUTE[:SECOND]")
    if "." in parts[2]:
        raise UsageError(f"time {text!r}: fractional seconds are not supported")
    return (
        _field(parts[0], "hour", 0, 23),
        _field(parts[1], "minute", 0, 59),
        _field(parts[2], "second", 0, 59),
    )


def _field(text: str, what: str, low: int, high: int) -> str:
    """One component as cron text: ``*`` or a list of N, N-M, N-HIGH/S, N-M/S."""
    if text == "*":
        return "*"
    items = []
    for item in text.split(","):
        match = _ITEM.fullmatch(item)
        if match is None:
            hint = " (write 0/STEP, not */STEP)" if item.startswith("*/") else ""
            raise UsageError(f"{what} {item!r} is not N, N..M or N/STEP{hint}")
        start, end, step = match.groups()
        first, last = int(start), int(end) if end is not None else None
        for value in (first, last):
            if value is not None and not low <= value <= high:
                raise UsageError(f"{what} {value} is out of range {low}..{high}")
        if last is not None and last < first:
            raise UsageError(f"{what} range {item!r} runs backwards")
        if step is not None and int(step) == 0:
            raise UsageError(f"{what} {item!r}: a repetition needs a step of at least 1")
        items.append(_cron_item(first, last, step, high))
    return ",".join(items)


def _cron_item(first: int, last: int | None, step: str | None, high: int) -> str:
    if step is None:
        return str(first) if last is None else f"{first}-{last}"
    return f"{first}-{last if last is not None else high}/{int(step)}"


# -- time zones -------------------------------------------------------------------------------


def _place(wall: datetime, tz: ZoneInfo) -> datetime:
    """A wall time on the time line: its first occurrence, or the end of the gap it falls in."""
    first = wall.replace(tzinfo=tz, fold=0)
    if first.astimezone(UTC).astimezone(tz).replace(tzinfo=None) == wall:
        return first
    # In a spring-forward gap: the transition lies between the two readings of ``wall``.
    low = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
    high = first.astimezone(UTC)
    low, high = min(low, high), max(low, high)
    after = high.astimezone(tz).utcoffset()
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) / 2
        if middle.astimezone(tz).utcoffset() == after:
            high = middle
        else:
            low = middle
    return high.replace(microsecond=0).astimezone(tz)


def _zone_name(tz: ZoneInfo) -> str:
    return tz.key or str(tz)


def _has_dst(tz: ZoneInfo) -> bool:
    year = datetime.now(UTC).year
    offsets = {datetime(year, month, 15, tzinfo=tz).utcoffset() for month in range(1, 13)}
    return len(offsets) > 1
