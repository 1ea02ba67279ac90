"""Where ``restore image`` spends its CPU: seconds per GiB restored, stage by stage.

Usage::

    python bench/restore_profile.py REPOSITORY POINT [--disk NAME] [--out FILE]
                                    [--limit-gib N] [--cold] [--timeline]

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

``--timeline`` instead runs restore's real, threaded data path
(``restore.image._write_chunks``) with every storage read timed, and prints the
wall time of each phase (open, resolve, image, index, data, fsync), how many
reads were in flight for how long (0 in flight: the network idle), how long
the writers waited for a read made ahead (object storage: the CPU waiting on
the network), the process's CPU seconds in the data phase (against its wall:
the CPU idle), and the reads' sizes. Works on any repository, local or ``s3://``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from bench.common import drop_caches

from surety.app.repository import open_repository
from surety.core.progress import NullProgress
from surety.repo import codec
from surety.repo.pack import chunk_kind
from surety.repo.storage.wrapper import StorageWrapper
from surety.restore import image as restore_image
from surety.restore.image import (
    RUN_GAP,
    RUN_GAP_OBJECT,
    _pwrite_all,
    _Run,
    _runs,
    _start_writeback,
    _write_chunks,
    pick_disk,
)

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
    parser.add_argument("--timeline", action="store_true", help="the threaded path, timed")
    args = parser.parse_args()
    # its own index cache and catalog unless the caller names them: the host's stay untouched
    scratch = tempfile.mkdtemp(prefix="surety-profile-")
    os.environ.setdefault("SURETY_CACHE_DIR", f"{scratch}/cache")
    os.environ.setdefault("SURETY_CATALOG", f"{scratch}/catalog.sqlite")
    try:
        return timeline(args) if args.timeline else profile(args)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def profile(args: argparse.Namespace) -> int:
    repo = open_repository(args.repository, os.environ["SURETY_PASSPHRASE"])
    point = repo.resolve(args.point)
    record = point.disk(pick_disk(point, args.disk))
    assert record is not None
    image = repo.get_image(record.image)
    index = repo.index()
    if args.cold:
        drop_caches()
    clock, data_bytes, zero_bytes = Clock(), 0, 0
    fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    try:
        os.ftruncate(fd, image.size)
        gap = RUN_GAP_OBJECT if repo.object_lock is not None else RUN_GAP  # as restore
        for item in _runs(image, index.get, gap):
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


class TimedStorage(StorageWrapper):
    """Records (start, end, bytes) of every ``get``."""

    def __init__(self, inner) -> None:  # type: ignore[no-untyped-def]
        super().__init__(inner)
        self.gets: list[tuple[float, float, int]] = []

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        start = time.perf_counter()
        data = self.inner.get(name, offset, length)
        self.gets.append((start, time.perf_counter(), len(data)))
        return data


def in_flight(gets: list[tuple[float, float, int]], start: float, end: float) -> dict[int, float]:
    """Seconds of [start, end) during which N reads were in flight, per N."""
    events = sorted([(s, 1) for s, _, _ in gets] + [(e, -1) for _, e, _ in gets])
    spent: dict[int, float] = defaultdict(float)
    level, last = 0, start
    for when, step in events:
        moment = min(max(when, start), end)
        spent[level] += moment - last
        level, last = level + step, moment
    spent[level] += end - last
    return spent


class WaitedReads:
    """Wraps ``restore.image.iter_run``: the seconds writers waited for a read made ahead."""

    def __init__(self) -> None:
        self.waited = 0.0
        self.original = restore_image.iter_run

    def __call__(self, repo, chunks, fetch=None):  # type: ignore[no-untyped-def]
        if fetch is None:
            return self.original(repo, chunks, fetch)

        def timed_fetch() -> bytes:
            start = time.perf_counter()
            try:
                return fetch()
            finally:
                self.waited += time.perf_counter() - start  # += of floats: the GIL holds it

        return self.original(repo, chunks, timed_fetch)


def timeline(args: argparse.Namespace) -> int:
    marks = [("start", time.perf_counter(), time.process_time())]
    waits = WaitedReads()
    restore_image.iter_run = waits

    def mark(name: str) -> None:
        marks.append((name, time.perf_counter(), time.process_time()))

    repo = open_repository(args.repository, os.environ["SURETY_PASSPHRASE"])
    timed = TimedStorage(repo.storage)
    repo.storage = timed
    mark("open")
    point = repo.resolve(args.point)
    mark("resolve")
    record = point.disk(pick_disk(point, args.disk))
    assert record is not None
    image = repo.get_image(record.image)
    mark("image")
    repo.index()
    mark("index")
    setup = len(timed.gets)
    fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.ftruncate(fd, image.size)
        data_start = time.perf_counter()
        written = _write_chunks(
            repo, image=image, fd=fd, is_block=False, threads=None, progress=NullProgress()
        )
        data_end = time.perf_counter()
        mark("data")
        os.fsync(fd)
        mark("fsync")
    finally:
        os.close(fd)
        args.out.unlink(missing_ok=True)
    print(f"{'phase':<10}{'wall s':>8}{'CPU s':>8}")
    for (_, wall0, cpu0), (name, wall, cpu) in itertools.pairwise(marks):
        print(f"{name:<10}{wall - wall0:>8.3f}{cpu - cpu0:>8.3f}")
    data = timed.gets[setup:]
    sizes = sorted(n for _, _, n in data)
    wall = data_end - data_start
    print(
        f"data phase: {written / GIB:.2f} GiB written, {len(data)} reads of "
        f"{sum(sizes) / (1 << 20):.1f} MiB (median {sizes[len(sizes) // 2] / (1 << 20):.2f} MiB, "
        f"max {sizes[-1] / (1 << 20):.2f} MiB), reads before it: {setup}"
    )
    busy = sum(e - s for s, e, _ in data)
    print(f"reads' own wall, summed: {busy:.2f} s over {wall:.2f} s ({busy / wall:.2f} in flight)")
    for level, seconds in sorted(in_flight(data, data_start, data_end).items()):
        print(f"  {level:>2} in flight: {seconds:6.2f} s ({seconds / wall:5.1%})")
    if waits.waited or "s3://" in args.repository:
        print(f"writers waited for reads made ahead: {waits.waited:.2f} s (summed over writers)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
