"""Garbage collection: drop chunks no restore point references.

Runs under the exclusive lock (no backup can add chunks meanwhile). Steps,
each durable before the next, so a crash anywhere leaves a valid repository:

1. Mark: chunks reachable from every manifest -> image index -> chunk ids.
2. Repack: packs holding both used and unused blobs (unused share >=
   ``repack_threshold``) have their used blobs copied — authenticated on the
   way, never decrypted to disk — into new packs.
3. Write one new index object naming every kept blob at its new place.
4. Delete the old index objects (from here on only the new index counts).
5. Delete packs no longer indexed (unused, repacked, or orphans left by an
   interrupted backup), unused image indexes, and stale temporary files.

A crash after 3 leaves duplicate index entries (both copies valid); after 4,
unindexed packs that the next prune deletes.
"""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass, field

from surety.core.errors import ObjectNotFound
from surety.core.progress import Progress
from surety.repo.index import Location, encode_index
from surety.repo.pack import PackBuilder, PackEntry, chunk_kind
from surety.repo.repository import Repository

__all__ = ["PruneReport", "prune_repository"]


@dataclass
class PruneReport:
    used_chunks: int = 0
    deleted_packs: int = 0
    repacked_packs: int = 0
    freed_bytes: int = 0
    deleted_images: int = 0
    kept_unused_bytes: int = 0
    notes: list[str] = field(default_factory=list)


def prune_repository(
    repo: Repository, progress: Progress, repack_threshold: float = 0.1, dry_run: bool = False
) -> PruneReport:
    report = PruneReport()
    progress.phase("mark")
    used_images = {d.image for p in repo.points() for d in p.disks}
    used: set[bytes] = set()
    for image_id in used_images:
        used |= repo.get_image(image_id).stored_ids()
    report.used_chunks = len(used)
    index = repo.index()
    stored = dict(repo.storage.list("data/"))
    keep: list[tuple[str, list[PackEntry]]] = []
    repack: list[tuple[str, list[tuple[bytes, Location]]]] = []
    for pack_id, entries in index.packs().items():
        live = [(c, loc) for c, loc in entries if c in used]
        size = stored.get(f"data/{pack_id}", 0)
        dead_bytes = sum(loc.length for c, loc in entries if c not in used)
        if not live:
            continue
        if dead_bytes and dead_bytes >= repack_threshold * size:
            repack.append((pack_id, live))
        else:
            report.kept_unused_bytes += dead_bytes
            keep.append(
                (pack_id, [PackEntry(c, loc.offset, loc.length, loc.raw_length) for c, loc in live])
            )
    kept_names = {f"data/{p}" for p, _ in keep}
    doomed = [name for name in stored if name not in kept_names]
    report.deleted_packs = len(doomed) - len(repack)
    report.repacked_packs = len(repack)
    report.freed_bytes = sum(stored[n] for n in doomed)
    all_images = [n for n, _ in repo.storage.list("images/")]
    unused_images = [n for n in all_images if n[7:] not in used_images]
    report.deleted_images = len(unused_images)
    if dry_run:
        return report
    keep.extend(_repack(repo, repack, progress))
    report.freed_bytes -= sum(
        repo.storage.size(f"data/{p}") for p, _ in keep if f"data/{p}" not in kept_names
    )
    progress.phase("write index")
    new_index = f"index/{repo.put_object('index', encode_index(keep))}"
    # content-addressed: the new index may be byte-identical to an old one
    old_indexes = sorted(index.index_names - {new_index})
    progress.phase("delete", len(old_indexes) + len(doomed) + len(unused_images))
    for name in [*old_indexes, *doomed, *unused_images]:
        with suppress(ObjectNotFound):
            repo.storage.delete(name)
        progress.advance(1)
    clean = getattr(repo.storage, "clean_temporary", None)
    if clean is not None:
        clean()
    repo.forget_index()
    return report


def _repack(
    repo: Repository, repack: list[tuple[str, list[tuple[bytes, Location]]]], progress: Progress
) -> list[tuple[str, list[PackEntry]]]:
    progress.phase("repack", sum(loc.length for _, live in repack for _, loc in live))
    written: list[tuple[str, list[PackEntry]]] = []
    builder = PackBuilder()
    for pack_id, live in repack:
        for chunk_id, loc in live:
            sealed = repo.storage.get(f"data/{pack_id}", loc.offset, loc.length)
            repo.keys.unseal(chunk_kind(chunk_id), sealed, f"chunk {chunk_id.hex()[:12]}")
            builder.add(chunk_id, sealed, loc.raw_length)
            progress.advance(loc.length)
            if len(builder) >= repo.config.pack_size:
                written.append(_store(repo, builder))
                builder = PackBuilder()
    if builder.entries:
        written.append(_store(repo, builder))
    return written


def _store(repo: Repository, builder: PackBuilder) -> tuple[str, list[PackEntry]]:
    pack_id, data, entries = builder.finish(repo.keys)
    repo.storage.put(f"data/{pack_id}", data)
    return pack_id, entries
