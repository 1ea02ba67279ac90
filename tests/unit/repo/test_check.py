"""check_repository: each pack read once, subsets that partition the packs, damage found."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from surety.core.errors import UsageError
from surety.core.progress import NullProgress
from surety.core.units import MiB
from surety.repo.check import CheckReport, DataSubset, check_repository
from surety.repo.format import CHUNK_SIZE_MIN
from surety.repo.image import ImageIndex
from surety.repo.manifest import DiskRecord
from surety.repo.repository import Repository
from surety.repo.storage import MemoryStorage
from surety.repo.writer import ChunkWriter, prepare_chunk
from surety.testing.counting import CountingStorage
from tests.unit.conftest import CHEAP_KDF, PASSPHRASE, make_manifest

CHUNK = CHUNK_SIZE_MIN
START = datetime(2024, 5, 17, 12, 0).astimezone()


def back_up(
    repo: Repository, disks: dict[str, bytes], name: str, number: int, **extra: object
) -> str:
    """Store ``disks`` as one restore point (dedup against the repository); its id."""
    writer, zero, records = ChunkWriter(repo), bytes(CHUNK), []
    for disk, data in disks.items():
        ids = []
        for offset in range(0, len(data), CHUNK):
            chunk = prepare_chunk(repo.keys, data[offset : offset + CHUNK], zero, writer, 1)
            writer.add(chunk)
            ids.append(chunk.chunk_id)
        image = ImageIndex(CHUNK, len(data), tuple(ids))
        records.append(DiskRecord(disk, len(data), repo.put_image(image)))
    writer.finish()
    when = START + timedelta(hours=number)
    return repo.commit(make_manifest(name, finished=when, disks=tuple(records), **extra))


@pytest.fixture
def counting() -> CountingStorage:
    return CountingStorage(MemoryStorage())


@pytest.fixture
def shared(counting: CountingStorage) -> Repository:
    """Twelve restore points of two VMs sharing most chunks; packs of ~3 chunks."""
    repo = Repository.init(counting, PASSPHRASE, chunk_size=CHUNK, kdf=CHEAP_KDF)
    repo.config = replace(repo.config, pack_size=3 * CHUNK)
    rng = random.Random(7)
    base = [rng.randbytes(CHUNK) for _ in range(24)]
    system = b"".join(base[:12]) + bytes(CHUNK) + rng.randbytes(CHUNK // 3)
    for number in range(6):  # same system disk each time, data disk changes a little
        base[12 + number] = rng.randbytes(CHUNK)
        data = b"".join(base[12:])
        back_up(repo, {"vda": system, "vdb": data}, "web01", number)
        back_up(repo, {"vda": system + data[:CHUNK]}, "db01", number)
    counting.reset()
    return repo


def packs_of(repo: Repository) -> set[str]:
    return set(repo.index().packs())


def check(repo: Repository, subset: DataSubset | None = None, seed: int = 1) -> CheckReport:
    return check_repository(repo, subset is None, NullProgress(), subset, random.Random(seed))


# -- every stored chunk once -----------------------------------------------------------


def test_read_data_reads_each_pack_once_however_many_points_share_it(
    shared: Repository, counting: CountingStorage
) -> None:
    report = check(shared)
    assert report.ok, report.errors
    assert report.points == 12
    packs = packs_of(shared)
    assert len(packs) > 5
    assert counting.reads("data/") == {f"data/{p}": 1 for p in packs}
    assert not counting.ranged  # whole packs, not chunk by chunk
    assert (report.packs_read, report.chunks_read) == (len(packs), len(shared.index()))
    assert report.bytes_read == sum(size for _, size in counting.list("data/"))
    assert report.subset == "all packs"


def test_shared_image_indexes_are_read_once(shared: Repository, counting: CountingStorage) -> None:
    check_repository(shared, False, NullProgress())
    assert set(counting.reads("images/").values()) == {1}  # the system disk's: 6 points


def test_structure_check_reads_no_data(shared: Repository, counting: CountingStorage) -> None:
    report = check_repository(shared, False, NullProgress())
    assert report.ok
    assert not counting.reads("data/")
    assert (report.subset, report.packs_read, report.bytes_read) == (None, 0, 0)


# -- n/m: parts that partition the packs ---------------------------------------------------


@pytest.mark.parametrize("parts", [1, 2, 3, 7])
def test_parts_together_read_every_pack_exactly_once(
    shared: Repository, counting: CountingStorage, parts: int
) -> None:
    seen: list[set[str]] = []
    chunks = 0
    for part in range(1, parts + 1):
        counting.reset()
        report = check(shared, DataSubset(part, parts))
        assert report.ok
        assert report.packs_read == len(counting.reads("data/"))
        assert set(counting.reads("data/").values()) <= {1}
        seen.append({name[5:] for name in counting.reads("data/")})
        chunks += report.chunks_read
    assert set().union(*seen) == packs_of(shared)
    assert sum(map(len, seen)) == len(packs_of(shared))  # disjoint
    assert chunks == len(shared.index())


def test_a_part_is_fixed_by_pack_id_not_by_chance_or_company() -> None:
    sizes = {f"{i:064x}"[::-1]: 100 for i in range(200)}
    part = DataSubset(2, 5)
    chosen = part.choose(sizes, random.Random(1))
    assert chosen == part.choose(sizes, random.Random(2))
    more = sizes | {f"{i:064x}": 100 for i in range(1000, 1100)}
    assert set(chosen) <= set(part.choose(more, random.Random(3)))
    assert 20 < len(chosen) < 60  # about a fifth


def test_damaged_chunk_is_found_by_its_part_only_and_by_the_full_check(
    shared: Repository, counting: CountingStorage
) -> None:
    pack_id, entries = sorted(shared.index().packs().items())[0]
    _chunk_id, loc = entries[-1]
    name = f"data/{pack_id}"
    damaged = bytearray(counting.get(name))
    damaged[loc.offset + loc.length // 2] ^= 0x01
    counting.put(name, bytes(damaged))
    assert check_repository(shared, False, NullProgress()).ok  # structure is intact
    parts = 4
    found = []
    for part in range(1, parts + 1):
        report = check(shared, DataSubset(part, parts))
        if any("authentication failed" in e and "recorded" not in e for e in report.errors):
            found.append(part)
            assert all(pack_id[:12] in error for error in report.errors[:-1])
            assert "affect restore point(s)" in report.errors[-1]
        elif found:  # later parts: the damage the first one recorded, named
            assert any("recorded as damaged" in e for e in report.errors)
        else:
            assert report.ok
    assert found == [int(pack_id[:16], 16) % parts + 1]
    full = check(shared)
    assert any("authentication failed" in e for e in full.errors)
    assert all(pack_id[:12] in error for error in full.errors[:-1])


# -- x% and SIZE: random packs ------------------------------------------------------------


def test_percent_reads_a_random_share_of_packs(
    shared: Repository, counting: CountingStorage
) -> None:
    packs = len(packs_of(shared))
    half = check(shared, DataSubset(percent=50), seed=1)
    assert half.ok
    assert half.packs_read == -(-packs // 2)
    first = set(counting.reads("data/"))
    counting.reset()
    check(shared, DataSubset(percent=50), seed=2)
    assert set(counting.reads("data/")) != first  # another draw, other packs
    assert check(shared, DataSubset(percent=100)).packs_read == packs
    assert check(shared, DataSubset(percent=0.001)).packs_read == 1  # never nothing
    assert half.subset == "a random 50% of packs"


def test_size_budget_reads_random_packs_up_to_it(shared: Repository) -> None:
    budget = 5 * CHUNK
    report = check(shared, DataSubset(max_bytes=budget))
    assert report.ok
    assert 0 < report.bytes_read <= budget
    assert report.subset == "random packs up to 320.0 KiB"
    everything = check(shared, DataSubset(max_bytes=1 << 40))
    assert everything.packs_read == len(packs_of(shared))


# -- parsing --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "subset", "described"),
    [
        ("2/5", DataSubset(2, 5), "part 2 of 5"),
        (" 5 / 5 ", DataSubset(5, 5), "part 5 of 5"),
        ("1/1", DataSubset(1, 1), "all packs"),
        ("10%", DataSubset(percent=10), "a random 10% of packs"),
        ("2.5%", DataSubset(percent=2.5), "a random 2.5% of packs"),
        ("100%", DataSubset(percent=100), "a random 100% of packs"),
        ("500M", DataSubset(max_bytes=500 * MiB), "random packs up to 500.0 MiB"),
        ("1GiB", DataSubset(max_bytes=1 << 30), "random packs up to 1.0 GiB"),
    ],
)
def test_parse_valid_subsets(text: str, subset: DataSubset, described: str) -> None:
    assert DataSubset.parse(text) == subset
    assert subset.describe() == described


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0/5", "between 1 and 5"),
        ("6/5", "between 1 and 5"),
        ("1/0", "at least 1"),
        ("0%", "above 0"),
        ("150%", "at most 100"),
        ("0M", "above 0"),
        ("500", "not a subset"),  # a size needs its unit: 500 bytes is no one's intent
        ("garbage", "not a subset"),
        ("", "not a subset"),
        ("-1/5", "not a subset"),
        ("1/2/3", "not a subset"),
        ("ten%", "not a subset"),
    ],
)
def test_parse_rejects_bad_subsets(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        DataSubset.parse(text)
