"""Test doubles of the service's ports: an in-process runner, a recording notifier,
a configuration builder and a clock the test moves."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from surety.catalog import Catalog
from surety.catalog.runs import Run, RunResult
from surety.config.model import (
    CheckRule,
    Config,
    Policy,
    RepositoryConfig,
    RetryRule,
    Selection,
    ServiceSettings,
    VerifyRule,
)
from surety.jobs.spec import JobSpec
from surety.schedule import parse_schedule
from surety.service.runner import RunHandle
from surety.testing.fake_hypervisor import FakeHypervisor

UTC_ZONE = ZoneInfo("UTC")
T0 = datetime(2025, 3, 3, 10, 0, 30, tzinfo=UTC)  # a Monday, just after 10:00


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


class FakeRunner:
    """Runs nothing: the test ends a run with ``finish`` (as a worker would)."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.started: list[RunHandle] = []
        self.stopped: list[int] = []
        self._ended: list[RunHandle] = []
        self.live: dict[int, RunHandle] = {}
        self.killed = False

    def start(self, spec: JobSpec, run_id: int) -> RunHandle:
        handle = RunHandle(run_id, spec, None, 0.0)
        self.started.append(handle)
        self.live[run_id] = handle
        self.catalog.mark_running(run_id, 4242)
        return handle

    def finish(self, run_id: int, result: RunResult | None, code: int = 0) -> None:
        """The worker of ``run_id`` records ``result`` (None: records nothing) and exits."""
        if result is not None:
            self.catalog.finish_run(run_id, result)
        handle = self.live.pop(run_id)
        handle.returncode = code
        self._ended.append(handle)

    def poll(self) -> list[RunHandle]:
        ended, self._ended = self._ended, []
        return ended

    def stop(self, handle: RunHandle, grace: float) -> None:
        handle.stopping = True
        self.stopped.append(handle.run_id)

    def kill_all(self) -> None:
        self.killed = True
        for run_id in list(self.live):
            self.finish(run_id, None, code=-9)

    def specs(self) -> list[tuple[str, str | None, int]]:
        return [(h.spec.job, h.spec.vm, h.spec.attempt) for h in self.started]


@dataclass
class RecordingNotifier:
    finished: list[tuple[Run, RunResult, bool]] = field(default_factory=list)
    summaries: list[datetime] = field(default_factory=list)
    rpo_checked: list[list[Any]] = field(default_factory=list)
    fail: bool = False

    def run_finished(self, run: Run, result: RunResult, last_attempt: bool) -> None:
        if self.fail:
            raise RuntimeError("smtp server down")
        self.finished.append((run, result, last_attempt))

    def rpo_check(self, statuses: Sequence[Any]) -> None:
        self.rpo_checked.append(list(statuses))

    def daily_summary(self, now: datetime) -> None:
        self.summaries.append(now)


def policy(
    name: str = "nightly",
    *,
    vms: tuple[str, ...] = ("a", "b"),
    schedule: str = "hourly",
    repository: str = "main",
    attempts: int = 3,
    backoff: timedelta = timedelta(minutes=5),
    window: timedelta = timedelta(minutes=30),
    timeout: timedelta = timedelta(hours=1),
    verify: str | None = None,
    check: str | None = None,
) -> Policy:
    return Policy(
        name=name,
        repository=repository,
        selection=Selection(vms=vms),
        schedule=parse_schedule(schedule, UTC_ZONE),
        start_window=window,
        retries=RetryRule(attempts=attempts, backoff=backoff),
        timeout=timeout,
        verify=VerifyRule(parse_schedule(verify, UTC_ZONE)) if verify else None,
        check=CheckRule(parse_schedule(check, UTC_ZONE)) if check else None,
    )


def config(tmp_path: Path, *policies: Policy, max_jobs: int = 2) -> Config:
    return Config(
        path=tmp_path / "surety.toml",
        service=ServiceSettings(
            libvirt_uri="fake:///", catalog=tmp_path / "catalog.sqlite", max_jobs=max_jobs
        ),
        repositories={"main": RepositoryConfig("main", str(tmp_path / "repo"))},
        policies={p.name: p for p in policies},
        notifications={},
    )


def host_with(*names: str) -> FakeHypervisor:
    host = FakeHypervisor()
    for name in names:
        host.add_domain(f"<domain type='kvm'><name>{name}</name><devices/></domain>")
    return host
