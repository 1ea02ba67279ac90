"""Measure what the fixed chunk size costs and saves, to pick surety's default.

Usage::

    python bench/chunk_size.py OUTDIR [--sizes 64K,256K,512K,1M,2M,4M] [--threads 2]
                                      [--repeat 3] [--malloc-tuned] [--json FILE]

OUTDIR holds ``base.img`` and ``changed.img`` from ``bench/make_images.py``. Needs
blake3, zstandard and cryptography (surety's own dependencies) and the ``zstd``
command. For every chunk size, with fixed chunks aligned to the image start:

(a) the fraction of chunks that differ between base and changed;
(b) the bytes an incremental backup of changed.img stores: every differing chunk
    that is not zero and not already stored, compressed on its own;
(c) the repository size of a full backup of base.img (unique non-zero chunks by
    keyed BLAKE3, compressed on their own), against ``zstd -1`` of the whole image;
(d) the image index per restore point (chunks x 32-byte id), here and for 1 TiB;
(e) throughput of the per-chunk pipeline (zero test, keyed BLAKE3, zstd-1,
    AES-256-GCM seal) over base.img from the page cache, inline on one thread and
    on a ThreadPoolExecutor of ``--threads`` workers fed one chunk per task, as
    surety's backup pipeline does; median of ``--repeat`` runs, and with
    ``--malloc-tuned`` the same again with glibc's malloc thresholds raised;
(f) memory for the chunks of a 1 TiB disk held in an index: chunks x (an ~80-byte
    index entry + one dict entry keyed by the 32-byte id, measured here).

"Stored" sizes are what surety's writer stores per chunk: one codec byte, the
zstd-1 frame (or the raw bytes when zstd does not shrink them), 29 bytes of seal
(version, nonce, tag). Memory stays bounded: the images are streamed chunk by chunk.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
import tracemalloc
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import blake3
import zstandard
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KIB, MIB, GIB, TIB = 1 << 10, 1 << 20, 1 << 30, 1 << 40
DEFAULT_SIZES = "64K,256K,512K,1M,2M,4M"
BLOCK = 4096  # filesystem block: the unit in which the change was made
ID_LEN = 32  # chunk id bytes in an image index
INDEX_ENTRY_BYTES = 80  # in-memory index entry (pack, offset, length, ...) per chunk
SEAL_OVERHEAD = 1 + 12 + 16  # seal version, GCM nonce, GCM tag
CODEC_BYTE = 1
ZSTD_LEVEL = 1
READ_PIECE = 8 * MIB
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters


def log(message: str) -> None:
    """Print a progress line to stderr (stdout carries the tables)."""
    print(message, file=sys.stderr, flush=True)


def parse_size(text: str) -> int:
    """Parse ``64K``, ``1M``, ``4MiB`` (binary units) into bytes."""
    match = re.fullmatch(r"\s*(\d+)\s*([KMG]?)i?B?\s*", text, re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}")
    number, unit = match.groups()
    return int(number) * 1024 ** " KMG".index(unit.upper() or " ")


def size_label(nbytes: int) -> str:
    """``65536`` -> ``64 KiB``, ``1048576`` -> ``1 MiB``."""
    return f"{nbytes // MIB} MiB" if nbytes >= MIB else f"{nbytes // KIB} KiB"


def mib(nbytes: float) -> str:
    """Bytes as MiB with one decimal."""
    return f"{nbytes / MIB:.1f}"


def memory_label(nbytes: float) -> str:
    """Bytes as KiB/MiB/GiB, whichever reads best."""
    if nbytes >= GIB:
        return f"{nbytes / GIB:.2f} GiB"
    if nbytes >= MIB:
        return f"{nbytes / MIB:.1f} MiB"
    return f"{nbytes / KIB:.1f} KiB"


class Sealer:
    """surety's per-chunk work: zero test, keyed id, compress, seal.

    Compressors are per thread (zstandard's are not thread-safe); the BLAKE3
    and AES-GCM keys are random, which changes no size and no speed.
    """

    def __init__(self, chunk_size: int) -> None:
        self.zero = bytes(chunk_size)
        self.id_key = os.urandom(32)
        self.aead = AESGCM(os.urandom(32))
        self._local = threading.local()

    def compressor(self) -> zstandard.ZstdCompressor:
        """This thread's zstd-1 compressor."""
        found = getattr(self._local, "cctx", None)
        if found is None:
            found = self._local.cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
        return found

    def is_zero(self, data: bytes) -> bool:
        """True for an all-zero chunk (stored as nothing)."""
        return data == (self.zero if len(data) == len(self.zero) else self.zero[: len(data)])

    def chunk_id(self, data: bytes) -> bytes:
        """Keyed BLAKE3, single-threaded as in surety."""
        return blake3.blake3(data, key=self.id_key, max_threads=1).digest()

    def payload_size(self, data: bytes) -> int:
        """Stored bytes for one non-zero chunk, without encrypting it."""
        packed = len(self.compressor().compress(data))
        return CODEC_BYTE + min(packed, len(data)) + SEAL_OVERHEAD

    def seal(self, data: bytes) -> int:
        """The full pipeline for one chunk; returns the sealed size (0 for zeros)."""
        if self.is_zero(data):
            return 0
        chunk_id = self.chunk_id(data)
        packed = self.compressor().compress(data)
        payload = b"\x01" + packed if len(packed) < len(data) else b"\x00" + data
        nonce = os.urandom(12)
        sealed = b"\x01" + nonce + self.aead.encrypt(nonce, payload, b"chunk" + chunk_id)
        return len(sealed)


# --------------------------------------------------------------- (a), (b), (c)


@dataclass
class Storage:
    """Change and storage figures for one chunk size."""

    chunk_size: int
    chunks: int = 0
    zero_chunks: int = 0
    differing_chunks: int = 0
    changed_blocks: int = 0  # differing 4 KiB blocks (the same for every chunk size)
    incremental_bytes: int = 0  # (b)
    unique_chunks: int = 0  # unique non-zero chunks of base.img
    full_bytes: int = 0  # (c)
    seconds: float = 0.0


def measure_storage(base: Path, changed: Path, chunk_size: int) -> Storage:
    """Stream both images once in ``chunk_size`` pieces and account (a), (b), (c)."""
    started = time.monotonic()
    sealer = Sealer(chunk_size)
    result = Storage(chunk_size)
    known: set[bytes] = set()
    with open(base, "rb", buffering=0) as old_file, open(changed, "rb", buffering=0) as new_file:
        while old := old_file.read(chunk_size):
            new = new_file.read(chunk_size)
            result.chunks += 1
            if sealer.is_zero(old):
                result.zero_chunks += 1
            else:
                chunk_id = sealer.chunk_id(old)
                if chunk_id not in known:
                    known.add(chunk_id)
                    result.unique_chunks += 1
                    result.full_bytes += sealer.payload_size(old)
            if new == old:
                continue
            result.differing_chunks += 1
            result.changed_blocks += sum(
                new[i : i + BLOCK] != old[i : i + BLOCK] for i in range(0, len(new), BLOCK)
            )
            if not sealer.is_zero(new):
                chunk_id = sealer.chunk_id(new)
                if chunk_id not in known:
                    known.add(chunk_id)
                    result.incremental_bytes += sealer.payload_size(new)
    result.seconds = time.monotonic() - started
    return result


def zstd_whole(path: Path) -> tuple[int, float]:
    """Size of ``zstd -1`` of the whole file (one stream, zstd's default single thread)."""
    started = time.monotonic()
    total = 0
    with subprocess.Popen(
        ["zstd", f"-{ZSTD_LEVEL}", "-q", "-c", str(path)], stdout=subprocess.PIPE
    ) as proc:
        assert proc.stdout is not None
        while piece := proc.stdout.read(READ_PIECE):
            total += len(piece)
    if proc.returncode:
        raise SystemExit(f"zstd failed with exit code {proc.returncode}")
    return total, time.monotonic() - started


# ------------------------------------------------------------------------- (e)


def warm(paths: list[Path]) -> float:
    """Read the files once so they sit in the page cache; return MB/s of that read."""
    started, total = time.monotonic(), 0
    for path in paths:
        with open(path, "rb", buffering=0) as source:
            while piece := source.read(READ_PIECE):
                total += len(piece)
    return total / 1e6 / (time.monotonic() - started)


@dataclass
class Speed:
    """One throughput run."""

    wall: float  # MB/s by the clock
    cpu: float  # MB per CPU-second spent by this process (all its threads)
    others: float  # CPUs kept busy by other processes meanwhile (0 on a quiet host)


def busy_cpu_seconds() -> float:
    """Non-idle CPU time of the whole host since boot, from /proc/stat (0 if unreadable)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def throughput(path: Path, chunk_size: int, threads: int, limit: int | None = None) -> Speed:
    """Read and seal every chunk of ``path`` (or of its first ``limit`` bytes).

    One thread: the pipeline runs inline. More: the main thread reads and submits
    one task per chunk to a pool, keeping ``2*threads+2`` in flight, like
    surety's backup pipeline. Besides wall-clock speed, the CPU time of this
    process and of the rest of the host are recorded: a busy host lowers the
    wall-clock figure, much less the per-CPU-second one.
    """
    sealer = Sealer(chunk_size)
    size = min(path.stat().st_size, limit or sys.maxsize)
    fd = os.open(path, os.O_RDONLY)
    host_before, cpu_before = busy_cpu_seconds(), time.process_time()
    started = time.monotonic()
    try:
        if threads == 1:
            for offset in range(0, size, chunk_size):
                sealer.seal(os.pread(fd, chunk_size, offset))
        else:
            window: deque[Future[int]] = deque()
            with ThreadPoolExecutor(max_workers=threads) as pool:
                for offset in range(0, size, chunk_size):
                    window.append(pool.submit(sealer.seal, os.pread(fd, chunk_size, offset)))
                    if len(window) >= 2 * threads + 2:
                        window.popleft().result()
                while window:
                    window.popleft().result()
    finally:
        os.close(fd)
    wall = time.monotonic() - started
    cpu = time.process_time() - cpu_before
    others = max(0.0, busy_cpu_seconds() - host_before - cpu) / wall
    return Speed(size / 1e6 / wall, size / 1e6 / cpu, others)


def tune_malloc() -> bool:
    """Make glibc keep freed chunk-sized buffers instead of handing them back at once.

    By default glibc returns the top of the heap to the kernel as soon as more
    than twice the (adaptive) mmap threshold is free, and worker threads use
    their own arenas, so each chunk-sized bytes object can cost fresh page
    faults, which are dear in a VM. Raising both thresholds (the same as the
    MALLOC_MMAP_THRESHOLD_ and MALLOC_TRIM_THRESHOLD_ variables) keeps the
    memory. Returns False where mallopt is not available or refuses.
    """
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, 32 * MIB)) and bool(mallopt(M_TRIM_THRESHOLD, 256 * MIB))


def measure_speeds(
    path: Path, sizes: list[int], threads: int, repeat: int, tuned: bool
) -> dict[int, dict[str, list[Speed]]]:
    """Run ``throughput`` ``repeat`` times per chunk size and mode; MB/s of each run.

    Modes: one thread inline, ``threads`` pool workers; with ``tuned``, both again
    after ``tune_malloc`` (which cannot be undone, so those runs come last).
    """
    speeds: dict[int, dict[str, list[Speed]]] = {size: {} for size in sizes}
    throughput(path, sizes[0], 1, limit=512 * MIB)  # untimed warm-up
    for suffix in ("", " tuned") if tuned else ("",):
        if suffix and not tune_malloc():
            log("mallopt not available: skipping the tuned-malloc runs")
            break
        for size in sizes:
            for count in (1, threads):
                runs = [throughput(path, size, count) for _ in range(repeat)]
                speeds[size][f"{count} thr{suffix}"] = runs
                log(
                    f"throughput {size_label(size)} {count} thr{suffix}: "
                    + ", ".join(
                        f"{r.wall:.0f} MB/s ({r.cpu:.0f}/cpu-s, others {r.others:.1f})"
                        for r in runs
                    )
                )
    return speeds


# ------------------------------------------------------------------------- (f)


def dict_entry_bytes(count: int = 1_000_000) -> float:
    """Measured bytes per entry of a dict keyed by 32-byte ids (key object + table)."""
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    table = {os.urandom(ID_LEN): None for _ in range(count)}
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del table
    return (after - before) / count


# ------------------------------------------------------------------------ report


def render(headers: list[str], rows: list[list[str]]) -> str:
    """A plain right-aligned text table."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = "  ".join("-" * w for w in widths)
    out = ["  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True)), line]
    out += ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(out)


def report(
    image_size: int,
    storage: list[Storage],
    *,
    speeds: dict[int, dict[str, list[Speed]]],
    zstd_bytes: int,
    zstd_seconds: float,
    per_dict_entry: float,
) -> str:
    """Both tables and the notes under them."""
    changed_bytes = storage[0].changed_blocks * BLOCK
    lines = [
        f"image {image_size / GIB:.2f} GiB; changed: {storage[0].changed_blocks} blocks of 4 KiB "
        f"= {mib(changed_bytes)} MiB ({changed_bytes / image_size:.2%})",
        f"zstd -1 of whole base.img: {mib(zstd_bytes)} MiB in {zstd_seconds:.1f} s "
        f"({image_size / 1e6 / zstd_seconds:.0f} MB/s, zstd CLI, 1 thread)",
        "",
        "Change and storage",
    ]
    rows = []
    for s in storage:
        differing_raw = s.differing_chunks * s.chunk_size
        rows.append([
            size_label(s.chunk_size),
            str(s.chunks),
            f"{s.zero_chunks / s.chunks:.1%}",
            f"{s.differing_chunks / s.chunks:.2%}",
            mib(differing_raw),
            f"{differing_raw / changed_bytes:.1f}x" if changed_bytes else "-",
            mib(s.incremental_bytes),
            mib(s.full_bytes),
            f"{s.full_bytes / zstd_bytes:.3f}",
        ])  # fmt: skip
    lines.append(render(
        ["chunk", "chunks", "zero", "(a) differ", "differ raw MiB", "amplif.",
         "(b) incr MiB", "(c) full MiB", "full/zstd-1"],
        rows,
    ))  # fmt: skip
    lines += ["", "Index and memory"]
    rows = []
    for s in storage:
        per_tib = TIB // s.chunk_size
        rows.append([
            size_label(s.chunk_size),
            memory_label(s.chunks * ID_LEN),
            str(per_tib),
            memory_label(per_tib * ID_LEN),
            memory_label(per_tib * (INDEX_ENTRY_BYTES + per_dict_entry)),
        ])  # fmt: skip
    lines.append(render(
        ["chunk", "(d) index/RP", "chunks/TiB", "(d) index/RP 1 TiB", "(f) RAM 1 TiB"],
        rows,
    ))  # fmt: skip
    modes = list(next(iter(speeds.values()), {}))
    if modes:
        lines += ["", "(e) Throughput: MB/s wall clock | MB per CPU-second"]
        rows = []
        for s in storage:
            row = [size_label(s.chunk_size)]
            for mode in modes:
                runs = speeds[s.chunk_size][mode]
                row.append(f"{statistics.median(r.wall for r in runs):.0f}")
                row.append(f"{statistics.median(r.cpu for r in runs):.0f}")
            rows.append(row)
        headers = ["chunk"] + [f"{mode} {unit}" for mode in modes for unit in ("wall", "cpu")]
        lines.append(render(headers, rows))
        others = [r.others for runs in speeds.values() for mode in runs.values() for r in mode]
        lines.append(
            f"other processes kept {statistics.mean(others):.2f} CPUs busy on average during (e) "
            f"(max {max(others):.2f}) of {os.cpu_count()}"
        )
    lines += [
        "",
        "amplif. = raw bytes of differing chunks / raw bytes of changed 4 KiB blocks.",
        "(b) stored bytes of the incremental; (c) full backup repository (zero chunks free).",
        f"(f) = chunks x ({INDEX_ENTRY_BYTES} B index entry + {per_dict_entry:.0f} B dict entry "
        "with its 32-byte key, measured).",
        "(e) zero test + keyed BLAKE3 + zstd-1 + AES-256-GCM over base.img from page cache,",
        "    MB = 10^6 B, median of the runs. wall = MB/s by the clock (what a backup sees);",
        "    cpu = MB per CPU-second of this process (holds up when the host is busy);",
        "    'tuned' = glibc malloc thresholds raised (tune_malloc).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("outdir", type=Path, help="directory with base.img and changed.img")
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help="comma-separated chunk sizes")
    parser.add_argument("--threads", type=int, default=2, help="pool size for the parallel run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per throughput figure")
    parser.add_argument(
        "--malloc-tuned", action="store_true", help="also measure (e) with tune_malloc()"
    )
    parser.add_argument("--no-throughput", action="store_true", help="skip (e)")
    parser.add_argument("--json", type=Path, help="also write results here")
    args = parser.parse_args(argv)
    sizes = [parse_size(text) for text in args.sizes.split(",")]
    base, changed = args.outdir / "base.img", args.outdir / "changed.img"
    for path in (base, changed):
        if not path.is_file():
            parser.error(f"{path} missing: run bench/make_images.py {args.outdir} first")
    image_size = base.stat().st_size
    if changed.stat().st_size != image_size:
        parser.error("base.img and changed.img differ in size")

    started = time.monotonic()
    log(
        f"python {platform.python_version()}, blake3 {blake3.__version__}, "
        f"zstandard {zstandard.__version__}, {os.cpu_count()} CPUs"
    )
    log(f"warming page cache: {warm([base, changed]):.0f} MB/s")
    zstd_bytes, zstd_seconds = zstd_whole(base)
    log(f"zstd -1 whole image: {mib(zstd_bytes)} MiB in {zstd_seconds:.1f} s")

    storage = []
    for chunk_size in sizes:
        storage.append(measure_storage(base, changed, chunk_size))
        log(f"storage {size_label(chunk_size)}: {storage[-1].seconds:.1f} s")

    speeds: dict[int, dict[str, list[Speed]]] = {}
    if not args.no_throughput:
        warm([base])
        speeds = measure_speeds(base, sizes, args.threads, args.repeat, args.malloc_tuned)

    per_dict_entry = dict_entry_bytes()
    table = report(
        image_size,
        storage,
        speeds=speeds,
        zstd_bytes=zstd_bytes,
        zstd_seconds=zstd_seconds,
        per_dict_entry=per_dict_entry,
    )
    print(table)
    log(f"total {time.monotonic() - started:.0f} s")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "image_size": image_size,
                    "zstd_whole": {"bytes": zstd_bytes, "seconds": zstd_seconds},
                    "dict_entry_bytes": per_dict_entry,
                    "storage": [asdict(s) for s in storage],
                    "throughput": {
                        str(size): {
                            mode: [asdict(r) for r in runs] for mode, runs in by_mode.items()
                        }
                        for size, by_mode in speeds.items()
                    },
                    "argv": sys.argv,
                },
                indent=2,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
