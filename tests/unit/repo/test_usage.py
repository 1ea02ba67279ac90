"""repo.usage: the used set and the per-pack grouping on disk agree with the in-memory ones;
prune and check leave no spill files and split a large new index into several objects."""

from __future__ import annotations

import os
import random
from dataclasses import replace
from pathlib import Path

import pytest

from surety.core.progress import NullProgress
from surety.repo import prune as prune_module
from surety.repo.cache import ChunkTable, write_table
from surety.repo.check import check_repository
from surety.repo.image import ImageIndex
from surety.repo.index import ChunkIndex
from surety.repo.manifest import DiskRecord
from surety.repo.pack import PackEntry
from surety.repo.prune import prune_repository
from surety.repo.repository import Repository
from surety.repo.storage.local import LocalStorage
from surety.repo.usage import PackGroups, UsedChunks
from surety.repo.writer import ChunkWriter, prepare_chunk
from tests.unit.conftest import CHEAP_KDF, PASSPHRASE, make_manifest
from tests.unit.repo.test_index_cache import KEY, _random_content


def test_the_used_set_is_the_sorted_union_without_duplicates(tmp_path: Path) -> None:
    rng = random.Random(3)
    pool = [rng.randbytes(32) for _ in range(3000)]
    pool += [bytes([7]) + rng.randbytes(31) for _ in range(50)]  # one crowded bucket
    sets = [set(rng.sample(pool, 1200)) for _ in range(5)]
    used = UsedChunks.build(tmp_path, iter(sets))
    union = set().union(*sets)
    assert len(used) == len(union)
    assert list(used) == sorted(union)
    for chunk_id in rng.sample(pool, 300):
        assert (chunk_id in used) == (chunk_id in union)
    assert rng.randbytes(32) not in used
    assert "not bytes" not in used
    used.close()
    (tmp_path / "empty").mkdir()
    empty = UsedChunks.build(tmp_path / "empty", [])
    assert len(empty) == 0
    assert list(empty) == []
    assert pool[0] not in empty


@pytest.mark.parametrize("seed", range(3))
def test_pack_groups_match_the_in_memory_grouping(tmp_path: Path, seed: int) -> None:
    """Table-backed index plus chunks only this process added (asked out of order):
    every pack once, in id order, each chunk flagged used exactly when it is used."""
    rng = random.Random(seed)
    content = _random_content(rng, objects=3, packs_each=4, entries_each=60)
    write_table(tmp_path / "table", KEY, content)
    index = ChunkIndex(ChunkTable(tmp_path / "table", KEY))
    added = [PackEntry(rng.randbytes(32), 0, 10, 20) for _ in range(30)]
    index.add_pack(rng.randbytes(32).hex(), added)
    if seed == 2:  # with damage recorded: the general path
        for chunk_id, loc in list(index.items())[:40:3]:
            index.mark_damaged(chunk_id, loc.pack)
    indexed = [c for c, _ in index.items()]
    absent = [rng.randbytes(32) for _ in range(25)]
    chosen = set(rng.sample(indexed, len(indexed) // 2)) | set(absent)
    (tmp_path / "work").mkdir()
    used = UsedChunks.build(tmp_path / "work", [chosen])
    groups = PackGroups(tmp_path / "work", index, used)
    expected = {
        pack: sorted((c, loc, c in chosen) for c, loc in entries)
        for pack, entries in index.packs().items()
    }
    found = list(groups)
    assert [p for p, _ in found] == sorted(expected)
    assert {p: sorted(e) for p, e in found} == expected
    assert list(groups) == found  # iterated again, the same
    assert groups.packs == len(expected)
    assert groups.chunks == len(index)
    missing = {c for c in groups.unmatched if c not in index and index.get(c) is None}
    assert missing == set(absent)


# -- prune and check on a local repository (with the cache) ----------------------------


def _point(repo: Repository, blobs: list[bytes], name: str) -> list[bytes]:
    writer, zero = ChunkWriter(repo), bytes(4096)
    prepared = [prepare_chunk(repo.keys, b, zero, writer, 1) for b in blobs]
    for chunk in prepared:
        writer.add(chunk)
    writer.finish()
    ids = tuple(c.chunk_id for c in prepared)
    image = ImageIndex(4096, 4096 * len(ids), ids)
    disk = DiskRecord("d", image.size, repo.put_image(image))
    repo.commit(make_manifest(name, disks=(disk,)))
    return list(ids)


def _open(root: Path) -> Repository:
    return Repository.open(LocalStorage(root), PASSPHRASE)


def test_prune_writes_a_large_index_as_several_objects_and_leaves_no_spill(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "repo"
    repo = Repository.init(LocalStorage(root), PASSPHRASE, kdf=CHEAP_KDF)
    repo.config = replace(repo.config, pack_size=3 * 4096)  # packs of ~3 blobs
    kept = _point(repo, [os.urandom(4096) for _ in range(40)], "a")
    gone = _point(_open(root), [os.urandom(4096)], "b")
    forgetting = _open(root)
    forgetting.forget(next(p.id for p in forgetting.points() if p.name == "b"))
    monkeypatch.setattr(prune_module, "INDEX_ENTRIES", 8)
    report = prune_repository(_open(root), NullProgress())
    assert report.used_chunks == len(kept)
    after = _open(root)
    index = after.index()
    assert len(list(after.storage.list("index/"))) > 1
    assert all(c in index for c in kept)
    assert gone[0] not in index
    assert [after.read_chunk(c) for c in kept]
    checked = check_repository(after, False, NullProgress())
    assert checked.ok, checked.errors
    assert checked.chunks == len(kept)
    assert not [p.name for p in cache_dir.rglob("*.tmp-*")]  # spill files removed
