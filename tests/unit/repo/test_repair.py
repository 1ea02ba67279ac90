"""Repair on in-memory repositories: unlock, forget by id, repair index, repair points."""

from __future__ import annotations

import json
import random
import time
from dataclasses import replace
from datetime import datetime

import pytest

from surety.core.errors import (
    AmbiguousRestorePoint,
    IntegrityError,
    RepositoryLocked,
    RestorePointNotFound,
)
from surety.core.progress import NullProgress
from surety.repo.forget import find_points, forget_points
from surety.repo.format import CHUNK_SIZE_MIN, ZERO_ID
from surety.repo.image import ImageIndex
from surety.repo.lock import STALE_AFTER, hold_lock, list_locks
from surety.repo.manifest import Manifest
from surety.repo.repair import (
    SALVAGED_FORMAT,
    byte_ranges,
    find_damaged_points,
    remove_locks,
    repair_index,
    repair_points,
    salvaged_manifest,
)
from surety.repo.repository import Repository
from surety.repo.storage import MemoryStorage
from tests.unit.conftest import CHEAP_KDF, PASSPHRASE
from tests.unit.repo.test_check import back_up

CHUNK = CHUNK_SIZE_MIN
START = datetime(2024, 5, 17, 12, 0).astimezone()


def read_disk(repo: Repository, point_id: str, disk: str) -> bytes:
    record = repo.points_get(point_id).disk(disk)
    assert record is not None
    image = repo.get_image(record.image)
    return b"".join(
        bytes(image.chunk_length(i)) if c == ZERO_ID else repo.read_chunk(c)
        for i, c in enumerate(image.chunk_ids)
    )


def reopen(storage: MemoryStorage) -> Repository:
    repo = Repository.open(storage, PASSPHRASE)
    repo.config = replace(repo.config, pack_size=3 * CHUNK)
    return repo


def pack_of(repo: Repository, chunk_id: bytes) -> str:
    loc = repo.index().get(chunk_id)
    assert loc is not None
    return loc.pack


def chunk_at(repo: Repository, point_id: str, disk: str, number: int) -> bytes:
    record = repo.points_get(point_id).disk(disk)
    assert record is not None
    return repo.get_image(record.image).chunk_ids[number]


@pytest.fixture
def storage() -> MemoryStorage:
    return MemoryStorage()


@pytest.fixture
def data() -> dict[str, bytes]:
    """Two VMs' disks: ``a`` (12.5 chunks, a zero chunk at 4) and ``b`` (6 chunks of its own)."""
    rng = random.Random(3)
    a = b"".join(rng.randbytes(CHUNK) for _ in range(4)) + bytes(CHUNK)
    a += b"".join(rng.randbytes(CHUNK) for _ in range(7)) + rng.randbytes(CHUNK // 2)
    b = b"".join(rng.randbytes(CHUNK) for _ in range(6))
    return {"a": a, "b": b}


@pytest.fixture
def repo(storage: MemoryStorage, data: dict[str, bytes]) -> Repository:
    """Points ``a1``, ``a2`` (same disk) and ``b1``; packs of 3 chunks."""
    repo = Repository.init(storage, PASSPHRASE, chunk_size=CHUNK, kdf=CHEAP_KDF)
    repo.config = replace(repo.config, pack_size=3 * CHUNK)
    back_up(repo, {"vda": data["a"]}, "a", 1, source={"checkpoint": "cp1", "uuid": "u"})
    back_up(repo, {"vda": data["a"]}, "a", 2, source={"checkpoint": "cp2", "uuid": "u"})
    back_up(repo, {"vda": data["b"]}, "b", 3)
    return reopen(storage)


def ids_by_name(repo: Repository) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for point in repo.points():
        found.setdefault(point.name, []).append(point.id)
    return found


def damage_manifest(storage: MemoryStorage, point_id: str) -> None:
    raw = bytearray(storage.get(f"points/{point_id}"))
    raw[30] ^= 0x01
    storage.put(f"points/{point_id}", bytes(raw))


# -- byte ranges --------------------------------------------------------------------------


def test_byte_ranges_merge_adjacent_chunks_and_end_at_the_disk_size() -> None:
    image = ImageIndex(100, 450, (b"x" * 32,) * 5)
    assert byte_ranges(image, [4, 0, 1, 3]) == ((0, 200), (300, 450))
    assert byte_ranges(image, []) == ()


# -- unlock -------------------------------------------------------------------------------


def test_remove_locks_takes_unreadable_and_stale_and_leaves_live(storage: MemoryStorage) -> None:
    stale = {
        "host": "gone-host",
        "pid": 4242,
        "start_time": "1",
        "exclusive": False,
        "operation": "backup image old",
        "refreshed": time.time() - STALE_AFTER - 60,
    }
    with hold_lock(storage, exclusive=False, operation="backup image live") as held:
        storage.put("locks/" + "1" * 32, b"{not json")
        storage.put("locks/" + "2" * 32, json.dumps(stale).encode())
        result = remove_locks(storage)
        assert sorted(i.name for i in result.removed) == ["locks/" + "1" * 32, "locks/" + "2" * 32]
        assert [i.name for i in result.live] == [held.name]
        assert [i.name for i in list_locks(storage)] == [held.name]
        everything = remove_locks(storage, everything=True)
        assert [i.name for i in everything.removed] == [held.name]
        assert list_locks(storage) == []


# -- forget by id -------------------------------------------------------------------------


def test_forget_by_id_drops_a_point_whose_manifest_is_damaged(
    repo: Repository, storage: MemoryStorage
) -> None:
    victim = ids_by_name(repo)["b"][0]
    damage_manifest(storage, victim)
    (found,) = find_points(repo, [victim[:6]])
    assert found.manifest is None
    assert "authentication failed" in found.problem
    with pytest.raises(IntegrityError):
        repo.resolve(victim[:6])  # no other command can name it
    forget_points(repo, [victim[:6].upper()])
    assert not storage.exists(f"points/{victim}")
    assert repo.points_get(ids_by_name(repo)["a"][0]).name == "a"


def test_forget_by_id_resolves_every_id_before_deleting_any(repo: Repository) -> None:
    before = sorted(n for n, _ in repo.storage.list("points/"))
    a1 = ids_by_name(repo)["a"][0]
    with pytest.raises(RestorePointNotFound, match="no restore point 'ffffffff'"):
        forget_points(repo, [a1, "ffffffff"])
    with pytest.raises(RestorePointNotFound, match="not a restore point id"):
        forget_points(repo, [a1, "a1"])
    assert sorted(n for n, _ in repo.storage.list("points/")) == before


def test_forget_by_an_ambiguous_prefix_deletes_nothing(repo: Repository) -> None:
    for digit in "01":  # names alone decide: these two need not even decode
        repo.storage.put("points/abcd" + digit * 60, b"not a manifest")
    with pytest.raises(AmbiguousRestorePoint, match="matches 2 restore points"):
        forget_points(repo, ["abcd"])
    assert len(list(repo.storage.list("points/"))) == 5
    forget_points(repo, ["abcd0"])
    assert not repo.storage.exists("points/abcd" + "0" * 60)


def test_forget_dry_run_deletes_nothing(repo: Repository) -> None:
    a1 = ids_by_name(repo)["a"][0]
    assert [p.id for p in forget_points(repo, [a1[:8]], dry_run=True)] == [a1]
    assert repo.storage.exists(f"points/{a1}")


# -- repair points ------------------------------------------------------------------------

LOST_IN_A = ((3 * CHUNK, 4 * CHUNK), (5 * CHUNK, 7 * CHUNK))  # chunk 4 is zeros: not lost


def lose_pack_of_a(repo: Repository) -> str:
    """Delete the pack of chunks 3, 5 and 6 of disk ``a``; its id."""
    a1 = ids_by_name(repo)["a"][0]
    pack = pack_of(repo, chunk_at(repo, a1, "vda", 6))
    assert pack == pack_of(repo, chunk_at(repo, a1, "vda", 3))
    repo.storage.delete(f"data/{pack}")
    return pack


def test_a_missing_pack_loses_exactly_the_points_and_ranges_that_used_it(
    repo: Repository, storage: MemoryStorage, data: dict[str, bytes]
) -> None:
    lose_pack_of_a(repo)
    repo = reopen(storage)
    found = find_damaged_points(repo, NullProgress())
    assert sorted(p.id for p in found) == sorted(ids_by_name(repo)["a"])
    for point in found:
        (loss,) = point.losses
        assert (loss.disk, loss.chunks, loss.ranges) == ("vda", 3, LOST_IN_A)
        assert point.salvageable
    dropped = repair_points(repo, NullProgress())
    assert {p.action for p in dropped} == {"drop"}
    repo = reopen(storage)
    assert list(ids_by_name(repo)) == ["b"]
    assert read_disk(repo, ids_by_name(repo)["b"][0], "vda") == data["b"]
    assert find_damaged_points(repo, NullProgress()) == []


def test_salvage_keeps_the_points_with_zeros_in_the_lost_ranges(
    repo: Repository, storage: MemoryStorage, data: dict[str, bytes]
) -> None:
    before = {p.id: p for p in repo.points()}
    lose_pack_of_a(repo)
    found = repair_points(reopen(storage), NullProgress(), salvage=True)
    assert {p.action for p in found} == {"salvage"}
    repo = reopen(storage)
    expected = bytearray(data["a"])
    for start, end in LOST_IN_A:
        expected[start:end] = bytes(end - start)
    for point in found:
        assert point.new_id is not None
        assert not storage.exists(f"points/{point.id}")
        new = repo.points_get(point.new_id)
        old = before[point.id]
        assert read_disk(repo, new.id, "vda") == expected
        assert new.source["salvaged"] == {"vda": [list(r) for r in LOST_IN_A]}
        assert "checkpoint" not in new.source  # the next backup of the VM is a full one
        assert new.source["uuid"] == "u"
        assert (new.name, new.finished, new.parent) == (old.name, old.finished, old.parent)
        plaintext = json.loads(repo.get_object("points", new.id))
        assert plaintext["format"] == SALVAGED_FORMAT
    assert find_damaged_points(repo, NullProgress()) == []


def test_a_salvaged_point_salvaged_again_keeps_every_range(
    repo: Repository, storage: MemoryStorage, data: dict[str, bytes]
) -> None:
    lose_pack_of_a(repo)
    repair_points(reopen(storage), NullProgress(), salvage=True)
    repo = reopen(storage)
    a1 = ids_by_name(repo)["a"][0]
    last = chunk_at(repo, a1, "vda", 12)
    repo.storage.delete(f"data/{pack_of(repo, last)}")
    (again, _a2) = repair_points(reopen(storage), NullProgress(), salvage=True)
    assert again.new_id is not None
    assert again.losses[0].ranges == ((10 * CHUNK, len(data["a"])),)  # only the new loss
    salvaged = reopen(storage).points_get(again.new_id).source["salvaged"]
    assert salvaged == {"vda": [[*r] for r in (*LOST_IN_A, (10 * CHUNK, len(data["a"])))]}


def test_a_recorded_damaged_chunk_without_a_healthy_copy_is_lost(
    repo: Repository, storage: MemoryStorage
) -> None:
    b1 = ids_by_name(repo)["b"][0]
    chunk = chunk_at(repo, b1, "vda", 1)
    loc = repo.index().get(chunk)
    assert loc is not None
    raw = bytearray(storage.get(f"data/{loc.pack}"))
    raw[loc.offset + 20] ^= 0x01
    storage.put(f"data/{loc.pack}", bytes(raw))
    repo.record_damage(chunk, loc.pack, "flipped by the test")
    (point,) = find_damaged_points(reopen(storage), NullProgress())
    assert point.id == b1
    assert point.losses[0].ranges == ((CHUNK, 2 * CHUNK),)


def test_a_wrong_damage_record_costs_no_data(repo: Repository, storage: MemoryStorage) -> None:
    b1 = ids_by_name(repo)["b"][0]
    chunk = chunk_at(repo, b1, "vda", 1)
    repo.record_damage(chunk, pack_of(repo, chunk), "wrongly recorded")
    repo = reopen(storage)
    assert chunk not in repo.index()  # counted as damaged ...
    assert find_damaged_points(repo, NullProgress()) == []  # ... but it still reads


def test_a_damaged_manifest_or_image_index_is_dropped_even_with_salvage(
    repo: Repository, storage: MemoryStorage
) -> None:
    a1, b1 = ids_by_name(repo)["a"][0], ids_by_name(repo)["b"][0]
    damage_manifest(storage, a1)
    image = repo.points_get(b1).disks[0].image
    storage.delete(f"images/{image}")
    found = {p.id: p for p in repair_points(reopen(storage), NullProgress(), salvage=True)}
    assert set(found) == {a1, b1}
    assert found[a1].manifest is None
    assert found[a1].action == "drop"
    assert found[b1].action == "drop"
    assert found[b1].losses[0].ranges == ((0, 6 * CHUNK),)
    assert list(ids_by_name(reopen(storage))) == ["a"]


def test_repair_points_refuses_when_an_unindexed_pack_holds_the_chunks(
    repo: Repository, storage: MemoryStorage
) -> None:
    for name, _ in list(storage.list("index/")):
        storage.delete(name)
    before = sorted(storage.list(""))
    with pytest.raises(IntegrityError, match="surety repair index"):
        repair_points(reopen(storage), NullProgress())
    assert sorted(storage.list("")) == before


def test_repair_points_dry_run_changes_nothing(repo: Repository, storage: MemoryStorage) -> None:
    lose_pack_of_a(repo)
    before = sorted(storage.list(""))
    found = repair_points(reopen(storage), NullProgress(), salvage=True, dry_run=True)
    assert [p.action for p in found] == ["salvage", "salvage"]
    assert sorted(storage.list("")) == before


# -- repair index -------------------------------------------------------------------------


def damage_pack_header(storage: MemoryStorage, pack: str) -> None:
    raw = bytearray(storage.get(f"data/{pack}"))
    raw[-20] ^= 0x01  # inside the sealed header, before the 12-byte trailer
    storage.put(f"data/{pack}", bytes(raw))


def test_repair_index_rebuilds_a_lost_index_from_the_pack_headers(
    repo: Repository, storage: MemoryStorage, data: dict[str, bytes]
) -> None:
    indexes = sorted(n for n, _ in storage.list("index/"))
    packs = len(list(storage.list("data/")))
    chunks = len(repo.index())
    raw = bytearray(storage.get(indexes[0]))
    raw[40] ^= 0x01
    storage.put(indexes[0], bytes(raw))
    for name in indexes[1:]:
        storage.delete(name)
    report = repair_index(reopen(storage), NullProgress())
    assert (report.packs, report.chunks, report.replaced) == (packs, chunks, 1)
    assert report.damaged_indexes == 1
    assert report.damaged_packs == {}
    assert report.lost == []
    assert [n for n, _ in storage.list("index/")] == [f"index/{report.new_index}"]
    repo = reopen(storage)
    for name, ids in ids_by_name(repo).items():
        for point_id in ids:
            assert read_disk(repo, point_id, "vda") == data[name]
    assert repo.damaged_indexes == {}


def test_repair_index_dry_run_writes_nothing(repo: Repository, storage: MemoryStorage) -> None:
    for name, _ in list(storage.list("index/")):
        storage.delete(name)
    before = sorted(storage.list(""))
    report = repair_index(reopen(storage), NullProgress(), dry_run=True)
    assert report.new_index is None
    assert report.packs > 0
    assert sorted(storage.list("")) == before


def test_repair_index_names_the_points_a_damaged_pack_header_loses(
    repo: Repository, storage: MemoryStorage
) -> None:
    a_points = sorted(ids_by_name(repo)["a"])
    pack = pack_of(repo, chunk_at(repo, a_points[0], "vda", 6))
    damage_pack_header(storage, pack)
    for name, _ in list(storage.list("index/")):
        storage.delete(name)
    report = repair_index(reopen(storage), NullProgress())
    assert list(report.damaged_packs) == [pack]
    assert "authentication failed" in report.damaged_packs[pack]
    assert sorted(p.id for p in report.lost) == a_points
    assert all(p.losses[0].ranges == LOST_IN_A for p in report.lost)
    dropped = repair_points(reopen(storage), NullProgress())
    assert sorted(p.id for p in dropped) == a_points


def test_repair_index_keeps_the_blobs_an_old_index_lists_for_a_damaged_header(
    repo: Repository, storage: MemoryStorage, data: dict[str, bytes]
) -> None:
    a1 = ids_by_name(repo)["a"][0]
    pack = pack_of(repo, chunk_at(repo, a1, "vda", 6))
    damage_pack_header(storage, pack)
    report = repair_index(reopen(storage), NullProgress())
    assert list(report.damaged_packs) == [pack]
    assert report.kept_from_old == {pack: 3}
    assert report.lost == []
    assert read_disk(reopen(storage), a1, "vda") == data["a"]


def test_repair_index_deletes_nothing_once_its_lock_is_lost(
    repo: Repository, storage: MemoryStorage
) -> None:
    old = sorted(n for n, _ in storage.list("index/"))
    with repo.lock(exclusive=True, operation="repair index") as held:
        storage.delete(held.name)  # another host judged it stale and removed it
        with pytest.raises(RepositoryLocked):
            repair_index(repo, NullProgress())
    assert set(old) <= {n for n, _ in storage.list("index/")}


def test_a_salvaged_manifest_decodes_as_a_manifest(repo: Repository) -> None:
    point = repo.points()[0]
    encoded = salvaged_manifest(point, source={"salvaged": {"vda": [[0, 1]]}}).encode()
    assert json.loads(encoded)["format"] == SALVAGED_FORMAT
    decoded = Manifest.decode(encoded, "x" * 64)
    assert decoded.source == {"salvaged": {"vda": [[0, 1]]}}
    assert (decoded.name, decoded.disks) == (point.name, point.disks)
