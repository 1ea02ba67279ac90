"""Retention policies: which restore points forget/prune keep, and why."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from surety.core.errors import UsageError
from surety.repo.manifest import Manifest
from surety.repo.retention import Decision, RetentionPolicy, apply_policy
from tests.unit.conftest import make_manifest

# Retention groups by *local* calendar periods; naive datetimes are local time.
PERIOD_KEYS: dict[str, Callable[[datetime], tuple[int, ...]]] = {
    "hourly": lambda t: (t.year, t.month, t.day, t.hour),
    "daily": lambda t: (t.year, t.month, t.day),
    "weekly": lambda t: tuple(t.isocalendar()[:2]),
    "monthly": lambda t: (t.year, t.month),
    "yearly": lambda t: (t.year,),
}


def point(when: datetime, name: str = "web01", n: int = 0) -> Manifest:
    return make_manifest(name=name, finished=when, started=when, id=f"{name}-{n}-{when}")


def keep(**rules: Any) -> RetentionPolicy:
    """A policy from rules named at run time (mypy cannot check ``**{field: n}``)."""
    return RetentionPolicy(**rules)


def kept(decisions: list[Decision]) -> set[str]:
    return {d.point.id for d in decisions if d.keep}


def by_id(decisions: list[Decision]) -> dict[str, Decision]:
    return {d.point.id: d for d in decisions}


# -- policy validation ----------------------------------------------------------------


def test_policy_without_rule_is_refused() -> None:
    with pytest.raises(UsageError, match="no retention rule"):
        RetentionPolicy()


@pytest.mark.parametrize("field", ["last", "hourly", "daily", "weekly", "monthly", "yearly"])
def test_negative_count_is_refused(field: str) -> None:
    with pytest.raises(UsageError, match="negative"):
        keep(**{field: -1})
    with pytest.raises(UsageError, match="negative"):
        keep(**{"last": 5, field: -1} if field != "last" else {"daily": 5, field: -1})


@pytest.mark.parametrize("field", ["last", "hourly", "daily", "weekly", "monthly", "yearly"])
def test_any_single_rule_is_enough(field: str) -> None:
    assert getattr(keep(**{field: 1}), field) == 1


def test_no_points_no_decisions() -> None:
    assert apply_policy([], RetentionPolicy(last=3)) == []


# -- keep-last ------------------------------------------------------------------------


def test_keep_last_keeps_exactly_the_newest_per_name() -> None:
    base = datetime(2024, 3, 1, 12, 0)
    web = [point(base + timedelta(hours=h), "web01", h) for h in range(6)]
    db = [point(base + timedelta(days=10, hours=h), "db01", h) for h in range(2)]
    # input order must not matter
    decisions = apply_policy(
        [web[3], db[1], web[0], web[5], db[0], web[1], web[4], web[2]], RetentionPolicy(last=3)
    )
    assert len(decisions) == 8
    # db01's points are all newer than web01's, yet web01 still keeps its own 3 newest
    assert kept(decisions) == {web[5].id, web[4].id, web[3].id, db[1].id, db[0].id}
    for decision in decisions:
        assert decision.reasons == (("last 3",) if decision.keep else ())


def test_keep_last_larger_than_points_keeps_all() -> None:
    points = [point(datetime(2024, 1, d, 8), n=d) for d in range(1, 4)]
    assert kept(apply_policy(points, RetentionPolicy(last=10))) == {p.id for p in points}


# -- calendar periods -----------------------------------------------------------------


def test_keep_daily_keeps_newest_per_day_of_most_recent_days_with_points() -> None:
    points = []
    for day in (1, 2, 3, 5, 8):  # days 4, 6, 7 have no point
        for hour in (6, 12, 22):
            points.append(point(datetime(2024, 4, day, hour), n=day * 100 + hour))
    decisions = apply_policy(points, RetentionPolicy(daily=3))
    expected = {p.id for p in points if p.finished.hour == 22 and p.finished.day in (3, 5, 8)}
    assert kept(decisions) == expected
    assert all(d.reasons == ("daily 3",) for d in decisions if d.keep)


def test_keep_hourly_and_yearly() -> None:
    points = [
        point(datetime(2022, 6, 1, 10, 5), n=1),
        point(datetime(2023, 6, 1, 10, 5), n=2),
        point(datetime(2024, 6, 1, 9, 59), n=3),
        point(datetime(2024, 6, 1, 10, 5), n=4),
        point(datetime(2024, 6, 1, 10, 45), n=5),
    ]
    decisions = by_id(apply_policy(points, RetentionPolicy(hourly=2, yearly=2)))
    assert decisions[points[4].id].reasons == ("hourly 2", "yearly 2")
    assert decisions[points[3].id].reasons == ()
    assert decisions[points[2].id].reasons == ("hourly 2",)
    assert decisions[points[1].id].reasons == ("yearly 2",)
    assert decisions[points[0].id].keep is False


def test_combination_of_last_daily_weekly_monthly() -> None:
    when = {
        "nov01": datetime(2023, 11, 1, 10),
        "dec20": datetime(2023, 12, 20, 10),
        "jan01": datetime(2024, 1, 1, 10),  # Monday, ISO week 2024-1
        "jan15": datetime(2024, 1, 15, 10),  # week 3
        "jan31": datetime(2024, 1, 31, 10),  # week 5
        "feb05": datetime(2024, 2, 5, 10),  # week 6
        "feb06": datetime(2024, 2, 6, 10),  # week 6
        "feb07a": datetime(2024, 2, 7, 8),  # week 6
        "feb07b": datetime(2024, 2, 7, 20),  # week 6, the newest
    }
    points = {label: point(t, n=i) for i, (label, t) in enumerate(when.items())}
    other = point(datetime(2020, 1, 1), "other")
    policy = RetentionPolicy(last=1, daily=2, weekly=2, monthly=3)
    decisions = by_id(apply_policy([*points.values(), other], policy))
    reasons = {label: decisions[p.id].reasons for label, p in points.items()}
    assert reasons == {
        "feb07b": ("last 1", "daily 2", "weekly 2", "monthly 3"),
        "feb07a": (),
        "feb06": ("daily 2",),
        "feb05": (),
        "jan31": ("weekly 2", "monthly 3"),
        "jan15": (),
        "jan01": (),
        "dec20": ("monthly 3",),
        "nov01": (),
    }
    assert all(decisions[p.id].keep == bool(reasons[label]) for label, p in points.items())
    # another name is its own group: its only point is the newest there
    assert decisions[other.id].reasons == ("last 1", "daily 2", "weekly 2", "monthly 3")


def test_weekly_uses_iso_weeks_across_the_year_boundary() -> None:
    # 2024-12-30 (Mon) and 2025-01-01 (Wed) are both in ISO week 2025-W01
    points = [
        point(datetime(2024, 12, 30, 9), n=1),
        point(datetime(2025, 1, 1, 9), n=2),
        point(datetime(2024, 12, 29, 9), n=3),
    ]
    decisions = by_id(apply_policy(points, RetentionPolicy(weekly=2)))
    assert decisions[points[1].id].keep
    assert not decisions[points[0].id].keep
    assert decisions[points[2].id].keep


# -- properties -----------------------------------------------------------------------

counts = st.integers(min_value=0, max_value=4)
withins = st.none() | st.integers(min_value=1, max_value=24 * 40).map(lambda h: timedelta(hours=h))
policies = (
    st.fixed_dictionaries({**dict.fromkeys(["last", *PERIOD_KEYS], counts), "within": withins})
    .filter(lambda fields: any(fields.values()))
    .map(lambda fields: keep(**fields))
)
timestamps = st.datetimes(min_value=datetime(2023, 11, 1), max_value=datetime(2025, 3, 1)).map(
    lambda t: t.replace(second=0, microsecond=0)
)
point_lists = st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), timestamps), max_size=40).map(
    lambda items: [point(t, name, n) for n, (name, t) in enumerate(items)]
)


@st.composite
def cases(draw: st.DrawFn) -> tuple[list[Manifest], RetentionPolicy]:
    return draw(point_lists), draw(policies)


@given(cases())
def test_retention_properties(case: tuple[list[Manifest], RetentionPolicy]) -> None:
    points, policy = case
    decisions = apply_policy(points, policy)

    # every point is decided exactly once
    assert sorted(d.point.id for d in decisions) == sorted(p.id for p in points)
    # keep <=> there is a reason
    for decision in decisions:
        assert decision.keep == bool(decision.reasons)
        if not decision.keep:
            assert decision.reasons == ()
    if points:
        assert any(d.keep for d in decisions)

    groups: dict[str, list[Decision]] = {}
    for decision in decisions:
        groups.setdefault(decision.point.name, []).append(decision)
    for group in groups.values():
        newest = max(d.point.finished for d in group)
        assert any(d.keep for d in group if d.point.finished == newest)
        assert sum(d.keep for d in group) >= min(policy.last, len(group))
        assert sum("last" in " ".join(d.reasons) for d in group) == min(policy.last, len(group))
        if policy.within is not None:  # every point younger than newest - within, and only those
            within = [d for d in group if any(r.startswith("within") for r in d.reasons)]
            assert {d.point.id for d in within} == {
                d.point.id for d in group if d.point.finished > newest - policy.within
            }
        for period, key_of in PERIOD_KEYS.items():
            wanted = getattr(policy, period)
            keys = {key_of(d.point.finished) for d in group}
            chosen = [d for d in group if f"{period} {wanted}" in d.reasons]
            chosen_keys = [key_of(d.point.finished) for d in chosen]
            # one point for each of the `wanted` most recent periods that have points
            assert len(chosen) == min(wanted, len(keys))
            assert sorted(chosen_keys, reverse=True) == sorted(keys, reverse=True)[: len(chosen)]
            # ... and it is the newest point of its period
            for d in chosen:
                period_key = key_of(d.point.finished)
                assert d.point.finished == max(
                    o.point.finished for o in group if key_of(o.point.finished) == period_key
                )


# -- keep-within (restic's rule: measured from the newest point of the group) ---------


def test_keep_within_keeps_points_younger_than_the_newest_minus_the_duration() -> None:
    base = datetime(2024, 3, 1, 12, 0)
    web = [point(base + timedelta(hours=12 * n), "web01", n) for n in range(8)]  # 3.5 days
    decisions = by_id(apply_policy(web, RetentionPolicy(within=timedelta(days=2))))
    newest = web[-1].finished
    for p in web:
        younger = p.finished > newest - timedelta(days=2)
        assert decisions[p.id].keep == younger
        assert decisions[p.id].reasons == (("within 2d",) if younger else ())
    # exactly 2 days older than the newest is not "within" (restic: strictly newer)
    assert not decisions[web[3].id].keep
    assert decisions[web[4].id].keep


def test_keep_within_is_measured_per_group_not_from_now() -> None:
    # db01 stopped backing up a year ago: its newest points are kept all the same
    old = [point(datetime(2023, 1, 1) + timedelta(hours=h), "db01", h) for h in range(3)]
    new = [point(datetime(2024, 3, 1) + timedelta(hours=h), "web01", h) for h in range(3)]
    decisions = apply_policy(old + new, RetentionPolicy(within=timedelta(hours=1, minutes=30)))
    assert kept(decisions) == {old[2].id, old[1].id, new[2].id, new[1].id}


def test_keep_within_combines_with_other_rules() -> None:
    base = datetime(2024, 3, 1, 12, 0)
    pts = [point(base + timedelta(days=n), "web01", n) for n in range(10)]
    decisions = by_id(apply_policy(pts, RetentionPolicy(last=1, within=timedelta(days=3))))
    assert decisions[pts[9].id].reasons == ("last 1", "within 3d")
    assert decisions[pts[7].id].reasons == ("within 3d",)
    assert not decisions[pts[6].id].keep


def test_keep_within_alone_is_a_rule_and_must_be_positive() -> None:
    assert RetentionPolicy(within=timedelta(hours=1)).within == timedelta(hours=1)
    with pytest.raises(UsageError, match="longer than zero"):
        RetentionPolicy(within=timedelta(0))
