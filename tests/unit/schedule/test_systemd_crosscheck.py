"""surety's calendar agrees with systemd's own: ``systemd-analyze calendar`` works offline.

Each expression's next slots from a fixed base time (``--base-time``, in Europe/Berlin)
are compared with ``Schedule.next_after``. The table avoids spring-forward gaps on
purpose: there systemd skips a slot that surety runs at the end of the gap
(test_calendar tests that rule).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from surety.schedule import parse_schedule
from tests.prerequisites import require

BERLIN = ZoneInfo("Europe/Berlin")
ITERATIONS = 6

EXPRESSIONS = [
    "Mon..Fri 22:30",
    "Sat,Sun 03:00",
    "*-*-* 02:00",
    "*-*-01 04:00:00",
    "Mon *-*-* 22:30",
    "Mon,Wed..Fri 8:05",
    "Mon *-*-1..7 01:00",
    "*-*-1..7/2 00:00",
    "*:0/15",
    "*:0/15:30",
    "*-*-* 1,13:00",
    "*-1/2-1",
    "12-24 18:00",
    "*-02-29 06:00",
    "Thu *-02-22..29 06:00",
    "minutely",
    "hourly",
    "daily",
    "weekly",
    "monthly",
    "quarterly",
    "semiannually",
    "yearly",
]

BASES = ["2024-03-01 12:00:00", "2024-10-26 23:00:00", "2024-12-31 23:59:00"]


def systemd_slots(expression: str, base: str) -> list[datetime]:
    out = subprocess.run(
        [
            "systemd-analyze",
            "calendar",
            f"--iterations={ITERATIONS}",
            f"--base-time={base}",
            expression,
        ],
        env={**os.environ, "TZ": "Europe/Berlin"},
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    return [
        datetime.strptime(line.split(": ", 1)[1].strip(), "%a %Y-%m-%d %H:%M:%S UTC").replace(
            tzinfo=UTC
        )
        for line in out.splitlines()
        if line.strip().startswith("(in UTC):")
    ]


@pytest.fixture(scope="module", autouse=True)
def _systemd_analyze() -> None:
    require(shutil.which("systemd-analyze") is not None, "systemd-analyze (Debian package systemd)")


@pytest.mark.parametrize("base", BASES)
@pytest.mark.parametrize("expression", EXPRESSIONS)
def test_next_slots_match_systemd(expression: str, base: str) -> None:
    expected = systemd_slots(expression, base)
    assert len(expected) == ITERATIONS
    schedule = parse_schedule(expression, BERLIN)
    at = datetime.strptime(base, "%Y-%m-%d %H:%M:%S").replace(tzinfo=BERLIN)
    got = []
    for _ in range(ITERATIONS):
        at = schedule.next_after(at)
        got.append(at.astimezone(UTC))
    assert got == expected
