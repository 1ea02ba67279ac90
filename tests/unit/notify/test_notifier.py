"""Notifier: who is told what, only on the last retry, RPO de-duplicated, one summary a day."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from surety.catalog import Catalog
from surety.catalog.runs import Run, RunResult
from surety.config.model import (
    Config,
    NotificationTarget,
    Policy,
    RepositoryConfig,
    Selection,
    ServiceSettings,
)
from surety.notify import Event, NotificationError, Notifier
from surety.schedule import Schedule

T0 = datetime(2024, 5, 17, 6, 0, tzinfo=UTC)


class MemoryCatalog:
    """The notifier's port of the catalog, in memory."""

    def __init__(self, runs: Sequence[Run] = ()) -> None:
        self.marks: dict[tuple[str, str], str] = {}
        self.all_runs = list(runs)

    def notified(self, target: str, key: str) -> str | None:
        return self.marks.get((target, key))

    def mark_notified(self, target: str, key: str, at: str) -> None:
        self.marks[(target, key)] = at

    def runs(
        self,
        *,
        job: str | None = None,
        policy: str | None = None,
        vm: str | None = None,
        states: Sequence[str] | None = None,
        limit: int = 100,
    ) -> list[Run]:
        return [r for r in self.all_runs if policy is None or r.policy == policy][:limit]


class Outbox:
    def __init__(self, fail: set[str] | None = None) -> None:
        self.sent: list[tuple[str, Event]] = []
        self.fail = fail or set()

    def __call__(self, target: NotificationTarget, event: Event) -> None:
        if target.name in self.fail:
            raise NotificationError(f"notification target {target.name}: refused")
        self.sent.append((target.name, event))


def config(**targets: NotificationTarget) -> Config:
    schedule = Schedule("daily", ZoneInfo("UTC"))
    policies = {
        "nightly": Policy(
            "nightly",
            "local",
            Selection(("db*",)),
            schedule,
            rpo=timedelta(days=1),
            notify=tuple(targets),
        ),
        "quiet": Policy("quiet", "local", Selection(("web*",)), schedule),
    }
    return Config(
        Path("surety.toml"),
        ServiceSettings(timezone="Europe/Berlin"),
        {"local": RepositoryConfig("local", "/srv/repo")},
        policies,
        dict(targets),
    )


def target(name: str, **changes: Any) -> NotificationTarget:
    return replace(NotificationTarget(name, "email", recipients=("ops@example.org",)), **changes)


def run(state: str = "failed", run_id: int = 7, **changes: Any) -> Run:
    base = Run(
        run_id,
        "nightly:backup",
        "backup",
        "nightly",
        "db1",
        "host1",
        1,
        None,
        state,
        "2024-05-17T01:00:00+00:00",
        "2024-05-17T01:05:00+00:00",
        123,
        None,
    )
    return replace(base, **changes)


FAILED = RunResult(
    "failed", error="wrong passphrase", hint="check the repository's passphrase_file"
)


def notifier(cfg: Config, outbox: Outbox, catalog: MemoryCatalog | None = None) -> Notifier:
    return Notifier(cfg, catalog or MemoryCatalog(), clock=lambda: T0, senders={"email": outbox})


def test_failure_is_sent_only_on_the_last_retry_by_default() -> None:
    outbox = Outbox()
    n = notifier(config(ops=target("ops")), outbox)
    assert n.run_finished(run(), FAILED, last_attempt=False) == []
    assert n.run_finished(run(), FAILED, last_attempt=True) == ["ops"]
    ((_name, event),) = outbox.sent
    assert event.subject == "surety: backup of db1 FAILED (nightly)"
    assert "wrong passphrase" in event.body
    assert "passphrase_file" in event.body
    assert event.what_to_do == "check the repository's passphrase_file"


def test_without_only_last_retry_every_failed_attempt_is_sent() -> None:
    outbox = Outbox()
    n = notifier(config(ops=target("ops", only_last_retry=False)), outbox)
    assert n.run_finished(run(), FAILED, last_attempt=False) == ["ops"]


def test_events_choose_the_targets() -> None:
    outbox = Outbox()
    cfg = config(
        ops=target("ops"),  # failure, rpo (the default)
        chat=target("chat", events=frozenset({"warning", "success"})),
    )
    n = notifier(cfg, outbox)
    fell_back = RunResult(
        "warning",
        point="ab" * 32,
        consistency="filesystem",
        warnings=["application quiesce failed: fell back to filesystem"],
    )
    assert n.run_finished(run("warning"), fell_back, last_attempt=True) == ["chat"]
    assert n.run_finished(run("succeeded"), RunResult("succeeded"), last_attempt=True) == ["chat"]
    assert n.run_finished(run(), FAILED, last_attempt=True) == ["ops"]
    subjects = [e.subject for _, e in outbox.sent]
    assert subjects[0] == "surety: backup of db1 succeeded with a warning (nightly)"
    assert "fell back to filesystem" in outbox.sent[0][1].body


def test_a_policy_without_notify_tells_nobody() -> None:
    outbox = Outbox()
    n = notifier(config(ops=target("ops")), outbox)
    assert n.run_finished(run(policy="quiet"), FAILED, last_attempt=True) == []
    assert outbox.sent == []


def test_interrupted_counts_as_a_failure() -> None:
    outbox = Outbox()
    n = notifier(config(ops=target("ops")), outbox)
    result = RunResult("interrupted", error="the service stopped while this run was in flight")
    assert n.run_finished(run("interrupted"), result, last_attempt=True) == ["ops"]
    assert "INTERRUPTED" in outbox.sent[0][1].subject


def test_one_target_failing_does_not_stop_the_others() -> None:
    outbox = Outbox(fail={"ops"})
    n = notifier(config(ops=target("ops"), pager=target("pager")), outbox)
    with pytest.raises(NotificationError, match="ops: refused"):
        n.run_finished(run(), FAILED, last_attempt=True)
    assert [name for name, _ in outbox.sent] == ["pager"]


@dataclass(frozen=True)
class Status:
    vm: str
    policy: str | None
    rpo_met: bool | None
    last_point: str | None
    last_point_at: str | None = None


def test_rpo_violation_is_sent_once_per_vm_and_violation() -> None:
    outbox = Outbox()
    catalog = MemoryCatalog()
    n = notifier(config(ops=target("ops")), outbox, catalog)
    statuses = [
        Status("db1", "nightly", False, "aa" * 32, "2024-05-15T01:00:00+00:00"),
        Status("db2", "nightly", True, "bb" * 32),
        Status("web1", None, None, None),
    ]
    assert n.rpo_check(statuses) == ["ops:db1"]
    assert n.rpo_check(statuses) == []  # already told
    # a restarted service (same catalog) does not repeat it either
    assert notifier(config(ops=target("ops")), outbox, catalog).rpo_check(statuses) == []
    # a new point, then a new violation: a new message
    assert n.rpo_check([Status("db1", "nightly", False, "cc" * 32)]) == ["ops:db1"]
    assert len(outbox.sent) == 2
    event = outbox.sent[0][1]
    assert event.subject == "surety: RPO of db1 VIOLATED (nightly)"
    assert "RPO of 1d" in event.body
    assert "surety jobs run nightly:backup --vm db1" in event.body


def test_rpo_send_failure_is_retried_next_time() -> None:
    outbox = Outbox(fail={"ops"})
    n = notifier(config(ops=target("ops")), outbox)
    statuses = [Status("db1", "nightly", False, None)]
    with pytest.raises(NotificationError):
        n.rpo_check(statuses)
    outbox.fail.clear()
    assert n.rpo_check(statuses) == ["ops:db1"]


def test_daily_summary_once_a_day_at_its_local_time() -> None:
    runs = [
        run("succeeded", 1, vm="db1"),
        run("failed", 2, vm="db2", result=FAILED),
        run("failed", 3, vm="db3", ended="2024-05-15T01:00:00+00:00"),  # older than 24 h
    ]
    outbox = Outbox()
    catalog = MemoryCatalog(runs)
    n = notifier(config(ops=target("ops", daily_summary="07:30")), outbox, catalog)
    berlin = ZoneInfo("Europe/Berlin")  # the service's time zone (UTC+2 in May)
    assert n.daily_summary(datetime(2024, 5, 17, 7, 29, tzinfo=berlin)) == []
    assert n.daily_summary(datetime(2024, 5, 17, 7, 30, tzinfo=berlin)) == ["ops"]
    assert n.daily_summary(datetime(2024, 5, 17, 12, 0, tzinfo=berlin)) == []
    assert n.daily_summary(datetime(2024, 5, 17, 23, 59, tzinfo=berlin)) == []
    assert n.daily_summary(datetime(2024, 5, 18, 7, 45, tzinfo=berlin)) == ["ops"]
    first = outbox.sent[0][1]
    assert first.subject == "surety: daily summary 2024-05-17: 2 runs, 1 FAILED"
    assert "run 2: backup of db2 (nightly)" in first.body
    assert "wrong passphrase" in first.body
    assert "passphrase_file" in first.body
    assert first.payload["counts"] == {"succeeded": 1, "failed": 1}


def test_targets_without_daily_summary_get_none() -> None:
    outbox = Outbox()
    n = notifier(config(ops=target("ops")), outbox)
    assert n.daily_summary(T0 + timedelta(hours=20)) == []


def test_with_the_real_catalog_rpo_and_summary_are_sent_once(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "catalog.sqlite")
    for vm, result in (("db1", RunResult("succeeded")), ("db2", FAILED)):
        run_id = catalog.create_run(
            job="nightly:backup", kind="backup", policy="nightly", vm=vm, host="host1"
        )
        catalog.mark_running(run_id, 4242)
        catalog.finish_run(run_id, result)
    outbox = Outbox()
    cfg = config(ops=target("ops", daily_summary="00:00"))
    now = datetime.now(UTC)
    statuses = [Status("db1", "nightly", False, "aa" * 32)]
    first = Notifier(cfg, catalog, clock=lambda: now, senders={"email": outbox})
    assert first.rpo_check(statuses) == ["ops:db1"]
    assert first.daily_summary() == ["ops"]
    again = Notifier(cfg, Catalog(catalog.path), clock=lambda: now, senders={"email": outbox})
    assert again.rpo_check(statuses) == []
    assert again.daily_summary() == []
    summary = outbox.sent[1][1]
    assert summary.payload["counts"] == {"succeeded": 1, "failed": 1}
    assert "backup of db2 (nightly)" in summary.body
