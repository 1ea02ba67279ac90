"""Retention policy: which restore points to keep (pure; no I/O).

Points are grouped by source name; within a group, newest first, a point is
kept if it is among the ``last`` newest, or it is the newest point of one of
the ``hourly``/``daily``/... most recent periods that have points (the rule
restic and borg users know), or it is younger than ``within`` measured from the
newest point of its group — restic's ``--keep-within`` rule: measured from the
newest point, not from now, so a VM whose backups stopped does not lose its last
points to the clock. Every kept point says why.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from surety.core.errors import UsageError
from surety.core.units import format_duration
from surety.repo.manifest import Manifest

__all__ = ["Decision", "RetentionPolicy", "apply_policy"]

_PERIODS: dict[str, Callable[[datetime], tuple[int, ...]]] = {
    "hourly": lambda t: (t.year, t.month, t.day, t.hour),
    "daily": lambda t: (t.year, t.month, t.day),
    "weekly": lambda t: t.isocalendar()[:2],
    "monthly": lambda t: (t.year, t.month),
    "yearly": lambda t: (t.year,),
}


@dataclass(frozen=True)
class RetentionPolicy:
    last: int = 0
    hourly: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0
    within: timedelta | None = None  # keep every point younger than this (from the newest)

    def __post_init__(self) -> None:
        counts = [self.last, self.hourly, self.daily, self.weekly, self.monthly, self.yearly]
        if any(c < 0 for c in counts):
            raise UsageError("keep counts must not be negative")
        if self.within is not None and self.within <= timedelta(0):
            raise UsageError("keep-within must be longer than zero")
        if not any(counts) and self.within is None:
            raise UsageError(
                "no retention rule given (e.g. --keep-last 7); refusing to "
                "forget every restore point"
            )


@dataclass(frozen=True)
class Decision:
    point: Manifest
    keep: bool
    reasons: tuple[str, ...]


def apply_policy(points: Sequence[Manifest], policy: RetentionPolicy) -> list[Decision]:
    groups: dict[str, list[Manifest]] = {}
    for point in points:
        groups.setdefault(point.name, []).append(point)
    decisions: list[Decision] = []
    for group in groups.values():
        decisions.extend(
            _apply_group(sorted(group, key=lambda p: p.finished, reverse=True), policy)
        )
    return decisions


def _apply_group(newest_first: list[Manifest], policy: RetentionPolicy) -> list[Decision]:
    left = {period: getattr(policy, period) for period in _PERIODS}
    last_key: dict[str, tuple[int, ...] | None] = dict.fromkeys(_PERIODS)
    decisions = []
    within = policy.within
    cutoff = newest_first[0].finished - within if within is not None and newest_first else None
    for position, point in enumerate(newest_first):
        reasons = [f"last {policy.last}"] if position < policy.last else []
        if within is not None and cutoff is not None and point.finished > cutoff:
            reasons.append(f"within {format_duration(within)}")
        when = point.finished.astimezone()
        for period, key_of in _PERIODS.items():
            key = key_of(when)
            if left[period] > 0 and key != last_key[period]:
                last_key[period] = key
                left[period] -= 1
                reasons.append(f"{period} {getattr(policy, period)}")
        decisions.append(Decision(point, bool(reasons), tuple(reasons)))
    return decisions
