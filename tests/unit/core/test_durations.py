"""Durations as admins write them: parsed, refused with the reason, and written back."""

from __future__ import annotations

from datetime import timedelta

import pytest

from surety.core.errors import UsageError
from surety.core.units import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("15m", timedelta(minutes=15)),
        ("4h", timedelta(hours=4)),
        ("2d", timedelta(days=2)),
        ("1w", timedelta(weeks=1)),
        ("1h30m", timedelta(minutes=90)),
        ("1H 30m", timedelta(minutes=90)),
    ],
)
def test_durations_parse(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["30", "", "4x", "h", "1h-2m", "2 days"])
def test_bad_durations_say_what_is_expected(text: str) -> None:
    with pytest.raises(UsageError, match=r"not a duration: .* \(use e\.g\. 90s, 15m"):
        parse_duration(text)


def test_zero_is_refused() -> None:
    with pytest.raises(UsageError, match="longer than zero"):
        parse_duration("0m")


@pytest.mark.parametrize("text", ["2d", "1w", "1h30m", "1m30s", "1w1d"])
def test_format_writes_what_parse_reads(text: str) -> None:
    assert format_duration(parse_duration(text)) == text
    assert format_duration(timedelta(0)) == "0s"
