"""The missed-run rule: a slot that passed while the host was down runs once, within
its start window; several missed slots coalesce into one run; never a pile-up.

(Skeleton: the interface the service codes against; implemented in the config/schedule work.)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from surety.schedule.calendar import Schedule

__all__ = ["Due", "due_slot"]


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
    it as missed and waits for the next)."""
    raise NotImplementedError
