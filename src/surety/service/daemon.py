"""The service loop: schedule due jobs, start them within the limits, reap them,
retry, notify; a heartbeat; stop and reload on signals.

``Service`` holds the state of one service process (the configuration, the queue
of runs not started yet, the runs in flight) and does one step per call:

* ``start()``   - runs of this host left queued/running by a dead service (or its
  dead workers) become ``interrupted`` (never succeeded; nothing was truncated for
  them: truncation only runs inside a successful job) and are logged;
* ``tick()``    - a heartbeat; run requests (``surety jobs run`` through the
  catalog; a restore or instant recovery from the web console, with its point and
  options, never retried) queued at once; for every job ``due_slot`` decides: a due slot queues a
  run per VM (``record_slot(..., "run")``), a slot outside its start window is
  recorded ``missed`` with a ``missed`` run per VM so history shows it; then the
  queued runs that the limits allow start (``plan.startable``); a VM gone from the
  host is ``skipped`` with a note; once a minute the RPO check and daily summary;
* ``reap()``    - ended workers: their result (the worker recorded it; a worker
  that ended without one is recorded ``failed``), a retry queued at
  ``now + backoff * 2**(attempt-1)`` while attempts are left, the notification;
  after a successful backup of a policy with ``copy_to``, a ``<policy>:copy`` run
  of the new point is queued at once (it holds the VM, like the backup);
  a run past its policy's ``timeout`` is recorded ``failed`` ("timed out after
  ...") and then stopped (SIGTERM, SIGKILL after ``TIMEOUT_GRACE``);
* ``shutdown()`` - no new run; queued runs ``interrupted``; workers SIGTERM'ed and
  waited for up to ``STOP_GRACE`` (then SIGKILL); the heartbeat cleared.

Retries: the timing is kept in memory; the next attempt is in the catalog as a
``queued`` run at once. A service that stops (or dies) forgets the pending retry:
the next start records that queued run ``interrupted``, and the job runs again at
its next slot. A new slot of a job whose run for the same VM is still queued or
running is recorded ``skipped`` - never a pile-up.

Every notification or status failure is logged and the loop goes on. The clock
is injected (aware UTC datetimes): tests drive ``tick``/``reap`` by hand.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Any, Protocol

from surety import __version__
from surety.catalog.runs import Heartbeat, Run, RunResult
from surety.config.model import Config
from surety.core.errors import SuretyError
from surety.core.processes import process_state
from surety.hypervisor.port import HypervisorHost
from surety.jobs.spec import JobSpec
from surety.schedule import due_slot
from surety.service.plan import (
    Active,
    Job,
    Queued,
    expand_jobs,
    retry_delay,
    run_targets,
    startable,
)
from surety.service.runner import JobRunner, RunHandle

__all__ = ["STOP_GRACE", "TIMEOUT_GRACE", "Service", "ServiceCatalog", "ServiceNotifier"]

STOP_GRACE = 60.0  # seconds a stopping service waits for its workers before SIGKILL
TIMEOUT_GRACE = 60.0  # seconds between a timed-out run's SIGTERM and its SIGKILL
PERIODIC = timedelta(minutes=1)  # RPO check and daily summary
ON_REQUEST = ("restore", "instant")  # kinds only a request queues (never scheduled, no retry)

log = logging.getLogger("surety.service")


class ServiceCatalog(Protocol):
    """What the service asks of the catalog (``surety.catalog.Catalog`` is it)."""

    def create_run(
        self,
        *,
        job: str,
        kind: str,
        policy: str,
        vm: str | None,
        host: str,
        attempt: int = 1,
        scheduled_for: str | None = None,
        state: str = "queued",
    ) -> int: ...

    def finish_run(self, run_id: int, result: RunResult) -> None: ...

    def run(self, run_id: int) -> Run: ...

    def interrupt_runs(self, host: str, alive: Callable[[int], bool]) -> list[Run]: ...

    def last_slot(self, job: str) -> datetime | None: ...

    def record_slot(self, job: str, slot: datetime, outcome: str) -> None: ...

    def first_seen(self, job: str, now: datetime) -> datetime: ...

    def beat(self, hb: Heartbeat) -> None: ...

    def clear_heartbeat(self, host: str, pid: int) -> None: ...

    def take_requests(self, host: str) -> list[tuple[int, str, str | None]]: ...

    def request_options(self, request_id: int) -> dict[str, Any] | None: ...


class ServiceNotifier(Protocol):
    """What the service asks of notifications (``surety.notify.Notifier`` is it)."""

    def run_finished(self, run: Run, result: RunResult, last_attempt: bool) -> Any: ...

    def rpo_check(self, statuses: Sequence[Any]) -> Any: ...

    def daily_summary(self, now: datetime) -> Any: ...


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds")


def pid_alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    return process_state(pid) not in ("", "Z")


def human(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


@dataclass
class InFlight:
    queued: Queued
    handle: RunHandle
    started: datetime
    timed_out: timedelta | None = None


@dataclass
class Service:
    """One service process's state; see the module docstring for each step."""

    config: Config
    catalog: ServiceCatalog
    host: HypervisorHost
    runner: JobRunner
    notifier_factory: Callable[[Config], ServiceNotifier | None]
    config_loader: Callable[[Any], Config]
    clock: Callable[[], datetime] = utc_now
    hostname: str = field(default_factory=socket.gethostname)
    statuses: Callable[[Config], Sequence[Any]] | None = None  # for the RPO check
    once: bool = False  # --once: no retries are queued
    queue: list[Queued] = field(default_factory=list)
    inflight: dict[int, InFlight] = field(default_factory=dict)
    stopping: bool = False
    _seq: int = 0
    _notifier: ServiceNotifier | None = None
    _started: datetime | None = None
    _last_periodic: datetime | None = None
    _stop_signal: int | None = None
    _reload: bool = False

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> list[Run]:
        """Record the runs a dead service left behind as interrupted; the first beat."""
        self._started = self.clock()
        self._notifier = self._make_notifier(self.config)
        gone = self.catalog.interrupt_runs(self.hostname, pid_alive)
        for run in gone:
            log.warning(
                "run %d (%s%s, attempt %d) was in flight when the last service stopped: "
                "recorded interrupted (nothing truncated for it)",
                run.id,
                run.job,
                f" {run.vm}" if run.vm else "",
                run.attempt,
            )
        self._beat(self._started)
        log.info(
            "surety service %s started on %s (pid %d): config %s, %d policies, max_jobs %d",
            __version__,
            self.hostname,
            os.getpid(),
            self.config.path,
            len(self.config.policies),
            self.config.service.max_jobs,
        )
        return gone

    def reload(self) -> bool:
        """Load the configuration again; an invalid one is refused and the old one kept."""
        path = self.config.path
        try:
            new = self.config_loader(path)
        except SuretyError as exc:
            log.error("configuration %s refused, the old one stays in use: %s", path, exc)
            for problem in getattr(exc, "problems", ()) or ():
                log.error("  %s", problem)
            return False
        if new.service.catalog != self.config.service.catalog or (
            new.service.libvirt_uri != self.config.service.libvirt_uri
        ):
            log.warning("service.catalog and service.libvirt_uri take effect at the next start")
        self.config = new
        self._notifier = self._make_notifier(new)
        log.info("configuration %s reloaded: %d policies", path, len(new.policies))
        return True

    def shutdown(
        self, grace: float = STOP_GRACE, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        """Stop: nothing new starts, workers are asked to stop, then killed after ``grace``."""
        self.stopping = True
        for item in self.queue:
            self.catalog.finish_run(
                item.run_id,
                RunResult(
                    "interrupted",
                    error="the service stopped before this run started",
                    hint="it runs at the job's next slot, or now with `surety jobs run`",
                ),
            )
        self.queue.clear()
        if self.inflight:
            log.info("stopping: asking %d running job(s) to stop", len(self.inflight))
        for flight in self.inflight.values():
            self.runner.stop(flight.handle, grace)
        deadline = time.monotonic() + grace
        while self.inflight and time.monotonic() < deadline:
            self.reap()
            if self.inflight:
                sleep(0.2)
        if self.inflight:
            log.warning(
                "killing %d job(s) that did not stop within %.0fs", len(self.inflight), grace
            )
            self.runner.kill_all()
            self.reap()
        self.catalog.clear_heartbeat(self.hostname, os.getpid())
        log.info("surety service stopped")

    # -- one scheduling pass -----------------------------------------------------------

    def tick(self) -> None:
        now = self.clock()
        self._beat(now)
        domains = self._domains()
        if domains is not None and not self.stopping:
            jobs = expand_jobs(self.config, domains)
            self._take_requests(now, jobs)
            for job in jobs:
                self._schedule(job, now)
        self._start_ready(now, domains)
        self._periodic(now)

    def _domains(self) -> dict[str, tuple[str, ...]] | None:
        """The host's VMs and their tags; None (and a log line) when the host does not answer."""
        try:
            names = self.host.domain_names()
            domains: dict[str, tuple[str, ...]] = {}
            for name in names:
                domains[name] = _tags(self.host, name)
        except SuretyError as exc:
            log.error("cannot list the VMs of %s: %s", self.host.uri, exc)
            return None
        return domains

    def _schedule(self, job: Job, now: datetime) -> None:
        last = self.catalog.last_slot(job.name)
        first = self.catalog.first_seen(job.name, now) if last is None else None
        due = due_slot(job.schedule, last, now, job.start_window, first)
        if due is None:
            return
        slot = iso(due.slot)
        targets = run_targets(job)
        if not due.run:
            self.catalog.record_slot(job.name, due.slot, "missed")
            for vm in targets:
                self.catalog.create_run(
                    job=job.name,
                    kind=job.kind,
                    policy=job.policy,
                    vm=vm,
                    host=self.hostname,
                    scheduled_for=slot,
                    state="missed",
                )
            log.warning(
                "%s: slot %s missed (%s late, beyond the start window of %s)",
                job.name,
                slot,
                human(due.late),
                human(job.start_window),
            )
            return
        self.catalog.record_slot(job.name, due.slot, "run")
        if due.missed:
            log.info(
                "%s: %d earlier missed slot(s) coalesced into this run", job.name, len(due.missed)
            )
        if not targets:
            log.info("%s: slot %s selects no VM on this host", job.name, slot)
        for vm in targets:
            if self._busy(job.name, vm):
                run_id = self.catalog.create_run(
                    job=job.name,
                    kind=job.kind,
                    policy=job.policy,
                    vm=vm,
                    host=self.hostname,
                    scheduled_for=slot,
                )
                self.catalog.finish_run(
                    run_id,
                    RunResult(
                        "skipped",
                        error="the run of the previous slot is still queued or running",
                        hint="the schedule is tighter than the job takes: space the slots out",
                    ),
                )
                log.warning(
                    "%s%s: slot %s skipped: the previous run is not done", job.name, _on(vm), slot
                )
                continue
            self._enqueue(
                job=job.name,
                kind=job.kind,
                policy=job.policy,
                repository=job.repository,
                vm=vm,
                attempt=1,
                not_before=now,
                scheduled_for=slot,
            )
            log.info("%s%s: slot %s due, queued", job.name, _on(vm), slot)

    def _busy(self, job: str, vm: str | None) -> bool:
        waiting = any(q.job == job and q.vm == vm for q in self.queue)
        return waiting or any(
            f.queued.job == job and f.queued.vm == vm for f in self.inflight.values()
        )

    def _take_requests(self, now: datetime, jobs: Sequence[Job]) -> None:
        by_name = {job.name: job for job in jobs}
        for request_id, name, vm in self.catalog.take_requests(self.hostname):
            if name.rpartition(":")[2] in ON_REQUEST:
                self._take_restore(request_id, name, vm, now)
                continue
            job = by_name.get(name)
            if job is None:
                log.error("request %d: no job %r in the configuration (ignored)", request_id, name)
                continue
            if vm is not None and job.kind == "backup" and vm not in job.vms:
                log.error("request %d: %s does not cover VM %r (ignored)", request_id, name, vm)
                continue
            targets = (vm,) if vm is not None else run_targets(job)
            for target in targets:
                self._enqueue(
                    job=name,
                    kind=job.kind,
                    policy=job.policy,
                    repository=job.repository,
                    vm=target,
                    attempt=1,
                    not_before=now,
                    scheduled_for=None,
                )
            log.info("request %d: %s%s queued", request_id, name, _on(vm))

    def _take_restore(self, request_id: int, name: str, vm: str | None, now: datetime) -> None:
        """A restore or instant recovery a person asked for: one run for the VM, from the
        request's point, with its options (the worker refuses what the CLI refuses)."""
        policy_name, _, kind = name.rpartition(":")
        policy = self.config.policies.get(policy_name)
        options = self.catalog.request_options(request_id) or {}
        if policy is None or vm is None or not options.get("point"):
            log.error("request %d: %s needs a policy, a VM and a point (ignored)", request_id, name)
            return
        self._enqueue(
            job=name,
            kind=kind,
            policy=policy_name,
            repository=policy.repository,
            vm=vm,
            attempt=1,
            not_before=now,
            scheduled_for=None,
            point=str(options["point"]),
            options=json.dumps(options, sort_keys=True),
        )
        log.info("request %d: %s%s queued", request_id, name, _on(vm))

    def _enqueue(
        self,
        *,
        job: str,
        kind: str,
        policy: str,
        repository: str,
        vm: str | None,
        attempt: int,
        not_before: datetime,
        scheduled_for: str | None,
        point: str | None = None,
        options: str | None = None,
    ) -> Queued:
        run_id = self.catalog.create_run(
            job=job,
            kind=kind,
            policy=policy,
            vm=vm,
            host=self.hostname,
            attempt=attempt,
            scheduled_for=scheduled_for,
        )
        self._seq += 1
        item = Queued(
            run_id,
            job,
            kind,
            policy,
            repository,
            vm,
            attempt,
            not_before,
            scheduled_for,
            self._seq,
            point,
            options,
        )
        self.queue.append(item)
        return item

    def _start_ready(self, now: datetime, domains: Mapping[str, object] | None) -> None:
        if self.stopping:
            return
        running = [Active(f.queued.vm, f.queued.repository) for f in self.inflight.values()]
        ready = startable(self.queue, running, self.config.service.max_jobs, now)
        if domains is None and any(item.vm is not None for item in ready):
            domains = self._domains()  # a VM deleted while its run waited is skipped
        for item in ready:
            self.queue.remove(item)
            if item.policy not in self.config.policies:
                self._skip(item, f"policy {item.policy} is no longer in the configuration", None)
                continue
            if item.vm is not None and domains is not None and item.vm not in domains:
                self._skip(
                    item,
                    f"VM {item.vm} is no longer on the host (deleted while its job waited)",
                    "remove it from the policy, or define it again",
                )
                continue
            spec = JobSpec(
                item.job,
                item.kind,
                item.policy,
                item.vm,
                item.attempt,
                item.scheduled_for,
                point=item.point,
                options=item.options,
            )
            handle = self.runner.start(spec, item.run_id)
            self.inflight[item.run_id] = InFlight(item, handle, now)
            log.info(
                "run %d started: %s%s, attempt %d (pid %s)",
                item.run_id,
                item.job,
                _on(item.vm),
                item.attempt,
                handle.pid,
            )

    def _skip(self, item: Queued, why: str, hint: str | None) -> None:
        self.catalog.finish_run(item.run_id, RunResult("skipped", error=why, hint=hint))
        log.warning("run %d (%s%s) skipped: %s", item.run_id, item.job, _on(item.vm), why)

    # -- ended runs --------------------------------------------------------------------

    def reap(self) -> None:
        now = self.clock()
        for handle in self.runner.poll():
            flight = self.inflight.pop(handle.run_id, None)
            if flight is not None:
                self._ended(flight, handle, now)
        for flight in self.inflight.values():
            policy = self.config.policies.get(flight.queued.policy)
            if policy is None or flight.timed_out is not None:
                continue
            if now - flight.started > policy.timeout:
                flight.timed_out = policy.timeout
                # recorded first: the worker's own "interrupted" that follows is ignored
                self.catalog.finish_run(
                    flight.queued.run_id,
                    RunResult(
                        "failed",
                        error=f"timed out after {human(policy.timeout)}",
                        hint=f"raise policy.{policy.name}.timeout, or find in "
                        f"`surety jobs log {flight.queued.run_id}` where it hung",
                    ),
                )
                log.error(
                    "run %d (%s%s) timed out after %s: stopping it",
                    flight.queued.run_id,
                    flight.queued.job,
                    _on(flight.queued.vm),
                    human(policy.timeout),
                )
                self.runner.stop(flight.handle, TIMEOUT_GRACE)
        if not self.stopping:
            self._start_ready(now, None)

    def _ended(self, flight: InFlight, handle: RunHandle, now: datetime) -> None:
        item = flight.queued
        run = self.catalog.run(item.run_id)
        if run.result is None or run.state in ("queued", "running"):
            if self.stopping or handle.stopping:
                result = RunResult(
                    "interrupted",
                    error=f"stopped by the service (worker exit {handle.returncode})",
                    hint="nothing was committed by this run; it runs again at its next slot",
                )
            else:
                result = RunResult(
                    "failed",
                    error=f"the worker ended (exit {handle.returncode}) without a result",
                    hint="see the service's log for the worker's error",
                )
            self.catalog.finish_run(item.run_id, result)
            run = self.catalog.run(item.run_id)
        result = run.result or RunResult(run.state)
        level = {"succeeded": logging.INFO, "failed": logging.ERROR}.get(run.state, logging.WARNING)
        log.log(
            level,
            "run %d ended: %s%s %s%s",
            item.run_id,
            item.job,
            _on(item.vm),
            run.state,
            f": {result.error}" if result.error else "",
        )
        last_attempt = True
        policy = self.config.policies.get(item.policy)
        retried = item.kind not in ON_REQUEST and not self.stopping and not self.once
        if run.state == "failed" and policy is not None and retried:
            delay = retry_delay(policy.retries, item.attempt)
            if delay is not None:
                last_attempt = False
                retry = self._enqueue(
                    job=item.job,
                    kind=item.kind,
                    policy=item.policy,
                    repository=item.repository,
                    vm=item.vm,
                    attempt=item.attempt + 1,
                    not_before=now + delay,
                    scheduled_for=item.scheduled_for,
                    point=item.point,
                )
                log.info(
                    "run %d: attempt %d of %d at %s (in %s)",
                    retry.run_id,
                    retry.attempt,
                    policy.retries.attempts,
                    iso(retry.not_before),
                    human(delay),
                )
        self._notify(lambda n: n.run_finished(run, result, last_attempt))
        self._queue_copy(item, run.state, result, now)

    def _queue_copy(self, item: Queued, state: str, result: RunResult, now: datetime) -> None:
        """After a successful backup of a policy with ``copy_to``: copy its new point there."""
        policy = self.config.policies.get(item.policy)
        if item.kind != "backup" or state not in ("succeeded", "warning") or self.stopping:
            return
        if policy is None or policy.copy_to is None or result.point is None:
            return
        copy = self._enqueue(
            job=f"{item.policy}:copy",
            kind="copy",
            policy=item.policy,
            repository=item.repository,
            vm=item.vm,
            attempt=1,
            not_before=now,
            scheduled_for=item.scheduled_for,
            point=result.point,
        )
        log.info(
            "run %d: copy of %s%s (point %s) to %s queued",
            copy.run_id,
            item.policy,
            _on(item.vm),
            result.point[:12],
            policy.copy_to,
        )

    # -- heartbeat and notifications -------------------------------------------------

    def _beat(self, now: datetime) -> None:
        started = self._started or now
        try:
            self.catalog.beat(
                Heartbeat(
                    host=self.hostname,
                    pid=os.getpid(),
                    started=iso(started),
                    beat=iso(now),
                    config=str(self.config.path),
                    version=__version__,
                )
            )
        except SuretyError as exc:
            log.error("heartbeat not recorded: %s", exc)

    def _periodic(self, now: datetime) -> None:
        if self._last_periodic is not None and now - self._last_periodic < PERIODIC:
            return
        self._last_periodic = now
        self._notify(lambda n: n.daily_summary(now))
        if self.statuses is not None:
            source = self.statuses

            def check(notifier: ServiceNotifier) -> None:
                notifier.rpo_check(source(self.config))

            self._notify(check)

    def _make_notifier(self, config: Config) -> ServiceNotifier | None:
        try:
            return self.notifier_factory(config)
        except Exception as exc:  # noqa: BLE001 - notifications never stop the service
            log.error("notifications are off: %s", exc)
            return None

    def _notify(self, send: Callable[[ServiceNotifier], object]) -> None:
        if self._notifier is None:
            return
        try:
            send(self._notifier)
        except Exception as exc:  # noqa: BLE001 - a notification failure is logged, never fatal
            log.error("notification failed: %s", exc)

    # -- the loop ----------------------------------------------------------------------

    def serve(self, step: float = 0.25) -> int:
        """Run until SIGTERM/SIGINT (or, with ``once``, until the first pass's runs end)."""
        self._install_signals()
        self.start()
        next_tick = 0.0
        passes = 0
        while self._stop_signal is None:
            if self._reload:
                self._reload = False
                self.reload()
            try:
                if time.monotonic() >= next_tick and not (self.once and passes):
                    passes += 1
                    next_tick = time.monotonic() + self.config.service.tick
                    self.tick()
                self.reap()
            except SuretyError as exc:  # e.g. the catalog busy or full: the next pass tries again
                log.error("scheduling pass failed: %s", exc)
            if self.once and not self.inflight and not self._ready_soon():
                break
            time.sleep(step)
        if self._stop_signal is not None:
            log.info("signal %s: stopping", signal.Signals(self._stop_signal).name)
        self.shutdown()
        return 0

    def _ready_soon(self) -> bool:
        now = self.clock()
        return any(q.not_before <= now for q in self.queue)

    def _install_signals(self) -> None:
        def stop(signum: int, _frame: FrameType | None) -> None:
            self._stop_signal = signum

        def hup(_signum: int, _frame: FrameType | None) -> None:
            self._reload = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, hup)


def _tags(host: HypervisorHost, name: str) -> tuple[str, ...]:
    return host.domain(name).tags()


def _on(vm: str | None) -> str:
    return f" of {vm}" if vm else ""
