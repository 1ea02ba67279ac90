"""The service's decisions, pure: which jobs a configuration defines, which queued
runs may start now, when a failed run is tried again.

Nothing here does I/O or reads a clock: the daemon passes ``now`` and the state it
holds, so every rule is tested on an injected clock (``tests/unit/service``).

Jobs: ``<policy>:backup`` is one job of a policy (one schedule, one slot record in
the catalog) that runs once per selected VM; ``<policy>:verify`` and
``<policy>:check`` are one run per policy (``vm`` is None) and exist only when the
policy configures them.

Limits (``startable``):

* at most one run per VM at a time (two policies covering one VM take turns);
* at most ``max_jobs`` runs at once on the host;
* a repository-wide run (verify, check: ``vm`` is None) starts only when nothing
  else of its repository runs, and nothing of that repository starts while it
  runs - so a verification never reads a repository a backup is writing to;
* a run waits until its ``not_before`` (retries back off).
Runs are considered in queue order (earliest ``not_before`` first, then the order
they were queued): a run that cannot start does not hold back a later run that can.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from surety.config.model import Config, RetryRule
from surety.config.select import select_vms
from surety.schedule import Schedule

__all__ = ["JOB_KINDS", "Job", "Queued", "expand_jobs", "retry_delay", "startable"]

# copy: queued after a backup; restore, instant: queued by a request; never scheduled
JOB_KINDS = ("backup", "verify", "check", "copy", "restore", "instant")


@dataclass(frozen=True)
class Job:
    """One scheduled job of a policy: its name, kind, schedule and the VMs it runs for."""

    name: str  # "<policy>:<kind>"
    kind: str  # backup | verify | check
    policy: str
    repository: str
    schedule: Schedule
    start_window: timedelta
    vms: tuple[str, ...]  # backup: the selected VMs; verify/check: () (one run per policy)


@dataclass(frozen=True)
class Queued:
    """A run the service holds, not started yet."""

    run_id: int
    job: str
    kind: str
    policy: str
    repository: str
    vm: str | None
    attempt: int
    not_before: datetime
    scheduled_for: str | None  # ISO UTC of the slot; None when started by request
    seq: int = 0  # queue order among equal not_before
    point: str | None = None  # copy: the restore point its backup committed; restore, instant
    options: str | None = None  # restore, instant: the request's options (JSON object)


def job_name(policy: str, kind: str) -> str:
    return f"{policy}:{kind}"


def expand_jobs(config: Config, domains: Mapping[str, Sequence[str]]) -> list[Job]:
    """Every job the configuration defines, with the VMs of ``domains`` (name -> tags)
    each backup job covers. A backup job that selects no VM is still listed (its slots
    are recorded; it queues nothing)."""
    jobs: list[Job] = []
    for policy in config.policies.values():
        vms = tuple(select_vms(policy.selection, domains))
        jobs.append(
            Job(
                job_name(policy.name, "backup"),
                "backup",
                policy.name,
                policy.repository,
                policy.schedule,
                policy.start_window,
                vms,
            )
        )
        if policy.verify is not None:
            jobs.append(
                Job(
                    job_name(policy.name, "verify"),
                    "verify",
                    policy.name,
                    policy.repository,
                    policy.verify.schedule,
                    policy.start_window,
                    (),
                )
            )
        if policy.check is not None:
            jobs.append(
                Job(
                    job_name(policy.name, "check"),
                    "check",
                    policy.name,
                    policy.repository,
                    policy.check.schedule,
                    policy.start_window,
                    (),
                )
            )
    return jobs


def run_targets(job: Job) -> tuple[str | None, ...]:
    """The ``vm`` of each run one due slot of ``job`` queues."""
    if job.kind == "backup":
        return job.vms
    return (None,)


def retry_delay(rule: RetryRule, attempt: int) -> timedelta | None:
    """How long after a failed ``attempt`` (1 = the first run) the next one starts:
    ``backoff * 2**(attempt-1)``; None when no attempt is left."""
    if attempt >= rule.attempts:
        return None
    return rule.backoff * (1 << (attempt - 1))


@dataclass(frozen=True)
class Active:
    """A run in flight, as the limits see it."""

    vm: str | None
    repository: str


def startable(
    queue: Iterable[Queued], running: Sequence[Active], max_jobs: int, now: datetime
) -> list[Queued]:
    """The queued runs to start now, in order, within the limits (module docstring)."""
    busy_vms = {a.vm for a in running if a.vm is not None}
    wide = {a.repository for a in running if a.vm is None}  # repositories held whole
    used = {a.repository for a in running}
    slots = max_jobs - len(running)
    chosen: list[Queued] = []
    for item in sorted(queue, key=lambda q: (q.not_before, q.seq)):
        if slots <= 0:
            break
        if item.not_before > now or item.repository in wide:
            continue
        if item.vm is None:
            if item.repository in used:
                continue
            wide.add(item.repository)
        elif item.vm in busy_vms:
            continue
        else:
            busy_vms.add(item.vm)
        used.add(item.repository)
        chosen.append(item)
        slots -= 1
    return chosen
