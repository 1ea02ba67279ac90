"""Calendar expressions: what each syntax means, what is refused, and DST on Europe/Berlin."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from surety.core.errors import UsageError
from surety.schedule import Schedule, parse_schedule

BERLIN = ZoneInfo("Europe/Berlin")


def slots(text: str, start: datetime, n: int = 4, tz: ZoneInfo = BERLIN) -> list[str]:
    schedule = parse_schedule(text, tz)
    out = []
    for _ in range(n):
        start = schedule.next_after(start)
        out.append(start.isoformat())
    return out


FRIDAY_NOON = datetime(2024, 3, 1, 12, 0, tzinfo=BERLIN)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "Mon..Fri 22:30",
            ["2024-03-01T22:30", "2024-03-04T22:30", "2024-03-05T22:30", "2024-03-06T22:30"],
        ),
        (
            "Sat,Sun 03:00",
            ["2024-03-02T03:00", "2024-03-03T03:00", "2024-03-09T03:00", "2024-03-10T03:00"],
        ),
        (
            "*-*-* 02:00",
            ["2024-03-02T02:00", "2024-03-03T02:00", "2024-03-04T02:00", "2024-03-05T02:00"],
        ),
        (
            "*-*-01 04:00:00",
            ["2024-04-01T04:00", "2024-05-01T04:00", "2024-06-01T04:00", "2024-07-01T04:00"],
        ),
        (
            "Mon *-*-* 22:30",
            ["2024-03-04T22:30", "2024-03-11T22:30", "2024-03-18T22:30", "2024-03-25T22:30"],
        ),
        (
            "Mon,Wed..Fri 8:5",
            ["2024-03-04T08:05", "2024-03-06T08:05", "2024-03-07T08:05", "2024-03-08T08:05"],
        ),
        # the date AND the weekday must match (systemd's rule): the first Monday of each month
        (
            "Mon *-*-1..7 01:00",
            ["2024-03-04T01:00", "2024-04-01T01:00", "2024-05-06T01:00", "2024-06-03T01:00"],
        ),
        (
            "*:0/15",
            ["2024-03-01T12:15", "2024-03-01T12:30", "2024-03-01T12:45", "2024-03-01T13:00"],
        ),
        (
            "*:0/15:30",
            [
                "2024-03-01T12:00:30",
                "2024-03-01T12:15:30",
                "2024-03-01T12:30:30",
                "2024-03-01T12:45:30",
            ],
        ),
        (
            "*-*-* 1,13:00",
            ["2024-03-01T13:00", "2024-03-02T01:00", "2024-03-02T13:00", "2024-03-03T01:00"],
        ),
        (
            "*-1/2-1",
            ["2024-05-01T00:00", "2024-07-01T00:00", "2024-09-01T00:00", "2024-11-01T00:00"],
        ),
        (
            "12-24 18:00",
            ["2024-12-24T18:00", "2025-12-24T18:00", "2026-12-24T18:00", "2027-12-24T18:00"],
        ),
    ],
)
def test_oncalendar_expressions(text: str, expected: list[str]) -> None:
    got = slots(text, FRIDAY_NOON)
    assert [s[: len(e)] for s, e in zip(got, expected, strict=True)] == expected


@pytest.mark.parametrize(
    ("text", "first", "second"),
    [
        ("minutely", "2024-03-01T12:01:00", "2024-03-01T12:02:00"),
        ("hourly", "2024-03-01T13:00:00", "2024-03-01T14:00:00"),
        ("daily", "2024-03-02T00:00:00", "2024-03-03T00:00:00"),
        ("weekly", "2024-03-04T00:00:00", "2024-03-11T00:00:00"),  # Monday 00:00
        ("monthly", "2024-04-01T00:00:00", "2024-05-01T00:00:00"),  # the 1st, 00:00
        ("quarterly", "2024-04-01T00:00:00", "2024-07-01T00:00:00"),
        ("yearly", "2025-01-01T00:00:00", "2026-01-01T00:00:00"),
        ("DAILY", "2024-03-02T00:00:00", "2024-03-03T00:00:00"),
    ],
)
def test_shorthands_mean_what_systemd_says(text: str, first: str, second: str) -> None:
    got = slots(text, FRIDAY_NOON, 2)
    assert [s[:19] for s in got] == [first, second]


def test_intervals_are_anchored_at_local_midnight() -> None:
    start = datetime(2024, 3, 1, 12, 7, tzinfo=BERLIN)
    assert [s[11:16] for s in slots("every 30m", start, 3)] == ["12:30", "13:00", "13:30"]
    assert [s[:16] for s in slots("every 4h", start, 4)] == [
        "2024-03-01T16:00",
        "2024-03-01T20:00",
        "2024-03-02T00:00",
        "2024-03-02T04:00",
    ]
    # 90 minutes does not divide a day: the day restarts at midnight
    assert [
        s[11:16] for s in slots("every 90m", datetime(2024, 3, 1, 21, 0, tzinfo=BERLIN), 3)
    ] == [
        "22:30",
        "00:00",
        "01:30",
    ]
    assert slots("every 1d", start, 2)[0][:16] == "2024-03-02T00:00"


def test_day_intervals_do_not_depend_on_where_they_start() -> None:
    schedule = parse_schedule("every 3d", BERLIN)
    a = schedule.next_after(datetime(2024, 3, 1, 0, 0, tzinfo=BERLIN))
    b = schedule.next_after(datetime(2024, 3, 1, 23, 59, tzinfo=BERLIN))
    assert a == b  # a restart in between finds the same slot
    assert schedule.next_after(a) - a == timedelta(days=3)


def test_schedule_built_from_text_alone_works_like_parse() -> None:
    assert Schedule("daily", BERLIN).next_after(FRIDAY_NOON) == parse_schedule(
        "daily", BERLIN
    ).next_after(FRIDAY_NOON)


def test_next_after_is_strict_and_needs_an_aware_time() -> None:
    schedule = parse_schedule("*-*-* 02:00", BERLIN)
    at = datetime(2024, 3, 2, 2, 0, tzinfo=BERLIN)
    assert schedule.next_after(at) == at + timedelta(days=1)
    assert schedule.next_after(at - timedelta(seconds=1)) == at
    with pytest.raises(ValueError, match="aware"):
        schedule.next_after(datetime(2024, 3, 2, 2, 0))


def test_describe_names_the_zone_and_dst() -> None:
    assert parse_schedule("Mon..Fri 22:30", BERLIN).describe() == (
        "Mon..Fri 22:30 (Europe/Berlin, DST observed)"
    )
    assert parse_schedule("daily", ZoneInfo("UTC")).describe() == "daily (UTC)"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "empty"),
        ("2025-*-* 00:00", "year restrictions"),
        ("*-*~01", "last days"),
        ("*-*-* 00:00:00.5", "fractional"),
        ("*:*/15", "0/STEP"),
        ("Fri..Mon", "wraps"),
        ("Mon..Fry 10:00", "not a weekday"),
        ("*-*-* 25:00", "out of range 0..23"),
        ("*-13-01", "out of range 1..12"),
        ("*-*-7..1", "backwards"),
        ("*:0/0", "step of at least 1"),
        ("daily Europe/Berlin", "time zone"),
        ("daily UTC", "time zone"),
        ("*-02-30", "never matches"),
        ("every 0m", "at least 1"),
        ("every 25h", "longer than a day"),
        ("every 5 fortnights", "'every N'"),
        ("tomorrow", "not a weekday"),
        ("*-*-* 10:00 extra", "cannot understand"),
        ("10", "cannot understand"),
    ],
)
def test_what_is_refused_says_why(text: str, why: str) -> None:
    with pytest.raises(UsageError, match=why.replace(".", r"\.").replace("*", r"\*")):
        parse_schedule(text, BERLIN)


# -- DST on Europe/Berlin: spring forward 2024-03-31 02:00 -> 03:00, back 2024-10-27 03:00 -> 02:00


def test_slot_in_the_spring_forward_gap_runs_at_the_first_instant_after_it() -> None:
    schedule = parse_schedule("*-*-* 02:30", BERLIN)
    slot = schedule.next_after(datetime(2024, 3, 30, 12, 0, tzinfo=BERLIN))
    assert slot.astimezone(UTC) == datetime(2024, 3, 31, 1, 0, tzinfo=UTC)  # 03:00 CEST
    assert slot.isoformat() == "2024-03-31T03:00:00+02:00"
    assert schedule.next_after(slot).isoformat() == "2024-04-01T02:30:00+02:00"


def test_slots_skipped_by_the_gap_coalesce_into_one() -> None:
    schedule = parse_schedule("*:0/15", BERLIN)
    got = slots("*:0/15", datetime(2024, 3, 31, 1, 40, tzinfo=BERLIN), 4)
    assert got == [
        "2024-03-31T01:45:00+01:00",
        "2024-03-31T03:00:00+02:00",  # 02:00, 02:15, 02:30, 02:45 and 03:00 are one slot
        "2024-03-31T03:15:00+02:00",
        "2024-03-31T03:30:00+02:00",
    ]
    assert schedule.next_after(datetime(2024, 3, 31, 3, 0, tzinfo=BERLIN)).minute == 15


def test_a_repeated_autumn_hour_runs_once() -> None:
    got = slots("*-*-* 02:30", datetime(2024, 10, 26, 12, 0, tzinfo=BERLIN), 2)
    assert got == ["2024-10-27T02:30:00+02:00", "2024-10-28T02:30:00+01:00"]
    # every half hour: the repeated 02:00 and 02:30 (CET) do not run again
    got = slots("*:0/30", datetime(2024, 10, 27, 1, 40, tzinfo=BERLIN), 4)
    assert got == [
        "2024-10-27T02:00:00+02:00",
        "2024-10-27T02:30:00+02:00",
        "2024-10-27T03:00:00+01:00",
        "2024-10-27T03:30:00+01:00",
    ]


def test_from_inside_the_repeated_hour_the_next_slot_is_after_it() -> None:
    schedule = parse_schedule("*:0/30", BERLIN)
    second_pass = datetime(2024, 10, 27, 0, 40, tzinfo=UTC)  # 02:40 CET, the second 02:40
    assert schedule.next_after(second_pass).isoformat() == "2024-10-27T03:00:00+01:00"


def test_intervals_observe_dst_in_wall_clock_time() -> None:
    got = slots("every 1h", datetime(2024, 3, 31, 0, 30, tzinfo=BERLIN), 3)
    assert got == [
        "2024-03-31T01:00:00+01:00",
        "2024-03-31T03:00:00+02:00",  # 02:00 does not exist
        "2024-03-31T04:00:00+02:00",
    ]
