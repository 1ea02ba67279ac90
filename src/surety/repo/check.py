"""Repository check: structure always, every stored byte with ``read_data``.

Structure: config and keys open; every index, manifest and image index
authenticates; every chunk an image names is indexed; every indexed pack
exists and is long enough. With ``read_data``: every indexed pack is read
once, its name (BLAKE3 of its bytes) and header are verified, and every blob
is authenticated, decompressed and hash-checked — each chunk once, however
many restore points share it.

Problems are *errors* (data a restore point needs is damaged or missing) or
*warnings* (garbage an interrupted backup left; ``prune`` removes it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import blake3

from surety.core.errors import IntegrityError, ObjectNotFound, StorageError
from surety.core.progress import Progress
from surety.repo.format import ZERO_ID
from surety.repo.index import Location
from surety.repo.pack import parse_pack
from surety.repo.repository import Repository

__all__ = ["CheckReport", "check_repository"]


@dataclass
class CheckReport:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    points: int = 0
    chunks: int = 0
    packs: int = 0
    bytes_read: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors


def check_repository(repo: Repository, read_data: bool, progress: Progress) -> CheckReport:
    report = CheckReport()
    progress.phase("check structure")
    try:
        index = repo.index()
    except (IntegrityError, StorageError) as exc:
        report.errors.append(str(exc))
        return report
    used = _check_points(repo, report)
    by_pack = index.packs()
    stored = dict(repo.storage.list("data/"))
    report.packs, report.chunks = len(by_pack), len(index)
    for chunk_id in used:
        if chunk_id not in index:
            report.errors.append(f"chunk {chunk_id.hex()[:12]} is used but not indexed")
    for pack_id, entries in by_pack.items():
        size = stored.get(f"data/{pack_id}")
        if size is None:
            report.errors.append(f"pack {pack_id[:12]} is indexed but missing")
        elif max(loc.offset + loc.length for _, loc in entries) > size:
            report.errors.append(f"pack {pack_id[:12]} is truncated ({size} bytes)")
    orphans = [name for name in stored if name[5:] not in by_pack]
    if orphans:
        report.warnings.append(
            f"{len(orphans)} pack(s) not in any index (left by an "
            "interrupted backup; `surety prune` removes them)"
        )
    if read_data:
        _read_all(repo, by_pack, stored, report, progress)
    return report


def _check_points(repo: Repository, report: CheckReport) -> set[bytes]:
    used: set[bytes] = set()
    for name, _ in repo.storage.list("points/"):
        try:
            point = repo.points_get(name[7:])
            report.points += 1
            for disk in point.disks:
                used |= repo.get_image(disk.image).stored_ids()
        except (IntegrityError, StorageError) as exc:
            report.errors.append(f"{name[:19]}: {exc}")
    used.discard(ZERO_ID)
    return used


def _read_all(
    repo: Repository,
    by_pack: dict[str, list[tuple[bytes, Location]]],
    stored: dict[str, int],
    report: CheckReport,
    progress: Progress,
) -> None:
    total = sum(stored.get(f"data/{p}", 0) for p in by_pack)
    progress.phase("check data", total)
    for pack_id, entries in by_pack.items():
        what = f"pack {pack_id[:12]}"
        try:
            data = repo.storage.get(f"data/{pack_id}")
        except ObjectNotFound:
            continue  # already reported
        except StorageError as exc:
            report.errors.append(f"{what}: {exc}")
            continue
        report.bytes_read += len(data)
        progress.advance(len(data))
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
