"""Build a realistic ext4 disk image and a "one day later" copy of it for benchmarks.

Usage::

    python3 bench/make_images.py OUTDIR [--size 4G] [--change 0.03] [--seed N] [--hot 0]

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
    inode-table/bitmap/descriptor updates and a stretch of journal. ``--hot`` sends
    that share of the data rewrites to a small hot set instead. See
    ``plan_changes``.
``params.json``
    The parameters (and statistics) the two images were built with. An image whose
    parameters match is not rebuilt; a new ``--change`` only rebuilds
    ``changed.img``.

``changed.img`` is a block-level model, not a consistent filesystem: metadata
blocks get random bytes, so ``e2fsck`` complains about it. A backup tool that
copies blocks does not care.

Only the standard library and e2fsprogs (``mke2fs``, ``dumpe2fs``, ``debugfs``) are
needed. Builds are reproducible: with the same ``--seed``, ``--usr`` contents and
e2fsprogs version, both images are bit-for-bit identical (UUID, hash seed and
all timestamps are pinned; see ``pin_times``).
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
FIXED_TIME = 1_700_000_000  # every timestamp mke2fs would otherwise take from the clock

# Block classes in the layout map.
FREE, DATA, META, RESERVED, JOURNAL = range(5)
CLASS_NAMES = {FREE: "free", DATA: "data", META: "metadata", JOURNAL: "journal"}

# Where the rewritten blocks go (share of all rewritten blocks) and how long the
# runs are there. Data rewrites dominate; new files land in free space; metadata
# updates touch single inode-table/bitmap blocks; the journal is written as a log.
CHANGE_MIX = {DATA: 0.75, FREE: 0.10, META: 0.05, JOURNAL: 0.10}
RUN_MAX_BY_CLASS = {DATA: MAX_RUN, FREE: MAX_RUN, META: 4, JOURNAL: MAX_RUN}
HOT_ZONES, HOT_ZONE_BLOCKS = 32, 2048  # with --hot: 32 zones of 8 MiB take that share of DATA


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
    """Copy one file or symlink, creating parents; False if it cannot be read.

    atime is set to mtime: the host's atime of ``source`` changes as it is read.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        mtime = source.lstat().st_mtime_ns
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
            stats.symlinks += 1
        else:
            shutil.copyfile(source, target)
            shutil.copymode(source, target)
            stats.files += 1
        os.utime(target, ns=(mtime, mtime), follow_symlinks=False)
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
        os.utime(dest / f"blob-{number:05d}.bin", (FIXED_TIME, FIXED_TIME))
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
    env = {**os.environ, "E2FSPROGS_FAKE_TIME": str(FIXED_TIME)}
    subprocess.run(command, check=True, env=env)


def used_inodes(dump: str) -> list[int]:
    """Allocated inode numbers, from full ``dumpe2fs`` output."""
    per_group = int(re.search(r"^Inodes per group:\s+(\d+)", dump, re.MULTILINE)[1])
    used: list[int] = []
    group = 0
    for line in dump.splitlines():
        if match := re.match(r"Group (\d+):", line):
            group = int(match[1])
        elif line.startswith("  Free inodes:"):
            free = set()
            for start, stop in parse_ranges(line.split(":", 1)[1]):
                free.update(range(start, stop))
            first = group * per_group + 1
            used.extend(n for n in range(first, first + per_group) if n not in free)
    return used


def pin_times(image: Path) -> None:
    """Set every inode's ctime and atime to FIXED_TIME with ``debugfs -w`` (no mount).

    ``mke2fs -d`` copies the source files' ctime (the time of the copy, which
    cannot be set from user space) and atime (which mke2fs itself bumps by
    reading the file); without this, two builds with the same seed would differ
    in their inode tables. mtimes are the (pinned) ones of the source tree.
    Reserved inodes other than the root are left alone.
    """
    dump = subprocess.run(
        ["dumpe2fs", str(image)], check=True, capture_output=True, text=True
    ).stdout
    commands = "".join(
        f"sif <{ino}> ctime @{FIXED_TIME}\nsif <{ino}> atime @{FIXED_TIME}\n"
        for ino in used_inodes(dump)
        if ino == 2 or ino > 10
    )
    env = {**os.environ, "E2FSPROGS_FAKE_TIME": str(FIXED_TIME)}
    subprocess.run(
        ["debugfs", "-w", "-f", "-", str(image)],
        input=commands,
        text=True,
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


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
        for dirpath, _, _ in os.walk(source):
            os.utime(dirpath, (FIXED_TIME, FIXED_TIME))
        make_filesystem(source, sparse, size, seed, inodes)
        pin_times(sparse)
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


def cumulative(ranges: list[tuple[int, int]]) -> list[int]:
    """Running total of range lengths, for weighted picks with ``bisect``."""
    ends, total = [], 0
    for start, stop in ranges:
        total += stop - start
        ends.append(total)
    return ends


def scatter(
    ranges: list[tuple[int, int]], want: int, kind: int, dirty: bytearray, rng: random.Random
) -> list[Run]:
    """Runs of log-uniform length at uniformly random blocks of ``ranges``.

    Each run is clipped to the range it starts in; runs continue until ``want``
    blocks not yet in ``dirty`` are covered (``dirty`` is updated).
    """
    ends = cumulative(ranges)
    runs: list[Run] = []
    got = 0
    while got < want:
        pick = rng.randrange(ends[-1])
        index = bisect.bisect_right(ends, pick)
        start, stop = ranges[index]
        block = start + pick - (ends[index] - (stop - start))
        length = min(run_length(rng, RUN_MAX_BY_CLASS[kind]), stop - block, want - got)
        fresh = length - sum(dirty[block : block + length])
        if fresh:
            dirty[block : block + length] = b"\x01" * length
            got += fresh
            runs.append(Run(block, length, kind))
    return runs


def hot_zones(ranges: list[tuple[int, int]], rng: random.Random) -> list[tuple[int, int]]:
    """HOT_ZONES stretches of up to HOT_ZONE_BLOCKS at random places of ``ranges``."""
    ends = cumulative(ranges)
    zones = []
    for _ in range(HOT_ZONES):
        pick = rng.randrange(ends[-1])
        index = bisect.bisect_right(ends, pick)
        start, stop = ranges[index]
        block = start + pick - (ends[index] - (stop - start))
        zones.append((block, min(stop, block + HOT_ZONE_BLOCKS)))
    zones.sort()
    merged: list[tuple[int, int]] = []
    for start, stop in zones:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(stop, merged[-1][1]))
        else:
            merged.append((start, stop))
    return merged


def journal_runs(
    ranges: list[tuple[int, int]], want: int, dirty: bytearray, rng: random.Random
) -> list[Run]:
    """The journal is a circular log: one stretch of ``want`` blocks in journal order."""
    order = [block for start, stop in ranges for block in range(start, stop)]
    first = rng.randrange(len(order))
    stretch = [order[(first + i) % len(order)] for i in range(want)]
    runs = [Run(stretch[0], 0, JOURNAL)]
    for block in stretch:
        dirty[block] = 1
        if block != runs[-1].start + runs[-1].length or runs[-1].length == MAX_RUN:
            runs.append(Run(block, 0, JOURNAL))
        runs[-1].length += 1
    return runs


def plan_changes(layout: bytearray, fraction: float, hot: float, rng: random.Random) -> Plan:
    """Choose scattered runs covering ``fraction`` of all blocks.

    The target is split over block classes by ``CHANGE_MIX``; a class too small
    to take its share gives the rest to DATA. DATA/FREE/META runs start at a
    uniformly random block of their class (so they scatter over the whole used
    area) and are clipped to the class range they start in. With ``hot`` > 0,
    that share of the DATA runs lands in HOT_ZONES zones of HOT_ZONE_BLOCKS
    (databases, logs: a hot set rewritten again and again) instead. The journal
    is a circular log.
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
        want = shares[kind] if ranges else 0
        runs: list[Run] = []
        before = dirty.count(1)
        if want and kind == JOURNAL:
            runs = journal_runs(ranges, want, dirty, rng)
        elif want and kind == DATA and hot > 0:
            zones = hot_zones(ranges, rng)
            in_zones = min(round(want * hot), sum(b - a for a, b in zones) // 2)
            runs = scatter(zones, in_zones, kind, dirty, rng)
            runs += scatter(ranges, want - in_zones, kind, dirty, rng)
        elif want:
            runs = scatter(ranges, want, kind, dirty, rng)
        plan.runs += runs
        plan.blocks[CLASS_NAMES[kind]] = dirty.count(1) - before
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


def build_changed(outdir: Path, fraction: float, hot: float, seed: int) -> dict[str, object]:
    """Build ``outdir/changed.img`` from ``outdir/base.img``; return statistics."""
    started = time.monotonic()
    base = outdir / "base.img"
    rng = random.Random(f"change-{seed}-{fraction}")
    layout = block_layout(base)
    census = {name: layout.count(kind) for kind, name in CLASS_NAMES.items()}
    log("  layout (blocks): " + ", ".join(f"{name} {n}" for name, n in census.items()))
    plan = plan_changes(layout, fraction, hot, rng)
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
    parser.add_argument(
        "--hot", type=float, default=0.0, help="share of data rewrites in a small hot set"
    )
    parser.add_argument("--seed", type=int, default=1, help="seed for sample, data and changes")
    parser.add_argument("--usr", type=Path, default=Path("/usr"), help="tree of real files")
    parser.add_argument("--force", action="store_true", help="rebuild even if parameters match")
    args = parser.parse_args(argv)
    if args.size % BLOCK or args.size < 64 << 20:
        parser.error("--size must be a multiple of 4 KiB and at least 64 MiB")
    if not 0 < args.change < 0.5:
        parser.error("--change must be between 0 and 0.5")
    if not 0 <= args.hot <= 1:
        parser.error("--hot must be between 0 and 1")

    started = time.monotonic()
    outdir: Path = args.outdir
    outdir.mkdir(parents=True, exist_ok=True)
    params_path = outdir / "params.json"
    recorded = {} if args.force else load_params(params_path)
    want_base = {"schema": SCHEMA, "size": args.size, "seed": args.seed, "usr": str(args.usr)}
    want_changed = {"change": args.change, "hot": args.hot, "seed": args.seed}

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
        log(f"changed.img: up to date (change {args.change:.2%}, hot {args.hot:.0%})")
    else:
        log(f"changed.img: rewriting {args.change:.2%} of the blocks, hot share {args.hot:.0%}")
        stats = build_changed(outdir, args.change, args.hot, args.seed)
        recorded["changed"] = {"params": want_changed, **stats}
        params_path.write_text(json.dumps(recorded, indent=2) + "\n")

    log(
        f"done in {time.monotonic() - started:.0f} s: "
        f"{outdir / 'base.img'}, {outdir / 'changed.img'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
