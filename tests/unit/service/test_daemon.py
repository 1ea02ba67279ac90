"""The service loop on an injected clock: a real SQLite catalog, the fake hypervisor,
an in-process runner and a recording notifier."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from surety.catalog import Catalog
from surety.catalog.runs import RunResult
from surety.config.model import Config
from surety.core.errors import UsageError
from surety.service.daemon import Service
from tests.unit.service.fakes import (
    T0,
    Clock,
    FakeRunner,
    RecordingNotifier,
    config,
    host_with,
    policy,
)


class Rig:
    def __init__(self, tmp_path: Path, cfg: Config, *vms: str) -> None:
        self.clock = Clock()
        self.catalog = Catalog(tmp_path / "catalog.sqlite")
        self.host = host_with(*vms)
        self.runner = FakeRunner(self.catalog)
        self.notifier = RecordingNotifier()
        self.loaded: list[Config | Exception] = []
        self.service = Service(
            config=cfg,
            catalog=self.catalog,
            host=self.host,
            runner=self.runner,
            notifier_factory=lambda _cfg: self.notifier,
            config_loader=self._load,
            clock=self.clock,
            hostname="host1",
        )
        self.service.start()

    def _load(self, _path: Any) -> Config:
        item = self.loaded.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    def tick_at(self, **delta: float) -> None:
        self.clock.advance(**delta)
        self.service.reap()
        self.service.tick()

    def states(self, **filters: Any) -> list[tuple[str | None, str, int]]:
        runs = self.catalog.runs(**filters)
        return sorted((r.vm, r.state, r.attempt) for r in runs)


def test_due_slot_queues_one_run_per_vm_of_the_policy(tmp_path: Path) -> None:
    rig = Rig(tmp_path, config(tmp_path, policy(vms=("a", "b"))), "a", "b", "c")
    rig.service.tick()  # first seen at 10:00:30: the 10:00 slot does not count
    assert rig.runner.started == []
    rig.tick_at(minutes=59, seconds=40)  # 11:00:10
    assert sorted(rig.runner.specs()) == [("nightly:backup", "a", 1), ("nightly:backup", "b", 1)]
    assert {h.spec.scheduled_for for h in rig.runner.started} == {"2025-03-03T11:00:00+00:00"}
    assert rig.states() == [("a", "running", 1), ("b", "running", 1)]
    rig.tick_at(seconds=5)  # the same slot is not queued twice
    assert len(rig.runner.started) == 2
    hb = rig.catalog.heartbeats()
    assert [(b.host, b.beat) for b in hb] == [("host1", "2025-03-03T11:00:15+00:00")]


def test_max_jobs_bounds_concurrency_and_reap_starts_the_next(tmp_path: Path) -> None:
    rig = Rig(tmp_path, config(tmp_path, policy(vms=("a", "b", "c")), max_jobs=2), "a", "b", "c")
    rig.service.tick()
    rig.tick_at(hours=1)
    assert len(rig.runner.started) == 2
    first = rig.runner.started[0]
    rig.runner.finish(first.run_id, RunResult("succeeded", point="p1"))
    rig.clock.advance(seconds=1)
    rig.service.reap()
    assert len(rig.runner.started) == 3
    assert rig.catalog.run(first.run_id).state == "succeeded"
    assert rig.notifier.finished[0][1].point == "p1"
    assert rig.notifier.finished[0][2] is True  # succeeded: no retry follows


def test_two_policies_on_one_vm_take_turns(tmp_path: Path) -> None:
    cfg = config(tmp_path, policy("p1", vms=("a",)), policy("p2", vms=("a",)), max_jobs=4)
    rig = Rig(tmp_path, cfg, "a")
    rig.service.tick()
    rig.tick_at(hours=1)
    assert len(rig.runner.started) == 1
    rig.runner.finish(rig.runner.started[0].run_id, RunResult("succeeded"))
    rig.tick_at(seconds=5)
    assert sorted(h.spec.policy for h in rig.runner.started) == ["p1", "p2"]


def test_failed_run_is_retried_with_backoff_then_given_up(tmp_path: Path) -> None:
    cfg = config(tmp_path, policy(vms=("a",), attempts=3, backoff=timedelta(minutes=5)))
    rig = Rig(tmp_path, cfg, "a")
    rig.service.tick()
    rig.tick_at(hours=1)
    rig.runner.finish(rig.runner.started[0].run_id, RunResult("failed", error="boom"))
    rig.tick_at(seconds=1)
    assert rig.notifier.finished[-1][2] is False  # a retry follows: not the last attempt
    assert rig.states() == [("a", "failed", 1), ("a", "queued", 2)]
    rig.tick_at(minutes=4, seconds=50)
    assert len(rig.runner.started) == 1  # backoff of 5 min not over
    rig.tick_at(seconds=10)
    assert rig.runner.specs()[-1] == ("nightly:backup", "a", 2)
    assert rig.runner.started[-1].spec.scheduled_for == rig.runner.started[0].spec.scheduled_for
    rig.runner.finish(rig.runner.started[-1].run_id, RunResult("failed", error="boom"))
    rig.service.reap()  # the failure is seen at once
    rig.tick_at(minutes=9, seconds=59)
    assert len(rig.runner.started) == 2  # the second backoff doubles: 10 min
    rig.tick_at(seconds=1)
    assert rig.runner.specs()[-1] == ("nightly:backup", "a", 3)
    rig.runner.finish(rig.runner.started[-1].run_id, RunResult("failed", error="boom"))
    rig.tick_at(hours=0.5)
    assert rig.states() == [("a", "failed", 1), ("a", "failed", 2), ("a", "failed", 3)]
    assert rig.notifier.finished[-1][2] is True  # the last attempt


def test_slot_beyond_the_start_window_is_recorded_missed(tmp_path: Path) -> None:
    cfg = config(tmp_path, policy(vms=("a", "b"), window=timedelta(minutes=30)))
    rig = Rig(tmp_path, cfg, "a", "b")
    rig.service.tick()
    rig.tick_at(hours=1, minutes=40)  # 11:40: the 11:00 slot is 40 min late
    assert rig.runner.started == []
    assert rig.states() == [("a", "missed", 1), ("b", "missed", 1)]
    assert rig.catalog.runs()[0].scheduled_for == "2025-03-03T11:00:00+00:00"
    rig.tick_at(minutes=21)  # 12:01: the next slot runs
    assert len(rig.runner.started) == 2


def test_host_down_over_several_slots_runs_once(tmp_path: Path) -> None:
    rig = Rig(tmp_path, config(tmp_path, policy(vms=("a",))), "a")
    rig.service.tick()
    rig.tick_at(hours=1)
    rig.runner.finish(rig.runner.started[0].run_id, RunResult("succeeded"))
    rig.service.reap()
    # the host is "down" from 11:00 to 14:10: one run for the 14:00 slot, no pile-up
    rig.tick_at(hours=3, minutes=10)
    assert [h.spec.scheduled_for for h in rig.runner.started][1:] == ["2025-03-03T14:00:00+00:00"]


def test_a_new_slot_while_the_previous_run_is_in_flight_is_skipped(tmp_path: Path) -> None:
    rig = Rig(tmp_path, config(tmp_path, policy(vms=("a",), timeout=timedelta(hours=5))), "a")
    rig.service.tick()
    rig.tick_at(hours=1)
    rig.tick_at(hours=1)  # 12:00 while the 11:00 run still runs
    assert len(rig.runner.started) == 1
    skipped = rig.catalog.runs(states=["skipped"])
    assert [(r.vm, r.scheduled_for) for r in skipped] == [("a", "2025-03-03T12:00:00+00:00")]


def test_requests_start_at_once(tmp_path: Path) -> None:
    rig = Rig(tmp_path, config(tmp_path, policy(vms=("a", "b"))), "a", "b")
    rig.catalog.request_run("nightly:backup", vm="b")
    rig.catalog.request_run("nosuch:backup")
    rig.service.tick()
    assert rig.runner.specs() == [("nightly:backup", "b", 1)]
    assert rig.runner.started[0].spec.scheduled_for is None
    rig.tick_at(seconds=5)  # a request is taken once
    assert len(rig.runner.started) == 1


def test_vm_deleted_while_its_run_waits_is_skipped(tmp_path: Path) -> None:
    rig = Rig(tmp_path, config(tmp_path, policy(vms=("a", "b")), max_jobs=1), "a", "b")
    rig.service.tick()
    rig.tick_at(hours=1)
    assert rig.runner.specs() == [("nightly:backup", "a", 1)]
    rig.host.domain("b").destroy()
    rig.host.domain("b").undefine()
    rig.runner.finish(rig.runner.started[0].run_id, RunResult("succeeded"))
    rig.tick_at(seconds=5)
    assert len(rig.runner.started) == 1
    (skipped,) = rig.catalog.runs(vm="b")
    assert skipped.state == "skipped"
    assert skipped.result is not None
    assert "no longer on the host" in (skipped.result.error or "")


def test_verify_waits_while_a_backup_writes_its_repository(tmp_path: Path) -> None:
    p = policy(vms=("a",), verify="hourly")
    rig = Rig(tmp_path, config(tmp_path, p, max_jobs=4), "a")
    rig.service.tick()
    rig.tick_at(hours=1)
    assert [s[0] for s in rig.runner.specs()] == ["nightly:backup"]
    rig.runner.finish(rig.runner.started[0].run_id, RunResult("succeeded"))
    rig.tick_at(seconds=2)
    assert rig.runner.specs()[-1] == ("nightly:verify", None, 1)


def test_timeout_fails_the_run_and_stops_its_worker(tmp_path: Path) -> None:
    rig = Rig(tmp_path, config(tmp_path, policy(vms=("a",), timeout=timedelta(minutes=20))), "a")
    rig.service.tick()
    rig.tick_at(hours=1)
    run_id = rig.runner.started[0].run_id
    rig.tick_at(minutes=20, seconds=1)
    assert rig.runner.stopped == [run_id]
    # the worker then records "interrupted" and exits: the timeout stands
    rig.runner.finish(run_id, RunResult("interrupted", error="stopped"))
    rig.tick_at(seconds=1)
    run = rig.catalog.run(run_id)
    assert run.state == "failed"
    assert run.result is not None
    assert run.result.error == "timed out after 20m"
    assert rig.states()[-1] == ("a", "queued", 2)  # and it is retried


def test_worker_that_dies_without_a_result_is_failed(tmp_path: Path) -> None:
    rig = Rig(tmp_path, config(tmp_path, policy(vms=("a",), attempts=1)), "a")
    rig.service.tick()
    rig.tick_at(hours=1)
    rig.runner.finish(rig.runner.started[0].run_id, None, code=-11)
    rig.tick_at(seconds=1)
    (run,) = rig.catalog.runs()
    assert run.state == "failed"
    assert run.result is not None
    assert "exit -11" in (run.result.error or "")


def test_start_records_runs_of_a_dead_service_interrupted(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "catalog.sqlite")
    dead = catalog.create_run(
        job="nightly:backup", kind="backup", policy="nightly", vm="a", host="host1"
    )
    catalog.mark_running(dead, 2**22 + 12345)  # no such pid
    waiting = catalog.create_run(
        job="nightly:backup", kind="backup", policy="nightly", vm="b", host="host1"
    )
    rig = Rig(tmp_path, config(tmp_path, policy()), "a", "b")
    assert {catalog.run(dead).state, catalog.run(waiting).state} == {"interrupted"}
    assert rig.catalog.run(dead).result is not None


def test_reload_keeps_the_old_config_when_the_new_one_is_invalid(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old = config(tmp_path, policy("old"))
    rig = Rig(tmp_path, old, "a")
    rig.loaded.append(UsageError("surety.toml:3: policy.x.schedule: not a schedule"))
    with caplog.at_level(logging.ERROR, logger="surety.service"):
        assert rig.service.reload() is False
    assert rig.service.config is old
    assert "policy.x.schedule: not a schedule" in caplog.text
    new = replace(old, policies={"new": policy("new")})
    rig.loaded.append(new)
    assert rig.service.reload() is True
    assert set(rig.service.config.policies) == {"new"}


def test_notification_failure_is_logged_and_the_service_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rig = Rig(tmp_path, config(tmp_path, policy(vms=("a",), attempts=1)), "a")
    rig.notifier.fail = True
    rig.service.tick()
    rig.tick_at(hours=1)
    rig.runner.finish(rig.runner.started[0].run_id, RunResult("failed", error="boom"))
    with caplog.at_level(logging.ERROR, logger="surety.service"):
        rig.tick_at(seconds=1)
    assert "notification failed: smtp server down" in caplog.text
    rig.tick_at(hours=1)
    assert len(rig.runner.started) == 2


def test_rpo_check_gets_the_statuses_once_a_minute(tmp_path: Path) -> None:
    rig = Rig(tmp_path, config(tmp_path, policy()), "a")
    asked: list[Config] = []

    def statuses(cfg: Config) -> list[str]:
        asked.append(cfg)
        return ["status of a"]

    rig.service.statuses = statuses
    rig.service.tick()
    rig.tick_at(seconds=30)
    assert asked == [rig.service.config]
    assert rig.notifier.rpo_checked == [["status of a"]]


def test_daily_summary_is_asked_once_a_minute(tmp_path: Path) -> None:
    rig = Rig(tmp_path, config(tmp_path, policy()), "a")
    rig.service.tick()
    rig.tick_at(seconds=30)
    rig.tick_at(seconds=31)
    assert rig.notifier.summaries == [T0, T0 + timedelta(seconds=61)]


def test_shutdown_interrupts_queued_runs_stops_workers_and_clears_the_heartbeat(
    tmp_path: Path,
) -> None:
    rig = Rig(tmp_path, config(tmp_path, policy(vms=("a", "b")), max_jobs=1), "a", "b")
    rig.service.tick()
    rig.tick_at(hours=1)
    running = rig.runner.started[0].run_id
    rig.service.shutdown(grace=0.0, sleep=lambda _s: None)
    assert rig.runner.stopped == [running]
    assert rig.runner.killed  # the fake worker ignored the stop: killed after the grace
    assert rig.states() == [("a", "interrupted", 1), ("b", "interrupted", 1)]
    assert rig.catalog.heartbeats() == []
