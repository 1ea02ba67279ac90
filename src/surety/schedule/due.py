"""The missed-run rule: a slot that passed while the host was down runs once, within
its start window; several missed slots coalesce into one run; never a pile-up.

Pure: the caller passes ``now`` (an injected clock) and what it recorded (the slot it
last ran for, when it first saw the policy); nothing here reads a clock or a catalog.

    slots since last_slot (or first_seen)  ->  none passed      -> None
                                            ->  the latest one  -> Due(slot, missed=earlier ones,
                                                                   late=now-slot,
                                                                   run=late <= start_window)
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta

from surety.schedule.calendar import Schedule

__all__ = ["MAX_MISSED", "Due", "due_slot"]

MAX_MISSED = 100
"""``Due.missed`` holds at most this many of the most recent coalesced slots (a minutely
schedule on a host that was down for a month would otherwise list 43 200)."""


@dataclass(frozen=True)
class Due:
    slot: datetime  # the scheduled instant this run stands for (the latest passed slot)
    missed: tuple[datetime, ...]  # earlier slots since last_slot that it coalesces
    late: timedelta  # now - slot
    run: bool  # False: the slot is older than the start window; record it missed, do not run


def due_slot(
    schedule: Schedule,
    last_slot: datetime | None,
    now: datetime,
    start_window: timedelta,
    first_seen: datetime | None = None,
) -> Due | None:
    """The latest slot due since ``last_slot``, or None when no slot passed since.

    ``last_slot``: the slot the job last ran (or skipped) for; None when it never ran —
    then slots before ``first_seen`` (when the service first saw the policy) do not count.
    A slot older than ``start_window`` comes back with ``run=False`` (the caller records
    it as missed and waits for the next).

    With neither ``last_slot`` nor ``first_seen``, only slots within ``start_window``
    of ``now`` count (as if the policy had been seen one window ago).
    A slot exactly at ``now`` is due; one exactly ``start_window`` old still runs."""
    tick = timedelta(microseconds=1)  # makes the start inclusive: a slot at first_seen counts
    if last_slot is not None:
        since = last_slot
    elif first_seen is not None:
        since = first_seen - tick
    else:
        since = now - start_window - tick
    passed: deque[datetime] = deque(maxlen=MAX_MISSED + 1)
    slot = schedule.next_after(since)
    while slot <= now:
        passed.append(slot)
        slot = schedule.next_after(slot)
    if not passed:
        return None
    latest = passed.pop()
    late = now - latest
    return Due(slot=latest, missed=tuple(passed), late=late, run=late <= start_window)
