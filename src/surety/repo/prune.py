"""Garbage collection: drop chunks no restore point references.

Runs under the exclusive lock (no backup can add chunks meanwhile). The
safety rule (format 2, docs/format.md "Prune"): **prune deletes a pack only
when it has proved that no committed restore point needs a chunk in it.**

1. Mark: chunks reachable from every manifest -> image index -> chunk ids.
   If a manifest or an image index cannot be read, prune cannot know what
   it references: it stops before deleting anything and names the damaged
   objects and the points they belong to. The used ids are sorted on disk
   and joined with the index one pack at a time (``repo.usage``): memory
   does not grow with the repository.
2. Prove: a stored pack that no index names (an interrupted backup, or an
   index object that is missing or damaged) has its header read. If it holds
   a chunk a point uses and no healthy indexed copy exists, it is *rescued*:
   re-indexed, never deleted. A pack whose header cannot be read is kept.
3. Repack: packs holding both used and unused blobs (unused share >=
   ``repack_threshold``), and packs with a damaged blob whose chunk is now
   stored healthy elsewhere, have their used blobs copied — authenticated on the
   way, never decrypted to disk — into new packs. A pack with a blob that
   fails authentication is kept whole (and the damage recorded) instead.
4. Write new index objects (``INDEX_ENTRIES`` entries each, at least one)
   naming every kept blob at its new place, and one damage record of what is
   still indexed and damaged.
5. Re-check the lock, then delete the old index objects and damage records,
   packs no longer indexed, unused image indexes, and temporary files older
   than the lock staleness age (younger ones may be a live writer's).

**Two phases** (format 4; ``repo.candidates``): on object storage, and on a
local repository when asked (``grace``), step 5 deletes no pack and no image
index at once. Everything no point references (unreferenced packs, packs
replaced by repacking, unused image indexes) goes into a new *candidate
list*; only candidates the current list marked at least ``grace`` ago, and
still unreferenced now, are deleted. Waiting packs stay in the new index
(their unused entries), so a backup that deduplicated against them before
its lock was judged stale, and commits late, finds its chunks indexed; the
next prune then sees them referenced and drops them from the list. Index
objects, damage records and summaries are replaced or orphaned for good and
go at once; temporary uploads go once older than the grace. An immutable
repository does not re-index its waiting packs (a new index is locked for
N days and would keep them that long): there a late commit is safe anyway,
as it locks every pack it needs (``immutable.secure_point``), which fails on
a deleted one, and the server refuses to delete a locked one.

On an immutable repository (format 3) nothing is repacked (the old packs
stay locked anyway), and step 5 deletes only what has expired: an object
whose retention is still ahead is kept and counted (``kept_locked``), and so
is every pack that a kept (still locked) old index object names, so no index
ever names a deleted pack.

Each step is durable before the next: a crash after 4 leaves duplicate
index entries (both copies valid); after the index deletes, unindexed packs
that the next prune proves unused and deletes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from surety.core.errors import IntegrityError, ObjectNotFound, StorageError
from surety.core.progress import Progress
from surety.repo.candidates import (
    CandidateList,
    Decision,
    check_grace,
    decide,
    default_grace,
    new_list,
    read_lists,
    write_list,
)
from surety.repo.damage import encode_damage
from surety.repo.index import ChunkIndex, Location, decode_index, encode_index
from surety.repo.lock import STALE_AFTER
from surety.repo.pack import PackBuilder, PackEntry, chunk_kind, read_pack_header
from surety.repo.repository import Repository
from surety.repo.storage.retry import StorageUnavailable
from surety.repo.usage import PackGroups, UsedChunks, workdir
from surety.repo.verified import orphaned_summaries

__all__ = ["PruneReport", "prune_repository", "used_chunks"]

Entries = list[tuple[bytes, Location]]
INDEX_ENTRIES = 1 << 18  # entries per new index object (~14 MiB of plaintext)


@dataclass
class PruneReport:
    used_chunks: int = 0
    deleted_packs: int = 0
    repacked_packs: int = 0
    rescued_packs: int = 0  # unindexed packs kept because points use their chunks
    freed_bytes: int = 0
    deleted_images: int = 0
    deleted_summaries: int = 0  # verification summaries of forgotten points (format 3)
    kept_unused_bytes: int = 0
    kept_locked: int = 0  # immutable: unused objects whose retention is still ahead
    # two phases (format 4): what was marked, what waits and until when
    two_phase: bool = False
    grace_seconds: float | None = None
    marked: int = 0  # objects this prune put on the candidate list
    marked_bytes: int = 0
    waiting: int = 0  # candidates (marked now or earlier) a later prune may delete
    waiting_bytes: int = 0
    next_deletion: str | None = None  # ISO 8601: when the earliest waiting one is due
    referenced_again: int = 0  # former candidates a point uses again: kept
    candidate_list: str | None = None  # the list this prune wrote
    notes: list[str] = field(default_factory=list)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def used_chunks(repo: Repository, directory: Path) -> tuple[set[str], UsedChunks]:
    """(image ids, chunk ids) every restore point references; ``IntegrityError`` if unknowable.

    The chunk ids are sorted on disk in ``directory`` (``repo.usage``): one image
    index at a time is held in memory, never the repository's set of chunks."""
    points = repo.points()
    if repo.damaged_points:
        ids = ", ".join(sorted(i[:12] for i in repo.damaged_points))
        raise IntegrityError(
            f"restore point(s) {ids}: damaged manifest, so prune cannot tell which data "
            "they use; nothing was deleted (drop them with `surety forget ID`, or "
            "`surety repair points`)"
        )
    images = {d.image for p in points for d in p.disks}

    def each() -> Iterator[set[bytes]]:
        for image_id in sorted(images):
            try:
                yield repo.get_image(image_id).stored_ids()
            except (IntegrityError, ObjectNotFound) as exc:
                users = sorted(
                    f"{p.id[:12]} ({p.name})" for p in points if p.disk_images() & {image_id}
                )
                raise IntegrityError(
                    f"{exc}; it belongs to restore point(s) {', '.join(users)}, so prune cannot "
                    "tell which data they use; nothing was deleted (`surety repair points` "
                    "drops them)"
                ) from None

    return images, UsedChunks.build(directory, each())


def prune_repository(
    repo: Repository,
    progress: Progress,
    repack_threshold: float = 0.1,
    dry_run: bool = False,
    *,
    grace: timedelta | None = None,
    clock: Callable[[], datetime] = _utcnow,
) -> PruneReport:
    """Prune under the exclusive lock (see the module docstring).

    ``grace``: delete a candidate only that long after it was marked (at least the
    stale-lock age); None: the repository's default (``candidates.default_grace``:
    two phases on object storage, one on a local disk). ``clock``: tests inject time.
    """
    chosen = check_grace(grace) if grace is not None else default_grace(repo)
    with repo.lock(exclusive=True, operation="prune"):
        return _prune(repo, progress, repack_threshold, dry_run, _Phases(chosen, clock))


@dataclass(frozen=True)
class _Phases:
    grace: timedelta | None  # None: one phase
    clock: Callable[[], datetime]


def _prune(
    repo: Repository, progress: Progress, repack_threshold: float, dry_run: bool, phases: _Phases
) -> PruneReport:
    progress.phase("mark")
    with workdir(repo.cache_dir()) as scratch:
        used_images, used = used_chunks(repo, scratch)
        try:
            return _prune_marked(
                repo,
                progress,
                repack_threshold,
                dry_run,
                phases,
                _Marked(scratch, used_images, used),
            )
        finally:
            used.close()


@dataclass(frozen=True)
class _Marked:
    scratch: Path  # spill files (removed when prune ends)
    images: set[str]
    used: UsedChunks


def _prune_marked(  # noqa: PLR0917 -- one caller
    repo: Repository,
    progress: Progress,
    repack_threshold: float,
    dry_run: bool,
    phases: _Phases,
    marked: _Marked,
) -> PruneReport:
    report = PruneReport()
    used, used_images = marked.used, marked.images
    report.used_chunks = len(used)
    index = repo.index()
    stored = dict(repo.storage.list("data/"))
    rescued: dict[str, Entries] = {}
    protected = _prove_unindexed(
        repo, index=index, stored=stored, used=used, packs=rescued, report=report, progress=progress
    )
    progress.phase("group the index by pack")
    groups = PackGroups(marked.scratch, index, used, rescued)
    threshold = float("inf") if repo.immutable else repack_threshold
    keep, repack = _plan(index, groups=groups, stored=stored, threshold=threshold, report=report)
    kept_names = {f"data/{p}" for p in keep} | protected
    doomed = [name for name in stored if name not in kept_names]
    report.deleted_packs = len(doomed) - len(repack)
    report.repacked_packs = len(repack)
    report.freed_bytes = sum(stored[n] for n in doomed)
    images = dict(repo.storage.list("images/"))
    unused_images = [n for n in images if n[7:] not in used_images]
    report.deleted_images = len(unused_images)
    unused_summaries = _forgotten_summaries(repo, report)
    sizes = {**stored, **images}
    if dry_run:
        if phases.grace is not None:  # decides as the real run would, writes nothing
            replaced = [f"data/{p}" for p in repack]
            _two_phases(repo, [*doomed, *unused_images], replaced, sizes, phases, report)
        return report
    written, failed = _repack(repo, groups, repack, progress, report)
    extra = written + failed
    if failed:
        kept_names |= {f"data/{p}" for p, _ in failed}
        doomed = [name for name in doomed if name not in kept_names]
    new_bytes = sum(repo.storage.size(f"data/{p}") for p, _ in written)
    report.freed_bytes = sum(stored[n] for n in doomed) - new_bytes
    candidates: CandidateList | None = None
    lists: tuple[str, ...] = ()
    waiting: set[str] = set()
    if phases.grace is not None:
        replaced = [f"data/{p}" for p in repack if f"data/{p}" in doomed]
        decision, candidates, lists = _two_phases(
            repo, [*doomed, *unused_images], replaced, sizes, phases, report
        )
        if not repo.immutable:  # there a new index stays locked N days: it would hold them
            waiting = {n[5:] for n in decision.waiting() if n.startswith("data/")}
        doomed, unused_images = (
            _only(decision.delete, doomed),
            _only(decision.delete, unused_images),
        )
        report.freed_bytes = sum(stored[n] for n in doomed) - new_bytes
    _commit_and_delete(
        repo,
        index,
        _Kept(groups, keep, waiting, extra),
        [*doomed, *unused_images, *unused_summaries],
        progress,
        report=report,
        candidates=candidates,
        old_lists=list(lists),
        temporary_age=(phases.grace or timedelta(seconds=STALE_AFTER)).total_seconds(),
    )
    return report


@dataclass(frozen=True)
class _Kept:
    """What the new index names: the used entries of the ``keep`` packs and the unused
    ones of the ``waiting`` packs (streamed from ``groups``), then ``extra`` (new packs,
    and packs kept whole because a blob failed authentication)."""

    groups: PackGroups
    keep: set[str]
    waiting: set[str]
    extra: list[tuple[str, list[PackEntry]]]

    def __iter__(self) -> Iterator[tuple[str, list[PackEntry]]]:
        for pack_id, entries in self.groups:
            if pack_id in self.keep:
                live = [(c, loc) for c, loc, used in entries if used]
                yield pack_id, _pack_entries(live)
            elif pack_id in self.waiting:
                # the unused blobs of a waiting pack (the used ones of a repacked pack
                # live in its new pack), so a late commit finds its chunks
                unused = [(c, loc) for c, loc, used in entries if not used]
                if unused:
                    yield pack_id, _pack_entries(unused)
        yield from self.extra


def _two_phases(  # noqa: PLR0917 -- one caller, two call sites, all positional
    repo: Repository,
    unreferenced: list[str],
    replaced: list[str],
    sizes: dict[str, int],
    phases: _Phases,
    report: PruneReport,
) -> tuple[Decision, CandidateList, tuple[str, ...]]:
    """Decide which unreferenced objects go now and which wait (``candidates.decide``);
    fills the report. Returns the decision, the new list, and every list seen."""
    assert phases.grace is not None
    grace, now = phases.grace, phases.clock()
    lists = read_lists(repo)
    report.notes.extend(lists.problems)
    previous = lists.current.objects if lists.current is not None else {}
    fresh = set(replaced)
    decision = decide(
        [n for n in unreferenced if n not in fresh],
        previous,
        now=now,
        grace=grace,
        stored=sizes,
        replaced=replaced,
    )
    waiting = decision.waiting()
    report.two_phase, report.grace_seconds = True, grace.total_seconds()
    report.marked = len(decision.new)
    report.marked_bytes = sum(sizes.get(n, 0) for n in decision.new)
    report.waiting, report.waiting_bytes = len(waiting), sum(sizes.get(n, 0) for n in waiting)
    due = decision.next_due(grace)
    report.next_deletion = due.isoformat(timespec="seconds") if due is not None else None
    report.deleted_packs = sum(n.startswith("data/") for n in decision.delete)
    report.deleted_images = sum(n.startswith("images/") for n in decision.delete)
    report.freed_bytes = sum(sizes.get(n, 0) for n in decision.delete if n.startswith("data/"))
    report.referenced_again = len(decision.dropped)
    if decision.dropped:
        shown = ", ".join(_short(n) for n in decision.dropped[:5])
        more = f" and {len(decision.dropped) - 5} more" if len(decision.dropped) > 5 else ""
        report.notes.append(
            f"{len(decision.dropped)} deletion candidate(s) are referenced again by a restore "
            f"point ({shown}{more}): kept, dropped from the candidate list"
        )
    return decision, new_list(decision.objects, now, grace), lists.names


def _only(due: tuple[str, ...], names: list[str]) -> list[str]:
    chosen = set(due)
    return [n for n in names if n in chosen]


def _short(name: str) -> str:
    kind, _, ident = name.partition("/")
    return f"{'pack' if kind == 'data' else 'image index'} {ident[:12]}"


def _forgotten_summaries(repo: Repository, report: PruneReport) -> list[str]:
    """Verification summaries (``verified/``, format 3) of restore points that are gone."""
    names = orphaned_summaries(repo)
    report.deleted_summaries = len(names)
    return names


def _prove_unindexed(
    repo: Repository,
    *,
    index: ChunkIndex,
    stored: dict[str, int],
    used: UsedChunks,
    packs: dict[str, Entries],
    report: PruneReport,
    progress: Progress,
) -> set[str]:
    """Read the headers of packs no index names; rescue those points need. Returns kept names."""
    unindexed = [n[5:] for n in stored if n[5:] not in index.indexed_packs]
    progress.phase("read unindexed pack headers", len(unindexed))
    protected: set[str] = set()
    for pack_id in unindexed:
        progress.advance(1)
        try:
            entries = read_pack_header(repo.storage, repo.keys, pack_id)
        except (IntegrityError, StorageError) as exc:
            protected.add(f"data/{pack_id}")
            report.notes.append(f"{exc}; kept: cannot prove it unused (`surety repair index`)")
            continue
        needed = [e for e in entries if e.chunk_id in used and e.chunk_id not in index]
        if needed:
            packs[pack_id] = [
                (e.chunk_id, Location(pack_id, e.offset, e.length, e.raw_length)) for e in needed
            ]
            report.rescued_packs += 1
            report.notes.append(
                f"pack {pack_id[:12]} was in no index but holds {len(needed)} chunk(s) restore "
                "points use: re-indexed, not deleted"
            )
    return protected


def _plan(
    index: ChunkIndex,
    *,
    groups: PackGroups,
    stored: dict[str, int],
    threshold: float,
    report: PruneReport,
) -> tuple[set[str], list[str]]:
    """(packs kept as they are, packs to repack), one pack at a time."""
    keep: set[str] = set()
    repack: list[str] = []
    with_damage = index.damaged_packs()
    for pack_id, entries in groups:
        live = [(c, loc) for c, loc, used in entries if used]
        if not live or f"data/{pack_id}" not in stored:
            continue
        dead_bytes = sum(loc.length for _, loc, used in entries if not used)
        damaged = any(index.is_damaged(c, pack_id) for c, _ in live)
        wasteful = dead_bytes and dead_bytes >= threshold * stored[f"data/{pack_id}"]
        # a pack whose damaged copy was stored afresh elsewhere is rewritten without it
        rewrite = wasteful or (pack_id in with_damage and threshold != float("inf"))
        if not damaged and rewrite:
            repack.append(pack_id)
            continue
        report.kept_unused_bytes += dead_bytes
        keep.add(pack_id)
    return keep, repack


def _pack_entries(live: Entries) -> list[PackEntry]:
    return [PackEntry(c, loc.offset, loc.length, loc.raw_length) for c, loc in live]


def _repack(
    repo: Repository, groups: PackGroups, repack: list[str], progress: Progress, report: PruneReport
) -> tuple[list[tuple[str, list[PackEntry]]], list[tuple[str, list[PackEntry]]]]:
    """(new packs, source packs kept whole because a blob failed authentication)."""
    chosen = set(repack)
    todo = (
        [
            (pack_id, [(c, loc) for c, loc, used in entries if used])
            for pack_id, entries in groups
            if pack_id in chosen
        ]
        if chosen
        else []
    )
    progress.phase("repack", sum(loc.length for _, live in todo for _, loc in live))
    written: list[tuple[str, list[PackEntry]]] = []
    failed: list[tuple[str, list[PackEntry]]] = []
    builder = PackBuilder()
    for pack_id, live in todo:
        try:
            blobs = [_authenticated_blob(repo, pack_id, c, loc) for c, loc in live]
        except IntegrityError as exc:
            failed.append((pack_id, _pack_entries(live)))
            report.notes.append(f"{exc}; pack {pack_id[:12]} kept whole, not repacked")
            continue
        for (chunk_id, loc), sealed in zip(live, blobs, strict=True):
            builder.add(chunk_id, sealed, loc.raw_length)
            progress.advance(loc.length)
            if len(builder) >= repo.config.pack_size:
                written.append(_store(repo, builder))
                builder = PackBuilder()
    if builder.entries:
        written.append(_store(repo, builder))
    return written, failed


def _authenticated_blob(repo: Repository, pack_id: str, chunk_id: bytes, loc: Location) -> bytes:
    what = f"chunk {chunk_id.hex()[:12]} in pack {pack_id[:12]}"
    try:
        sealed = repo.storage.get(f"data/{pack_id}", loc.offset, loc.length)
        repo.keys.unseal(chunk_kind(chunk_id), sealed, what)
    except StorageUnavailable:
        raise  # the storage is unreachable right now: not damage, prune stops here
    except (IntegrityError, StorageError) as exc:
        repo.record_damage(chunk_id, pack_id, str(exc))
        raise IntegrityError(str(exc)) from exc
    return sealed


def _store(repo: Repository, builder: PackBuilder) -> tuple[str, list[PackEntry]]:
    pack_id, data, entries = builder.finish(repo.keys)
    repo.storage.put(f"data/{pack_id}", data)
    return pack_id, entries


def _commit_and_delete(
    repo: Repository,
    index: ChunkIndex,
    keep: _Kept,
    doomed: list[str],
    progress: Progress,
    *,
    report: PruneReport,
    candidates: CandidateList | None = None,
    old_lists: list[str] | None = None,
    temporary_age: float = STALE_AFTER,
) -> None:
    progress.phase("write index")
    new_indexes, kept_damaged = _write_index(repo, index, keep)
    old_damage = [n for n, _ in repo.storage.list("damaged/")]
    new_damage = _still_damaged(repo, kept_damaged)
    # content-addressed: a new index may be byte-identical to an old one
    obsolete = sorted(index.index_names - new_indexes) + sorted(set(old_damage) - new_damage)
    superseded = list(old_lists or [])
    if candidates is not None:  # durable before anything is deleted
        report.candidate_list = write_list(repo, candidates)
        superseded = [n for n in superseded if n != report.candidate_list]
    if repo.immutable:
        obsolete, doomed = _expired_only(repo, obsolete, doomed, report)
        superseded = _expired_lists(repo, superseded)
    if repo.held is not None:
        repo.held.check()  # still ours: nobody judged it stale and went on meanwhile
    progress.phase("delete", len(obsolete) + len(doomed) + len(superseded))
    # old lists last: a crash before leaves the new list the newest, and it names every
    # candidate not yet deleted with its first mark, so a rerun goes on
    for name in [*obsolete, *doomed, *superseded]:
        with suppress(ObjectNotFound):
            repo.storage.delete(name)
        progress.advance(1)
    clean = getattr(repo.storage, "clean_temporary", None)
    if clean is not None:
        clean(older_than=temporary_age)
    repo.forget_index()


def _expired_lists(repo: Repository, names: list[str]) -> list[str]:
    """Immutable: superseded candidate lists whose retention passed (locked ones wait)."""
    lock = repo.object_lock
    assert lock is not None
    now = datetime.now(UTC)
    expired = []
    for name in names:
        until = lock.retained_until(name)
        if until is None or until <= now:
            expired.append(name)
    return expired


def _expired_only(
    repo: Repository, obsolete: list[str], doomed: list[str], report: PruneReport
) -> tuple[list[str], list[str]]:
    """Immutable: only what expired is deleted; a locked old index keeps its packs."""
    lock = repo.object_lock
    assert lock is not None
    now, earliest = datetime.now(UTC), None
    locked: list[str] = []
    for name in [*obsolete, *doomed]:
        until = lock.retained_until(name)
        if until is not None and until > now:
            locked.append(name)
            earliest = until if earliest is None else min(earliest, until)
    named = set()
    for name in locked:
        if name.startswith("index/"):
            entries = decode_index(repo.get_object("index", name[6:]), name)
            named |= {f"data/{pack_id}" for pack_id, _ in entries}
    kept = set(locked) | named
    deleted_packs = [n for n in doomed if n not in kept and n.startswith("data/")]
    report.kept_locked = len(kept & {*obsolete, *doomed})
    report.deleted_packs = len(deleted_packs)
    if earliest is not None:
        report.notes.append(
            f"{report.kept_locked} unused object(s) are still locked (the earliest until "
            f"{earliest.isoformat(timespec='seconds')}): kept; a later prune deletes them"
        )
    return [n for n in obsolete if n not in kept], [n for n in doomed if n not in kept]


def _write_index(
    repo: Repository, index: ChunkIndex, keep: _Kept
) -> tuple[set[str], set[tuple[bytes, str]]]:
    """Write the kept entries as index objects of at most ``INDEX_ENTRIES`` entries each
    (one, however small); returns their names and the kept copies recorded as damaged."""
    names: set[str] = set()
    damaged: set[tuple[bytes, str]] = set()
    with_damage = index.damaged_packs()
    batch: list[tuple[str, list[PackEntry]]] = []
    count = 0
    for pack_id, entries in keep:
        if pack_id in with_damage:
            damaged |= {
                (e.chunk_id, pack_id) for e in entries if index.is_damaged(e.chunk_id, pack_id)
            }
        batch.append((pack_id, entries))
        count += len(entries)
        if count >= INDEX_ENTRIES:
            names.add(f"index/{repo.put_object('index', encode_index(batch))}")
            batch, count = [], 0
    if batch or not names:
        names.add(f"index/{repo.put_object('index', encode_index(batch))}")
    return names, damaged


def _still_damaged(repo: Repository, kept: set[tuple[bytes, str]]) -> set[str]:
    """Write one damage record of the damaged copies still indexed; returns its name(s)."""
    records = [r for r in repo.damage_records() if (r.chunk_id, r.pack) in kept]
    if not records:
        return set()
    unique = {(r.chunk, r.pack): r for r in records}
    return {f"damaged/{repo.put_object('damaged', encode_damage(unique.values()))}"}
