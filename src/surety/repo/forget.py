"""Forgetting restore points: by id, or by a retention policy (a use case of its own).

Forgetting deletes a point's manifest only (``points/<id>``); ``prune`` then
frees the data no point references. Every id is resolved before any point is
deleted, against the stored object *names*, so a point whose manifest no
longer decodes can still be named and dropped. Both run under the exclusive
lock (a dry run under a shared one) and re-check it before deleting.

On an immutable repository (format 3) a point whose locked-until is still
ahead is never forgotten: by id, the whole request is refused naming every
such point and its date (nothing is deleted); by policy, it is kept with the
reason "locked until ...". Forgetting deletes every version of the manifest,
which only the maintenance identity may do.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from surety.core.errors import AmbiguousRestorePoint, IntegrityError, RestorePointNotFound
from surety.repo.immutable import locked_until, refuse_locked
from surety.repo.manifest import Manifest
from surety.repo.repository import Repository
from surety.repo.retention import Decision, RetentionPolicy, apply_policy

__all__ = ["PointRef", "find_points", "forget_by_policy", "forget_points"]


@dataclass(frozen=True)
class PointRef:
    """A restore point found by its object name; ``manifest`` is None when it is damaged."""

    id: str
    manifest: Manifest | None
    problem: str = ""


def find_points(repo: Repository, refs: Iterable[str]) -> list[PointRef]:
    """Each ref (a unique id prefix of 4+ hex digits) as a stored point, in the order given."""
    names = sorted(name[7:] for name, _ in repo.storage.list("points/"))
    ids: list[str] = []
    for ref in refs:
        prefix = ref.lower()
        if len(prefix) < 4 or any(c not in "0123456789abcdef" for c in prefix):
            raise RestorePointNotFound(
                f"{ref!r} is not a restore point id (use an id prefix of 4+ hex digits)"
            )
        matches = [name for name in names if name.startswith(prefix)]
        if not matches:
            raise RestorePointNotFound(f"no restore point {ref!r}")
        if len(matches) > 1:
            raise AmbiguousRestorePoint(
                f"{ref!r} matches {len(matches)} restore points; give more digits"
            )
        if matches[0] not in ids:
            ids.append(matches[0])
    return [_point_ref(repo, point_id) for point_id in ids]


def _point_ref(repo: Repository, point_id: str) -> PointRef:
    try:
        return PointRef(point_id, repo.points_get(point_id))
    except IntegrityError as exc:
        return PointRef(point_id, None, str(exc))


def forget_points(repo: Repository, refs: Iterable[str], dry_run: bool = False) -> list[PointRef]:
    """Delete the named restore points (all resolved before any is deleted)."""
    with repo.lock(exclusive=not dry_run, operation="forget"):
        found = find_points(repo, refs)
        if repo.immutable:
            refuse_locked(repo, [(p.id, p.manifest.name if p.manifest else "?") for p in found])
        if not dry_run:
            _check_lock(repo)
            for point in found:
                repo.forget(point.id)
        return found


def forget_by_policy(
    repo: Repository,
    policy: RetentionPolicy,
    dry_run: bool = False,
    names: Collection[str] | None = None,
) -> list[Decision]:
    """Apply ``policy`` to every readable restore point (of ``names`` only, when given:
    a job applies its policy's retention to its own VM); forget those it does not keep."""
    with repo.lock(exclusive=not dry_run, operation="forget"):
        points = [p for p in repo.points() if names is None or p.name in names]
        decisions = apply_policy(points, policy)
        if repo.immutable:
            decisions = [_unless_locked(repo, d) for d in decisions]
        if not dry_run:
            _check_lock(repo)
            for decision in decisions:
                if not decision.keep:
                    repo.forget(decision.point.id)
        return decisions


def _unless_locked(repo: Repository, decision: Decision) -> Decision:
    """A point the policy drops but that is still locked is kept, saying until when."""
    if decision.keep:
        return decision
    until = locked_until(repo, decision.point.id)
    if until is None or until <= datetime.now(UTC):
        return decision
    return Decision(decision.point, True, (f"locked until {until.isoformat(timespec='seconds')}",))


def _check_lock(repo: Repository) -> None:
    if repo.held is not None:
        repo.held.check()
