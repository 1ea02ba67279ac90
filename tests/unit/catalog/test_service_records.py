"""What the service keeps in the catalog (slots, first-seen, heartbeats, requests) and
the per-repository records (usage, checks, notifications)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from surety.catalog import Catalog, Heartbeat

T0 = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    return Catalog(tmp_path / "catalog.sqlite", clock=lambda: T0)


def test_the_last_slot_only_moves_forward(catalog: Catalog) -> None:
    berlin = ZoneInfo("Europe/Berlin")
    slot = datetime(2026, 12, 1, 3, 0, tzinfo=berlin)
    assert catalog.last_slot("nightly:backup") is None
    catalog.record_slot("nightly:backup", slot, "queued")
    assert catalog.last_slot("nightly:backup") == slot
    catalog.record_slot("nightly:backup", slot - timedelta(days=1), "missed")
    assert catalog.last_slot("nightly:backup") == slot
    catalog.record_slot("nightly:backup", slot + timedelta(days=1), "missed")
    assert catalog.last_slot("nightly:backup") == slot + timedelta(days=1)
    assert catalog.last_slot("other:backup") is None


def test_first_seen_is_recorded_once(catalog: Catalog) -> None:
    assert catalog.first_seen("nightly:backup", T0) == T0
    assert catalog.first_seen("nightly:backup", T0 + timedelta(hours=5)) == T0
    catalog.record_slot("later:backup", T0, "queued")  # a slot first, first_seen after
    assert catalog.first_seen("later:backup", T0 + timedelta(hours=1)) == T0 + timedelta(hours=1)
    assert catalog.last_slot("later:backup") == T0


def test_one_heartbeat_per_host_cleared_only_by_its_pid(catalog: Catalog) -> None:
    beat = Heartbeat("h1", 10, "2026-12-01T01:00:00+00:00", "2026-12-01T01:00:05+00:00", "c", "1")
    catalog.beat(beat)
    newer = Heartbeat("h1", 10, beat.started, "2026-12-01T01:00:10+00:00", "c", "1")
    catalog.beat(newer)
    assert catalog.heartbeats() == [newer]
    catalog.clear_heartbeat("h1", 99)  # another pid's goodbye
    assert catalog.heartbeats() == [newer]
    catalog.clear_heartbeat("h1", 10)
    assert catalog.heartbeats() == []


def test_a_run_request_is_taken_once(tmp_path: Path) -> None:
    first = Catalog(tmp_path / "catalog.sqlite")
    second = Catalog(tmp_path / "catalog.sqlite")
    a = first.request_run("nightly:backup")
    b = first.request_run("nightly:backup", vm="db1", by="web")
    assert second.take_requests("h1") == [(a, "nightly:backup", None), (b, "nightly:backup", "db1")]
    assert first.take_requests("h2") == []
    c = second.request_run("weekly:verify")
    assert first.take_requests("h2") == [(c, "weekly:verify", None)]


TAKER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from surety.catalog import Catalog
    catalog = Catalog(Path(sys.argv[1]))
    taken = []
    deadline = time.monotonic() + 2  # the test adds requests meanwhile
    while time.monotonic() < deadline:
        taken += [r[0] for r in catalog.take_requests(sys.argv[2])]
    print(json.dumps(taken))
    """
)


def test_two_takers_in_two_processes_never_take_the_same_request(tmp_path: Path) -> None:
    path = tmp_path / "catalog.sqlite"
    catalog = Catalog(path)
    catalog.request_run("warm-up")  # the file exists before the takers start
    catalog.take_requests("h0")
    takers = [
        subprocess.Popen(
            [sys.executable, "-c", TAKER, str(path), host], stdout=subprocess.PIPE, text=True
        )
        for host in ("h1", "h2")
    ]
    wanted = {catalog.request_run(f"job{i}") for i in range(60)}
    outputs = [t.communicate(timeout=60)[0] for t in takers]
    taken = [set(json.loads(out)) for out in outputs]
    assert not taken[0] & taken[1]
    leftover = {r[0] for r in catalog.take_requests("h0")}
    assert taken[0] | taken[1] | leftover == wanted


def test_usage_is_kept_per_repository_oldest_first(catalog: Catalog) -> None:
    for day in range(3):
        catalog.record_usage("local", T0 + timedelta(days=day), 100 * (day + 1), 10 * (day + 1))
    catalog.record_usage("offsite", T0, 5, 5)
    assert catalog.usage("local") == [
        ("2026-12-01T02:00:00+00:00", 100, 10),
        ("2026-12-02T02:00:00+00:00", 200, 20),
        ("2026-12-03T02:00:00+00:00", 300, 30),
    ]
    assert [u[1] for u in catalog.usage("local", limit=2)] == [200, 300]


def test_checks_newest_first_and_the_rolling_part_count(catalog: Catalog) -> None:
    catalog.record_check("local", T0, "ok", "structure", None)
    catalog.record_check("local", T0 + timedelta(days=1), "ok", "read 1/4", "1/4", policy="n")
    catalog.record_check("local", T0 + timedelta(days=2), "damaged", "read 2/4", "2/4")
    catalog.record_check("local", T0 + timedelta(days=3), "ok", "read 1/2", "1/2", policy="w")
    checks = catalog.checks("local")
    assert [c.status for c in checks] == ["ok", "damaged", "ok", "ok"]
    assert checks[0].part == "1/2"
    assert checks[0].policy == "w"
    assert catalog.count_checks("local", "n") == 2  # its own, and one without a policy
    assert catalog.count_checks("local", None) == 3
    assert catalog.count_checks("elsewhere", "n") == 0
    assert len(catalog.checks("local", limit=1)) == 1


def test_a_notification_is_marked_once_per_target_and_key(catalog: Catalog) -> None:
    assert catalog.notified("admins", "rpo:db1:2026-12-01") is None
    catalog.mark_notified("admins", "rpo:db1:2026-12-01", T0)
    catalog.mark_notified("admins", "rpo:db1:2026-12-01", T0)
    assert catalog.notified("admins", "rpo:db1:2026-12-01") == T0.isoformat()
    assert catalog.notified("hook", "rpo:db1:2026-12-01") is None
