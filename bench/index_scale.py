"""Measure the chunk index at scale: the local cache's build, memory and lookups.

Usage::

    python bench/index_scale.py WORKDIR [--entries 40000000] [--per-object 32768]
                                        [--lookups 100000] [--memory-baseline]
                                        [--json FILE]

Writes a synthetic repository under WORKDIR/repo (kept when it already holds the
requested entries): ``--entries`` index entries (chunk ids are SHA-256 of their
number, 64 KiB-ish sealed lengths, 512 chunks a pack) in index objects of
``--per-object`` entries each, sealed and stored by the repository's own writer of
index objects (``Repository.put_object("index", ...)``, as ``write_index`` does;
no pack data is written: this measures the index). Then, each in a fresh process
with the cache in WORKDIR/cache:

1. cache build: open the repository and load its index (every index object read,
   unsealed, decoded, spilled, sorted, written and authenticated);
2. lookups: open it again (the cache is current: one listing, nothing read) and
   do ``--lookups`` lookups (``in`` and ``get``; 90 % present, 10 % absent);
   anonymous RSS (``RssAnon`` of /proc/self/status: RSS less file-backed pages)
   after them, the lookup rate, and the time to open;
3. merge: add one more index object of ``--per-object`` entries, open again:
   the time to merge it into the table;
4. with ``--memory-baseline``: the same lookups with ``SURETY_NO_CACHE=1`` (every
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
from pathlib import Path

from surety.repo.crypto import KdfParams
from surety.repo.index import encode_index
from surety.repo.pack import PackEntry
from surety.repo.repository import Repository
from surety.repo.storage.local import LocalStorage

PASSPHRASE = "bench"
CHEAP_KDF = KdfParams(time_cost=1, memory_kib=8 * 1024, parallelism=1)
PER_PACK = 512


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
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    root = args.workdir / "repo"
    if args.child:
        child(args.child, root, args.entries, args.per_object, args.lookups)
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    generate(root, args.entries, args.per_object)
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
