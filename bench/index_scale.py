"""Measure the chunk index at scale: the cache's build and lookups, check, prune, backup.

Usage::

    python bench/index_scale.py WORKDIR [--entries 40000000] [--per-object 32768]
                                        [--lookups 100000] [--memory-baseline]
                                        [--image IMG] [--json FILE]

Writes a synthetic repository under WORKDIR/repo (kept when it already holds the
requested entries): ``--entries`` index entries (chunk ids are SHA-256 of their
number, 64 KiB-ish sealed lengths, 512 chunks a pack) in index objects of
``--per-object`` entries each, sealed and stored by the repository's own writer of
index objects (``Repository.put_object("index", ...)``, as ``write_index`` does;
no pack data is written: this measures the index). Packs exist as sparse files of
their indexed length (so ``check``'s structure pass finds them whole), and restore
points of 100 GiB images (409 600 chunk ids each) name the first 90 % of the
chunks (so prune finds the rest unused). Then, each in a fresh process with the
cache in WORKDIR/cache, the peak anonymous memory of the process tree polled from
``/proc/PID/status`` (``RssAnon``: resident pages less file-backed and shared
memory pages) every 50 ms:

1. cache build: open the repository and load its index (every index object read,
   unsealed, decoded, spilled, sorted, written and authenticated);
2. lookups: open it again (the cache is current: one listing, nothing read) and
   do ``--lookups`` lookups (``in`` and ``get``; 90 % present, 10 % absent);
   anonymous RSS (``RssAnon`` of /proc/self/status: RSS less file-backed pages)
   after them, the lookup rate, and the time to open;
3. merge: add one more index object of ``--per-object`` entries, open again:
   the time to merge it into the table;
4. check: ``surety check`` without ``--read-data`` (every index object read into a
   fresh table, every image index, the used set and the per-pack pass on disk);
5. prune: ``surety prune --dry-run`` (the used set, the per-pack plan);
6. with ``--image``: ``surety backup image IMG`` into the synthetic repository, and
   the same backup into an empty repository (WORKDIR/empty): time and throughput
   (what the backup added to the synthetic repository is deleted afterwards);
7. with ``--memory-baseline``: the same lookups with ``SURETY_NO_CACHE=1`` (every
   chunk in Python dicts, the pre-cache index) and its anonymous RSS.

Prints one line per figure and, with ``--json``, writes them to FILE.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from surety.backup.image import ImageBackupOptions, backup_image
from surety.core.progress import NullProgress
from surety.repo.check import check_repository
from surety.repo.crypto import KdfParams
from surety.repo.image import ImageIndex
from surety.repo.index import encode_index
from surety.repo.manifest import DiskRecord, Manifest
from surety.repo.pack import PackEntry
from surety.repo.prune import prune_repository
from surety.repo.repository import Repository
from surety.repo.storage.local import LocalStorage

PASSPHRASE = "bench"
CHEAP_KDF = KdfParams(time_cost=1, memory_kib=8 * 1024, parallelism=1)
PER_PACK = 512
IMAGE_CHUNKS = 409_600  # 100 GiB at 256 KiB
CHUNK = 262_144
USED_SHARE = 0.9


def chunk_id(n: int) -> bytes:
    return hashlib.sha256(n.to_bytes(8, "little")).digest()


def generate(root: Path, entries: int, per_object: int) -> None:
    marker = root / "bench-entries"
    if marker.exists() and marker.read_text() == str(entries):
        return
    shutil.rmtree(root, ignore_errors=True)
    repo = Repository.init(LocalStorage(root), PASSPHRASE, kdf=CHEAP_KDF)
    start = time.monotonic()
    for first in range(0, entries, per_object):
        _put(repo, first, min(entries, first + per_object))
    marker.write_text(str(entries))
    print(f"generated {entries} entries in {time.monotonic() - start:.1f} s", flush=True)


def generate_points(root: Path, entries: int, per_object: int) -> None:
    """Sparse pack files of their indexed length (also of the packs the merge step
    indexes); restore points naming 90 % of the chunks."""
    marker = root / "bench-points"
    if marker.exists() and marker.read_text() == f"{entries}+{per_object} v2":
        return
    start = time.monotonic()
    storage = LocalStorage(root)
    ranges = [(0, entries), (entries, entries + per_object)]  # generated, then merged
    for pack_first, stop in (
        (f, min(end, f + PER_PACK)) for s, end in ranges for f in range(s, end, PER_PACK)
    ):
        size = sum(40000 + n % 30000 for n in range(pack_first, stop))
        pack_id = hashlib.sha256(b"pack" + pack_first.to_bytes(8, "little")).hexdigest()
        path = storage._path(f"data/{pack_id}")  # a sparse stand-in for the pack
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            f.truncate(size)
    repo = Repository.open(storage, PASSPHRASE)
    used = int(entries * USED_SHARE)
    now = datetime.now(UTC)
    for name, _ in list(storage.list("points/")):  # of an earlier run
        storage.delete(name)
    for first in range(0, used, IMAGE_CHUNKS):
        ids = tuple(chunk_id(n) for n in range(first, min(used, first + IMAGE_CHUNKS)))
        image_id = repo.put_image(ImageIndex(CHUNK, len(ids) * CHUNK, ids))
        disk = DiskRecord("d", len(ids) * CHUNK, image_id)
        repo.commit(Manifest(f"vm{first // IMAGE_CHUNKS}", "image", now, now, "bench", (disk,)))
    marker.write_text(f"{entries}+{per_object} v2")
    print(f"generated packs and points in {time.monotonic() - start:.1f} s", flush=True)


def _put(repo: Repository, first: int, stop: int) -> str:
    packs = []
    for pack_first in range(first, stop, PER_PACK):
        pack_id = hashlib.sha256(b"pack" + pack_first.to_bytes(8, "little")).hexdigest()
        entries = []
        offset = 0
        for n in range(pack_first, min(stop, pack_first + PER_PACK)):
            length = 40000 + n % 30000
            entries.append(PackEntry(chunk_id(n), offset, length, 262144))
            offset += length
        packs.append((pack_id, entries))
    return repo.put_object("index", encode_index(packs))


def _rss_anon_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    raise RuntimeError("no RssAnon in /proc/self/status")


def child(mode: str, root: Path, entries: int, per_object: int, lookups: int) -> None:
    """One measurement in this (fresh) process; prints a JSON line."""
    result: dict[str, float] = {"rss_anon_start_mib": _rss_anon_kib() / 1024}
    start = time.monotonic()
    repo = Repository.open(LocalStorage(root), PASSPHRASE)
    if mode == "merge":
        _put(repo, entries, entries + per_object)
    index = repo.index()
    result["open_s"] = time.monotonic() - start
    if mode in ("lookups", "baseline"):
        rng = random.Random(1)
        probes = [
            chunk_id(rng.randrange(entries)) if rng.random() < 0.9 else rng.randbytes(32)
            for _ in range(lookups)
        ]
        start = time.monotonic()
        found = sum(1 for c in probes if c in index and index.get(c) is not None)
        elapsed = time.monotonic() - start
        result["lookups_per_s"] = lookups / elapsed
        result["found"] = found
    result["rss_anon_mib"] = _rss_anon_kib() / 1024
    result["chunks"] = len(index)
    table = index.table
    if table is not None:
        result["table_mib"] = table.size / 2**20
    print(json.dumps(result), flush=True)


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            continue
    return found


def _anon_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def polled(argv: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Run ``argv``; (seconds, peak anonymous MiB of its process tree, stdout)."""
    start = time.monotonic()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, sum(_anon_kib(p) for p in _tree(proc.pid)))
        time.sleep(0.05)
    out, err = proc.communicate()
    elapsed = time.monotonic() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{argv}: exit {proc.returncode}: {err.decode()[-2000:]}")
    return elapsed, peak / 1024, out.decode()


def command(
    mode: str, repo: Path, env: dict[str, str], image: Path | None = None
) -> tuple[float, float, dict[str, object]]:
    """``check`` (no data read), ``prune`` (dry run) or ``backup`` (of ``image``) of
    ``repo`` in a fresh process, as the CLI runs them: (seconds, peak anon MiB, report)."""
    argv = [sys.executable, __file__, str(repo), "--command", mode]
    if image is not None:
        argv += ["--image", str(image)]
    elapsed, peak, out = polled(argv, env)
    return elapsed, peak, dict(json.loads(out.strip().splitlines()[-1]))


def run_command(mode: str, root: Path, image: Path | None) -> None:
    repo = Repository.open(LocalStorage(root), PASSPHRASE)
    found: dict[str, object]
    if mode == "check":
        report = check_repository(repo, False, NullProgress())
        found = {
            "errors": report.errors[:5],
            "warnings": report.warnings[:5],
            "points": report.points,
            "chunks": report.chunks,
            "packs": report.packs,
        }
    elif mode == "prune":
        pruned = prune_repository(repo, NullProgress(), dry_run=True)
        found = {
            "used_chunks": pruned.used_chunks,
            "deleted_packs": pruned.deleted_packs,
            "repacked_packs": pruned.repacked_packs,
            "freed_bytes": pruned.freed_bytes,
        }
    else:
        assert image is not None
        point = backup_image(repo, ImageBackupOptions(image, "bench", "d"), NullProgress())
        found = {"point": point.id, "stats": point.stats}
    print(json.dumps(found), flush=True)


def run_child(mode: str, args: argparse.Namespace, env: dict[str, str]) -> dict[str, float]:
    proc = subprocess.run(
        [
            sys.executable,
            __file__,
            str(args.workdir),
            "--child",
            mode,
            "--entries",
            str(args.entries),
            "--per-object",
            str(args.per_object),
            "--lookups",
            str(args.lookups),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--entries", type=int, default=40_000_000)
    parser.add_argument("--per-object", type=int, default=32768)
    parser.add_argument("--lookups", type=int, default=100_000)
    parser.add_argument("--memory-baseline", action="store_true")
    parser.add_argument("--image", type=Path, help="back up this image (e.g. base.img)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--command", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.command:
        run_command(args.command, args.workdir, args.image)
        return
    root = args.workdir / "repo"
    if args.child:
        child(args.child, root, args.entries, args.per_object, args.lookups)
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    generate(root, args.entries, args.per_object)
    generate_points(root, args.entries, args.per_object)
    cache = args.workdir / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SURETY_")}
    env["SURETY_CACHE_DIR"] = str(cache)
    figures: dict[str, object] = {"entries": args.entries, "per_object": args.per_object}
    start = time.monotonic()
    build = run_child("build", args, env)
    figures["cache_build_s"] = time.monotonic() - start
    figures["build"] = build
    print(
        f"cache build: {figures['cache_build_s']:.1f} s (table {build['table_mib']:.0f} MiB, "
        f"peak anon at end {build['rss_anon_mib']:.0f} MiB)",
        flush=True,
    )
    look = run_child("lookups", args, env)
    figures["lookups"] = look
    print(
        f"open with a current cache: {look['open_s']:.2f} s; {args.lookups} lookups: "
        f"{look['lookups_per_s']:.0f}/s; anonymous RSS {look['rss_anon_mib']:.0f} MiB "
        f"(at start {look['rss_anon_start_mib']:.0f} MiB)",
        flush=True,
    )
    merge = run_child("merge", args, env)
    figures["merge"] = merge
    print(
        f"merge one index object of {args.per_object} entries: open {merge['open_s']:.2f} s",
        flush=True,
    )
    for name in ("check", "prune"):
        elapsed, peak, found = command(name, root, env)
        figures[name] = {"seconds": elapsed, "peak_anon_mib": peak, "report": found}
        print(f"{name}: {elapsed:.1f} s, peak anonymous {peak:.0f} MiB; {found}", flush=True)
    if args.image is not None:
        size = args.image.stat().st_size
        empty = args.workdir / "empty"
        shutil.rmtree(empty, ignore_errors=True)
        Repository.init(LocalStorage(empty), PASSPHRASE, kdf=CHEAP_KDF)
        storage = LocalStorage(root)
        before = {
            n for kind in ("index/", "data/", "images/", "points/") for n, _ in storage.list(kind)
        }
        for name, target in (("backup_empty", empty), ("backup_large", root)):
            elapsed, peak, _ = command("backup", target, env, args.image)
            figures[name] = {
                "seconds": elapsed,
                "peak_anon_mib": peak,
                "mb_per_s": size / elapsed / 1e6,
            }
            print(
                f"{name}: {elapsed:.1f} s, {size / elapsed / 1e6:.0f} MB/s, "
                f"peak anonymous {peak:.0f} MiB",
                flush=True,
            )
        shutil.rmtree(empty, ignore_errors=True)
        # undo the backup into the synthetic repository: a rerun measures the same thing
        for kind in ("index/", "data/", "images/", "points/"):
            for added in [n for n, _ in storage.list(kind) if n not in before]:
                storage.delete(added)
    if args.memory_baseline:
        base = run_child("baseline", args, {**env, "SURETY_NO_CACHE": "1"})
        figures["baseline"] = base
        print(
            f"no cache (dicts): open {base['open_s']:.1f} s; lookups "
            f"{base['lookups_per_s']:.0f}/s; anonymous RSS {base['rss_anon_mib']:.0f} MiB",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
