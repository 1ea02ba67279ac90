"""Restore and instant-recovery requests (the web console's): the service queues one run
for the VM with the request's point and options, holds the VM like any run, and never
retries a failed one."""

from __future__ import annotations

import json
from pathlib import Path

from surety.catalog.runs import RunResult
from surety.jobs.spec import JobSpec
from tests.unit.service.fakes import config, policy
from tests.unit.service.test_daemon import Rig


def test_a_restore_request_runs_once_with_its_point_and_options(tmp_path: Path) -> None:
    rig = Rig(tmp_path, config(tmp_path, policy(vms=("a",))), "a")
    options = {"point": "ab" * 32, "name": None, "start": True, "replace": True}
    rig.catalog.request_run("nightly:restore", "a", by="web (otto)", options=options)
    rig.service.tick()
    (handle,) = rig.runner.started
    assert (handle.spec.job, handle.spec.kind, handle.spec.vm) == (
        "nightly:restore",
        "restore",
        "a",
    )
    assert handle.spec.point == "ab" * 32
    assert json.loads(handle.spec.options or "") == options
    assert JobSpec.from_json(handle.spec.to_json()) == handle.spec  # as the worker reads it
    rig.runner.finish(handle.run_id, RunResult("failed", error="the VM is in the way"))
    rig.tick_at(minutes=10)
    assert len(rig.runner.started) == 1  # a failed restore is not tried again by itself
    assert rig.states(vm="a") == [("a", "failed", 1)]


def test_an_instant_request_waits_for_the_run_holding_its_vm(tmp_path: Path) -> None:
    rig = Rig(tmp_path, config(tmp_path, policy(vms=("a",))), "a")
    rig.catalog.request_run("nightly:backup", "a")
    rig.service.tick()
    rig.catalog.request_run("nightly:instant", "a", options={"point": "cd" * 32, "name": "a2"})
    rig.tick_at(seconds=5)
    assert [h.spec.kind for h in rig.runner.started] == ["backup"]  # one run per VM
    rig.runner.finish(rig.runner.started[0].run_id, RunResult("succeeded"))
    rig.tick_at(seconds=5)
    assert [h.spec.kind for h in rig.runner.started] == ["backup", "instant"]


def test_a_restore_request_without_a_point_is_ignored(tmp_path: Path) -> None:
    rig = Rig(tmp_path, config(tmp_path, policy(vms=("a",))), "a")
    rig.catalog.request_run("nightly:restore", "a")
    rig.catalog.request_run("nosuch:restore", "a", options={"point": "ef" * 32})
    rig.service.tick()
    assert rig.runner.started == []
