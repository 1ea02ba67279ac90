"""Copying restore points from one repository to another (``surety copy``).

The target has its own keys and chunk-id key, so a chunk's id differs between
the two: every chunk of a copied disk is read from the source through
``Repository.read_chunk`` (authenticated, decompressed, re-hashed), cut at the
target's chunk size, hashed with the target's id key and sealed under the
target's keys; only chunks the target's index lacks are uploaded.

Invariants:

* **Commit last.** Per point: packs, then index objects, then image indexes,
  then the manifest (after re-checking the target lock), as a backup does. A
  point killed half-way never appears in the target.
* **Resumable.** While a point is copied, an index object is written every
  ``checkpoint_bytes`` of uploaded packs (and at its end), so a rerun after
  kill -9 finds those chunks and uploads only what is missing. Indexed but
  unreferenced chunks are ordinary garbage (``prune`` frees them).
* **Idempotent.** A copied point records its origin in its manifest,
  ``source.copied_from = {"repository": <source repository id>, "point":
  <source point id>}``; a source point already in the target (by that pair) is
  skipped, without reading any chunk.
* **Faithful.** A copy keeps the name, kind, host, times, consistency, config,
  applications, stats and source of its point; ``parent`` names the copy of
  the source's parent when the target has it, else nothing.
* **Never forgets.** Copy adds points; the target's own retention decides
  what it keeps.
* **Locks.** A shared lock on the source (read-only storage is fine), a
  shared backup-like lock on the target (a dry run: read-only allowed).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from typing import Any

from surety.core.errors import UsageError
from surety.core.progress import NullProgress, Progress
from surety.repo.format import ZERO_ID
from surety.repo.image import ImageIndex
from surety.repo.manifest import DiskRecord, Manifest
from surety.repo.reader import ImageReader
from surety.repo.repository import Repository
from surety.repo.writer import ChunkWriter, PreparedChunk, prepare_chunk

__all__ = ["CHECKPOINT_BYTES", "CopyOutcome", "CopyReport", "copied_from", "copy_points"]

CHECKPOINT_BYTES = 256 << 20
"""Uploaded pack bytes between two index objects of one copied point (resume granularity)."""

COPIED_FROM = "copied_from"
READ_THREADS = 4  # source reads (S3: one GET each), hashing and sealing in parallel
READ_AHEAD = 16  # windows prepared ahead of the one being added: bounds memory


@dataclass(frozen=True)
class CopyOutcome:
    """What happened to one source point."""

    point: str  # source point id
    name: str
    status: str  # "copied" | "would copy" | "skipped" | "not verified"
    target_point: str | None = None  # the point's id in the target (copied or already there)
    chunks: int = 0  # chunks uploaded
    bytes: int = 0  # sealed bytes uploaded (packs)
    reason: str = ""


@dataclass(frozen=True)
class CopyReport:
    source: str  # repository ids
    target: str
    outcomes: tuple[CopyOutcome, ...] = field(default_factory=tuple)

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def bytes(self) -> int:
        return sum(o.bytes for o in self.outcomes)

    @property
    def chunks(self) -> int:
        return sum(o.chunks for o in self.outcomes)


def copied_from(point: Manifest) -> tuple[str, str] | None:
    """(source repository id, source point id) of a copied point, else None."""
    origin = point.source.get(COPIED_FROM)
    if not isinstance(origin, dict):
        return None
    repository, source_point = origin.get("repository"), origin.get("point")
    if isinstance(repository, str) and isinstance(source_point, str):
        return repository, source_point
    return None


def copy_points(
    source: Repository,
    target: Repository,
    points: Sequence[Manifest],
    progress: Progress | None = None,
    *,
    dry_run: bool = False,
    refused: Mapping[str, str] | None = None,
    checkpoint_bytes: int = CHECKPOINT_BYTES,
) -> CopyReport:
    """Copy ``points`` of ``source`` into ``target`` (oldest first); see the module docstring.

    ``refused`` maps source point ids to a reason not to copy them (e.g. not
    verified); they are reported as "not verified" and left alone.
    """
    if source.config.id == target.config.id:
        raise UsageError("the source and the target are the same repository")
    if checkpoint_bytes <= 0:
        raise UsageError("the checkpoint size must be more than 0 bytes")
    sink = progress or NullProgress()
    refused = refused or {}
    with ExitStack() as stack:
        stack.enter_context(source.lock(exclusive=False, operation="copy (source)", read_only=True))
        stack.enter_context(target.lock(exclusive=False, operation="copy", read_only=dry_run))
        present = _present(target, source.config.id)
        outcomes = []
        for point in sorted(_unique(points), key=lambda p: (p.finished, p.id)):
            if point.id in present:
                outcomes.append(
                    CopyOutcome(
                        point.id, point.name, "skipped", present[point.id], reason="already there"
                    )
                )
            elif point.id in refused:
                outcomes.append(
                    CopyOutcome(point.id, point.name, "not verified", reason=refused[point.id])
                )
            elif dry_run:
                outcomes.append(CopyOutcome(point.id, point.name, "would copy"))
            else:
                outcome = _copy_one(
                    source,
                    target,
                    point,
                    present=present,
                    progress=sink,
                    checkpoint_bytes=checkpoint_bytes,
                )
                present[point.id] = outcome.target_point or ""
                outcomes.append(outcome)
        return CopyReport(source.config.id, target.config.id, tuple(outcomes))


def _unique(points: Iterable[Manifest]) -> list[Manifest]:
    return list({p.id: p for p in points}.values())


def _present(target: Repository, source_id: str) -> dict[str, str]:
    """Source point id -> target point id, of the points already copied from ``source_id``."""
    found = {}
    for point in target.points():
        origin = copied_from(point)
        if origin is not None and origin[0] == source_id:
            found[origin[1]] = point.id
    return found


def _copy_one(
    source: Repository,
    target: Repository,
    point: Manifest,
    *,
    present: Mapping[str, str],
    progress: Progress,
    checkpoint_bytes: int,
) -> CopyOutcome:
    sender = _Sender(target, checkpoint_bytes)
    disks = []
    try:
        for disk in point.disks:
            progress.phase(f"copy {point.name} {point.id[:12]} {disk.name}", total=disk.size)
            image = _copy_image(source, target, source.get_image(disk.image), sender, progress)
            disks.append((disk, image))
        sender.flush()
    except BaseException:
        sender.abort()
        raise
    records = tuple(replace(disk, image=target.put_image(image)) for disk, image in disks)
    copy = _copied_manifest(source, point, records, present)
    target_id = target.commit(copy)
    return CopyOutcome(point.id, point.name, "copied", target_id, sender.chunks, sender.bytes)


def _copy_image(
    source: Repository,
    target: Repository,
    image: ImageIndex,
    sender: _Sender,
    progress: Progress,
) -> ImageIndex:
    """Re-chunk one disk at the target's chunk size; upload the chunks the target lacks.

    Reading (a ranged GET on S3), hashing and sealing run in ``READ_THREADS``
    workers, at most ``READ_AHEAD`` windows ahead; chunks are added in order.
    """
    reader = ImageReader(source, image, cache_chunks=2 * READ_AHEAD)
    chunk_size = target.config.chunk_size
    zero = bytes(chunk_size)

    def prepare(offset: int) -> PreparedChunk:
        length = min(chunk_size, image.size - offset)
        if _all_zero(image, offset, length):
            return PreparedChunk(ZERO_ID, length, None)
        data = reader.read(offset, length)  # every stored byte authenticated and hash-checked
        return prepare_chunk(target.keys, data, zero, sender.writer, sender.level)

    ids: list[bytes] = []
    offsets = iter(range(0, image.size, chunk_size))
    ahead: deque[Future[PreparedChunk]] = deque()
    with ThreadPoolExecutor(READ_THREADS, thread_name_prefix="surety-copy") as pool:
        try:
            for offset in offsets:
                ahead.append(pool.submit(prepare, offset))
                if len(ahead) >= READ_AHEAD:
                    ids.append(sender.send(ahead.popleft().result(), progress))
            while ahead:
                ids.append(sender.send(ahead.popleft().result(), progress))
        finally:
            for future in ahead:
                future.cancel()
    return ImageIndex(chunk_size, image.size, tuple(ids))


def _all_zero(image: ImageIndex, offset: int, length: int) -> bool:
    first = offset // image.chunk_size
    last = (offset + length - 1) // image.chunk_size
    return all(image.chunk_ids[i] == ZERO_ID for i in range(first, last + 1))


class _Sender:
    """A ``ChunkWriter`` on the target that writes an index every ``checkpoint_bytes``."""

    def __init__(self, target: Repository, checkpoint_bytes: int) -> None:
        self.target = target
        self.checkpoint_bytes = checkpoint_bytes
        self.level = target.config.compression_level
        self.writer = ChunkWriter(target)
        self.chunks = 0
        self.bytes = 0

    def send(self, prepared: PreparedChunk, progress: Progress) -> bytes:
        self.writer.add(prepared)
        progress.advance(prepared.raw_length)
        if self.writer.stored_bytes >= self.checkpoint_bytes:
            self.flush()
            self.writer = ChunkWriter(self.target)
        return prepared.chunk_id

    def flush(self) -> None:
        """Wait for every pack, then index them (a rerun after a kill reuses them)."""
        self.writer.finish()
        self.chunks += self.writer.new_chunks
        self.bytes += self.writer.stored_bytes

    def abort(self) -> None:
        self.writer.abort()


def _copied_manifest(
    source: Repository,
    point: Manifest,
    disks: tuple[DiskRecord, ...],
    present: Mapping[str, str],
) -> Manifest:
    origin: dict[str, Any] = {"repository": source.config.id, "point": point.id}
    parent = present.get(point.parent) if point.parent else None
    return replace(
        point,
        disks=disks,
        parent=parent or None,
        source={**point.source, COPIED_FROM: origin},
        id="",
    )
