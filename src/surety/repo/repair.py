"""Repair: the ways out when part of a repository is damaged or gone.

* ``remove_locks`` — ``surety unlock``: stale and unreadable locks (with
  ``everything``: every lock; the caller warns first). Takes no lock itself.
* forgetting by id (``surety forget ID...``) lives in ``repo.forget``.
* ``repair_index`` — rebuild the index from the pack headers: one new index
  object of every stored pack whose header authenticates, then the old index
  objects (damaged ones too) are deleted. A pack whose header is damaged keeps
  the blobs a readable old index lists for it, each authenticated first.
* ``repair_points`` — find restore points whose data is gone (manifest or
  image index damaged or missing; chunks not indexed, in a missing or
  truncated pack, or recorded damaged with no healthy copy) and drop them,
  or with ``salvage`` rewrite them with the lost chunks as zeros.

Invariants: a replacement is durable before what it replaces is deleted, and
the lock is re-checked (``HeldLock.check``) just before the first delete; a
crash leaves both, never neither. Loss is always named: which restore points,
which disks, which byte ranges. Chunks that a pack holds but no index names are
never called lost: ``repair_points`` refuses and asks for ``repair index``.

A salvaged restore point is a manifest of format 2 (docs/format.md):
``source["salvaged"]`` maps each disk to the ``[start, end)`` byte ranges that
are now zeros, and ``source["checkpoint"]`` is dropped so that the next backup
of that VM is a full one (an incremental would rebuild chunks from the zeros).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass, field, replace
from typing import Any

from surety.core.errors import (
    IntegrityError,
    ObjectNotFound,
    StorageError,
)
from surety.core.progress import Progress
from surety.repo.format import MANIFEST_FORMAT_SALVAGED, ZERO_ID
from surety.repo.image import ImageIndex
from surety.repo.index import ChunkIndex, decode_index, encode_index
from surety.repo.lock import LockInfo, list_locks
from surety.repo.manifest import Manifest
from surety.repo.pack import PackEntry, chunk_kind, read_pack_header
from surety.repo.repository import Repository
from surety.repo.storage.base import Storage

__all__ = [
    "SALVAGED_FORMAT",
    "DamagedPoint",
    "DiskLoss",
    "IndexRepair",
    "Unlocked",
    "byte_ranges",
    "find_damaged_points",
    "remove_locks",
    "repair_index",
    "repair_points",
    "salvaged_manifest",
]

SALVAGED_FORMAT = MANIFEST_FORMAT_SALVAGED

Ranges = tuple[tuple[int, int], ...]


# -- locks ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Unlocked:
    removed: list[LockInfo]
    live: list[LockInfo]  # left in place (only without ``everything``)


def remove_locks(storage: Storage, everything: bool = False) -> Unlocked:
    """Remove stale and unreadable locks; with ``everything``, live ones too."""
    removed, live = [], []
    for info in list_locks(storage):
        if everything or info.holder is None or info.is_stale():
            with suppress(ObjectNotFound):
                storage.delete(info.name)
            removed.append(info)
        else:
            live.append(info)
    return Unlocked(removed, live)


def _check_lock(repo: Repository) -> None:
    if repo.held is not None:
        repo.held.check()


# -- what a restore point has lost ------------------------------------------------------
@dataclass(frozen=True)
class DiskLoss:
    disk: str
    chunks: int
    ranges: Ranges  # [start, end) byte ranges, merged

    @property
    def lost_bytes(self) -> int:
        return sum(end - start for start, end in self.ranges)


@dataclass
class DamagedPoint:
    id: str
    manifest: Manifest | None  # None: the manifest itself is damaged
    problems: list[str] = field(default_factory=list)
    losses: list[DiskLoss] = field(default_factory=list)
    action: str = ""  # "drop" | "salvage" once decided
    new_id: str | None = None  # the salvaged point's id
    lost_chunks: dict[str, list[int]] = field(default_factory=dict)  # disk -> chunk numbers
    images: dict[str, ImageIndex] = field(default_factory=dict)  # disks with lost chunks
    unreadable: bool = False  # manifest or an image index cannot be read

    @property
    def salvageable(self) -> bool:
        return self.manifest is not None and not self.unreadable


def byte_ranges(image: ImageIndex, numbers: Iterable[int]) -> Ranges:
    """Chunk numbers as merged ``[start, end)`` byte ranges of the disk."""
    ranges: list[tuple[int, int]] = []
    for number in sorted(numbers):
        start = number * image.chunk_size
        end = start + image.chunk_length(number)
        if ranges and ranges[-1][1] == start:
            ranges[-1] = (ranges[-1][0], end)
        else:
            ranges.append((start, end))
    return tuple(ranges)


class _Images:
    """Image indexes read once however many points name them (errors too)."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self._found: dict[str, ImageIndex | str] = {}

    def get(self, image_id: str) -> ImageIndex | str:
        if image_id not in self._found:
            try:
                self._found[image_id] = self.repo.get_image(image_id)
            except (IntegrityError, ObjectNotFound) as exc:
                self._found[image_id] = str(exc)
        return self._found[image_id]


def _examine(
    repo: Repository, point_id: str, is_lost: Callable[[bytes], bool], images: _Images
) -> DamagedPoint | None:
    """What ``point_id`` has lost, or None when everything it needs is there."""
    try:
        manifest = repo.points_get(point_id)
    except IntegrityError as exc:
        return DamagedPoint(point_id, None, [str(exc)], unreadable=True)
    point = DamagedPoint(point_id, manifest)
    for disk in manifest.disks:
        image = images.get(disk.image)
        if isinstance(image, str):
            point.unreadable = True
            point.problems.append(f"disk {disk.name}: {image}")
            chunks = -(-disk.size // repo.config.chunk_size)
            point.losses.append(DiskLoss(disk.name, chunks, ((0, disk.size),)))
            continue
        numbers = [i for i, c in enumerate(image.chunk_ids) if c != ZERO_ID and is_lost(c)]
        if numbers:
            point.lost_chunks[disk.name] = numbers
            point.images[disk.name] = image
            point.losses.append(DiskLoss(disk.name, len(numbers), byte_ranges(image, numbers)))
    if point.lost_chunks:
        count = sum(len(n) for n in point.lost_chunks.values())
        point.problems.append(f"{count} chunk(s) missing or damaged")
    return point if point.problems else None


class _Availability:
    """Which chunks a restore can still read: a copy that is indexed, stored and healthy.

    Copies in a pack that is missing or too short count as damaged before the
    index objects are added, so a healthy duplicate elsewhere still wins. A
    chunk whose only copy is recorded damaged is read once more: a wrong
    damage record must not cost data.
    """

    def __init__(self, repo: Repository, stored: dict[str, int]) -> None:
        self.repo = repo
        self.index = _index_of_stored(repo, stored)
        self.lost_ids: set[bytes] = set()
        self._known: dict[bytes, bool] = {}

    def is_lost(self, chunk_id: bytes) -> bool:
        if chunk_id not in self._known:
            self._known[chunk_id] = self._lost(chunk_id)
            if self._known[chunk_id]:
                self.lost_ids.add(chunk_id)
        return self._known[chunk_id]

    def _lost(self, chunk_id: bytes) -> bool:
        loc = self.index.get(chunk_id)
        if loc is None:
            return True
        if not self.index.is_damaged(chunk_id, loc.pack):
            return False
        try:
            sealed = self.repo.storage.get(f"data/{loc.pack}", loc.offset, loc.length)
            self.repo.open_chunk(chunk_id, sealed, loc.raw_length, f"chunk {chunk_id.hex()[:12]}")
        except (IntegrityError, StorageError):
            return True
        return False


def _index_of_stored(repo: Repository, stored: dict[str, int]) -> ChunkIndex:
    """The chunk index with copies in missing or truncated packs marked damaged."""
    index = ChunkIndex()
    for record in repo.damage_records():
        index.mark_damaged(record.chunk_id, record.pack)
    packs: list[tuple[str, list[PackEntry]]] = []
    for name, _size in repo.storage.list("index/"):
        try:
            packs.extend(decode_index(repo.get_object("index", name[6:]), name))
        except IntegrityError as exc:
            repo.notes.append(f"{exc}; its chunks count as absent")
    for pack_id, entries in packs:
        size = stored.get(f"data/{pack_id}", -1)
        for entry in entries:
            if entry.offset + entry.length > size:
                index.mark_damaged(entry.chunk_id, pack_id)
    for pack_id, entries in packs:
        index.add_pack(pack_id, entries)
    return index


def find_damaged_points(repo: Repository, progress: Progress) -> list[DamagedPoint]:
    """Every restore point whose data is gone, with what exactly it lost.

    Raises ``IntegrityError`` when a lost chunk is in a pack no index names
    (``repair index`` recovers it; nothing is lost yet).
    """
    stored = dict(repo.storage.list("data/"))
    available, images = _Availability(repo, stored), _Images(repo)
    names = sorted(name[7:] for name, _ in repo.storage.list("points/"))
    progress.phase("read restore points", len(names))
    found = []
    for point_id in names:
        point = _examine(repo, point_id, available.is_lost, images)
        if point is not None:
            found.append(point)
        progress.advance(1)
    _refuse_if_reindexable(repo, available, stored, progress)
    return found


def _refuse_if_reindexable(
    repo: Repository, available: _Availability, stored: dict[str, int], progress: Progress
) -> None:
    if not available.lost_ids:
        return
    unindexed = [n[5:] for n in stored if n[5:] not in available.index.indexed_packs]
    progress.phase("read unindexed pack headers", len(unindexed))
    holding = []
    for pack_id in unindexed:
        progress.advance(1)
        with suppress(IntegrityError, StorageError):
            entries = read_pack_header(repo.storage, repo.keys, pack_id)
            if any(e.chunk_id in available.lost_ids for e in entries):
                holding.append(pack_id[:12])
    if holding:
        raise IntegrityError(
            f"pack(s) {', '.join(holding)} hold chunks restore points need but no index names "
            "them: run `surety repair index` first; nothing was changed"
        )


# -- repair points ----------------------------------------------------------------------
def repair_points(
    repo: Repository, progress: Progress, salvage: bool = False, dry_run: bool = False
) -> list[DamagedPoint]:
    """Drop (or salvage) every restore point whose data is gone; returns them, decided."""
    with repo.lock(exclusive=not dry_run, operation="repair points"):
        return _repair_points(repo, progress, salvage, dry_run)


def _repair_points(
    repo: Repository, progress: Progress, salvage: bool, dry_run: bool
) -> list[DamagedPoint]:
    found = find_damaged_points(repo, progress)
    for point in found:
        point.action = "salvage" if salvage and point.salvageable else "drop"
    if dry_run:
        return found
    progress.phase("repair restore points", len(found))
    for point in found:
        if point.action == "salvage":
            point.new_id = _salvage(repo, point)
        if point.new_id != point.id:
            _check_lock(repo)
            repo.forget(point.id)
        progress.advance(1)
    return found


def salvaged_manifest(manifest: Manifest, **changes: Any) -> Manifest:
    """``manifest`` with ``changes`` (a ``source`` with ``salvaged`` encodes as format 2)."""
    return dataclasses.replace(manifest, **changes)


def _salvage(repo: Repository, point: DamagedPoint) -> str:
    """Store image indexes with the lost chunks as zeros and a new manifest; its id."""
    manifest = point.manifest
    assert manifest is not None
    disks = []
    for disk in manifest.disks:
        numbers = set(point.lost_chunks.get(disk.name, ()))
        if not numbers:
            disks.append(disk)
            continue
        image = point.images[disk.name]
        ids = tuple(ZERO_ID if i in numbers else c for i, c in enumerate(image.chunk_ids))
        new_image = ImageIndex(image.chunk_size, image.size, ids)
        disks.append(replace(disk, image=repo.put_image(new_image)))
    source = {k: v for k, v in manifest.source.items() if k != "checkpoint"}
    source["salvaged"] = _merged_salvage(manifest.source.get("salvaged"), point.losses)
    return repo.commit(salvaged_manifest(manifest, disks=tuple(disks), source=source))


def _merged_salvage(before: Any, losses: list[DiskLoss]) -> dict[str, list[list[int]]]:
    """Ranges salvaged before (a point salvaged twice) joined with the new ones."""
    spans: dict[str, list[tuple[int, int]]] = {}
    if isinstance(before, dict):
        for disk, ranges in before.items():
            spans.setdefault(str(disk), []).extend((int(s), int(e)) for s, e in ranges)
    for loss in losses:
        spans.setdefault(loss.disk, []).extend(loss.ranges)
    return {disk: [list(r) for r in _merge(ranges)] for disk, ranges in sorted(spans.items())}


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


# -- repair index -----------------------------------------------------------------------
@dataclass
class IndexRepair:
    packs: int = 0  # packs in the new index
    chunks: int = 0  # distinct chunks in the new index
    damaged_packs: dict[str, str] = field(default_factory=dict)  # pack id -> why
    kept_from_old: dict[str, int] = field(default_factory=dict)  # damaged pack -> blobs kept
    replaced: int = 0  # old index objects deleted (or that would be)
    damaged_indexes: int = 0  # of those, how many did not open
    new_index: str | None = None
    lost: list[DamagedPoint] = field(default_factory=list)  # points the new index fails


def repair_index(repo: Repository, progress: Progress, dry_run: bool = False) -> IndexRepair:
    """Rebuild the index from the pack headers (see the module docstring), under the lock.

    A storage failure while reading raises before anything is written.
    """
    with repo.lock(exclusive=not dry_run, operation="repair index"):
        return _repair_index(repo, progress, dry_run)


def _repair_index(repo: Repository, progress: Progress, dry_run: bool) -> IndexRepair:
    report = IndexRepair()
    old_names = sorted(name for name, _ in repo.storage.list("index/"))
    stored = sorted(name[5:] for name, _ in repo.storage.list("data/"))
    packs = _read_headers(repo, stored, report, progress)
    packs += _keep_from_old(repo, _old_listing(repo, old_names, report), report, progress)
    packs.sort()
    chunks = {e.chunk_id for _, entries in packs for e in entries}
    report.packs, report.chunks = len(packs), len(chunks)
    report.lost = _points_needing(repo, chunks, progress)
    plaintext = encode_index(packs)
    new_name = f"index/{repo.keys.object_id(plaintext)}"  # content-addressed: may exist already
    obsolete = [name for name in old_names if name != new_name]
    report.replaced = len(obsolete)
    if dry_run:
        return report
    progress.phase("write index")
    report.new_index = repo.put_object("index", plaintext)
    _check_lock(repo)
    progress.phase("delete old index objects", len(obsolete))
    for name in obsolete:
        with suppress(ObjectNotFound):
            repo.storage.delete(name)
        progress.advance(1)
    repo.forget_index()
    return report


def _read_headers(
    repo: Repository, stored: list[str], report: IndexRepair, progress: Progress
) -> list[tuple[str, list[PackEntry]]]:
    """Entries of every pack whose header authenticates; the others go to the report."""
    progress.phase("read pack headers", len(stored))
    packs = []
    for pack_id in stored:
        try:
            packs.append((pack_id, read_pack_header(repo.storage, repo.keys, pack_id)))
        except IntegrityError as exc:
            report.damaged_packs[pack_id] = str(exc)
        except ObjectNotFound:
            pass  # deleted since it was listed: it holds nothing any more
        progress.advance(1)
    return packs


def _old_listing(
    repo: Repository, old_names: list[str], report: IndexRepair
) -> dict[str, dict[bytes, PackEntry]]:
    """What the readable old index objects list for the packs whose header is damaged."""
    listed: dict[str, dict[bytes, PackEntry]] = {p: {} for p in report.damaged_packs}
    for name in old_names:
        try:
            for pack_id, entries in decode_index(repo.get_object("index", name[6:]), name):
                if pack_id in listed:
                    listed[pack_id].update((e.chunk_id, e) for e in entries)
        except IntegrityError:
            report.damaged_indexes += 1
    return listed


def _keep_from_old(
    repo: Repository,
    listed: dict[str, dict[bytes, PackEntry]],
    report: IndexRepair,
    progress: Progress,
) -> list[tuple[str, list[PackEntry]]]:
    """Of a pack with a damaged header, the blobs an old index lists that authenticate."""
    progress.phase("read packs with damaged headers", len(listed))
    kept = []
    for pack_id, entries in listed.items():
        good = _authentic_blobs(repo, pack_id, list(entries.values()))
        if good:
            kept.append((pack_id, good))
            report.kept_from_old[pack_id] = len(good)
        progress.advance(1)
    return kept


def _authentic_blobs(repo: Repository, pack_id: str, entries: list[PackEntry]) -> list[PackEntry]:
    if not entries:
        return []
    try:
        data = repo.storage.get(f"data/{pack_id}")
    except ObjectNotFound:
        return []
    good = []
    for entry in sorted(entries, key=lambda e: e.offset):
        sealed = data[entry.offset : entry.offset + entry.length]
        with suppress(IntegrityError):
            repo.keys.unseal(chunk_kind(entry.chunk_id), sealed, f"pack {pack_id[:12]}")
            good.append(entry)
    return good


def _points_needing(repo: Repository, chunks: set[bytes], progress: Progress) -> list[DamagedPoint]:
    """Readable restore points that need chunks missing from ``chunks``."""
    names = sorted(name[7:] for name, _ in repo.storage.list("points/"))
    progress.phase("read restore points", len(names))
    images, lost = _Images(repo), []
    for point_id in names:
        point = _examine(repo, point_id, lambda c: c not in chunks, images)
        if point is not None and point.lost_chunks:
            lost.append(point)
        progress.advance(1)
    return lost
