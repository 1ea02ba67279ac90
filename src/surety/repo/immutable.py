"""Immutable restore points (format 3): the lock rules above an Object Lock storage.

A repository made with ``surety init --immutable-days N`` (config ``format`` 3,
``immutable_days``) lives in a bucket with S3 Object Lock. Its storage writes
every object outside ``locks/`` with a COMPLIANCE retention of ``N`` days plus
one *step* (``N/4``): nobody, the bucket's owner included, deletes or shortens
it before that date. A restore point's **locked-until** is the earliest
retain-until date over every object it needs (config, key files, its
manifest, image indexes and the packs holding its chunks); it is the retention
of its manifest (written last, with exactly that date), so it can be read back
with one HEAD and extended like any lock, and never lives in the manifest.

Shared chunks stay covered by **extension in steps** (``secure_point``): when a
backup commits, every object the new point needs must be locked until at least
``now + N``. Objects this backup wrote are (``now + N + step``); objects its
parent point needs are when the parent's locked-until is still past
``now + N``; every other one gets ``PutObjectRetention`` to ``now + N + step``
(COMPLIANCE only lengthens). So a VM backed up daily pays one request per
reused pack once per step, not per backup; docs/format.md "Version 3" has the
measured cost and why not generations.

Must not know: VMs, the CLI, boto3 (the storage's methods are reached through
``object_lock_of``, which walks the wrappers).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Protocol, TypeVar, runtime_checkable

from surety.core.errors import IntegrityError, RepositoryLocked, StorageError, UsageError
from surety.repo.format import ZERO_ID
from surety.repo.storage.retry import RetryingStorage

if TYPE_CHECKING:
    from surety.repo.manifest import Manifest
    from surety.repo.repository import Repository

__all__ = [
    "MAX_CLOCK_SKEW",
    "ObjectLock",
    "RetriedObjectLock",
    "check_clock",
    "lock_period",
    "lock_step",
    "locked_until",
    "object_lock_of",
    "point_objects",
    "refuse_locked",
    "secure_point",
]

MAX_CLOCK_SKEW = 300.0  # seconds: lock dates come from this host's clock
T = TypeVar("T")
TEST_SECONDS_ENV = "SURETY_TESTING_LOCK_SECONDS"  # tests only: a "day" of this many seconds


@runtime_checkable
class ObjectLock(Protocol):
    """What an Object Lock storage offers (``repo.storage.s3.S3Storage``)."""

    written: dict[str, datetime]
    maintenance: bool

    def check_object_lock(self) -> None: ...
    def detect_object_lock(self) -> None: ...
    def enable_object_lock(self, period: timedelta) -> None: ...
    def disable_object_lock(self) -> None: ...
    def clock_skew(self) -> float: ...
    def retained_until(self, name: str) -> datetime | None: ...
    def extend_retention(self, name: str, until: datetime) -> None: ...
    def put_locked(self, name: str, data: bytes, until: datetime) -> None: ...
    def locked_versions(self, name: str) -> list[str]: ...
    def pin_version(self, name: str, version: str, why: str) -> None: ...
    def pinned_version(self, name: str) -> str | None: ...
    def drain_warnings(self) -> list[str]: ...


def object_lock_of(storage: object) -> ObjectLock | None:
    """The Object Lock backend under ``storage``'s wrappers, or None (local, memory).

    When a ``RetryingStorage`` wraps it, its calls to the server (listing versions,
    reading and extending retention, locked writes) are retried like the storage's
    own: a transient failure there is never taken for a missing lock or damage."""
    layer: object | None = storage
    retrying: RetryingStorage | None = None
    while layer is not None:
        if isinstance(layer, ObjectLock):
            return layer if retrying is None else RetriedObjectLock(layer, retrying)
        if retrying is None and isinstance(layer, RetryingStorage):
            retrying = layer
        layer = getattr(layer, "inner", None)
    return None


class RetriedObjectLock:
    """An ``ObjectLock`` whose server calls go through a ``RetryingStorage``'s retries."""

    def __init__(self, lock: ObjectLock, retrying: RetryingStorage) -> None:
        self.lock, self.retrying = lock, retrying
        self.written: dict[str, datetime] = lock.written  # the same dict: shared state
        self.maintenance: bool = lock.maintenance  # fixed when the storage was opened

    def _retry(self, what: str, call: Callable[[], T]) -> T:
        return self.retrying.retry(what, call)

    def check_object_lock(self) -> None:
        self._retry("check Object Lock", self.lock.check_object_lock)

    def detect_object_lock(self) -> None:
        self._retry("detect Object Lock", self.lock.detect_object_lock)

    def enable_object_lock(self, period: timedelta) -> None:
        self._retry("enable Object Lock", lambda: self.lock.enable_object_lock(period))

    def disable_object_lock(self) -> None:
        self._retry("disable Object Lock", self.lock.disable_object_lock)

    def clock_skew(self) -> float:
        return self._retry("read the server's clock", self.lock.clock_skew)

    def retained_until(self, name: str) -> datetime | None:
        return self._retry(f"retention of {name}", lambda: self.lock.retained_until(name))

    def extend_retention(self, name: str, until: datetime) -> None:
        self._retry(f"extend {name}", lambda: self.lock.extend_retention(name, until))

    def put_locked(self, name: str, data: bytes, until: datetime) -> None:
        self._retry(f"put {name}", lambda: self.lock.put_locked(name, data, until))

    def locked_versions(self, name: str) -> list[str]:
        return self._retry(f"versions of {name}", lambda: self.lock.locked_versions(name))

    def pin_version(self, name: str, version: str, why: str) -> None:
        self.lock.pin_version(name, version, why)

    def pinned_version(self, name: str) -> str | None:
        return self.lock.pinned_version(name)

    def drain_warnings(self) -> list[str]:
        return self.lock.drain_warnings()


def lock_period(days: int) -> timedelta:
    """The retention a point needs: ``days`` (tests: ``SURETY_TESTING_LOCK_SECONDS`` a day)."""
    seconds = os.environ.get(TEST_SECONDS_ENV, "").strip()
    if seconds:
        return timedelta(seconds=days * float(seconds))
    return timedelta(days=days)


def lock_step(period: timedelta) -> timedelta:
    """How far past ``period`` a write or an extension locks: a quarter of it."""
    return period / 4


def check_clock(lock: ObjectLock) -> None:
    """Refuse to lock when this host's clock is off from the server's by > 5 minutes."""
    skew = lock.clock_skew()
    if abs(skew) > MAX_CLOCK_SKEW:
        way = "ahead of" if skew > 0 else "behind"
        raise UsageError(
            f"this host's clock is {abs(skew):.0f} s {way} the S3 server's: lock dates would "
            f"be wrong; refusing to lock (fix the clock, e.g. NTP; at most "
            f"{MAX_CLOCK_SKEW:.0f} s)"
        )


def point_objects(repo: Repository, manifest: Manifest) -> set[str]:
    """Every object a restore point needs: config, key files, manifest, images, packs."""
    names = {"config", f"points/{manifest.id}"} if manifest.id else {"config"}
    names |= {name for name, _ in repo.storage.list("keys/")}
    index = repo.index()
    for image_id in sorted(manifest.disk_images()):
        names.add(f"images/{image_id}")
        for chunk_id in repo.get_image(image_id).stored_ids():
            location = index.get(chunk_id) if chunk_id != ZERO_ID else None
            if location is not None:
                names.add(f"data/{location.pack}")
    return names


def secure_point(repo: Repository, lock: ObjectLock, manifest: Manifest, days: int) -> datetime:
    """Lock everything ``manifest`` needs until at least now + period; its locked-until.

    Returns the earliest retain-until date over those objects, the date the
    manifest is then written with (``Repository.commit``).
    """
    now = datetime.now(UTC)
    period = lock_period(days)
    needed, target = now + period, now + period + lock_step(period)
    covered, parent_until = _parent_cover(repo, lock, manifest.parent, needed)
    until, extended = target, 0
    for name in sorted(point_objects(repo, manifest) - {f"points/{manifest.id}"}):
        if name in lock.written:
            until = min(until, lock.written[name])
        elif name in covered and parent_until is not None:
            until = min(until, parent_until)
        else:
            lock.extend_retention(name, target)
            extended += 1
    repo.lock_extensions += extended
    return until


def _parent_cover(
    repo: Repository, lock: ObjectLock, parent: str | None, needed: datetime
) -> tuple[set[str], datetime | None]:
    """Objects the parent point needs, when its locked-until still reaches ``needed``."""
    if not parent:
        return set(), None
    try:
        until = lock.retained_until(f"points/{parent}")
        if until is None or until < needed:
            return set(), None
        return point_objects(repo, repo.points_get(parent)), until
    except (StorageError, IntegrityError):
        return set(), None  # the parent is gone, unreadable or damaged: extend everything


def locked_until(repo: Repository, point_id: str) -> datetime | None:
    """A point's locked-until: its manifest's retention (None: not an immutable repository)."""
    lock = object_lock_of(repo.storage)
    if lock is None or not repo.config.immutable_days:
        return None
    return lock.retained_until(f"points/{point_id}")


def refuse_locked(repo: Repository, points: Iterable[tuple[str, str]]) -> None:
    """``RepositoryLocked`` naming every (id, name) point still locked; nothing deleted."""
    now = datetime.now(UTC)
    locked = []
    for point_id, name in points:
        until = locked_until(repo, point_id)
        if until is not None and until > now:
            when = until.isoformat(timespec="seconds")
            locked.append(f"{point_id[:12]} ({name}) is locked until {when}")
    if locked:
        raise RepositoryLocked(
            f"restore point {'; '.join(locked)}: immutable, nothing was forgotten"
        )
