"""A policy's integrity check of its repository, with a rolling data part.

With ``read_data_parts = m`` each run reads part ``n`` of ``m`` of the stored
packs (``surety check --read-data-subset n/m``), where ``n`` follows the checks
recorded so far: ``count_checks % m + 1``. Parts ``1..m`` together read every
pack once, so a policy checking daily with ``m = 30`` re-reads all data about
once a month. ``m = 0`` checks the structure only. The outcome is recorded in
the catalog (``record_check``): ``ok``, or ``damaged`` with the errors.
"""

from __future__ import annotations

from datetime import UTC, datetime

from surety.catalog import Catalog
from surety.catalog.runs import RunResult
from surety.config.model import Policy
from surety.core.errors import IntegrityError
from surety.core.progress import Progress
from surety.jobs.hints import hint_for
from surety.repo.check import DataSubset, check_repository
from surety.repo.repository import Repository

__all__ = ["next_part", "run_check"]


def next_part(catalog: Catalog, policy: Policy, repo_id: str) -> DataSubset | None:
    """The data part this run reads (None: structure only). The catalog keys checks (and
    usage and verifications) by the repository id: a rename in the configuration keeps them."""
    parts = policy.check.read_data_parts if policy.check else 0
    if parts <= 0:
        return None
    done = catalog.count_checks(repo_id, policy.name)
    return DataSubset(part=done % parts + 1, parts=parts)


def run_check(
    policy: Policy, *, repo: Repository, catalog: Catalog, progress: Progress
) -> RunResult:
    subset = next_part(catalog, policy, repo.config.id)
    report = check_repository(repo, subset is not None, progress, subset)
    part = f"{subset.part}/{subset.parts}" if subset else None
    summary = f"{report.points} restore points, {report.chunks} chunks in {report.packs} packs"
    if part:
        summary += f"; read part {part}: {report.packs_read} packs, {report.bytes_read} bytes"
    status = "ok" if report.ok else "damaged"
    catalog.record_check(
        repo.config.id, datetime.now(UTC), status, summary, part, policy=policy.name
    )
    details = {"summary": summary, "part": part, "errors": report.errors[:20]}
    if report.ok:
        return RunResult(
            "succeeded", bytes_read=report.bytes_read, warnings=report.warnings, details=details
        )
    first = report.errors[0]
    more = f" (and {len(report.errors) - 1} more)" if len(report.errors) > 1 else ""
    return RunResult(
        "failed",
        bytes_read=report.bytes_read,
        error=f"check found {len(report.errors)} error(s): {first}{more}",
        hint=hint_for(IntegrityError(first)),
        warnings=report.warnings,
        details=details,
    )
