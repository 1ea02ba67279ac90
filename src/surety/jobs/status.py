"""Status of every VM of the host, computed from what is already known (pure).

``compute_status(config, domains, points_by_repo, catalog_view, now)`` turns the
host's VMs (name -> (running, tags)), each repository's restore points, and
what the catalog recorded (recent runs, verifications) into one ``VmStatus``
per VM: its policy (or none: unprotected), last restore point and its
consistency, last *verified* point, RPO met, next run, last error, and a
``state``:

    gone          not on the host any more, but restore points of it remain
    unprotected   on the host, in no policy
    failed        its last backup run failed, or its repository cannot be opened
    rpo-violated  its newest restore point is older than the policy's RPO
    warning       succeeded with a warning, interrupted, skipped, missed, or never backed up
    ok            none of the above

``needs_attention`` says whether a person is needed (unprotected, failed,
RPO violated, or no live service while policies exist). The service is
alive when its last heartbeat is younger than ``HEARTBEAT_MAX_AGE``.

Reads nothing itself (``app.status`` gathers the inputs), so the CLI, the web
console and the notifier's RPO check compute the same answer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from surety.catalog import Heartbeat, Run, Verification
from surety.config import select_vms, unknown_names
from surety.config.model import Config, Policy
from surety.repo.manifest import Manifest

__all__ = [
    "ATTENTION_STATES",
    "HEARTBEAT_MAX_AGE",
    "STATES",
    "CatalogView",
    "JobRow",
    "VmStatus",
    "compute_status",
    "list_jobs",
    "live_heartbeat",
    "needs_attention",
    "policy_warnings",
]

STATES = ("ok", "warning", "unprotected", "failed", "rpo-violated", "gone")
ATTENTION_STATES = frozenset({"unprotected", "failed", "rpo-violated"})
HEARTBEAT_MAX_AGE = timedelta(seconds=60)
"""A service beats every tick (5 s by default); three ticks and some slack: 60 s."""

Domains = Mapping[str, tuple[bool, Sequence[str]]]


@dataclass(frozen=True)
class CatalogView:
    """What status needs of the catalog: recent runs (newest first) and, per repository
    name, the latest verification of each point id."""

    runs: Sequence[Run] = ()
    verifications: Mapping[str, Mapping[str, Verification]] = field(default_factory=dict)


@dataclass(frozen=True)
class VmStatus:
    vm: str
    running: bool
    policy: str | None  # None: unprotected (or gone)
    state: str  # STATES
    last_point: str | None = None  # restore point id
    last_point_at: str | None = None  # ISO, when it finished
    last_consistency: str | None = None
    last_verified_point: str | None = None
    rpo_met: bool | None = None  # None: no RPO in the policy, or no point judged yet
    next_run: str | None = None  # ISO, in the schedule's time zone
    last_run_state: str | None = None
    last_error: str | None = None
    hint: str | None = None
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["notes"] = list(self.notes)
        return doc


def compute_status(
    config: Config,
    domains: Domains,
    points_by_repo: Mapping[str, Sequence[Manifest]],
    catalog_view: CatalogView,
    now: datetime,
    *,
    repo_errors: Mapping[str, str] | None = None,
) -> list[VmStatus]:
    """One status per VM of the host, then one per gone VM, each sorted by name.

    ``repo_errors``: repository name -> why it could not be opened (its VMs fail)."""
    known = _Known(points_by_repo, catalog_view, now, repo_errors or {})
    tags = {name: tuple(t) for name, (_, t) in domains.items()}
    covering: dict[str, list[Policy]] = {}
    for policy in sorted(config.policies.values(), key=lambda p: p.name):
        for vm in select_vms(policy.selection, tags):
            covering.setdefault(vm, []).append(policy)
    statuses = [
        _vm_status(vm, running, covering.get(vm, []), known)
        for vm, (running, _) in sorted(domains.items())
    ]
    gone = {p.name for ps in points_by_repo.values() for p in ps if p.kind == "vm"} - set(domains)
    statuses += [_gone(vm, points_by_repo, catalog_view) for vm in sorted(gone)]
    return statuses


@dataclass(frozen=True)
class JobRow:
    """One job of ``surety jobs list``."""

    job: str  # "<policy>:<kind>"
    kind: str
    policy: str
    vms: tuple[str, ...]  # the VMs the policy selects on this host now
    schedule: str  # as written in the configuration
    next_run: str  # ISO, in the schedule's time zone
    last_run_state: str | None
    last_run_ended: str | None

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["vms"] = list(self.vms)
        return doc


def list_jobs(
    config: Config, domains: Domains, last_runs: Mapping[str, Run], now: datetime
) -> list[JobRow]:
    """Every job of every policy (backup; verify, check and copy when configured), by policy name
    (a copy job runs after each backup: its next run is the backup's);
    ``last_runs``: job name -> its newest run."""
    tags = {name: tuple(t) for name, (_, t) in domains.items()}
    rows = []
    for policy in sorted(config.policies.values(), key=lambda p: p.name):
        vms = tuple(select_vms(policy.selection, tags))
        kinds = [("backup", policy.schedule)]
        kinds += [("verify", policy.verify.schedule)] if policy.verify else []
        kinds += [("check", policy.check.schedule)] if policy.check else []
        kinds += [("copy", policy.schedule)] if policy.copy_to else []  # follows each backup
        for kind, schedule in kinds:
            job = f"{policy.name}:{kind}"
            last = last_runs.get(job)
            rows.append(
                JobRow(
                    job,
                    kind,
                    policy.name,
                    vms,
                    f"after each backup, to {policy.copy_to}" if kind == "copy" else schedule.text,
                    schedule.next_after(now).isoformat(),
                    last.state if last else None,
                    last.ended if last else None,
                )
            )
    return rows


def policy_warnings(config: Config, domains: Domains) -> list[str]:
    """Names in policies that match no VM of the host (a warning, never an error)."""
    tags = {name: tuple(t) for name, (_, t) in domains.items()}
    return [
        f"policy {policy.name}: no VM named {name!r} on this host"
        for policy in sorted(config.policies.values(), key=lambda p: p.name)
        for name in unknown_names(policy.selection, tags)
    ]


def live_heartbeat(heartbeats: Sequence[Heartbeat], host: str, now: datetime) -> Heartbeat | None:
    """``host``'s service heartbeat if it beat within ``HEARTBEAT_MAX_AGE``, else None."""
    for beat in heartbeats:
        if beat.host == host and now - datetime.fromisoformat(beat.beat) <= HEARTBEAT_MAX_AGE:
            return beat
    return None


def needs_attention(statuses: Sequence[VmStatus], heartbeat_ok: bool) -> bool:
    """True when a person is needed: a VM unprotected, failed or past its RPO, or no live
    service while some VM is in a policy."""
    if any(s.state in ATTENTION_STATES for s in statuses):
        return True
    return not heartbeat_ok and any(s.policy is not None for s in statuses)


@dataclass(frozen=True)
class _Known:
    points_by_repo: Mapping[str, Sequence[Manifest]]
    view: CatalogView
    now: datetime
    repo_errors: Mapping[str, str]


def _vm_status(vm: str, running: bool, policies: list[Policy], known: _Known) -> VmStatus:
    points_by_repo, view, now = known.points_by_repo, known.view, known.now
    if not policies:
        point, verified = _points(vm, list(points_by_repo), points_by_repo, view)
        return VmStatus(
            vm,
            running,
            None,
            "unprotected",
            hint="add it to a policy (by name, pattern or tag) in the configuration",
            **_point_fields(point, verified),
        )
    policy = policies[0]
    notes = [f"also selected by policy {p.name} (the first by name counts)" for p in policies[1:]]
    point, verified = _points(vm, [policy.repository], points_by_repo, view)
    last = _last_run(view.runs, f"{policy.name}:backup", vm)
    rpo_met = _rpo_met(policy, point, last, now)
    state, error, hint = _judge(
        policy, point, last, rpo_met=rpo_met, repo_errors=known.repo_errors, notes=notes
    )
    return VmStatus(
        vm,
        running,
        policy.name,
        state,
        rpo_met=rpo_met,
        next_run=policy.schedule.next_after(now).isoformat(),
        last_run_state=last.state if last else None,
        last_error=error,
        hint=hint,
        notes=tuple(notes),
        **_point_fields(point, verified),
    )


def _judge(
    policy: Policy,
    point: Manifest | None,
    last: Run | None,
    *,
    rpo_met: bool | None,
    repo_errors: Mapping[str, str],
    notes: list[str],
) -> tuple[str, str | None, str | None]:
    """(state, last_error, hint) of a VM in ``policy``."""
    if policy.repository in repo_errors:
        return (
            "failed",
            f"repository {policy.repository}: {repo_errors[policy.repository]}",
            "check the repository's location and passphrase_file (`surety config check`)",
        )
    result = last.result if last else None
    error, hint = (result.error, result.hint) if result else (None, None)
    if last is not None and last.state == "failed":
        return "failed", error, hint
    if rpo_met is False:
        age = "no restore point" if point is None else "the newest restore point is too old"
        return "rpo-violated", error or f"{age} (RPO {policy.rpo})", hint
    if last is None and point is None:
        notes.append("never backed up yet: the first run is at next_run")
        return "warning", None, None
    if last is not None and last.state in ("warning", "interrupted", "skipped", "missed"):
        notes.extend(result.warnings if result else [])
        return "warning", error or f"last run {last.state}", hint
    return "ok", None, None


def _rpo_met(
    policy: Policy, point: Manifest | None, last: Run | None, now: datetime
) -> bool | None:
    if policy.rpo is None:
        return None
    if point is None:
        return False if last is not None else None  # never run: judged after its first run
    return now - point.finished <= policy.rpo


def _last_run(runs: Sequence[Run], job: str, vm: str) -> Run | None:
    """The newest ended run of ``job`` for ``vm`` (queued and running runs have no verdict)."""
    return next(
        (r for r in runs if r.job == job and r.vm == vm and r.state not in ("queued", "running")),
        None,
    )


def _points(
    vm: str,
    repositories: list[str],
    points_by_repo: Mapping[str, Sequence[Manifest]],
    view: CatalogView,
) -> tuple[Manifest | None, Manifest | None]:
    """The newest point of ``vm`` in ``repositories`` and its newest verified one."""
    mine: list[tuple[Manifest, bool]] = []
    for repository in repositories:
        verified = view.verifications.get(repository, {})
        for point in points_by_repo.get(repository, ()):
            if point.name == vm:
                found = verified.get(point.id)
                mine.append((point, found is not None and found.status == "verified"))
    mine.sort(key=lambda pair: pair[0].finished, reverse=True)
    newest = mine[0][0] if mine else None
    return newest, next((p for p, ok in mine if ok), None)


def _point_fields(point: Manifest | None, verified: Manifest | None) -> dict[str, Any]:
    return {
        "last_point": point.id if point else None,
        "last_point_at": point.finished.isoformat() if point else None,
        "last_consistency": point.consistency if point else None,
        "last_verified_point": verified.id if verified else None,
    }


def _gone(vm: str, points_by_repo: Mapping[str, Sequence[Manifest]], view: CatalogView) -> VmStatus:
    point, verified = _points(vm, list(points_by_repo), points_by_repo, view)
    return VmStatus(
        vm,
        False,
        None,
        "gone",
        notes=("not on this host any more; its restore points remain",),
        **_point_fields(point, verified),
    )
