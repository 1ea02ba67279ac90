"""bench/instant.py's verdict on issue 16's goal 6 (the bench itself boots guests: never here)."""

from __future__ import annotations

from bench import instant as bench


def test_the_goal_is_met_within_five_seconds_of_the_plain_boot_median() -> None:
    line = bench.goal_verdict([30.0, 35.0, 40.0, 33.0, 80.0], [38.0, 39.0, 41.0, 70.0, 36.0])
    assert line == (
        "goal: instant agent median 39.0 s <= plain boot median 35.0 s + 5 s: met "
        "(difference +4.0 s)"
    )


def test_more_than_five_seconds_later_is_not_met() -> None:
    assert bench.goal_verdict([30.0], [35.5]).endswith("NOT met (difference +5.5 s)")
