"""Where a full ``backup image`` spends its CPU, stage by stage, against ``zstd -1 -T2``.

Usage (from the repository root)::

    PYTHONPATH=. .venv/bin/python bench/backup_profile.py IMAGE [--workdir DIR]
                                   [--limit-gib N] [--cold]

Three measurements of the same image, in one run:

1. backup's data path on ONE thread (no pool, so every CPU second is
   attributed) into a fresh repository in ``--workdir``, each stage timed with
   the thread's CPU clock (user + system: syscalls count) and the wall clock:
   the ``pread`` of a chunk, the zero test, the keyed BLAKE3 chunk id, the dedup
   lookup, zstd compression, AES-GCM sealing, the pack's build (its sealed
   header) and the pack's store (write + fsync);
2. the real ``surety backup image`` (threads, as users run it): wall and CPU
   seconds from ``wait4``;
3. ``zstd -1 -T2 -c IMAGE >/dev/null`` likewise (the issue's yardstick).

It prints CPU seconds per GiB per stage, then both processes' wall and CPU per
GiB and their ratio: on 2 cores a process cannot take less wall time than its
CPU time / 2, so the CPU table says how far a goal is from what the stages
cost. ``--cold`` drops the page cache before each measurement (root).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.common import drop_caches
from bench.restore_profile import Clock

from surety.app.repository import create_repository
from surety.repo import codec
from surety.repo.crypto import KdfParams
from surety.repo.format import ZERO_ID
from surety.repo.pack import PackBuilder, chunk_kind

GIB = 1 << 30
STAGES = ("read", "zero test", "hash", "dedup", "compress", "seal", "pack build", "pack store")
PASSWORD = "bench-passphrase"


def profile(
    image: Path, repo_dir: Path, limit: int, clock: Clock, kdf: KdfParams | None = None
) -> tuple[int, float, float]:
    """Back up ``image``'s data path on this thread; (bytes read, CPU s, wall s)."""
    repo = create_repository(str(repo_dir), PASSWORD, kdf=kdf)
    size, chunk = image.stat().st_size, repo.config.chunk_size
    zero, level, keys = bytes(chunk), repo.config.compression_level, repo.keys
    index, seen = repo.index(), set[bytes]()
    pack = PackBuilder()
    fd = os.open(image, os.O_RDONLY)
    cpu0, wall0, done = time.process_time(), time.perf_counter(), 0
    try:
        for offset in range(0, size, chunk):
            data = clock.time("read", os.pread, fd, min(chunk, size - offset), offset)
            done += len(data)
            if clock.time("zero test", zero[: len(data)].__eq__, data):
                continue
            chunk_id = clock.time("hash", keys.chunk_id, data)
            if clock.time("dedup", _known, chunk_id, index, seen):
                continue
            seen.add(chunk_id)
            packed = clock.time("compress", codec.encode, data, level)
            sealed = clock.time("seal", keys.seal, chunk_kind(chunk_id), packed)
            pack.add(chunk_id, sealed, len(data))
            if len(pack) >= repo.config.pack_size:
                _store(repo, pack, clock)
                pack = PackBuilder()
            if limit and done >= limit:
                break
        if pack.entries:
            _store(repo, pack, clock)
    finally:
        os.close(fd)
    return done, time.process_time() - cpu0, time.perf_counter() - wall0


def _known(chunk_id: bytes, index: object, seen: set[bytes]) -> bool:
    return chunk_id == ZERO_ID or chunk_id in seen or chunk_id in index  # type: ignore[operator]


def _store(repo, pack: PackBuilder, clock: Clock) -> None:  # type: ignore[no-untyped-def]
    pack_id, data, _entries = clock.time("pack build", pack.finish, repo.keys)
    clock.time("pack store", repo.storage.put, f"data/{pack_id}", data)


def measured(
    argv: list[str], env: dict[str, str], stdout: int | None = None
) -> tuple[float, float]:
    """(wall s, CPU s) of a child process, from wait4."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=stdout or subprocess.DEVNULL)
    _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(argv)} failed")
    return wall, usage.ru_utime + usage.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("image", type=Path)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/surety-backup-profile"))
    parser.add_argument("--limit-gib", type=float, default=0.0, help="profile this much only")
    parser.add_argument("--cold", action="store_true", help="drop the page cache first (root)")
    args = parser.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    # the in-process profile's index cache and catalog too: a bench leaves the host's alone
    os.environ["SURETY_CACHE_DIR"] = str(args.workdir / "surety-cache")
    os.environ["SURETY_CATALOG"] = str(args.workdir / "surety-catalog.sqlite")
    try:
        return run(args)
    finally:
        shutil.rmtree(args.workdir, ignore_errors=True)


def run(args: argparse.Namespace) -> int:
    clock = Clock()
    if args.cold:
        drop_caches()
    done, cpu, wall = profile(
        args.image, args.workdir / "profile-repo", int(args.limit_gib * GIB), clock
    )
    gib = done / GIB
    print(f"one thread over {gib:.2f} GiB of {args.image.name} (chunk data path, no pool)")
    print(f"{'stage':<12}{'CPU s/GiB':>10}{'wall s/GiB':>11}{'CPU share':>10}")
    for stage in STAGES:
        share = clock.cpu[stage] / cpu if cpu else 0.0
        print(
            f"{stage:<12}{clock.cpu[stage] / gib:>10.3f}{clock.wall[stage] / gib:>11.3f}"
            f"{share:>10.1%}"
        )
    other = cpu - sum(clock.cpu.values())
    print(f"{'other':<12}{other / gib:>10.3f}{'':>11}{other / cpu:>10.1%}")
    print(f"{'total':<12}{cpu / gib:>10.3f}{wall / gib:>11.3f}")

    size_gib = args.image.stat().st_size / GIB
    env = {
        **os.environ,
        "SURETY_REPOSITORY": str(args.workdir / "repo"),
        "SURETY_PASSPHRASE": PASSWORD,
        "SURETY_CACHE_DIR": str(args.workdir / "surety-cache"),
        "SURETY_CATALOG": str(args.workdir / "surety-catalog.sqlite"),
    }
    surety = [sys.executable, "-m", "surety"]
    subprocess.run([*surety, "init"], env=env, check=True, capture_output=True)
    if args.cold:
        drop_caches()
    s_wall, s_cpu = measured(
        [*surety, "backup", "image", str(args.image), "--name", "p", "--disk", "d"], env
    )
    if args.cold:
        drop_caches()
    with open(os.devnull, "wb") as sink:
        z_wall, z_cpu = measured(
            ["zstd", "-1", "-T2", "-q", "-c", str(args.image)], dict(os.environ), sink.fileno()
        )
    print(
        f"\nwhole image, {size_gib:.2f} GiB ({os.cpu_count()} cores), page cache "
        f"{'dropped' if args.cold else 'warm'}:"
    )
    print(f"{'':<22}{'wall s':>8}{'CPU s':>8}{'CPU s/GiB':>10}{'floor s':>9}")
    for name, w, c in (("surety backup image", s_wall, s_cpu), ("zstd -1 -T2", z_wall, z_cpu)):
        floor = c / (os.cpu_count() or 1)
        print(f"{name:<22}{w:>8.2f}{c:>8.2f}{c / size_gib:>10.3f}{floor:>9.2f}")
    print(f"surety / zstd: wall {s_wall / z_wall:.2f}x, CPU {s_cpu / z_cpu:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
