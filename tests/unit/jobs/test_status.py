"""Status of every VM, computed from hand-built inputs: protected, unprotected, gone,
RPO violated, never run, failed last run, repository unreadable; and when a person is needed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from surety.catalog import Heartbeat, Run, RunResult, Verification
from surety.config.model import (
    CheckRule,
    Config,
    Policy,
    RepositoryConfig,
    Selection,
    ServiceSettings,
)
from surety.jobs.status import (
    CatalogView,
    VmStatus,
    compute_status,
    list_jobs,
    live_heartbeat,
    needs_attention,
    policy_warnings,
)
from surety.repo.manifest import Manifest
from surety.schedule import Schedule

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@dataclass(frozen=True)
class _Daily(Schedule):
    """Every day at 22:00 UTC (a test-only schedule: no calendar parsing involved)."""

    def next_after(self, after: datetime) -> datetime:
        slot = after.replace(hour=22, minute=0, second=0, microsecond=0)
        return slot if slot > after else slot + timedelta(days=1)


def _config(*policies: Policy) -> Config:
    return Config(
        path=Path("surety.toml"),
        service=ServiceSettings(),
        repositories={"local": RepositoryConfig("local", "/srv/repo")},
        policies={p.name: p for p in policies},
        notifications={},
    )


def _policy(name: str = "nightly", *vms: str, rpo: timedelta | None = None) -> Policy:
    return Policy(
        name=name,
        repository="local",
        selection=Selection(vms=vms or ("db*",)),
        schedule=_Daily("22:00", ZoneInfo("UTC")),
        rpo=rpo,
    )


def _point(vm: str, point_id: str, age: timedelta, consistency: str = "application") -> Manifest:
    return Manifest(
        name=vm,
        kind="vm",
        started=NOW - age,
        finished=NOW - age,
        host="h1",
        disks=(),
        consistency=consistency,
        id=point_id,
    )


def _run(run_id: int, vm: str, state: str, **result: object) -> Run:
    return Run(
        run_id,
        "nightly:backup",
        "backup",
        "nightly",
        vm,
        "h1",
        1,
        None,
        state,
        None,
        None,
        None,
        RunResult(status=state, **result) if state not in ("queued", "running") else None,  # type: ignore[arg-type]
    )


def _by_vm(statuses: list[VmStatus]) -> dict[str, VmStatus]:
    return {s.vm: s for s in statuses}


DOMAINS = {"db1": (True, ()), "db2": (False, ()), "web1": (True, ())}


def test_a_protected_vm_shows_its_points_verification_rpo_and_next_run() -> None:
    points = {
        "local": [
            _point("db1", "old", timedelta(days=2)),
            _point("db1", "new", timedelta(hours=3), "filesystem"),
        ]
    }
    view = CatalogView(
        runs=[_run(2, "db1", "succeeded", point="new")],
        verifications={"local": {"old": Verification("old", "verified", "t", "proof", "")}},
    )
    config = _config(_policy(rpo=timedelta(hours=26)))
    db1 = _by_vm(compute_status(config, DOMAINS, points, view, NOW))["db1"]
    assert db1.to_json() == {
        "vm": "db1",
        "running": True,
        "policy": "nightly",
        "state": "ok",
        "last_point": "new",
        "last_point_at": (NOW - timedelta(hours=3)).isoformat(),
        "last_consistency": "filesystem",
        "last_verified_point": "old",
        "rpo_met": True,
        "next_run": "2026-12-01T22:00:00+00:00",
        "last_run_state": "succeeded",
        "last_error": None,
        "hint": None,
        "notes": [],
    }


def test_a_vm_in_no_policy_is_unprotected_and_needs_a_person() -> None:
    statuses = compute_status(_config(_policy()), DOMAINS, {}, CatalogView(), NOW)
    web1 = _by_vm(statuses)["web1"]
    assert (web1.state, web1.policy, web1.rpo_met, web1.next_run) == (
        "unprotected",
        None,
        None,
        None,
    )
    assert web1.hint
    assert "policy" in web1.hint
    assert needs_attention(statuses, heartbeat_ok=True)
    assert not needs_attention([s for s in statuses if s.vm != "web1"], heartbeat_ok=True)


def test_a_vm_gone_from_the_host_with_points_is_listed_as_gone() -> None:
    points = {
        "local": [_point("olddb", "p9", timedelta(days=40)), _point("db1", "p1", timedelta(0))]
    }
    statuses = compute_status(_config(_policy()), DOMAINS, points, CatalogView(), NOW)
    assert [s.vm for s in statuses] == ["db1", "db2", "web1", "olddb"]
    gone = statuses[-1]
    assert (gone.state, gone.running, gone.policy, gone.last_point) == ("gone", False, None, "p9")
    assert not needs_attention([gone] + [s for s in statuses if s.policy], heartbeat_ok=True)


def test_an_old_newest_point_violates_the_rpo() -> None:
    points = {"local": [_point("db1", "p1", timedelta(hours=30))]}
    view = CatalogView(runs=[_run(1, "db1", "succeeded")])
    statuses = compute_status(_config(_policy(rpo=timedelta(hours=24))), DOMAINS, points, view, NOW)
    db1 = _by_vm(statuses)["db1"]
    assert (db1.state, db1.rpo_met) == ("rpo-violated", False)
    assert db1.last_error
    assert "RPO" in db1.last_error
    assert needs_attention([db1], heartbeat_ok=True)


def test_a_never_run_vm_is_a_warning_until_its_first_run() -> None:
    statuses = compute_status(
        _config(_policy(rpo=timedelta(hours=24))), DOMAINS, {}, CatalogView(), NOW
    )
    db2 = _by_vm(statuses)["db2"]
    assert (db2.state, db2.rpo_met, db2.last_point, db2.running) == ("warning", None, None, False)
    assert any("never backed up" in n for n in db2.notes)
    failed_once = CatalogView(runs=[_run(1, "db2", "failed", error="boom")])
    db2 = _by_vm(
        compute_status(_config(_policy(rpo=timedelta(hours=24))), DOMAINS, {}, failed_once, NOW)
    )["db2"]
    assert (db2.state, db2.rpo_met) == ("failed", False)


def test_a_failed_last_run_shows_its_error_and_hint() -> None:
    points = {"local": [_point("db1", "p1", timedelta(hours=1))]}
    view = CatalogView(
        runs=[
            _run(3, "db1", "running"),  # in flight: no verdict yet
            _run(2, "db1", "failed", error="guest agent not responding", hint="install it"),
            _run(1, "db1", "succeeded"),
        ]
    )
    db1 = _by_vm(compute_status(_config(_policy()), DOMAINS, points, view, NOW))["db1"]
    assert (db1.state, db1.last_run_state, db1.last_error, db1.hint) == (
        "failed",
        "failed",
        "guest agent not responding",
        "install it",
    )
    assert db1.rpo_met is None  # no RPO in the policy


def test_an_interrupted_or_degraded_run_is_a_warning() -> None:
    points = {"local": [_point("db1", "p1", timedelta(hours=1))]}
    view = CatalogView(
        runs=[
            _run(2, "db1", "warning", warnings=["fell back to filesystem"]),
            _run(1, "db2", "interrupted", error="killed"),
        ]
    )
    statuses = _by_vm(compute_status(_config(_policy()), DOMAINS, points, view, NOW))
    assert statuses["db1"].state == "warning"
    assert "fell back to filesystem" in statuses["db1"].notes
    assert (statuses["db2"].state, statuses["db2"].last_error) == ("warning", "killed")
    assert not needs_attention(list(statuses.values())[:2], heartbeat_ok=True)


def test_a_repository_that_cannot_be_opened_fails_its_vms_only() -> None:
    statuses = compute_status(
        _config(_policy()),
        DOMAINS,
        {},
        CatalogView(),
        NOW,
        repo_errors={"local": "wrong passphrase"},
    )
    by_vm = _by_vm(statuses)
    assert by_vm["db1"].state == by_vm["db2"].state == "failed"
    assert by_vm["db1"].last_error == "repository local: wrong passphrase"
    assert by_vm["web1"].state == "unprotected"


def test_tags_excludes_and_the_first_policy_by_name() -> None:
    domains = {"db1": (True, ("gold",)), "db2": (True, ()), "app": (True, ("gold",))}
    tagged = Policy(
        name="a-gold",
        repository="local",
        selection=Selection(tags=("gold",), exclude=("db*",)),
        schedule=_Daily("22:00", ZoneInfo("UTC")),
    )
    statuses = _by_vm(compute_status(_config(_policy(), tagged), domains, {}, CatalogView(), NOW))
    assert statuses["app"].policy == "a-gold"
    assert statuses["db1"].policy == "nightly"
    assert statuses["db2"].policy == "nightly"


def test_unknown_names_in_a_policy_are_warnings() -> None:
    config = _config(_policy("nightly", "db1", "ghost", "web*"), _policy("all", "all"))
    assert policy_warnings(config, DOMAINS) == ["policy nightly: no VM named 'ghost' on this host"]


def test_the_service_heartbeat_is_alive_for_60_seconds_and_matters_with_policies() -> None:
    beat = Heartbeat("h1", 7, "x", (NOW - timedelta(seconds=59)).isoformat(), "c", "v")
    assert live_heartbeat([beat], "h1", NOW) == beat
    assert live_heartbeat([beat], "h2", NOW) is None
    assert live_heartbeat([beat], "h1", NOW + timedelta(seconds=2)) is None
    protected = VmStatus("db1", True, "nightly", "ok")
    unprotected_gone = VmStatus("x", False, None, "gone")
    assert needs_attention([protected], heartbeat_ok=False)
    assert not needs_attention([protected], heartbeat_ok=True)
    assert not needs_attention([unprotected_gone], heartbeat_ok=False)


def test_jobs_list_every_job_of_every_policy_with_its_vms_and_last_run() -> None:
    checked = Policy(
        name="weekly",
        repository="local",
        selection=Selection(vms=("web*",)),
        schedule=_Daily("22:00", ZoneInfo("UTC")),
        check=CheckRule(_Daily("Sun 03:00", ZoneInfo("UTC")), read_data_parts=4),
    )
    last = _run(5, "db1", "failed", error="boom")
    rows = list_jobs(_config(_policy(), checked), DOMAINS, {"nightly:backup": last}, NOW)
    assert [(r.job, r.vms, r.schedule, r.last_run_state) for r in rows] == [
        ("nightly:backup", ("db1", "db2"), "22:00", "failed"),
        ("weekly:backup", ("web1",), "22:00", None),
        ("weekly:check", ("web1",), "Sun 03:00", None),
    ]
    assert rows[0].to_json()["next_run"] == "2026-12-01T22:00:00+00:00"
