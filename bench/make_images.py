"""Build a realistic ext4 disk image and a "one day later" copy of it for benchmarks.

Usage::

    python3 bench/make_images.py OUTDIR [--size 4G] [--change 0.03] [--seed N]

Outputs, in OUTDIR:

``base.img``
    A raw ext4 image made *without mounting* (``mke2fs -t ext4 -d SRCDIR``). SRCDIR
    holds a seeded sample of the real files under ``/usr`` (repeated when the image
    is larger than ``/usr``) filling ~55 % of the image, plus ~10 % of
    incompressible data files. Free space reads as zeros and the file is *fully
    allocated*: see ``densify`` for why holes are not good enough.
``changed.img``
    ``base.img`` with ~``--change`` of its 4 KiB blocks rewritten in scattered runs
    of 1..64 blocks, placed the way a filesystem under a write workload dirties a
    disk: mostly rewrites of file data, some new allocations in free space, some
    inode-table/bitmap/descriptor updates and a stretch of journal. See
    ``plan_changes``.
``params.json``
    The parameters (and statistics) the two images were built with. An image whose
    parameters match is not rebuilt; a new ``--change`` only rebuilds
    ``changed.img``.

Only the standard library and e2fsprogs (``mke2fs``, ``dumpe2fs``, ``debugfs``) are
needed. The same ``--seed`` gives the same file sample, data and change pattern;
``base.img`` differs between builds only in inode change times (``mke2fs -d``
copies each source file's ctime, which cannot be set).
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import os
import random
import re
import shutil
import stat
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

BLOCK = 4096
SCHEMA = 1  # bump whenever the generator changes, so cached images are rebuilt
USR_FRACTION = 0.55  # share of the image filled with copies of real files
RANDOM_FRACTION = 0.10  # share of the image filled with incompressible files
MAX_RUN = 64  # longest run of rewritten blocks
COPY_PIECE = 8 << 20  # streaming buffer

# Block classes in the layout map.
FREE, DATA, META, RESERVED, JOURNAL = range(5)
CLASS_NAMES = {FREE: "free", DATA: "data", META: "metadata", JOURNAL: "journal"}

# Where the rewritten blocks go (share of all rewritten blocks) and how long the
# runs are there. Data rewrites dominate; new files land in free space; metadata
# updates touch single inode-table/bitmap blocks; the journal is written as a log.
CHANGE_MIX = {DATA: 0.75, FREE: 0.10, META: 0.05, JOURNAL: 0.10}
RUN_MAX_BY_CLASS = {DATA: MAX_RUN, FREE: MAX_RUN, META: 4, JOURNAL: MAX_RUN}


def log(message: str) -> None:
    """Print a progress line immediately."""
    print(message, flush=True)


def parse_size(text: str) -> int:
    """Parse ``4G``, ``512M``, ``1T``, ``65536`` (binary units) into bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*", text, re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}")
    number, unit = match.groups()
    scale = 1024 ** " KMGT".index(unit.upper() or " ")
    return int(float(number) * scale)


def human(nbytes: float) -> str:
    """Format a byte count with a binary unit."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(nbytes) < 1024:
            return f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes:.1f} TiB"


def allocated(size: int) -> int:
    """Bytes a file of ``size`` occupies in 4 KiB blocks (ignoring extent blocks)."""
    return -(-size // BLOCK) * BLOCK


# --------------------------------------------------------------------------- base


@dataclass
class TreeStats:
    """What went into the source tree."""

    files: int = 0
    symlinks: int = 0
    dirs: int = 0
    usr_bytes: int = 0
    random_bytes: int = 0
    passes: int = 0


def list_tree(root: Path) -> tuple[list[tuple[str, int]], int]:
    """Regular files and symlinks under ``root`` (one filesystem), sorted, with sizes.

    Symlinks are listed with size 0. Returns the entries and their allocated total.
    """
    entries: list[tuple[str, int]] = []
    root_dev = root.stat().st_dev
    for dirpath, dirnames, filenames in os.walk(root):
        subdirs = []
        for name in sorted(dirnames + filenames):
            path = Path(dirpath) / name
            info = path.lstat()
            if stat.S_ISDIR(info.st_mode):
                if info.st_dev == root_dev:
                    subdirs.append(name)
            elif stat.S_ISREG(info.st_mode):
                entries.append((str(path.relative_to(root)), info.st_size))
            elif stat.S_ISLNK(info.st_mode):
                entries.append((str(path.relative_to(root)), 0))
        dirnames[:] = subdirs
    return entries, sum(allocated(size) for _, size in entries)


def copy_entry(source: Path, target: Path, stats: TreeStats) -> bool:
    """Copy one file or symlink, creating parents; False if it cannot be read."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
            stats.symlinks += 1
        else:
            shutil.copy2(source, target)
            stats.files += 1
    except OSError:
        return False
    return True


def add_real_files(
    usr: Path, dest: Path, budget: int, rng: random.Random, stats: TreeStats
) -> None:
    """Fill ``dest`` with a seeded sample of the files under ``usr`` worth ``budget`` bytes.

    Each pass walks ``usr`` in sorted order and keeps each file with probability
    remaining/total, so a small budget gives an even sample of the whole tree
    (binaries, libraries, text) and a large one repeats the tree (``usr``,
    ``usr.1``, ...). Files that no longer fit are skipped (the tree is truncated).
    """
    entries, total = list_tree(usr)
    if not total:
        raise SystemExit(f"{usr} holds no files to copy")
    remaining = budget
    while remaining > 64 * 1024:
        keep = min(1.0, remaining / total)
        name = usr.name if stats.passes == 0 else f"{usr.name}.{stats.passes}"
        before = remaining
        for relative, size in entries:
            cost = allocated(size)
            if rng.random() >= keep or cost > remaining:
                continue
            if copy_entry(usr / relative, dest / name / relative, stats):
                remaining -= cost
        stats.passes += 1
        if remaining == before:  # nothing fits any more
            break
    stats.usr_bytes = budget - remaining


def add_random_files(dest: Path, budget: int, rng: random.Random, stats: TreeStats) -> None:
    """Write incompressible files (64 KiB..64 MiB, log-uniform sizes) worth ``budget`` bytes.

    The bytes come from the seeded generator rather than ``os.urandom`` so that the
    same seed gives the same image; to a compressor or a deduplicator they are
    just as random.
    """
    dest.mkdir(parents=True, exist_ok=True)
    remaining, number = budget, 0
    while remaining >= BLOCK:
        size = int(math.exp(rng.uniform(math.log(64 << 10), math.log(64 << 20))))
        size = min(size // BLOCK * BLOCK, remaining)
        with open(dest / f"blob-{number:05d}.bin", "wb") as out:
            for offset in range(0, size, 1 << 20):
                out.write(rng.randbytes(min(1 << 20, size - offset)))
        remaining -= size
        number += 1
        stats.files += 1
    stats.random_bytes = budget - remaining


def make_filesystem(source: Path, image: Path, size: int, seed: int, inodes: int) -> None:
    """Run ``mke2fs -d`` on a fresh sparse file; never mounts anything."""
    fs_uuid = str(uuid.UUID(int=random.Random(f"uuid-{seed}").getrandbits(128), version=4))
    image.unlink(missing_ok=True)
    with open(image, "wb") as out:
        out.truncate(size)
    command = [
        "mke2fs", "-t", "ext4", "-b", str(BLOCK), "-q", "-F",
        "-L", "surety-bench", "-U", fs_uuid, "-N", str(inodes),
        "-E", f"hash_seed={fs_uuid},root_owner=0:0,nodiscard",
        "-d", str(source), str(image),
    ]  # fmt: skip
    env = {**os.environ, "E2FSPROGS_FAKE_TIME": "1700000000"}
    subprocess.run(command, check=True, env=env)


def densify(sparse: Path, dense: Path) -> None:
    """Copy ``sparse`` to ``dense`` writing every byte, so zeros are real, allocated zeros.

    mke2fs on a fresh file only writes metadata and file data; everything else
    is a hole. Holes read as zeros, but a backup of a real VM disk meets *written*
    zeros (thick raw files, LVs, ``qemu-img convert`` output, deleted files), and
    the bench must measure reading them and the per-chunk zero test. ``fallocate``
    is no substitute: it creates *unwritten* extents, which ext4 reports through
    SEEK_HOLE exactly like holes. So the file is rewritten with plain writes
    (like ``cp --sparse=never``) and then checked to have no hole at all.
    """
    with open(sparse, "rb", buffering=0) as src, open(dense, "wb", buffering=0) as dst:
        while piece := src.read(COPY_PIECE):
            dst.write(piece)
        dst.flush()
        size = os.fstat(dst.fileno()).st_size
        if os.lseek(dst.fileno(), 0, os.SEEK_HOLE) != size:
            raise SystemExit(f"{dense} still has holes after densifying")


def build_base(outdir: Path, size: int, seed: int, usr: Path) -> dict[str, object]:
    """Build ``outdir/base.img``; return statistics for params.json."""
    started = time.monotonic()
    rng = random.Random(f"base-{seed}")
    workdir = outdir / "base.work"
    shutil.rmtree(workdir, ignore_errors=True)
    source = workdir / "root"
    source.mkdir(parents=True)
    tree = TreeStats()
    try:
        log(f"  sampling real files from {usr} ({human(size * USR_FRACTION)}) ...")
        add_real_files(usr, source / "usr-sample", int(size * USR_FRACTION), rng, tree)
        log(f"  writing random data files ({human(size * RANDOM_FRACTION)}) ...")
        add_random_files(source / "srv" / "data", int(size * RANDOM_FRACTION), rng, tree)
        tree.dirs = sum(len(dirs) for _, dirs, _ in os.walk(source)) + 1
        filled = time.monotonic()
        log(
            f"  source tree: {tree.files} files, {tree.symlinks} symlinks, {tree.dirs} dirs, "
            f"{human(tree.usr_bytes)} real + {human(tree.random_bytes)} random "
            f"({filled - started:.0f} s)"
        )
        inodes = max(size // 16384, int((tree.files + tree.symlinks + tree.dirs) * 1.25) + 1024)
        sparse = workdir / "sparse.img"
        make_filesystem(source, sparse, size, seed, inodes)
        made = time.monotonic()
        log(f"  mke2fs -d: {made - filled:.0f} s")
        densify(sparse, outdir / "base.img.tmp")
        os.replace(outdir / "base.img.tmp", outdir / "base.img")
        log(f"  densified (all zeros written, no holes): {time.monotonic() - made:.0f} s")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return {"tree": tree.__dict__, "seconds": round(time.monotonic() - started, 1)}


# ------------------------------------------------------------------------ changes


def parse_ranges(text: str) -> list[tuple[int, int]]:
    """``"5-9, 12"`` -> ``[(5, 10), (12, 13)]`` (half-open)."""
    ranges = []
    for part in text.split(","):
        if part.strip():
            first, _, last = part.strip().partition("-")
            ranges.append((int(first), int(last or first) + 1))
    return ranges


def block_layout(image: Path) -> bytearray:
    """Map every 4 KiB block of an ext4 image to FREE/DATA/META/RESERVED/JOURNAL.

    Free blocks and per-group metadata come from ``dumpe2fs``, the journal's
    blocks from ``debugfs``; every other used block is file data, directories or
    extent-tree blocks, all counted as DATA.
    """
    count = image.stat().st_size // BLOCK
    layout = bytearray([DATA]) * count
    dump = subprocess.run(
        ["dumpe2fs", str(image)], check=True, capture_output=True, text=True
    ).stdout
    labels = {
        "superblock": META,
        "Group descriptors": META,
        "Block bitmap": META,
        "Inode bitmap": META,
        "Inode table": META,
        "Reserved GDT blocks": RESERVED,
    }
    for line in dump.splitlines():
        if line.startswith("  Free blocks: "):
            for start, stop in parse_ranges(line.split(":", 1)[1]):
                layout[start:stop] = bytes([FREE]) * (stop - start)
            continue
        for label, kind in labels.items():
            for match in re.finditer(rf"{label} at (\d+)(?:-(\d+))?", line):
                start = int(match[1])
                stop = int(match[2] or start) + 1
                layout[start:stop] = bytes([kind]) * (stop - start)
    journal = subprocess.run(
        ["debugfs", "-R", "blocks <8>", str(image)], check=True, capture_output=True, text=True
    ).stdout
    for number in journal.split():
        layout[int(number)] = JOURNAL
    return layout


def class_ranges(layout: bytearray, kind: int) -> list[tuple[int, int]]:
    """Maximal half-open block ranges of one class."""
    return [match.span() for match in re.finditer(re.escape(bytes([kind])) + b"+", layout)]


@dataclass
class Run:
    """Rewrite ``length`` blocks at ``start``; content depends on ``kind``."""

    start: int
    length: int
    kind: int


@dataclass
class Plan:
    """The runs to write and the count of distinct blocks they cover, per class."""

    runs: list[Run] = field(default_factory=list)
    blocks: dict[str, int] = field(default_factory=dict)


def run_length(rng: random.Random, longest: int) -> int:
    """Log-uniform length in 1..longest: many short writes, some long ones."""
    return min(longest, int(math.exp(rng.uniform(0, math.log(longest + 1)))))


def plan_changes(layout: bytearray, fraction: float, rng: random.Random) -> Plan:
    """Choose scattered runs covering ``fraction`` of all blocks.

    The target is split over block classes by ``CHANGE_MIX``; a class too small
    to take its share gives the rest to DATA. DATA/FREE/META runs start at a
    uniformly random block of their class (so they scatter over the whole used
    area) and are clipped to the class range they start in. The journal is a
    circular log: its share is one contiguous stretch, in journal order, from a
    random point.
    """
    total = round(len(layout) * fraction)
    dirty = bytearray(len(layout))
    plan = Plan()
    shares = {}
    for kind, share in CHANGE_MIX.items():
        size = sum(stop - start for start, stop in class_ranges(layout, kind))
        shares[kind] = min(round(total * share), size // 2)
    shares[DATA] += total - sum(shares.values())

    for kind in (JOURNAL, META, FREE, DATA):
        ranges = class_ranges(layout, kind)
        want, got = shares[kind], 0
        if not ranges or want <= 0:
            plan.blocks[CLASS_NAMES[kind]] = 0
            continue
        if kind == JOURNAL:
            order = [block for start, stop in ranges for block in range(start, stop)]
            first = rng.randrange(len(order))
            stretch = [order[(first + i) % len(order)] for i in range(want)]
            for block in stretch:
                dirty[block] = 1
            got = len(stretch)
            run = Run(stretch[0], 0, kind)
            for block in stretch:
                if block != run.start + run.length or run.length == MAX_RUN:
                    plan.runs.append(run)
                    run = Run(block, 0, kind)
                run.length += 1
            plan.runs.append(run)
        else:
            ends = []
            acc = 0
            for start, stop in ranges:
                acc += stop - start
                ends.append(acc)
            while got < want:
                pick = rng.randrange(acc)
                index = bisect.bisect_right(ends, pick)
                start, stop = ranges[index]
                block = start + pick - (ends[index] - (stop - start))
                length = min(run_length(rng, RUN_MAX_BY_CLASS[kind]), stop - block, want - got)
                fresh = length - sum(dirty[block : block + length])
                if not fresh:
                    continue
                dirty[block : block + length] = b"\x01" * length
                got += fresh
                plan.runs.append(Run(block, length, kind))
        plan.blocks[CLASS_NAMES[kind]] = got
    plan.runs.sort(key=lambda run: run.start)
    return plan


def patched(block: bytes, rng: random.Random, patches: int, width: int) -> bytes:
    """``block`` with ``patches`` random ``width``-byte spans overwritten."""
    data = bytearray(block)
    for _ in range(patches):
        offset = rng.randrange(0, BLOCK - width)
        data[offset : offset + width] = rng.randbytes(width)
    return bytes(data)


def new_content(run: Run, image: int, sources: list[tuple[int, int]], rng: random.Random) -> bytes:
    """Bytes to write for ``run``, read from the base image ``image`` where needed.

    * DATA/FREE: 40 % of runs are incompressible (encrypted/compressed files);
      60 % are "new versions" of real content, i.e. blocks copied from a random
      place of the used area with a few bytes per block changed, so they compress
      like the image's own files but are not duplicates of any existing block.
    * META: the existing block with 1-4 inode-sized (256 byte) records rewritten.
    * JOURNAL: logged copies of metadata blocks, each with a few bytes changed.
    """
    size = run.length * BLOCK
    if run.kind in (DATA, FREE) and rng.random() < 0.4:
        return rng.randbytes(size)
    if run.kind == META:
        old = os.pread(image, size, run.start * BLOCK)
        parts = [
            patched(old[i : i + BLOCK], rng, rng.randint(1, 4), 256) for i in range(0, size, BLOCK)
        ]
        return b"".join(parts)
    start, stop = sources[rng.randrange(len(sources))]
    first = rng.randrange(start, max(start + 1, stop - run.length))
    old = os.pread(image, size, first * BLOCK).ljust(size, b"\0")
    return b"".join(
        patched(old[i : i + BLOCK], rng, rng.randint(1, 8), 16) for i in range(0, size, BLOCK)
    )


def build_changed(outdir: Path, fraction: float, seed: int) -> dict[str, object]:
    """Build ``outdir/changed.img`` from ``outdir/base.img``; return statistics."""
    started = time.monotonic()
    base = outdir / "base.img"
    rng = random.Random(f"change-{seed}-{fraction}")
    layout = block_layout(base)
    census = {name: layout.count(kind) for kind, name in CLASS_NAMES.items()}
    log("  layout (blocks): " + ", ".join(f"{name} {n}" for name, n in census.items()))
    plan = plan_changes(layout, fraction, rng)
    data_ranges = class_ranges(layout, DATA)
    meta_ranges = class_ranges(layout, META)
    tmp = outdir / "changed.img.tmp"
    shutil.copyfile(base, tmp)
    copied = time.monotonic()
    log(f"  copied base.img: {copied - started:.0f} s")
    fd_base = os.open(base, os.O_RDONLY)
    fd_out = os.open(tmp, os.O_WRONLY)
    try:
        for run in plan.runs:
            sources = meta_ranges if run.kind == JOURNAL else data_ranges
            data = new_content(run, fd_base, sources, rng)
            old = os.pread(fd_base, len(data), run.start * BLOCK)
            # Guarantee every block of the run really differs from the base.
            fixed = bytearray(data)
            for i in range(0, len(data), BLOCK):
                if fixed[i : i + BLOCK] == old[i : i + BLOCK]:
                    fixed[i : i + 16] = bytes(b ^ 0xFF for b in fixed[i : i + 16])
            os.pwrite(fd_out, bytes(fixed), run.start * BLOCK)
    finally:
        os.close(fd_base)
        os.close(fd_out)
    os.replace(tmp, outdir / "changed.img")
    changed = sum(plan.blocks.values())
    lengths = [run.length for run in plan.runs]
    log(
        f"  rewrote {changed} blocks ({changed / len(layout):.2%}, {human(changed * BLOCK)}) "
        f"in {len(lengths)} runs (mean {sum(lengths) / len(lengths):.1f} blocks): "
        + ", ".join(f"{name} {n}" for name, n in plan.blocks.items())
        + f" ({time.monotonic() - copied:.0f} s)"
    )
    return {
        "layout_blocks": census,
        "changed_blocks": changed,
        "changed_by_class": plan.blocks,
        "runs": len(lengths),
        "seconds": round(time.monotonic() - started, 1),
    }


# --------------------------------------------------------------------------- main


def load_params(path: Path) -> dict[str, dict[str, object]]:
    """The recorded parameters, or nothing when absent or unreadable."""
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("outdir", type=Path, help="directory for base.img and changed.img")
    parser.add_argument("--size", type=parse_size, default=parse_size("4G"), help="image size")
    parser.add_argument("--change", type=float, default=0.03, help="fraction of blocks rewritten")
    parser.add_argument("--seed", type=int, default=1, help="seed for sample, data and changes")
    parser.add_argument("--usr", type=Path, default=Path("/usr"), help="tree of real files")
    parser.add_argument("--force", action="store_true", help="rebuild even if parameters match")
    args = parser.parse_args(argv)
    if args.size % BLOCK or args.size < 64 << 20:
        parser.error("--size must be a multiple of 4 KiB and at least 64 MiB")
    if not 0 < args.change < 0.5:
        parser.error("--change must be between 0 and 0.5")

    started = time.monotonic()
    outdir: Path = args.outdir
    outdir.mkdir(parents=True, exist_ok=True)
    params_path = outdir / "params.json"
    recorded = {} if args.force else load_params(params_path)
    want_base = {"schema": SCHEMA, "size": args.size, "seed": args.seed, "usr": str(args.usr)}
    want_changed = {"change": args.change, "seed": args.seed}

    base_ok = (outdir / "base.img").is_file() and recorded.get("base", {}).get("params") == (
        want_base
    )
    if base_ok:
        log(f"base.img: up to date ({human(args.size)}, seed {args.seed})")
    else:
        log(f"base.img: building {human(args.size)} ext4 image, seed {args.seed}")
        (outdir / "changed.img").unlink(missing_ok=True)
        recorded = {
            "base": {"params": want_base, **build_base(outdir, args.size, args.seed, args.usr)}
        }
        params_path.write_text(json.dumps(recorded, indent=2) + "\n")

    changed_ok = (outdir / "changed.img").is_file() and recorded.get("changed", {}).get(
        "params"
    ) == want_changed
    if changed_ok:
        log(f"changed.img: up to date (change {args.change:.2%})")
    else:
        log(f"changed.img: rewriting {args.change:.2%} of the blocks")
        stats = build_changed(outdir, args.change, args.seed)
        recorded["changed"] = {"params": want_changed, **stats}
        params_path.write_text(json.dumps(recorded, indent=2) + "\n")

    log(
        f"done in {time.monotonic() - started:.0f} s: "
        f"{outdir / 'base.img'}, {outdir / 'changed.img'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
