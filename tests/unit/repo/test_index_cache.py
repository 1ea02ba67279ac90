"""The local chunk-index cache (``repo.cache``): a sorted, memory-mapped, authenticated table.

The table-backed ``ChunkIndex`` must answer exactly as the in-memory one does;
a tampered table is rebuilt, a stale one is brought up to date with storage
(new index objects merged, deleted ones rebuilt), and a wrong location the
cache gives never makes a chunk count as damaged.
"""

from __future__ import annotations

import multiprocessing
import os
import random
from pathlib import Path

import pytest

from surety.repo.cache import ChunkTable, cache_key, load_table, write_table
from surety.repo.index import ChunkIndex
from surety.repo.pack import PackEntry
from surety.repo.repository import Repository
from surety.repo.storage.local import LocalStorage
from surety.repo.writer import ChunkWriter, prepare_chunk
from tests.unit.conftest import CHEAP_KDF, PASSPHRASE

KEY = bytes(range(32))


def _random_content(
    rng: random.Random, objects: int, packs_each: int, entries_each: int
) -> list[tuple[str, list[tuple[str, list[PackEntry]]]]]:
    """Index objects with chunks shared between packs (duplicates) and similar prefixes."""
    pool = [rng.randbytes(32) for _ in range(entries_each * 3)]
    pool += [pool[0][:2] + rng.randbytes(30) for _ in range(20)]  # one crowded fan-out slot
    content = []
    for _ in range(objects):
        packs = []
        for _ in range(packs_each):
            chunks = rng.sample(pool, entries_each)
            entries = [
                PackEntry(c, rng.randrange(2**40), rng.randrange(1, 2**31), rng.randrange(2**31))
                for c in chunks
            ]
            packs.append((rng.randbytes(32).hex(), entries))
        content.append((f"index/{rng.randbytes(32).hex()}", packs))
    return content


def _both(
    tmp_path: Path, content: list[tuple[str, list[tuple[str, list[PackEntry]]]]]
) -> tuple[ChunkIndex, ChunkIndex]:
    path = tmp_path / "table"
    write_table(path, KEY, content)
    return ChunkIndex(), ChunkIndex(ChunkTable(path, KEY))


@pytest.mark.parametrize("seed", range(4))
def test_the_table_answers_as_the_dicts_do(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    content = _random_content(rng, objects=4, packs_each=3, entries_each=40)
    every = [(pack, e) for _, packs in content for pack, entries in packs for e in entries]
    damaged = rng.sample(every, 30)
    memory, table = _both(tmp_path, content)
    for index in (memory, table):
        for pack, e in damaged:  # damage records first, as the repository loads them
            index.mark_damaged(e.chunk_id, pack)
    for _, packs in content:
        for pack_id, entries in packs:
            memory.add_pack(pack_id, entries)
    # this process adds: a chunk both know, a new one, a new damaged copy
    new_pack = rng.randbytes(32).hex()
    extra = [every[0][1], PackEntry(rng.randbytes(32), 0, 10, 20)]
    copies: dict[bytes, int] = {}
    for _, e in every:
        copies[e.chunk_id] = copies.get(e.chunk_id, 0) + 1
    late_pack, late = next((p, e) for p, e in every if copies[e.chunk_id] == 1)
    for index in (memory, table):
        index.add_pack(new_pack, extra)
        index.mark_damaged(extra[1].chunk_id, new_pack)
        index.mark_damaged(late.chunk_id, late_pack)  # found damaged while running
    probes = [e.chunk_id for _, e in every] + [rng.randbytes(32), extra[1].chunk_id]
    assert any(memory.get(c) and c not in memory for c in probes)  # some damaged-only
    for chunk_id in probes:
        assert (chunk_id in table) == (chunk_id in memory)
        assert table.get(chunk_id) == memory.get(chunk_id)
    assert len(table) == len(memory)
    assert sorted(table.items()) == sorted(memory.items())
    assert {p: sorted(v) for p, v in table.packs().items()} == {
        p: sorted(v) for p, v in memory.packs().items()
    }
    assert table.indexed_packs == memory.indexed_packs
    assert table.index_names == {name for name, _ in content}
    # a copy found damaged while running: the table still knows the chunk's other copies
    # (the dicts keep one location per chunk, so theirs is lost until the next load)
    twice = next(e.chunk_id for _, e in every if copies[e.chunk_id] > 1 and e.chunk_id in table)
    first = table.get(twice)
    assert first is not None
    table.mark_damaged(twice, first.pack)
    second = table.get(twice)
    assert twice in table
    assert second is not None
    assert second.pack != first.pack


def _listing(content: list[tuple[str, list[tuple[str, list[PackEntry]]]]]) -> dict[str, int]:
    return {name: 1000 + i for i, (name, _) in enumerate(content)}


def test_merging_new_index_objects_gives_the_table_a_full_build_gives(tmp_path: Path) -> None:
    rng = random.Random(7)
    content = _random_content(rng, objects=6, packs_each=2, entries_each=30)
    by_name = dict(content)
    read: list[str] = []

    def reader(name: str) -> list[tuple[str, list[PackEntry]]]:
        read.append(name)
        return by_name[name]

    listing = _listing(content)
    first = dict(list(listing.items())[:3])
    loaded = load_table(tmp_path / "a", KEY, first, read=reader, notes=[])
    assert loaded.table is not None
    assert loaded.rebuilt
    read.clear()
    merged = load_table(tmp_path / "a", KEY, listing, read=reader, notes=[])
    assert sorted(read) == sorted(set(listing) - set(first))  # only the new objects
    full = load_table(tmp_path / "b", KEY, listing, read=reader, notes=[])
    assert merged.table is not None
    assert full.table is not None
    assert not merged.rebuilt
    assert merged.merged == 3
    a, b = ChunkIndex(merged.table), ChunkIndex(full.table)
    assert merged.table.records == full.table.records
    assert merged.table.chunks == full.table.chunks == len(b)
    # the same copies of each chunk (which copy is first depends on the merge order)
    assert {c: sorted(v) for c, v in merged.table.runs()} == {
        c: sorted(v) for c, v in full.table.runs()
    }
    assert sorted(c for c, _ in a.items()) == sorted(c for c, _ in b.items())
    read.clear()
    again = load_table(tmp_path / "a", KEY, listing, read=reader, notes=[])
    assert read == []
    assert again.table is not None


# -- the cache of a real (local) repository ------------------------------------------


def _store(repo: Repository, blobs: list[bytes]) -> list[bytes]:
    writer = ChunkWriter(repo)
    zero = bytes(max(len(b) for b in blobs))
    prepared = [prepare_chunk(repo.keys, b, zero, writer, 1) for b in blobs]
    for chunk in prepared:
        writer.add(chunk)
    writer.finish()
    return [c.chunk_id for c in prepared]


def _reopen(root: Path) -> Repository:
    return Repository.open(LocalStorage(root), PASSPHRASE)


@pytest.fixture
def local(tmp_path: Path, cache_dir: Path) -> Path:
    root = tmp_path / "repo"
    Repository.init(LocalStorage(root), PASSPHRASE, kdf=CHEAP_KDF)
    return root


def _table_of(repo: Repository) -> Path:
    where = repo.cache_dir()
    assert where is not None
    return where / "table"


def test_a_repository_index_comes_from_the_cache_and_matches_storage(local: Path) -> None:
    repo = _reopen(local)
    ids = _store(repo, [os.urandom(5000) for _ in range(20)])
    ids += _store(repo, [os.urandom(5000) for _ in range(5)])
    cached = _reopen(local).index()
    assert cached.table is not None
    assert cached.table.records == 25
    fresh = _reopen(local).index(use_cache=False)
    assert fresh.table is None
    assert sorted(cached.items()) == sorted(fresh.items())
    assert cached.index_names == fresh.index_names
    reader = _reopen(local)
    assert [reader.read_chunk(c) for c in ids[:3]]  # hash-checked reads at cached locations


def test_a_tampered_cache_is_rebuilt_never_trusted(local: Path) -> None:
    repo = _reopen(local)
    ids = _store(repo, [os.urandom(3000) for _ in range(10)])
    table = _table_of(repo)
    repo.index()  # nothing new since the writer's own load; the table lacks the last object
    _reopen(local).index()
    data = bytearray(table.read_bytes())
    data[4096 + 40] ^= 0x01  # a record's pack number/offset
    table.write_bytes(bytes(data))
    again = _reopen(local)
    index = again.index()
    assert any("local index cache is damaged" in n for n in again.notes)
    assert all(c in index for c in ids)
    assert [again.read_chunk(c) for c in ids]
    assert again.damaged_indexes == {}
    assert ChunkTable(table, cache_key(again.keys.object_id)).records == 10


def test_a_stale_cache_merges_only_index_objects_it_has_not_seen(local: Path) -> None:
    first = _store(_reopen(local), [os.urandom(3000) for _ in range(4)])
    assert _reopen(local).index().table is not None  # cached
    # damage the old index object in storage: a cache that read it again would say so
    (old,) = (local / "index").rglob("*")
    other = _reopen(local)
    second = _store(other, [os.urandom(3000) for _ in range(4)])
    old.write_bytes(old.read_bytes()[:-1] + b"\0")
    repo = _reopen(local)
    index = repo.index()
    assert repo.damaged_indexes == {}  # the old object was not read again
    assert all(c in index for c in first + second)
    assert index.table is not None
    assert index.table.records == 8


def test_an_index_object_deleted_by_prune_rebuilds_the_cache(local: Path) -> None:
    gone = _store(_reopen(local), [os.urandom(3000) for _ in range(3)])
    kept = _store(_reopen(local), [os.urandom(3000) for _ in range(3)])
    assert _reopen(local).index().table is not None
    repo = _reopen(local)
    index = repo.index()
    named = set(index.index_names)
    doomed = next(n for n in named if any(c in gone for c in _chunks_of(repo, n)))
    repo.storage.delete(doomed)
    index = _reopen(local).index()
    assert index.table is not None
    assert doomed not in index.index_names
    assert not any(c in index for c in gone)
    assert all(c in index for c in kept)


def _chunks_of(repo: Repository, name: str) -> list[bytes]:
    from surety.repo.index import decode_index  # noqa: PLC0415 -- test helper

    packs = decode_index(repo.get_object("index", name[6:]), name)
    return [e.chunk_id for _, entries in packs for e in entries]


def test_a_location_a_stale_cache_gives_is_read_again_from_storage_not_damaged(
    local: Path,
) -> None:
    (chunk,) = _store(_reopen(local), [os.urandom(4000)])
    stale = _reopen(local)
    stale.index()  # holds the cached location
    # another process repacks the chunk (as prune does): new pack + index, old ones deleted
    other = _reopen(local)
    old_names = set(other.index().index_names)
    old_pack = other.index().get(chunk)
    assert old_pack is not None
    data = other.read_chunk(chunk)
    other._index = ChunkIndex()  # a writer that does not see the old copy stores it again
    _store(other, [data])
    for name in old_names:
        other.storage.delete(name)
    other.storage.delete(f"data/{old_pack.pack}")
    assert stale.keys.chunk_id(stale.read_chunk(chunk)) == chunk
    assert not list(stale.storage.list("damaged/"))  # the cache alone reports no damage
    assert any("local index cache gave a wrong location" in n for n in stale.notes)


def _update_in_child(root: str, cache: str, barrier: multiprocessing.synchronize.Barrier) -> None:
    os.environ["SURETY_CACHE_DIR"] = cache
    repo = Repository.open(LocalStorage(Path(root)), PASSPHRASE)
    barrier.wait()
    repo.index()


def test_two_processes_updating_the_cache_at_once_leave_one_good_table(
    local: Path, cache_dir: Path
) -> None:
    ids: list[bytes] = []
    for _ in range(6):
        ids += _store(_reopen(local), [os.urandom(2000) for _ in range(50)])
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(3)
    children = [
        ctx.Process(target=_update_in_child, args=(str(local), str(cache_dir), barrier))
        for _ in range(3)
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(60)
        assert child.exitcode == 0
    repo = _reopen(local)
    index = repo.index()
    assert index.table is not None
    assert index.table.records == 300
    assert all(c in index for c in ids)
    assert not [p for p in _table_of(repo).parent.iterdir() if p.name.startswith("table.tmp")]
