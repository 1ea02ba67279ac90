"""Runs in the catalog: their life, logs, progress, interruption and the history filters."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from surety.catalog import Catalog, RunResult
from surety.catalog.run_store import INTERRUPTED_ERROR
from surety.core.errors import UsageError

T0 = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    return Catalog(tmp_path / "catalog.sqlite", clock=lambda: T0)


def _backup(catalog: Catalog, vm: str, host: str = "h1", policy: str = "nightly") -> int:
    return catalog.create_run(
        job=f"{policy}:backup", kind="backup", policy=policy, vm=vm, host=host
    )


def test_a_run_goes_queued_running_finished_with_its_result(catalog: Catalog) -> None:
    run_id = _backup(catalog, "db1")
    queued = catalog.run(run_id)
    assert (queued.state, queued.started, queued.ended, queued.result) == (
        "queued",
        None,
        None,
        None,
    )
    catalog.mark_running(run_id, 4242)
    running = catalog.run(run_id)
    assert (running.state, running.pid, running.started) == ("running", 4242, T0.isoformat())
    result = RunResult(
        status="warning",
        point="abc123",
        consistency="filesystem",
        bytes_read=10,
        bytes_stored=3,
        warnings=["fell back to filesystem"],
        details={"truncation": "skipped"},
    )
    catalog.finish_run(run_id, result)
    done = catalog.run(run_id)
    assert done.state == "warning"
    assert done.ended == T0.isoformat()
    assert done.result == result


def test_a_run_created_in_an_end_state_is_already_ended(catalog: Catalog) -> None:
    run_id = catalog.create_run(
        job="nightly:backup",
        kind="backup",
        policy="nightly",
        vm="db1",
        host="h1",
        scheduled_for="2026-12-01T01:00:00+00:00",
        state="missed",
    )
    run = catalog.run(run_id)
    assert (run.state, run.ended, run.scheduled_for) == (
        "missed",
        T0.isoformat(),
        "2026-12-01T01:00:00+00:00",
    )
    with pytest.raises(ValueError, match="unknown run state"):
        catalog.create_run(job="j", kind="backup", policy="p", vm=None, host="h", state="odd")


def test_log_lines_and_progress_are_kept_per_run(catalog: Catalog) -> None:
    first, second = _backup(catalog, "db1"), _backup(catalog, "web1")
    catalog.append_log(first, "freeze")
    catalog.append_log(second, "other")
    catalog.append_log(first, "thaw")
    assert catalog.run_log(first) == ["freeze", "thaw"]
    assert catalog.progress(first) is None
    catalog.set_progress(first, "copy vda", 10, 100)
    catalog.set_progress(first, "copy vda", 50, 100)
    assert catalog.progress(first) == {
        "phase": "copy vda",
        "done": 50,
        "total": 100,
        "at": T0.isoformat(),
    }


def test_interrupt_runs_marks_only_this_hosts_runs_whose_process_is_gone(
    catalog: Catalog,
) -> None:
    dead_id, alive_id, queued_id, finished_id = (_backup(catalog, vm) for vm in "abcd")
    catalog.mark_running(dead_id, 111)
    catalog.mark_running(alive_id, 222)
    catalog.mark_running(finished_id, 333)
    catalog.finish_run(finished_id, RunResult(status="succeeded"))
    other_host = _backup(catalog, "e", host="h2")
    interrupted = catalog.interrupt_runs("h1", lambda pid: pid == 222)
    assert [r.id for r in interrupted] == [dead_id, queued_id]
    for run in interrupted:
        assert run.state == "interrupted"
        assert run.result is not None
        assert run.result.error == INTERRUPTED_ERROR
        assert run.result.hint
    assert catalog.run(alive_id).state == "running"
    assert catalog.run(finished_id).state == "succeeded"
    assert catalog.run(other_host).state == "queued"


def test_an_interrupted_run_never_becomes_succeeded_afterwards(catalog: Catalog) -> None:
    run_id = _backup(catalog, "db1")
    catalog.mark_running(run_id, 111)
    catalog.interrupt_runs("h1", lambda pid: False)
    catalog.finish_run(run_id, RunResult(status="succeeded"))
    catalog.mark_running(run_id, 112)
    assert catalog.run(run_id).state == "interrupted"
    with pytest.raises(ValueError, match="not an end state"):
        catalog.finish_run(run_id, RunResult(status="running"))


def test_history_filters_newest_first(catalog: Catalog) -> None:
    ids = [_backup(catalog, "db1"), _backup(catalog, "web1"), _backup(catalog, "db1", policy="x")]
    catalog.finish_run(ids[0], RunResult(status="failed", error="boom"))
    assert [r.id for r in catalog.runs()] == ids[::-1]
    assert [r.id for r in catalog.runs(vm="db1")] == [ids[2], ids[0]]
    assert [r.id for r in catalog.runs(policy="nightly")] == [ids[1], ids[0]]
    assert [r.id for r in catalog.runs(job="x:backup")] == [ids[2]]
    assert [r.id for r in catalog.runs(states=["failed"])] == [ids[0]]
    assert [r.id for r in catalog.runs(states=[])] == []
    assert [r.id for r in catalog.runs(limit=1)] == [ids[2]]


def test_an_unknown_run_is_a_usage_error(catalog: Catalog) -> None:
    with pytest.raises(UsageError, match="no run 7 in the catalog"):
        catalog.run(7)
