"""surety against peers on one real S3 server (Ceph radosgw on loopback), in one run.

Usage::

    python bench/s3.py [--workdir /tmp/surety-s3-bench] [--size 1G] [--change 0.03]
                       [--tools surety,raw,zstd,restic] [--s3-env FILE] [--json FILE]
                       [--runs N]

``--size 4G`` is the issue's input (tens of minutes on a shared 2-core machine);
the default 1G takes a few minutes. Builds (or reuses) ``base.img`` and
``changed.img`` with ``bench/make_images.py``, then, for each tool in its own
fresh bucket of ONE radosgw: a full backup of base.img, a second backup of
changed.img; then the full restores of the second (``cmp`` byte-exact), in
rounds: ``--runs N`` makes N rounds, each restoring once with every tool in
turn (page caches dropped before each), so what drifts on the shared machine
(the server's state, other load) falls on every tool alike. The table shows
the median restore; every run is printed and kept in the JSON.

A restore is timed until the restored image is **on disk**: the tool's run, then
an ``fsync`` of the file it wrote. surety fsyncs before it exits (its flush finds
nothing left); restic 0.14, boto3 and ``zstd -d`` exit with the end of the image
still in the page cache. The time until each tool exited is printed beside
(``exit_seconds`` in the JSON), with its own surety/peer ratio.

The tools:

``surety``
    ``surety init s3://BUCKET/repo``, ``backup image``, ``restore image``.
``raw``
    boto3 ``upload_file``/``download_file`` of the plain image with a
    ``TransferConfig`` of surety's part size and multipart threshold (boto3's
    default of 10 parallel parts): the network + server floor, no
    compression, dedup or crypto. Its "second" uploads changed.img whole.
``zstd``
    ``zstd -1 -T2 | `` a multipart upload of the stream (and a download ``| zstd -d``):
    the compressed-upload floor.
``restic``
    restic's S3 backend on the same server: ``backup --stdin``, ``restore``.

The server is ``scripts/s3-up WORKDIR/s3``, started here and always stopped at
the end (its data removed unless ``--keep-s3``), or a running one given by
``--s3-env FILE`` (the ``env`` file ``s3-up`` writes; its buckets are emptied and
removed at the end).

**Requests** are counted on the server: radosgw logs every request (its beast
access line, debug level 1) in ``DIR/log/client.rgw.s3up.log``. Each step is
bracketed by two marker requests (a HEAD of a unique missing key); the lines
between them whose path names the step's bucket are the step's requests. With
an ``--s3-env`` file outside an ``s3-up`` directory there is no log: requests
are then not counted. **Server CPU** is the user+system time radosgw and the
OSD spent in the step (from ``/proc``). Peak RSS is the client's (``wait4``; the
largest process of a pipeline), **client CPU** its processes' user+system
time. Page caches are dropped before each timed step when the machine allows
it (root), as in ``bench/compare.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PASSWORD = "bench-passphrase"
STEPS = ("full", "second", "restore")
TOOLS = ("surety", "raw", "zstd", "restic")
MIB, GIB = 1 << 20, 1 << 30
# surety's S3 transfer sizes (src/surety/repo/storage/s3.py: PART_SIZE, MULTIPART_THRESHOLD)
PART_SIZE = 16 * MIB
MULTIPART_THRESHOLD = 32 * MIB
RGW_LOG = "log/client.rgw.s3up.log"
MARK = ".bench-mark-"
ACCESS_LINE = re.compile(
    r'"(?P<method>[A-Z]+) /(?P<bucket>[^/?\s"]+)(?P<rest>[^"]*)" (?P<status>\d{3})'
)


# ---------------------------------------------------------------- pure parts


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/surety-s3-bench"))
    parser.add_argument("--size", default="1G", help="image size (the issue's figure: 4G)")
    parser.add_argument("--change", default="0.03")
    parser.add_argument("--tools", default=",".join(TOOLS), type=parse_tools)
    parser.add_argument("--s3-env", type=Path, help="use this running server (s3-up's env file)")
    parser.add_argument("--keep-s3", action="store_true", help="keep the started server's data")
    parser.add_argument("--warm", action="store_true", help="do not drop page caches")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--runs", type=int, default=1, help="restores per tool (the median)")
    return parser.parse_args(argv)


def parse_tools(text: str) -> list[str]:
    tools = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in tools if t not in TOOLS]
    if unknown or not tools:
        raise argparse.ArgumentTypeError(
            f"unknown tools: {', '.join(unknown) or '(none)'} (known: {', '.join(TOOLS)})"
        )
    return tools


def parse_exports(text: str) -> dict[str, str]:
    """``export NAME=VALUE`` lines (what ``scripts/s3-up`` prints) as a mapping."""
    found = {}
    for line in text.splitlines():
        match = re.fullmatch(r"\s*(?:export\s+)?([A-Z_][A-Z0-9_]*)=(.*?)\s*", line)
        if match:
            found[match[1]] = match[2].strip("'\"")
    return found


def count_requests(log_text: str, bucket: str) -> Counter[str]:
    """Requests per HTTP method in radosgw access lines that name ``bucket`` (path style).

    Marker requests (keys starting with ``MARK``) are not counted.
    """
    counts: Counter[str] = Counter()
    for match in ACCESS_LINE.finditer(log_text):
        if match["bucket"] == bucket and MARK not in match["rest"]:
            counts[match["method"]] += 1
    return counts


def step_figures(
    size: int,
    seconds: float,
    rss_kib: int,
    requests: int | None,
    server_cpu: float | None,
    *,
    client_cpu: float | None = None,
    exit_seconds: float | None = None,
) -> dict[str, float | None]:
    """``seconds`` is the step's time to its result on disk; ``exit_seconds`` (restores)
    the time until the tool's processes exited, before the flush of what they left in
    the page cache."""
    return {
        "seconds": seconds,
        "exit_seconds": exit_seconds,
        "mib_s": size / MIB / seconds,
        "requests": requests,
        "requests_per_gib": None if requests is None else requests / (size / GIB),
        "peak_rss_mib": rss_kib / 1024,
        "client_cpu_s": client_cpu,
        "server_cpu_s": server_cpu,
    }


def median_step(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median wall time (the lower middle of an even count)."""
    ordered = sorted(runs, key=lambda r: r["seconds"])
    return dict(ordered[(len(ordered) - 1) // 2])


def _cell(value: float | None, digits: int = 0) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def format_report(figures: Mapping[str, Any]) -> str:
    """The table and the ratios, from the figures ``--json`` writes."""
    size, tools = figures["size"], figures["tools"]
    lines = [
        f"input {size / GIB:.2f} GiB, changed {figures['changed'] / MIB:.1f} MiB; "
        f"part size {figures['part_size'] / MIB:.0f} MiB; page cache "
        f"{'dropped' if figures['cold_cache'] else 'NOT dropped (warm)'}; "
        f"load average {figures['load_before']} before, {figures['load_after']} after",
        "",
        f"{'tool':<8}{'step':<9}{'s':>8}{'MiB/s':>8}{'req/GiB':>9}{'srv CPU s':>10}"
        f"{'cli CPU s':>10}{'RSS MiB':>9}{'stored MiB':>11}",
    ]
    for tool, result in tools.items():
        stored = {"full": result.get("stored_full_mib"), "second": result.get("added_second_mib")}
        for step in STEPS:
            s = result["steps"].get(step)
            if s is None:
                continue
            lines.append(
                f"{tool:<8}{step:<9}{s['seconds']:>8.2f}{s['mib_s']:>8.0f}"
                f"{_cell(s['requests_per_gib'], 1):>9}{_cell(s['server_cpu_s'], 1):>10}"
                f"{_cell(s.get('client_cpu_s'), 1):>10}"
                f"{s['peak_rss_mib']:>9.0f}{_cell(stored.get(step), 1):>11}"
            )
    lines += ["", *run_lines(tools), *ratio_lines(tools)]
    return "\n".join(lines)


def run_lines(tools: Mapping[str, Any]) -> list[str]:
    """Every run of a step run more than once (``--runs``), its median in the table."""
    lines = []
    for tool, result in tools.items():
        for step, figures in result["steps"].items():
            runs = figures.get("runs", [])
            if len(runs) > 1:
                times = ", ".join(f"{r['seconds']:.2f}" for r in runs)
                lines.append(f"{tool} {step} runs: {times} s (median {figures['seconds']:.2f})")
            exited = _exit_median(figures)
            if exited is not None:
                times = ", ".join(f"{r['exit_seconds']:.2f}" for r in runs or [figures])
                lines.append(f"{tool} {step} until it exited: {times} s (median {exited:.2f})")
    return lines


def _exit_median(step: Mapping[str, Any] | None) -> float | None:
    """The median time to exit over a step's runs, None when not recorded."""
    if step is None:
        return None
    exits = [r.get("exit_seconds") for r in step.get("runs", [step])]
    if not exits or None in exits:
        return None
    ordered = sorted(exits)
    return float(ordered[(len(ordered) - 1) // 2])


def ratio_lines(tools: Mapping[str, Any]) -> list[str]:
    """surety/peer speed per step (>1: surety faster), and the issue's goals."""
    if "surety" not in tools:
        return []
    ours = tools["surety"]["steps"]
    lines = []
    for peer in (t for t in tools if t != "surety"):
        theirs = tools[peer]["steps"]
        parts = [
            f"{step} {ours[step]['mib_s'] / theirs[step]['mib_s']:.2f}x"
            for step in STEPS
            if step in ours and step in theirs
        ]
        lines.append(f"surety/{peer} speed: " + ", ".join(parts))
        mine, its = _exit_median(ours.get("restore")), _exit_median(theirs.get("restore"))
        if mine and its:
            lines.append(
                f"surety/{peer} restore until each tool exited (its data not flushed "
                f"unless it syncs): {its / mine:.2f}x"
            )
    goals = [("raw", "full", 0.8, "backup >= 0.8x the raw upload"), ("restic", "restore", 1.5,
             "restore >= 1.5x restic")]  # fmt: skip
    for peer, step, goal, text in goals:
        if peer in tools and step in ours and step in tools[peer]["steps"]:
            ratio = ours[step]["mib_s"] / tools[peer]["steps"][step]["mib_s"]
            verdict = "met" if ratio >= goal else "NOT met"
            lines.append(f"goal {text}: {ratio:.2f}x, {verdict}")
    return lines


# ---------------------------------------------------------------- the server


@dataclass
class Server:
    """The radosgw of this run: its env (endpoint, keys) and, when known, its directory."""

    env: dict[str, str]
    directory: Path | None
    started: bool

    @property
    def log(self) -> Path | None:
        if self.directory is None or not (self.directory / RGW_LOG).is_file():
            return None
        return self.directory / RGW_LOG

    def cpu_seconds(self) -> float | None:
        """User+system seconds radosgw and the OSD have used so far."""
        if self.directory is None:
            return None
        total, tick = 0.0, os.sysconf("SC_CLK_TCK")
        for name in ("client.rgw.s3up", "osd.0"):
            try:
                pid = (self.directory / "run" / f"{name}.pid").read_text().strip()
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                return None
            total += (int(fields[11]) + int(fields[12])) / tick
        return total


@contextmanager
def s3_server(work: Path, given: Path | None, keep: bool) -> Iterator[Server]:
    if given is not None:
        yield Server(parse_exports(given.read_text()), given.resolve().parent, started=False)
        return
    directory = work / "s3"
    try:
        up = subprocess.run(
            [str(ROOT / "scripts/s3-up"), str(directory)],
            check=True,
            capture_output=True,
            text=True,
        )
        yield Server(parse_exports(up.stdout), directory, started=True)
    finally:
        subprocess.run([str(ROOT / "scripts/s3-down"), str(directory)], check=False)
        if not keep:
            shutil.rmtree(directory, ignore_errors=True)


def client(env: Mapping[str, str]) -> Any:
    # boto3 1.26 ignores AWS_ENDPOINT_URL: give it explicitly.
    return boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env.get("AWS_DEFAULT_REGION", "default"),
        config=Config(s3={"addressing_style": "path"}, max_pool_connections=32),
    )


class RequestLog:
    """Requests of one bucket between two markers in radosgw's log."""

    def __init__(self, server: Server, s3: Any, bucket: str) -> None:
        self.path, self.s3, self.bucket = server.log, s3, bucket

    def mark(self) -> int | None:
        """Send a marker request; the log offset just past its line (None: no log)."""
        if self.path is None:
            return None
        token = f"{MARK}{uuid.uuid4().hex}"
        start = max(0, self.path.stat().st_size - 4096)
        with suppress(ClientError):  # a 404 is the point
            self.s3.head_object(Bucket=self.bucket, Key=token)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with open(self.path, "rb") as handle:
                handle.seek(start)
                text = handle.read()
            where = text.find(token.encode())
            if where >= 0:
                end = text.find(b"\n", where)
                return start + (len(text) if end < 0 else end + 1)
            time.sleep(0.2)
        raise SystemExit(f"radosgw never logged the marker request ({self.path})")

    def between(self, start: int | None, end: int | None) -> Counter[str] | None:
        if self.path is None or start is None or end is None:
            return None
        with open(self.path, "rb") as handle:
            handle.seek(start)
            text = handle.read(end - start).decode(errors="replace")
        return count_requests(text, self.bucket)


# ---------------------------------------------------------------- running tools


@dataclass
class Result:
    tool: str
    bucket: str
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)
    stored_full_mib: float | None = None
    added_second_mib: float | None = None


def drop_caches(allowed: bool) -> bool:
    if not allowed:
        return False
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True


def flush(path: Path) -> float:
    """Seconds an fsync of ``path`` takes: what the page cache still held of it."""
    start = time.perf_counter()
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.perf_counter() - start


def run(
    commands: list[list[str]],
    env: Mapping[str, str],
    log: Path,
    stdin: Path | None = None,
    stdout: Path | None = None,
) -> tuple[float, int, float]:
    """Run a pipeline; wall seconds, the largest peak RSS (KiB) of its processes and their
    CPU seconds (user + system, summed)."""
    procs: list[subprocess.Popen[bytes]] = []
    with open(log, "ab") as err:
        fin = open(stdin, "rb") if stdin else subprocess.DEVNULL  # noqa: SIM115
        fout = open(stdout, "wb") if stdout else subprocess.DEVNULL  # noqa: SIM115
        start = time.perf_counter()
        try:
            source: Any = fin
            for number, argv in enumerate(commands):
                last = number == len(commands) - 1
                proc = subprocess.Popen(
                    argv,
                    env=dict(env),
                    stdin=source,
                    stdout=fout if last else subprocess.PIPE,
                    stderr=err,
                )
                source = proc.stdout
                procs.append(proc)
            for proc in procs[:-1]:
                assert proc.stdout is not None
                proc.stdout.close()  # the next process holds its own copy
            rss, cpu, failed = 0, 0.0, []
            for proc in procs:
                _pid, status, usage = os.wait4(proc.pid, 0)
                proc.returncode = os.waitstatus_to_exitcode(status)
                rss = max(rss, usage.ru_maxrss)
                cpu += usage.ru_utime + usage.ru_stime
                if proc.returncode != 0:
                    failed.append(f"{' '.join(proc.args)} -> exit {proc.returncode}")
            seconds = time.perf_counter() - start
        finally:
            for handle in (fin, fout):
                if hasattr(handle, "close"):
                    handle.close()
    if failed:
        raise SystemExit("; ".join(failed) + f" (stderr in {log})")
    return seconds, rss, cpu


class Bench:
    """One run: the server, the input, the figures of every tool."""

    def __init__(
        self, server: Server, work: Path, base: Path, changed: Path, *, cold: bool
    ) -> None:
        self.server, self.work, self.base, self.changed = server, work, base, changed
        self.cold = cold
        self.s3 = client(server.env)
        self.env = {**os.environ, **server.env, "AWS_EC2_METADATA_DISABLED": "true"}
        self.buckets: list[str] = []

    def bucket(self, tool: str) -> str:
        name = f"bench-{tool}-{secrets.token_hex(4)}"
        self.s3.create_bucket(Bucket=name)
        self.buckets.append(name)
        return name

    def stored_mib(self, bucket: str) -> float:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return sum(o["Size"] for page in pages for o in page.get("Contents", [])) / MIB

    def timed(
        self,
        result: Result,
        step: str,
        commands: list[list[str]],
        durable: Path | None = None,
        **kw: Any,
    ) -> None:
        """Run one step. With ``durable`` (a restored file) the step ends when that file is
        on disk: the tools that do not fsync what they wrote are timed to their exit plus
        an fsync of the file (surety fsyncs before it exits, so its flush finds little)."""
        requests = RequestLog(self.server, self.s3, result.bucket)
        drop_caches(self.cold)
        before, cpu = requests.mark(), self.server.cpu_seconds()
        seconds, rss, ours = run(commands, kw.pop("env", self.env), self.work / "stderr.log", **kw)
        exited = None
        if durable is not None:
            exited, seconds = seconds, seconds + flush(durable)
        after, cpu_after = requests.mark(), self.server.cpu_seconds()
        counted = requests.between(before, after)
        server_cpu = None if cpu is None or cpu_after is None else cpu_after - cpu
        size = self.base.stat().st_size
        total = None if counted is None else sum(counted.values())
        figures = {
            **step_figures(
                size, seconds, rss, total, server_cpu, client_cpu=ours, exit_seconds=exited
            ),
            "by_method": dict(counted or {}),
        }
        runs = result.steps.get(step, {}).get("runs", [])
        runs.append(figures)
        result.steps[step] = {**median_step(runs), "runs": runs}
        print(
            f"  {result.tool:<7} {step:<8} {seconds:7.2f} s"
            + ("" if exited is None else f" ({exited:.2f} s to exit)")
            + ("" if total is None else f", {total} requests"),
            flush=True,
        )

    def after_backups(self, result: Result, full_mib: float) -> None:
        result.stored_full_mib = full_mib
        result.added_second_mib = self.stored_mib(result.bucket) - full_mib

    def restorer(
        self, result: Result, commands: list[list[str]], restored: Path, **kw: Any
    ) -> Callable[[], None]:
        """One timed restore of the changed image by ``commands``, checked byte-exact."""

        def restore_once() -> None:
            self.timed(result, "restore", commands, durable=restored, **kw)
            verify_same(self.changed, restored)

        return restore_once

    def transfer(self, *args: str) -> list[str]:
        return [sys.executable, str(Path(__file__).resolve()), "_transfer", *args]

    def surety(self) -> tuple[Result, Callable[[], None]]:
        result = Result("surety", self.bucket("surety"))
        env = {
            **self.env,
            "SURETY_REPOSITORY": f"s3://{result.bucket}/repo",
            "SURETY_PASSPHRASE": PASSWORD,
            "SURETY_CACHE_DIR": str(self.work / "surety-cache"),
            "SURETY_CATALOG": str(self.work / "surety-catalog.sqlite"),
        }
        surety = [sys.executable, "-m", "surety"]
        run([[*surety, "init"]], env, self.work / "stderr.log")
        backup = [*surety, "backup", "image"]
        self.timed(
            result, "full", [[*backup, str(self.base), "--name", "b", "--disk", "d"]], env=env
        )
        full = self.stored_mib(result.bucket)
        second = [*backup, str(self.changed), "--name", "b", "--disk", "d"]
        self.timed(result, "second", [second], env=env)
        self.after_backups(result, full)
        out = self.work / "surety-out.img"
        restore = [*surety, "restore", "image", "b@latest", "--to", str(out)]
        return result, self.restorer(result, [restore], out, env=env)

    def raw(self) -> tuple[Result, Callable[[], None]]:
        result = Result("raw", self.bucket("raw"))
        self.timed(result, "full", [self.transfer("put", result.bucket, "base", str(self.base))])
        full = self.stored_mib(result.bucket)
        put = self.transfer("put", result.bucket, "changed", str(self.changed))
        self.timed(result, "second", [put])
        self.after_backups(result, full)
        out = self.work / "raw-out.img"
        get = self.transfer("get", result.bucket, "changed", str(out))
        return result, self.restorer(result, [get], out)

    def zstd(self) -> tuple[Result, Callable[[], None]]:
        result = Result("zstd", self.bucket("zstd"))
        pack = ["zstd", "-1", "-T2", "-q", "-c"]
        put = self.transfer("put", result.bucket, "base.zst", "-")
        self.timed(result, "full", [pack, put], stdin=self.base)
        full = self.stored_mib(result.bucket)
        put = self.transfer("put", result.bucket, "changed.zst", "-")
        self.timed(result, "second", [pack, put], stdin=self.changed)
        self.after_backups(result, full)
        out = self.work / "zstd-out.img"
        get = self.transfer("get", result.bucket, "changed.zst", "-")
        unpack = ["zstd", "-d", "-q", "-f", "--sparse", "-o", str(out)]
        return result, self.restorer(result, [get, unpack], out)

    def restic(self) -> tuple[Result, Callable[[], None]]:
        result = Result("restic", self.bucket("restic"))
        endpoint = self.server.env["AWS_ENDPOINT_URL"].rstrip("/")
        env = {
            **self.env,
            "RESTIC_REPOSITORY": f"s3:{endpoint}/{result.bucket}",
            "RESTIC_PASSWORD": PASSWORD,
            "RESTIC_CACHE_DIR": str(self.work / "restic-cache"),
        }
        run([["restic", "init"]], env, self.work / "stderr.log")
        backup = ["restic", "backup", "--stdin", "--stdin-filename", "disk.img"]
        self.timed(result, "full", [backup], env=env, stdin=self.base)
        full = self.stored_mib(result.bucket)
        self.timed(result, "second", [backup], env=env, stdin=self.changed)
        self.after_backups(result, full)
        out = self.work / "restic-out"
        restore = ["restic", "restore", "latest", "--target", str(out)]
        return result, self.restorer(result, [restore], out / "disk.img", env=env)

    def remove_buckets(self) -> None:
        """Empty and remove this run's buckets (on a server that is not ours)."""
        for bucket in self.buckets:
            try:
                pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
                for page in pages:
                    keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                    if keys:
                        self.s3.delete_objects(Bucket=bucket, Delete={"Objects": keys})
                self.s3.delete_bucket(Bucket=bucket)
            except Exception as exc:  # noqa: BLE001 - best effort, say so
                print(f"could not remove bucket {bucket}: {exc}", file=sys.stderr)


def verify_same(expected: Path, got: Path) -> None:
    if subprocess.run(["cmp", "-s", str(expected), str(got)], check=False).returncode != 0:
        raise SystemExit(f"restored {got} differs from {expected}")
    if got.is_dir():
        shutil.rmtree(got)
    else:
        got.unlink()


def changed_bytes(base: Path, changed: Path) -> int:
    """Bytes in 4 KiB blocks that differ between the two images."""
    total, piece = 0, 1 << 20
    with open(base, "rb") as a, open(changed, "rb") as b:
        while x := a.read(piece):
            y = b.read(piece)
            if x != y:
                total += sum(
                    4096 for i in range(0, len(x), 4096) if x[i : i + 4096] != y[i : i + 4096]
                )
    return total


# ---------------------------------------------------------------- multipart helper


def transfer_main(argv: list[str]) -> int:
    """``_transfer put|get BUCKET KEY PATH|-``: boto3's managed multipart transfer."""
    verb, bucket, key, path = argv
    config = TransferConfig(multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=PART_SIZE)
    s3 = client(os.environ)
    if verb == "put" and path == "-":
        s3.upload_fileobj(sys.stdin.buffer, bucket, key, Config=config)
    elif verb == "put":
        s3.upload_file(path, bucket, key, Config=config)
    elif path == "-":
        s3.download_fileobj(bucket, key, sys.stdout.buffer, Config=config)
    else:
        s3.download_file(bucket, key, path, Config=config)
    return 0


# ---------------------------------------------------------------- main


def build_images(args: argparse.Namespace) -> tuple[Path, Path]:
    images = args.workdir / "images"
    subprocess.run(
        [sys.executable, str(HERE / "make_images.py"), str(images), "--size", args.size,
         "--change", args.change],
        check=True,
    )  # fmt: skip
    return images / "base.img", images / "changed.img"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_transfer"]:
        return transfer_main(argv[1:])
    args = parse_args(argv)
    missing = [t for t in ("restic", "zstd") if t in args.tools and not shutil.which(t)]
    if missing:
        raise SystemExit(f"missing tools: {', '.join(missing)} (apt install restic zstd)")
    base, changed = build_images(args)
    work = args.workdir / "runs"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    load_before = "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    results = []
    with s3_server(args.workdir, args.s3_env, args.keep_s3) as server:
        bench = Bench(server, work, base, changed, cold=not args.warm)
        try:
            restores = []
            for tool in args.tools:  # every tool's two backups first
                result, restore_once = getattr(bench, tool)()
                results.append(result)
                restores.append(restore_once)
            for _ in range(args.runs):  # then the restores in rounds, one per tool each
                for restore_once in restores:
                    restore_once()
        finally:
            if not server.started:
                bench.remove_buckets()
    figures = {
        "size": base.stat().st_size,
        "changed": changed_bytes(base, changed),
        "part_size": PART_SIZE,
        "cold_cache": drop_caches(not args.warm),
        "server": "started by the bench" if args.s3_env is None else str(args.s3_env),
        "load_before": load_before,
        "load_after": "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg()),
        "tools": {
            r.tool: {
                "steps": r.steps,
                "stored_full_mib": r.stored_full_mib,
                "added_second_mib": r.added_second_mib,
            }
            for r in results
        },
    }
    print("\n" + format_report(figures))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
