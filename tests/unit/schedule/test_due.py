"""The missed-run rule on an injected clock: one run per passed slot, within its window."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from surety.schedule import Due, due_slot, parse_schedule
from surety.schedule.due import MAX_MISSED

BERLIN = ZoneInfo("Europe/Berlin")
NIGHTLY = parse_schedule("*-*-* 02:00", BERLIN)
HOUR = timedelta(hours=1)


def at(day: int, hour: int, minute: int = 0, month: int = 3) -> datetime:
    return datetime(2024, month, day, hour, minute, tzinfo=BERLIN)


def test_nothing_due_before_the_next_slot() -> None:
    assert due_slot(NIGHTLY, at(1, 2), at(2, 1, 59), HOUR) is None


def test_the_slot_is_due_from_its_instant() -> None:
    assert due_slot(NIGHTLY, at(1, 2), at(2, 2), HOUR) == Due(at(2, 2), (), timedelta(0), True)


def test_a_slot_runs_once() -> None:
    due = due_slot(NIGHTLY, at(1, 2), at(2, 2, 5), HOUR)
    assert due is not None
    assert due.run
    # the caller records the slot it ran for: nothing more is due until the next one
    assert due_slot(NIGHTLY, due.slot, at(2, 2, 30), HOUR) is None
    assert due_slot(NIGHTLY, due.slot, at(3, 2, 0), HOUR) == Due(at(3, 2), (), timedelta(0), True)


def test_late_within_the_window_still_runs() -> None:
    due = due_slot(NIGHTLY, at(1, 2), at(2, 3, 0), HOUR)
    assert due == Due(at(2, 2), (), HOUR, True)  # exactly the window: still runs


def test_slot_older_than_the_window_is_missed_not_run() -> None:
    due = due_slot(NIGHTLY, at(1, 2), at(2, 3, 1), HOUR)
    assert due is not None
    assert (due.slot, due.run, due.late) == (at(2, 2), False, timedelta(hours=1, minutes=1))


def test_host_down_over_several_slots_runs_once_for_the_latest() -> None:
    # down from the 1st (after its run) to the 5th 02:20: slots of the 2nd, 3rd, 4th, 5th passed
    due = due_slot(NIGHTLY, at(1, 2), at(5, 2, 20), HOUR)
    assert due is not None
    assert due.slot == at(5, 2)
    assert due.missed == (at(2, 2), at(3, 2), at(4, 2))
    assert due.run
    assert due.late == timedelta(minutes=20)
    # having run it, nothing piles up
    assert due_slot(NIGHTLY, due.slot, at(5, 2, 21), HOUR) is None


def test_host_back_after_the_window_waits_for_the_next_slot() -> None:
    due = due_slot(NIGHTLY, at(1, 2), at(5, 9), HOUR)
    assert due is not None
    assert not due.run
    assert due.slot == at(5, 2)
    assert due_slot(NIGHTLY, due.slot, at(5, 9, 1), HOUR) is None
    assert due_slot(NIGHTLY, due.slot, at(6, 2, 1), HOUR) == Due(
        at(6, 2), (), timedelta(minutes=1), True
    )


def test_never_run_policy_counts_slots_from_first_seen_only() -> None:
    # the service first saw the policy at 02:30: the 02:00 slot before it does not count
    assert due_slot(NIGHTLY, None, at(2, 2, 40), HOUR, first_seen=at(2, 2, 30)) is None
    due = due_slot(NIGHTLY, None, at(3, 2, 1), HOUR, first_seen=at(2, 2, 30))
    assert due == Due(at(3, 2), (), timedelta(minutes=1), True)


def test_a_slot_exactly_at_first_seen_counts() -> None:
    due = due_slot(NIGHTLY, None, at(2, 2, 10), HOUR, first_seen=at(2, 2))
    assert due is not None
    assert due.slot == at(2, 2)
    assert due.run


def test_without_history_only_the_start_window_counts() -> None:
    assert due_slot(NIGHTLY, None, at(2, 3, 30), HOUR) is None
    due = due_slot(NIGHTLY, None, at(2, 2, 30), HOUR)
    assert due is not None
    assert due.slot == at(2, 2)
    assert due.run


def test_spring_forward_day_the_gap_slot_is_due_after_the_gap() -> None:
    schedule = parse_schedule("*-*-* 02:30", BERLIN)
    last = at(30, 2, 30)
    assert due_slot(schedule, last, at(31, 1, 59), HOUR) is None
    due = due_slot(schedule, last, at(31, 3, 10), HOUR)
    assert due is not None
    assert due.slot.isoformat() == "2024-03-31T03:00:00+02:00"
    assert due.late == timedelta(minutes=10)
    assert due.run


def test_autumn_day_the_repeated_hour_is_due_once() -> None:
    schedule = parse_schedule("*-*-* 02:30", BERLIN)
    first = datetime(2024, 10, 27, 2, 30, tzinfo=BERLIN)  # CEST, the first 02:30
    due = due_slot(schedule, at(26, 2, 30, month=10), first + timedelta(minutes=5), HOUR)
    assert due is not None
    assert due.slot == first
    second_pass = first + HOUR  # 02:30 CET
    assert due_slot(schedule, due.slot, second_pass + timedelta(minutes=5), HOUR) is None


def test_missed_slots_are_bounded() -> None:
    minutely = parse_schedule("minutely", BERLIN)
    due = due_slot(minutely, at(1, 0), at(2, 0), HOUR)
    assert due is not None
    assert due.slot == at(2, 0)
    assert len(due.missed) == MAX_MISSED
    assert due.missed[-1] == at(2, 0) - timedelta(minutes=1)
