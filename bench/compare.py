"""Compare surety with restic, borg and plain zstd on the same disk images, in one run.

Usage::

    python bench/compare.py [--workdir /tmp/surety-bench] [--size 4G] [--change 0.03]
                            [--tools surety,surety-64k,restic,borg,zstd] [--runs 1]

Builds (or reuses) ``base.img`` and ``changed.img`` with ``bench/make_images.py``,
then for each tool, in a fresh repository: full backup of base.img, second
backup of changed.img, full restore of the second backup, repository size and
peak RSS of every step (with ``--runs N``: each step's median of N runs, every run
printed, and the load average before and after). Page caches are dropped before each timed step when
the machine allows it (the report says whether it did). Prints a table and the
ratios surety/peer; ``--json FILE`` also writes the raw figures.

Everything is encrypted where the tool can: surety (AES-256-GCM), restic
(always), borg (``repokey-blake2``); ``zstd -1 -T2`` is the no-dedup,
no-crypto floor for compression speed. ``surety-64k`` is surety with a repository
made by ``surety init --chunk-size 64K`` (the default is 256 KiB): the chunk-size
trade-off of issue 16's goal 5 (smaller incrementals against more chunks to
handle) in the same run.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
PASSWORD = "bench-passphrase"


@dataclass
class Step:
    seconds: float
    max_rss_kib: int
    cpu_seconds: float = 0.0  # user + system, from wait4


@dataclass
class Result:
    tool: str
    steps: dict[str, Step] = field(default_factory=dict)
    repo_bytes: int = 0
    second_added_bytes: int = 0


def drop_caches() -> bool:
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True


def run(
    argv: list[str],
    env: dict[str, str],
    cwd: Path | None = None,
    stdin: Path | None = None,
    stdout: Path | None = None,
) -> Step:
    """Run a command, return wall time and the child's peak RSS (from wait4)."""
    fin = open(stdin, "rb") if stdin else subprocess.DEVNULL  # noqa: SIM115
    fout = open(stdout, "wb") if stdout else subprocess.DEVNULL  # noqa: SIM115
    try:
        start = time.perf_counter()
        proc = subprocess.Popen(
            argv, env=env, cwd=cwd, stdin=fin, stdout=fout, stderr=subprocess.PIPE
        )
        _pid, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        if proc.stderr:
            proc.stderr.close()
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        for handle in (fin, fout):
            if hasattr(handle, "close"):
                handle.close()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}):\n{stderr}")
    return Step(seconds, usage.ru_maxrss, usage.ru_utime + usage.ru_stime)


def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def timed(result: Result, name: str, argv: list[str], env: dict[str, str], **kw: Path) -> None:
    drop_caches()
    result.steps[name] = run(argv, env, **kw)
    print(f"  {result.tool:<7} {name:<8} {result.steps[name].seconds:7.2f} s", flush=True)


def bench_surety(work: Path, base: Path, changed: Path, chunk_size: str = "") -> Result:
    tool = f"surety-{chunk_size.lower()}" if chunk_size else "surety"
    result, repo, out = Result(tool), work / "surety-repo", work / "surety-out.img"
    env = {
        **os.environ,
        "SURETY_REPOSITORY": str(repo),
        "SURETY_PASSPHRASE": PASSWORD,
        # its index cache and catalog in the work dir: a bench leaves the host's alone
        "SURETY_CACHE_DIR": str(work / "surety-cache"),
        "SURETY_CATALOG": str(work / "surety-catalog.sqlite"),
    }
    surety = [sys.executable, "-m", "surety"]
    run([*surety, "init", *(["--chunk-size", chunk_size] if chunk_size else [])], env)
    timed(
        result, "full", [*surety, "backup", "image", str(base), "--name", "b", "--disk", "d"], env
    )
    size_after_full = dir_size(repo)
    timed(
        result,
        "second",
        [*surety, "backup", "image", str(changed), "--name", "b", "--disk", "d"],
        env,
    )
    result.repo_bytes = dir_size(repo)
    result.second_added_bytes = result.repo_bytes - size_after_full
    out.unlink(missing_ok=True)
    timed(result, "restore", [*surety, "restore", "image", "b@latest", "--to", str(out)], env)
    verify_same(changed, out)
    return result


def bench_restic(work: Path, base: Path, changed: Path) -> Result:
    result, repo, out = Result("restic"), work / "restic-repo", work / "restic-out"
    env = {**os.environ, "RESTIC_REPOSITORY": str(repo), "RESTIC_PASSWORD": PASSWORD}
    run(["restic", "init"], env)
    timed(
        result,
        "full",
        ["restic", "backup", "--stdin", "--stdin-filename", "disk.img"],
        env,
        stdin=base,
    )
    size_after_full = dir_size(repo)
    timed(
        result,
        "second",
        ["restic", "backup", "--stdin", "--stdin-filename", "disk.img"],
        env,
        stdin=changed,
    )
    result.repo_bytes = dir_size(repo)
    result.second_added_bytes = result.repo_bytes - size_after_full
    shutil.rmtree(out, ignore_errors=True)
    timed(result, "restore", ["restic", "restore", "latest", "--target", str(out)], env)
    verify_same(changed, out / "disk.img")
    return result


def bench_borg(work: Path, base: Path, changed: Path) -> Result:
    result, repo, out = Result("borg"), work / "borg-repo", work / "borg-out"
    env = {
        **os.environ,
        "BORG_REPO": str(repo),
        "BORG_PASSPHRASE": PASSWORD,
        "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes",
        "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes",
    }
    run(["borg", "init", "-e", "repokey-blake2"], env)
    create = ["borg", "create", "--compression", "zstd,1"]
    timed(result, "full", [*create, "::one", "base.img"], env, cwd=base.parent)
    size_after_full = dir_size(repo)
    timed(result, "second", [*create, "::two", "changed.img"], env, cwd=changed.parent)
    result.repo_bytes = dir_size(repo)
    result.second_added_bytes = result.repo_bytes - size_after_full
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    timed(result, "restore", ["borg", "extract", "--sparse", "::two"], env, cwd=out)
    verify_same(changed, out / "changed.img")
    return result


def bench_zstd(work: Path, base: Path, changed: Path) -> Result:
    result, packed, out = Result("zstd"), work / "zstd.zst", work / "zstd-out.img"
    env = dict(os.environ)
    timed(result, "full", ["zstd", "-1", "-T2", "-q", "-f", "-c", str(base)], env, stdout=packed)
    result.repo_bytes = packed.stat().st_size
    timed(
        result, "second", ["zstd", "-1", "-T2", "-q", "-f", "-c", str(changed)], env, stdout=packed
    )
    result.second_added_bytes = packed.stat().st_size
    timed(
        result,
        "restore",
        ["zstd", "-d", "-q", "-f", "--sparse", "-c", str(packed)],
        env,
        stdout=out,
    )
    verify_same(changed, out)
    return result


def verify_same(expected: Path, got: Path) -> None:
    if subprocess.run(["cmp", "-s", str(expected), str(got)], check=False).returncode != 0:
        raise SystemExit(f"restored {got} differs from {expected}")
    got.unlink()


def changed_bytes(base: Path, changed: Path) -> int:
    """Bytes in 4 KiB blocks that differ between the two images."""
    total, piece = 0, 1 << 20
    with open(base, "rb") as a, open(changed, "rb") as b:
        while True:
            x, y = a.read(piece), b.read(piece)
            if not x:
                return total
            if x != y:
                total += sum(
                    4096 for i in range(0, len(x), 4096) if x[i : i + 4096] != y[i : i + 4096]
                )


TOOLS: dict[str, Callable[[Path, Path, Path], Result]] = {
    "surety": bench_surety,
    "surety-64k": functools.partial(bench_surety, chunk_size="64K"),
    "restic": bench_restic,
    "borg": bench_borg,
    "zstd": bench_zstd,
}


def median_result(runs: list[Result]) -> Result:
    """One tool's runs as one: each step's median time, the largest RSS seen; the
    repository figures of the first run (the same input gives the same sizes)."""
    steps = {
        name: Step(
            statistics.median(r.steps[name].seconds for r in runs),
            max(r.steps[name].max_rss_kib for r in runs),
            statistics.median(r.steps[name].cpu_seconds for r in runs),
        )
        for name in runs[0].steps
    }
    if len(runs) > 1:
        for name, step in steps.items():
            each = ", ".join(f"{r.steps[name].seconds:.2f}" for r in runs)
            print(f"  {runs[0].tool:<7} {name:<8} runs: {each} s; median {step.seconds:.2f} s")
    first = runs[0]
    return Result(first.tool, steps, first.repo_bytes, first.second_added_bytes)


def report(results: list[Result], size: int, changed: int, cold: bool) -> dict[str, object]:
    mb = 1e6
    print(
        f"\nimage {size / 2**30:.2f} GiB, changed {changed / mb:.1f} MB "
        f"({changed / size:.2%}); page cache {'dropped' if cold else 'NOT dropped (warm)'}; "
        "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    )
    head = (
        f"{'tool':<11}{'full MB/s':>10}{'2nd s':>8}{'2nd added MB':>13}{'restore MB/s':>13}"
        f"{'repo MB':>9}{'peak RSS MiB':>13}{'full CPU s':>11}{'rest. CPU s':>12}"
    )
    print(head)
    rows: dict[str, dict[str, float]] = {}
    for r in results:
        row = {
            "full_mb_s": size / r.steps["full"].seconds / mb,
            "full_s": r.steps["full"].seconds,
            "second_s": r.steps["second"].seconds,
            "second_added_mb": r.second_added_bytes / mb,
            "restore_mb_s": size / r.steps["restore"].seconds / mb,
            "repo_mb": r.repo_bytes / mb,
            "peak_rss_mib": max(s.max_rss_kib for s in r.steps.values()) / 1024,
            "full_cpu_s": r.steps["full"].cpu_seconds,
            "restore_cpu_s": r.steps["restore"].cpu_seconds,
        }
        rows[r.tool] = row
        print(
            f"{r.tool:<11}{row['full_mb_s']:>10.0f}{row['second_s']:>8.2f}"
            f"{row['second_added_mb']:>13.1f}{row['restore_mb_s']:>13.0f}{row['repo_mb']:>9.0f}"
            f"{row['peak_rss_mib']:>13.0f}{row['full_cpu_s']:>11.2f}{row['restore_cpu_s']:>12.2f}"
        )
    print()
    for name, row in rows.items():
        if name.startswith("surety"):
            print(
                f"{name} second backup stored {row['second_added_mb'] * mb / changed:.2f}x "
                "the changed bytes (issue 16's goal 5: <= 1.2x)"
            )
    if "surety" in rows:
        s = rows["surety"]
        for peer, p in rows.items():
            if peer == "surety":
                continue
            print(
                f"surety/{peer}: full backup speed {s['full_mb_s'] / p['full_mb_s']:.2f}x, "
                f"full wall time {s['full_s'] / p['full_s']:.2f}x, "
                f"restore speed {s['restore_mb_s'] / p['restore_mb_s']:.2f}x, "
                f"repo size {s['repo_mb'] / p['repo_mb']:.3f}x, "
                f"peak RSS {s['peak_rss_mib'] / p['peak_rss_mib']:.2f}x"
            )
    return {"size": size, "changed": changed, "cold_cache": cold, "tools": rows}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/surety-bench"))
    parser.add_argument("--size", default="4G")
    parser.add_argument("--change", default="0.03")
    parser.add_argument("--tools", default="surety,surety-64k,restic,borg,zstd")
    parser.add_argument("--runs", type=int, default=1, help="median of this many runs")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    images = args.workdir
    subprocess.run(
        [
            sys.executable,
            str(HERE / "make_images.py"),
            str(images),
            "--size",
            args.size,
            "--change",
            args.change,
        ],
        check=True,
    )
    base, changed = images / "base.img", images / "changed.img"
    tools = args.tools.split(",")
    unknown = [t for t in tools if t not in TOOLS]
    if unknown:
        parser.error(f"unknown tool(s) {', '.join(unknown)} (choose from {', '.join(TOOLS)})")
    missing = [t for t in tools if not t.startswith("surety") and not shutil.which(t)]
    if missing:
        raise SystemExit(
            f"missing tools: {', '.join(missing)} (apt install restic borgbackup zstd)"
        )
    results = []
    for tool in tools:
        runs = []
        for _ in range(args.runs):
            work = args.workdir / "runs" / tool
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            runs.append(TOOLS[tool](work, base, changed))
            shutil.rmtree(work, ignore_errors=True)
        results.append(median_result(runs))
    figures = report(results, base.stat().st_size, changed_bytes(base, changed), drop_caches())
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
