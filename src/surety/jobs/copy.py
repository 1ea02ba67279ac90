"""A policy's copy job: restore points into the repository its ``copy_to`` names (3-2-1).

The service queues ``<policy>:copy`` after every successful backup of the policy,
for the point that backup committed (``spec.point``). Run by hand (``surety jobs
run nightly:copy [--vm VM]``) it copies the policy's points the target lacks: of
that VM, or of every VM the policy's ``vms``/``exclude`` names select
(``policy_points``). The copying is ``surety.repo.copy.copy_points``: only
missing chunks are sent, each hash-checked on read, a half-copied point never
appears, a rerun resumes. Then the **target's own retention**
(``[repository.NAME] retention``) is applied to the copied VMs' points there,
and its ``prune`` if set; a retention that cannot run (the target is locked) is
a ``warning``, never a failure: the copy is committed.
"""

from __future__ import annotations

from collections.abc import Sequence

from surety.catalog.runs import RunResult
from surety.config.model import Policy, RepositoryConfig
from surety.config.select import select_vms
from surety.core.errors import RestorePointNotFound, SuretyError
from surety.core.progress import Progress
from surety.jobs.backup import retention_policy
from surety.jobs.hints import hint_for
from surety.repo.copy import CopyReport, copy_points
from surety.repo.forget import forget_by_policy
from surety.repo.manifest import Manifest
from surety.repo.prune import prune_repository
from surety.repo.repository import Repository

__all__ = ["apply_target_retention", "policy_points", "run_copy"]


def policy_points(
    policy: Policy, points: Sequence[Manifest], vm: str | None = None
) -> list[Manifest]:
    """The restore points of ``policy``: of ``vm``, or of every name its ``vms`` and
    ``exclude`` select (a VM the policy covers only by tag: name it with ``vm``)."""
    if vm is not None:
        return [p for p in points if p.name == vm]
    names = set(select_vms(policy.selection, {p.name: () for p in points}))
    return [p for p in points if p.name in names]


def run_copy(
    policy: Policy,
    point: str | None,
    vm: str | None,
    *,
    repo: Repository,
    target: Repository,
    target_config: RepositoryConfig,
    progress: Progress,
) -> RunResult:
    """Copy ``point`` (or the policy's points of ``vm``) from ``repo`` to ``target``."""
    if point is not None:
        chosen = [repo.resolve(point)]
    else:
        chosen = policy_points(policy, repo.list_points(), vm)
        if not chosen:
            raise RestorePointNotFound(
                f"policy {policy.name} has no restore point" + (f" of {vm}" if vm else "")
            )
    report = copy_points(repo, target, chosen, progress)
    result = _result(report, target_config.name)
    if target_config.retention is not None:
        _target_retention(target_config, {p.name for p in chosen}, target, progress, result)
    return result


def apply_target_retention(
    target_config: RepositoryConfig, names: set[str], target: Repository, progress: Progress
) -> list[str]:
    """Forget (and prune, if set) by the copy target's own retention, for VMs ``names``;
    the ids forgotten."""
    assert target_config.retention is not None
    decisions = forget_by_policy(target, retention_policy(target_config.retention), names=names)
    forgotten = [d.point.id for d in decisions if not d.keep]
    for point_id in forgotten:
        progress.note(f"{target_config.name} retention: forgot restore point {point_id[:12]}")
    if target_config.prune and forgotten:
        prune_repository(target, progress)
    return forgotten


def _result(report: CopyReport, target: str) -> RunResult:
    copied = [o for o in report.outcomes if o.status == "copied"]
    last = report.outcomes[-1] if report.outcomes else None
    return RunResult(
        "succeeded",
        point=last.target_point if last is not None else None,
        bytes_stored=report.bytes,
        details={
            "target": target,
            "copied": len(copied),
            "skipped": report.count("skipped"),
            "chunks_transferred": report.chunks,
            "bytes_transferred": report.bytes,
            "points": [
                {"point": o.point, "target_point": o.target_point, "status": o.status}
                for o in report.outcomes
            ],
        },
    )


def _target_retention(
    target_config: RepositoryConfig,
    names: set[str],
    target: Repository,
    progress: Progress,
    result: RunResult,
) -> None:
    try:
        result.details["target_forgotten"] = apply_target_retention(
            target_config, names, target, progress
        )
    except SuretyError as exc:
        result.status = "warning"
        result.warnings.append(f"the target's retention/prune did not run: {exc}")
        result.hint = result.hint or hint_for(exc)
