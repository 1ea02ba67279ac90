"""``RateLimitedStorage`` (the ``--limit-upload`` token bucket) and ``parse_rate``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from surety.backup.image import ImageBackupOptions, backup_image
from surety.core.errors import UsageError
from surety.core.progress import NullProgress
from surety.repo.copy import copy_points
from surety.repo.repository import Repository
from surety.repo.storage import MemoryStorage
from surety.repo.storage.ratelimit import RateLimitedStorage, parse_rate
from tests.unit.conftest import CHEAP_KDF, PASSPHRASE


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_writes_average_the_rate_whatever_their_size() -> None:
    clock = FakeClock()
    memory = MemoryStorage()
    limited = RateLimitedStorage(memory, rate=1000, clock=clock, sleep=clock.sleep)
    for number in range(5):
        limited.put(f"data/{number:02d}", bytes(3000))  # each one larger than the burst
    # 15000 bytes at 1000 B/s with a 1000-byte burst: the last write starts after 11 s
    assert clock.now == pytest.approx(11.0)
    assert len(list(memory.list("data/"))) == 5


def test_reads_and_small_writes_within_the_burst_do_not_wait() -> None:
    clock = FakeClock()
    memory = MemoryStorage()
    limited = RateLimitedStorage(memory, rate=1000, burst=5000, clock=clock, sleep=clock.sleep)
    limited.put("locks/a", bytes(2000))
    limited.create("config", bytes(2000))
    for _ in range(10):
        assert limited.get("locks/a") == bytes(2000)
    assert clock.slept == []


def test_idle_time_refills_the_bucket_up_to_the_burst() -> None:
    clock = FakeClock()
    limited = RateLimitedStorage(MemoryStorage(), rate=100, clock=clock, sleep=clock.sleep)
    limited.put("data/a", bytes(300))
    clock.now += 1000  # a long pause earns no more than one burst
    limited.put("data/b", bytes(100))
    assert clock.slept == []  # the refilled burst paid for b
    limited.put("data/c", bytes(100))  # goes, in debt: the next write pays it
    limited.put("data/d", bytes(100))
    assert clock.slept == [pytest.approx(1.0)]


@pytest.mark.parametrize(
    ("text", "rate"),
    [("20M", 20 << 20), ("20M/s", 20 << 20), ("512KiB/s", 512 << 10), ("1000", 1000)],
)
def test_rates(text: str, rate: int) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["fast", "0", "-1M", "20M/h"])
def test_bad_rates_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError):
        parse_rate(text)


def test_a_copy_through_the_limit_takes_as_long_as_its_bytes_need(tmp_path: Path) -> None:
    clock = FakeClock()
    source = Repository.init(MemoryStorage(), PASSPHRASE, chunk_size=65536, kdf=CHEAP_KDF)
    memory = MemoryStorage()
    Repository.init(memory, PASSPHRASE, chunk_size=65536, kdf=CHEAP_KDF)
    image = tmp_path / "disk.img"
    image.write_bytes(os.urandom(1 << 20))
    backup_image(source, ImageBackupOptions(image, "web01"), NullProgress())
    rate = 256 << 10
    limited = RateLimitedStorage(memory, rate=rate, clock=clock, sleep=clock.sleep)
    target = Repository.open(limited, PASSPHRASE)
    report = copy_points(source, target, source.points(), checkpoint_bytes=256 << 10)
    written = sum(size for _, size in memory.list(""))
    assert report.bytes > 1 << 20
    # every byte but the first burst and the last write's debt waited for its turn
    assert clock.now >= (report.bytes - rate - (300 << 10)) / rate
    assert clock.now <= written / rate
