"""A policy's backup of one VM: back up, apply the retention to that VM's points, prune,
record the repository's usage.

The backup is ``surety.backup.vm.backup_vm`` with options from the ``Policy``; a
shut-off VM is backed up too (``backup_vm`` decides how). The result is
``succeeded``, or ``warning`` when the point's consistency is below the policy's
(a fall-back the policy allowed), when log truncation or a required after-commit
script failed, or when the retention could not run. Once the point is committed
nothing after it fails the run: the retention and prune take the repository's
exclusive lock, which another job's backup may hold (``RepositoryLocked``) —
the next run applies them.
"""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, datetime
from typing import Any

from surety.backup.vm import VmBackupOptions, VmBackupResult, backup_vm
from surety.catalog import Catalog
from surety.catalog.runs import RunResult
from surety.config.model import Policy, Retention
from surety.core.errors import SuretyError
from surety.core.progress import Progress
from surety.hypervisor.port import HypervisorHost
from surety.jobs.hints import hint_for
from surety.jobs.usage import repository_usage
from surety.repo.forget import forget_by_policy
from surety.repo.manifest import CONSISTENCY_LEVELS
from surety.repo.prune import prune_repository
from surety.repo.repository import Repository
from surety.repo.retention import RetentionPolicy

__all__ = ["FALLBACK_HINT", "backup_options", "retention_policy", "run_backup"]

FALLBACK_HINT = (
    "the point is usable but less consistent than the policy wants: check qemu-guest-agent "
    "and the application writers in the guest (the run's log says why it fell back)"
)


def backup_options(policy: Policy, vm: str) -> VmBackupOptions:
    return VmBackupOptions(
        vm,
        consistency=policy.consistency,
        on_quiesce_failure=policy.on_quiesce_failure,
        freeze_window=policy.freeze_window,
        truncate_logs=policy.truncate_logs,
        writers=policy.writers,
        pre_freeze=policy.pre_freeze,
        post_thaw=policy.post_thaw,
        after_commit=policy.after_commit,
        script_failure=policy.script_failure,
    )


def retention_policy(retention: Retention) -> RetentionPolicy:
    """The repository's ``RetentionPolicy`` for a policy's ``retention`` table."""
    wanted: dict[str, Any] = {f.name: getattr(retention, f.name) for f in fields(retention)}
    known = {f.name for f in fields(RetentionPolicy)}
    return RetentionPolicy(**{k: v for k, v in wanted.items() if k in known})


def run_backup(
    policy: Policy,
    vm: str,
    *,
    repo: Repository,
    host: HypervisorHost,
    catalog: Catalog,
    progress: Progress,
) -> RunResult:
    done = backup_vm(repo, backup_options(policy, vm), progress, host=host)
    result = _result(policy, done)
    if policy.retention is not None:
        _apply_retention(policy, vm, repo, progress, result)
    logical, stored = repository_usage(repo)
    catalog.record_usage(repo.config.id, datetime.now(UTC), logical, stored)
    result.details["usage"] = {"logical": logical, "stored": stored}
    if result.warnings:
        result.status = "warning"
        result.hint = result.hint or "see the warnings"
    return result


def _result(policy: Policy, done: VmBackupResult) -> RunResult:
    point = done.point
    stats = point.stats
    result = RunResult(
        "succeeded",
        point=point.id,
        consistency=point.consistency,
        bytes_read=stats.get("read_bytes"),
        bytes_stored=stats.get("stored_bytes"),
        details={"seconds": round((point.finished - point.started).total_seconds(), 3)},
    )
    if done.log_truncation:
        result.details["log_truncation"] = done.log_truncation
    if _rank(point.consistency) < _rank(policy.consistency):
        result.warnings.append(
            f"{point.consistency}-consistent, not {policy.consistency}: "
            f"{point.consistency_reason or 'the guest could not quiesce'}"
        )
        result.hint = FALLBACK_HINT
    if policy.truncate_logs == "after-commit":
        for writer, outcome in done.log_truncation.items():
            if isinstance(outcome, dict) and not outcome.get("done"):
                result.warnings.append(
                    f"log truncation ({writer}) failed: {outcome.get('detail', '?')}"
                )
    if done.after_commit_error:
        result.warnings.append(f"the point is committed, but {done.after_commit_error}")
    return result


def _rank(level: str) -> int:
    return CONSISTENCY_LEVELS.index(level) if level in CONSISTENCY_LEVELS else -1


def _apply_retention(
    policy: Policy, vm: str, repo: Repository, progress: Progress, result: RunResult
) -> None:
    assert policy.retention is not None
    try:
        decisions = forget_by_policy(repo, retention_policy(policy.retention), names={vm})
        forgotten = [d.point.id for d in decisions if not d.keep]
        result.details["forgotten"] = forgotten
        for point_id in forgotten:
            progress.note(f"retention: forgot restore point {point_id[:12]} of {vm}")
        if policy.prune and forgotten:
            report = prune_repository(repo, progress)
            result.details["pruned"] = {
                "deleted_packs": report.deleted_packs,
                "freed_bytes": report.freed_bytes,
            }
    except SuretyError as exc:
        result.warnings.append(f"retention/prune did not run: {exc}")
        result.hint = result.hint or hint_for(exc)
