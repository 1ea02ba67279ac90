"""The service's pure decisions: which queued runs start, and when a retry runs."""

from __future__ import annotations

from datetime import timedelta

from surety.config.model import RetryRule
from surety.service.plan import Active, Queued, retry_delay, startable
from tests.unit.service.fakes import T0


def queued(run_id: int, vm: str | None, repository: str = "main", delay: float = 0) -> Queued:
    kind = "backup" if vm else "verify"
    return Queued(
        run_id=run_id,
        job=f"p:{kind}",
        kind=kind,
        policy="p",
        repository=repository,
        vm=vm,
        attempt=1,
        not_before=T0 + timedelta(seconds=delay),
        scheduled_for=None,
        seq=run_id,
    )


def ids(items: list[Queued]) -> list[int]:
    return [q.run_id for q in items]


def test_at_most_max_jobs_start_in_queue_order() -> None:
    queue = [queued(3, "c"), queued(1, "a"), queued(2, "b")]
    assert ids(startable(queue, [], 2, T0)) == [1, 2]
    assert ids(startable(queue, [Active("x", "main")], 2, T0)) == [1]


def test_one_run_per_vm_and_a_busy_vm_does_not_hold_back_others() -> None:
    queue = [queued(1, "a"), queued(2, "a"), queued(3, "b")]
    assert ids(startable(queue, [], 3, T0)) == [1, 3]
    assert ids(startable(queue, [Active("a", "other")], 3, T0)) == [3]


def test_a_retry_waits_for_its_not_before() -> None:
    queue = [queued(1, "a", delay=60), queued(2, "b")]
    assert ids(startable(queue, [], 2, T0)) == [2]
    assert ids(startable(queue, [], 2, T0 + timedelta(seconds=60))) == [2, 1]


def test_a_repository_wide_run_holds_its_repository_alone() -> None:
    queue = [queued(1, None), queued(2, "a"), queued(3, "b", repository="other")]
    # the verify starts alone in "main"; the backup of another repository still starts
    assert ids(startable(queue, [], 3, T0)) == [1, 3]
    # a backup writing to "main" keeps the verify of "main" waiting
    assert ids(startable([queued(1, None)], [Active("a", "main")], 3, T0)) == []
    # a verify running on "main" keeps backups to "main" waiting
    assert ids(startable([queued(2, "a")], [Active(None, "main")], 3, T0)) == []


def test_backoff_doubles_and_stops_after_the_last_attempt() -> None:
    rule = RetryRule(attempts=3, backoff=timedelta(minutes=5))
    assert retry_delay(rule, 1) == timedelta(minutes=5)
    assert retry_delay(rule, 2) == timedelta(minutes=10)
    assert retry_delay(rule, 3) is None
    assert retry_delay(RetryRule(attempts=1), 1) is None
