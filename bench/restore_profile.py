"""Where ``restore image`` spends its CPU: seconds per GiB restored, stage by stage.

Usage::

    python bench/restore_profile.py REPOSITORY POINT [--disk NAME] [--out FILE]
                                    [--limit-gib N] [--cold]

Runs restore's data path on ONE thread (no pool, so every CPU second is
attributed), over the same runs ``restore.image`` fetches, and times each stage
with the thread's CPU clock (user + system, so syscalls count) and the wall
clock: the read of a run's span from storage, per chunk the authenticated
decryption, decompression (zstd or the raw copy), the keyed BLAKE3 check and
the ``pwrite`` into ``--out`` (a sparse scratch file, removed at the end), and
the final ``fsync``; ``PROFILE_COPIES=1`` profiles the bytes path restore
used before (``unseal``/``decode``, copies per chunk). The passphrase comes
from ``SURETY_PASSPHRASE``. CPU time
is what the shared machine cannot distort much; the wall column shows waits
(disk, network, other processes). ``--cold`` drops the page cache first (root).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

from surety.app.repository import open_repository
from surety.repo import codec
from surety.repo.pack import chunk_kind
from surety.restore.image import _pwrite_all, _Run, _runs, _start_writeback, pick_disk

GIB = 1 << 30
STAGES = ("read", "decrypt", "decompress", "hash", "write", "writeback", "fsync")
COPIES = os.environ.get("PROFILE_COPIES") == "1"  # the bytes path restore took before


class Clock:
    """CPU and wall seconds per stage of this thread."""

    def __init__(self) -> None:
        self.cpu: dict[str, float] = defaultdict(float)
        self.wall: dict[str, float] = defaultdict(float)

    def time(self, stage: str, call, *args):  # type: ignore[no-untyped-def]
        cpu, wall = time.thread_time(), time.perf_counter()
        value = call(*args)
        self.cpu[stage] += time.thread_time() - cpu
        self.wall[stage] += time.perf_counter() - wall
        return value


def _unseal_copying(repo):  # type: ignore[no-untyped-def]
    """The unseal restore used before: ``AESGCM.decrypt`` of copied slices."""
    aead = repo.keys._aead

    def unseal(kind: bytes, sealed: bytes, what: str) -> bytes:
        return aead.decrypt(bytes(sealed[1:13]), bytes(sealed[13:]), kind)

    return unseal


def restore_run(repo, clock: Clock, run: _Run, fd: int) -> int:  # type: ignore[no-untyped-def]
    locations = [loc for _, loc in run.chunks]
    first = min(locations, key=lambda loc: loc.offset)
    end = max(loc.offset + loc.length for loc in locations)
    name = f"data/{first.pack}"
    unseal = _unseal_copying(repo) if COPIES else repo.keys.unseal_view
    decode = codec.decode if COPIES else codec.decode_view
    blob = memoryview(clock.time("read", repo.storage.get, name, first.offset, end - first.offset))
    written = 0
    for (chunk_id, loc), offset in zip(run.chunks, run.offsets, strict=True):
        start = loc.offset - first.offset
        sealed = blob[start : start + loc.length]
        if COPIES:
            sealed = bytes(sealed)
        payload = clock.time("decrypt", unseal, chunk_kind(chunk_id), sealed, "chunk")
        data = clock.time("decompress", decode, payload, loc.raw_length, "chunk")
        if clock.time("hash", repo.keys.chunk_id, data) != chunk_id:
            raise SystemExit(f"chunk {chunk_id.hex()[:12]}: hash mismatch")
        clock.time("write", _pwrite_all, fd, data, offset)
        written += len(data)
    if not COPIES:
        clock.time("writeback", _start_writeback, fd, min(run.offsets), max(run.offsets) + 1)
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("repository")
    parser.add_argument("point")
    parser.add_argument("--disk")
    parser.add_argument("--out", type=Path, default=Path("restore-profile.img"))
    parser.add_argument("--limit-gib", type=float, default=0.0, help="stop after this much data")
    parser.add_argument("--cold", action="store_true", help="drop the page cache first (root)")
    args = parser.parse_args()
    repo = open_repository(args.repository, os.environ["SURETY_PASSPHRASE"])
    point = repo.resolve(args.point)
    record = point.disk(pick_disk(point, args.disk))
    assert record is not None
    image = repo.get_image(record.image)
    index = repo.index()
    if args.cold:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    clock, data_bytes, zero_bytes = Clock(), 0, 0
    fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    try:
        os.ftruncate(fd, image.size)
        for item in _runs(image, index.get):
            if isinstance(item, int):
                zero_bytes += image.chunk_length(item)
                continue
            data_bytes += restore_run(repo, clock, item, fd)
            if args.limit_gib and data_bytes >= args.limit_gib * GIB:
                break
        clock.time("fsync", os.fsync, fd)
    finally:
        os.close(fd)
        args.out.unlink(missing_ok=True)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    report(clock, data_bytes, zero_bytes, cpu, wall)
    return 0


def report(clock: Clock, data_bytes: int, zero_bytes: int, cpu: float, wall: float) -> None:
    total = data_bytes + zero_bytes
    gib = total / GIB
    print(
        f"restored {total / GIB:.2f} GiB ({data_bytes / GIB:.2f} GiB stored chunks, "
        f"{zero_bytes / GIB:.2f} GiB zero chunks skipped); one thread"
    )
    print(f"{'stage':<12}{'CPU s/GiB':>10}{'wall s/GiB':>11}{'CPU share':>10}")
    staged = sum(clock.cpu.values())
    for stage in STAGES:
        print(
            f"{stage:<12}{clock.cpu[stage] / gib:>10.3f}{clock.wall[stage] / gib:>11.3f}"
            f"{clock.cpu[stage] / cpu:>10.1%}"
        )
    other = cpu - staged
    print(f"{'other':<12}{other / gib:>10.3f}{'':>11}{other / cpu:>10.1%}")
    print(f"{'total':<12}{cpu / gib:>10.3f}{wall / gib:>11.3f}")


if __name__ == "__main__":
    sys.exit(main())
