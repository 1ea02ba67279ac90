"""bench/backup_profile.py's one-thread profile over a real (small) image and repository."""

from __future__ import annotations

import os
from pathlib import Path

from bench import backup_profile as bench

from surety.repo.crypto import KdfParams

CHEAP = KdfParams(time_cost=1, memory_kib=8 * 1024, parallelism=1)


def test_every_stage_is_timed_and_the_packs_hold_each_distinct_chunk(tmp_path: Path) -> None:
    chunk = 256 * 1024
    random = os.urandom(3 * chunk)
    image = tmp_path / "disk.img"
    # 3 random chunks, the first again (deduplicated), 2 zero chunks (never hashed)
    image.write_bytes(random + random[:chunk] + bytes(2 * chunk))
    clock = bench.Clock()
    done, cpu, wall = bench.profile(image, tmp_path / "repo", 0, clock, CHEAP)
    assert done == 6 * chunk
    assert set(clock.cpu) == set(bench.STAGES)
    assert 0 < sum(clock.cpu.values()) <= cpu
    assert wall > 0
    packs = list((tmp_path / "repo" / "data").rglob("*"))
    stored = [p for p in packs if p.is_file()]
    assert len(stored) == 1  # one pack, under the pack size
    assert stored[0].stat().st_size > 3 * chunk  # three sealed chunks and a header

    limited, _cpu, _wall = bench.profile(image, tmp_path / "again", chunk, bench.Clock(), CHEAP)
    assert limited == chunk  # --limit-gib stops after the first chunk past it
