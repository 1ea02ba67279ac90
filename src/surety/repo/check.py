"""Repository check: structure always, stored bytes with ``read_data``.

Structure: config and keys open; every index, manifest and image index
authenticates (each image index once, however many restore points name it);
every chunk an image names is indexed; every indexed pack exists and is long
enough. With ``read_data``: every indexed pack is read whole, once; its name
(BLAKE3 of its bytes) and header are verified, and every blob is
authenticated, decompressed and hash-checked — each chunk once, however many
restore points share it.

A ``DataSubset`` narrows the data part to some packs (the structure part stays
whole): part ``n`` of ``m`` — fixed by the pack id, so parts ``1..m`` together
read every pack exactly once and a damaged pack always falls in the same part —
a random share, or random packs up to a byte budget.

Problems are *errors* (data a restore point needs is damaged or missing) or
*warnings* (garbage an interrupted backup left; ``prune`` removes it). A pack
that no index names has its header read: if it holds chunks points use, it is
an error (an index object is missing or damaged: ``repair index``), never
garbage. Chunks found damaged are recorded in the repository (``repo.damage``)
so the next backup stores them afresh; on storage that cannot be written
they are reported only. Every error about data names the restore points it
affects.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Iterable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import blake3

from surety.core.errors import IntegrityError, ObjectNotFound, StorageError, UsageError
from surety.core.progress import Progress
from surety.core.units import format_size, parse_size
from surety.repo.candidates import read_lists
from surety.repo.format import ZERO_ID
from surety.repo.index import ChunkIndex, Location
from surety.repo.pack import parse_pack, read_pack_header
from surety.repo.repository import Repository
from surety.repo.usage import PackGroups, UsedChunks, workdir
from surety.repo.verified import check_summaries, orphaned_summaries

__all__ = ["CheckReport", "DataSubset", "check_repository"]

_PART = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")
_SIZE_WITH_UNIT = re.compile(r"^\s*\d+\s*[kmgt](i?b)?\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class DataSubset:
    """Which indexed packs a data check reads; the default is all of them.

    Pack ``p`` belongs to part ``int(p[:16], 16) % parts + 1``: pack ids are
    hashes, so parts are about equal, and a pack keeps its part for life.
    """

    part: int = 1
    parts: int = 1
    percent: float | None = None
    max_bytes: int | None = None

    @classmethod
    def parse(cls, text: str) -> DataSubset:
        """``"2/5"``, ``"10%"``, ``"2.5%"`` or ``"500M"``; ``UsageError`` otherwise."""
        if match := _PART.match(text):
            part, parts = int(match.group(1)), int(match.group(2))
            if parts < 1:
                raise UsageError(f"{text!r}: the number of parts must be at least 1 (e.g. 2/5)")
            if not 1 <= part <= parts:
                raise UsageError(f"{text!r}: the part must be between 1 and {parts} (e.g. 2/5)")
            return cls(part=part, parts=parts)
        if match := _PERCENT.match(text):
            percent = float(match.group(1))
            if not 0 < percent <= 100:
                raise UsageError(f"{text!r}: the percentage must be above 0 and at most 100")
            return cls(percent=percent)
        if _SIZE_WITH_UNIT.match(text):
            if (size := parse_size(text)) == 0:
                raise UsageError(f"{text!r}: the size must be above 0")
            return cls(max_bytes=size)
        raise UsageError(f"{text!r} is not a subset (use n/m, x% or a size such as 500M)")

    def describe(self) -> str:
        if self.percent is not None:
            return f"a random {self.percent:g}% of packs"
        if self.max_bytes is not None:
            return f"random packs up to {format_size(self.max_bytes)}"
        if self.parts > 1:
            return f"part {self.part} of {self.parts}"
        return "all packs"

    def choose(self, sizes: dict[str, int], rng: random.Random) -> list[str]:
        """The pack ids to read, in id order; ``sizes`` maps every candidate to its size."""
        ids = sorted(sizes)
        if self.percent is not None:
            return sorted(rng.sample(ids, math.ceil(len(ids) * self.percent / 100)))
        if self.max_bytes is not None:
            return sorted(_fill(rng.sample(ids, len(ids)), sizes, self.max_bytes))
        return [p for p in ids if int(p[:16], 16) % self.parts == self.part - 1]


def _fill(shuffled: Iterable[str], sizes: dict[str, int], budget: int) -> list[str]:
    chosen = []
    for pack_id in shuffled:
        if sizes[pack_id] <= budget:
            chosen.append(pack_id)
            budget -= sizes[pack_id]
    return chosen


ALL_PACKS = DataSubset()


@dataclass
class CheckReport:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    points: int = 0
    chunks: int = 0
    packs: int = 0
    subset: str | None = None  # what the data check read; None without one
    packs_read: int = 0
    chunks_read: int = 0
    bytes_read: int = 0
    summaries: int = 0  # verification summaries that open (format 3)
    candidates: int = 0  # objects on the current deletion candidate list (format 4)

    @property
    def ok(self) -> bool:
        return not self.errors


def check_repository(
    repo: Repository,
    read_data: bool,
    progress: Progress,
    subset: DataSubset | None = None,
    rng: random.Random | None = None,
) -> CheckReport:
    """Check ``repo``; a ``subset`` implies ``read_data`` (``rng`` draws random ones)."""
    with repo.lock(exclusive=False, operation="check", read_only=True):
        return _check(repo, read_data, progress, subset, rng)


def _check(
    repo: Repository,
    read_data: bool,
    progress: Progress,
    subset: DataSubset | None,
    rng: random.Random | None,
) -> CheckReport:
    report = CheckReport()
    progress.phase("check structure")
    try:
        # every index object is read from storage (into a fresh local cache table, if any)
        index = repo.index(rebuild=True)
    except (IntegrityError, StorageError) as exc:
        report.errors.append(str(exc))
        return report
    report.errors.extend(
        f"{msg}; its chunks count as absent" for msg in repo.damaged_indexes.values()
    )
    with workdir(repo.cache_dir()) as scratch:
        used = _check_points(repo, report, scratch)
        try:
            _check_summaries(repo, report)
            _check_candidates(repo, report)
            groups = PackGroups(scratch, index, used)
            scan = _Scan(dict(repo.storage.list("data/")))
            bad = _check_packs(repo, groups, scan, report)
            bad |= _check_index(repo, index, groups, scan, report)
            if read_data or subset is not None:
                subset = subset or ALL_PACKS
                report.subset = subset.describe()
                chosen = set(subset.choose(scan.sizes, rng or random.SystemRandom()))
                bad |= _read_packs(
                    repo,
                    ((p, [(c, loc) for c, loc, _ in e]) for p, e in groups if p in chosen),
                    sum(scan.sizes[p] for p in chosen),
                    report,
                    progress,
                )
            bad |= _recorded_damage(repo, index, used, report, found=bad)
            _name_affected_points(repo, {c for c in bad if c in used}, report)
        finally:
            used.close()
    return report


@dataclass
class _Scan:
    stored: dict[str, int]  # data/<pack id> -> size
    sizes: dict[str, int] = field(default_factory=dict)  # indexed pack id -> stored size


def _check_packs(
    repo: Repository, groups: PackGroups, scan: _Scan, report: CheckReport
) -> set[bytes]:
    """Each indexed pack exists and is long enough (one pack at a time)."""
    bad: set[bytes] = set()
    report.packs = groups.packs
    for pack_id, entries in groups:
        size = scan.stored.get(f"data/{pack_id}")
        scan.sizes[pack_id] = size or 0
        if size is None:
            report.errors.append(f"pack {pack_id[:12]} is indexed but missing")
            bad.update(c for c, _, used in entries if used)
            # the next backup of this data stores it afresh
            repo.record_damages([(c, pack_id) for c, _, _ in entries], "pack missing")
        elif max(loc.offset + loc.length for _, loc, _ in entries) > size:
            report.errors.append(f"pack {pack_id[:12]} is truncated ({size} bytes)")
            bad.update(c for c, _, used in entries if used)
    return bad


def _check_index(
    repo: Repository, index: ChunkIndex, groups: PackGroups, scan: _Scan, report: CheckReport
) -> set[bytes]:
    """Used chunks the index lacks (found in an unindexed pack, or missing)."""
    report.chunks = len(index)
    unindexed = [name[5:] for name in scan.stored if name[5:] not in index.indexed_packs]
    missing = {c for c in groups.unmatched if c not in index and index.get(c) is None}
    missing -= _check_unindexed(repo, unindexed, missing, report)
    for chunk_id in sorted(missing):
        report.errors.append(f"chunk {chunk_id.hex()[:12]} is used but not indexed")
    return missing


def _recorded_damage(
    repo: Repository, index: ChunkIndex, used: UsedChunks, report: CheckReport, found: set[bytes]
) -> set[bytes]:
    """Chunks points use whose only copy was recorded as damaged (by an earlier run)."""
    damaged = {
        c
        for c in index.damaged_chunks()
        if c in used and c not in index and index.get(c) is not None
    }
    named = set(found)  # found by this run: reported already
    for record in repo.damage_records():
        if record.chunk_id in damaged and record.chunk_id not in named:
            named.add(record.chunk_id)
            report.errors.append(
                f"chunk {record.chunk[:12]} in pack {record.pack[:12]} was recorded as damaged "
                f"({record.reason}; {record.host}, {record.found[:19]}); a backup of the same "
                "data stores it afresh"
            )
    return damaged


def _check_unindexed(
    repo: Repository, unindexed: list[str], missing: set[bytes], report: CheckReport
) -> set[bytes]:
    """Read the headers of packs no index names; returns the missing chunks found in them."""
    found: set[bytes] = set()
    garbage = 0
    for pack_id in unindexed:
        try:
            entries = read_pack_header(repo.storage, repo.keys, pack_id)
        except (IntegrityError, StorageError) as exc:
            report.errors.append(f"{exc} (a pack in no index; `surety prune` keeps it)")
            continue
        needed = {e.chunk_id for e in entries} & missing
        if needed:
            found |= needed
            report.errors.append(
                f"pack {pack_id[:12]} is in no index but holds {len(needed)} chunk(s) restore "
                "points use (an index object is missing or damaged): run `surety repair index`"
            )
        else:
            garbage += 1
    if garbage:
        report.warnings.append(
            f"{garbage} pack(s) not in any index and not used by any restore point (left by "
            "an interrupted backup; `surety prune` removes them)"
        )
    return found


def _name_affected_points(repo: Repository, bad: set[bytes], report: CheckReport) -> None:
    if not bad:
        return
    affected = []
    for point in repo.points():
        images = []
        for image_id in point.disk_images():
            with suppress(IntegrityError, StorageError):
                images.append(repo.get_image(image_id))
        if any(image.stored_ids() & bad for image in images):
            affected.append(f"{point.id[:12]} ({point.name})")
    if affected:
        report.errors.append(
            f"{len(bad)} damaged or missing chunk(s) affect restore point(s) {', '.join(affected)}"
        )


def _check_summaries(repo: Repository, report: CheckReport) -> None:
    """Verification summaries (``verified/``, format 3): damage is a warning, never an error."""
    report.summaries, problems = check_summaries(repo)
    report.warnings.extend(problems)
    orphans = orphaned_summaries(repo)
    if orphans:
        report.warnings.append(
            f"{len(orphans)} verification summary(ies) of forgotten restore points "
            "(`surety prune` removes them)"
        )


def _check_candidates(repo: Repository, report: CheckReport) -> None:
    """Deletion candidate lists (``candidates/``, format 4): one that does not open is a
    warning (prune then marks afresh: it never deletes because of it), never an error."""
    try:
        lists = read_lists(repo, every=True)
    except StorageError as exc:
        report.warnings.append(f"deletion candidate lists: {exc}")
        return
    report.warnings.extend(lists.problems)
    if lists.current is not None:
        report.candidates = len(lists.current.objects)


def _check_points(repo: Repository, report: CheckReport, scratch: Path) -> UsedChunks:
    """The chunks every readable point uses (sorted on disk, ``repo.usage``)."""

    def each() -> Iterator[Iterable[bytes]]:
        images: set[str] = set()
        for name, _ in repo.storage.list("points/"):
            try:
                point = repo.points_get(name[7:])
                report.points += 1
                for disk in point.disks:
                    if disk.image not in images:
                        ids = repo.get_image(disk.image).stored_ids()
                        images.add(disk.image)
                        ids.discard(ZERO_ID)
                        yield ids
            except (IntegrityError, StorageError) as exc:
                report.errors.append(f"restore point {name[7:19]}: {exc}")

    return UsedChunks.build(scratch, each())


def _read_packs(
    repo: Repository,
    packs: Iterable[tuple[str, list[tuple[bytes, Location]]]],
    total: int,
    report: CheckReport,
    progress: Progress,
) -> set[bytes]:
    """Read ``packs`` whole; returns the chunks found damaged (recorded in the repository)."""
    bad: set[bytes] = set()
    progress.phase("check data", total)
    for pack_id, entries in packs:
        what = f"pack {pack_id[:12]}"
        try:
            data = repo.storage.get(f"data/{pack_id}")
        except ObjectNotFound:
            continue  # already reported
        except StorageError as exc:
            report.errors.append(f"{what}: {exc}")
            continue
        report.packs_read += 1
        report.chunks_read += len(entries)
        report.bytes_read += len(data)
        progress.advance(len(data))
        bad |= _verify_pack(repo, pack_id, data, entries, report)
    return bad


def _verify_pack(
    repo: Repository,
    pack_id: str,
    data: bytes,
    entries: list[tuple[bytes, Location]],
    report: CheckReport,
) -> set[bytes]:
    what = f"pack {pack_id[:12]}"
    bad: set[bytes] = set()
    if blake3.blake3(data).hexdigest() != pack_id:
        report.errors.append(f"{what}: content does not match its name (damaged)")
    try:
        parse_pack(data, repo.keys, what)
    except IntegrityError as exc:
        report.errors.append(str(exc))
    for chunk_id, loc in entries:
        try:
            sealed = data[loc.offset : loc.offset + loc.length]
            repo.open_chunk(
                chunk_id, sealed, loc.raw_length, f"chunk {chunk_id.hex()[:12]} in {what}"
            )
        except IntegrityError as exc:
            report.errors.append(str(exc))
            bad.add(chunk_id)
            repo.record_damage(chunk_id, pack_id, str(exc))
    return bad
