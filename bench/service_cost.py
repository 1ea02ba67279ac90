"""A small run's fixed cost inside the service, with and without its spare worker (issue 16, 5b).

Usage (``--guest`` needs root, libvirt and the test guest as for ``make test-vm``)::

    PYTHONPATH=. .venv/bin/python bench/service_cost.py [--runs 5] [--guest]
        [--consistency crash] [--workdir /tmp/surety-service-cost] [--json FILE]

The job, the same in every variant:

* without ``--guest``: the policy's ``check`` job (structure only) on a small
  repository (one 8 MiB image backed up into it), the host being libvirt's test
  driver: every fixed cost but the libvirt backup job;
* with ``--guest``: a fresh test VM (``surety-cost``, no application, started
  and torn down here) on ``qemu:///system``; one full backup first (not
  counted), then incremental backups of the idle guest: a small incremental.

Variants: the CLI (``surety check`` / ``surety backup vm``, a process per run,
wall time), then the real service (``surety service``) with its spare worker
off (``SURETY_WORKER_SPARE=0``: a worker process per run, as before) and on.
For a service run the bench waits for the spare to be ready (as the service
would have it between two runs), asks the service for the run
(``request_run``), and reads the worker's timings line from the service's log
(``run N timings (s): ...``, docs/service.md): ``order`` (the worker's start
and imports; ~0 for a spare), configuration and catalog, repository (the
passphrase key included), the job's set-up before its first phase and its
phases. Those are summed into: start+imports, config+catalog, repository+key,
job set-up (libvirt connection, lock, plan, quiesce and the libvirt backup job
for a backup; the lock and listing for a check), data (``backup DISK``, ``check
...``) and commit. The fixed cost is everything but data and commit; the goal
is a median of at most 0.3 s inside the service. Figures are medians of
``--runs`` runs; the page cache is not dropped (a fixed cost is paid warm).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from bench.common import PASSWORD, init_repository, surety_env

GOAL = 0.3  # seconds: a small run's fixed cost inside the service
GUEST = "surety-cost"
CATEGORIES = ("start+imports", "config+catalog", "repository+key", "job set-up", "data", "commit")
FIXED = CATEGORIES[:4]
TIMINGS = re.compile(r"run (\d+) timings \(s\): (.*)$")

CONFIG = """\
[service]
libvirt_uri = "{uri}"
catalog = "{catalog}"
max_jobs = 1

[repository.main]
location = "{repo}"
passphrase_file = "{passphrase}"

[policy.cost]
repository = "main"
vms = ["{vm}"]
schedule = "yearly"
consistency = "{consistency}"
retries = 1

[policy.cost.check]
schedule = "yearly"
"""


def categorise(steps: list[tuple[str, float]]) -> dict[str, float]:
    """A timings line's steps summed into ``CATEGORIES``."""
    sums = dict.fromkeys(CATEGORIES, 0.0)
    named = {"order": "start+imports", "configuration and catalog": "config+catalog"}
    named["repository"] = "repository+key"
    for name, seconds in steps:
        if name == "total":
            continue
        if name in named:
            sums[named[name]] += seconds
        elif name.startswith(("phase backup ", "phase check ")):
            sums["data"] += seconds
        elif name == "phase commit":
            sums["commit"] += seconds
        else:  # before the first phase; discover, prepare, freeze, snapshot
            sums["job set-up"] += seconds
    return sums


def parse_timings(line: str) -> tuple[int, list[tuple[str, float]]] | None:
    found = TIMINGS.search(line)
    if found is None:
        return None
    steps = []
    for part in found.group(2).split("; "):
        name, _, seconds = part.rpartition(" ")
        steps.append((name, float(seconds)))
    return int(found.group(1)), steps


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 300.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.02)
    raise SystemExit(f"timed out waiting for {what}")


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


def spare_ready(service: int, ran: set[int]) -> bool:
    """The service has a spare waiting for its order: a worker that ran nothing yet
    (not in ``ran``) whose stdout points at /dev/null (it said ready)."""
    for pid in children(service):
        with contextlib.suppress(OSError):
            if pid not in ran and os.readlink(f"/proc/{pid}/fd/1") == "/dev/null":
                return True
    return False


class Bench:
    def __init__(self, work: Path, guest: bool, consistency: str) -> None:
        self.work = work
        self.repo = work / "repo"
        self.vm = GUEST if guest else "test"
        self.guest = guest
        self.job = "cost:backup" if guest else "cost:check"
        self.env = surety_env(self.repo, SURETY_CATALOG=str(work / "catalog.sqlite"))
        self.consistency = consistency
        self.config = work / "surety.toml"
        (work / "passphrase").write_text(PASSWORD + "\n")
        self.config.write_text(
            CONFIG.format(
                uri="qemu:///system" if guest else "test:///default",
                catalog=work / "catalog.sqlite",
                repo=self.repo,
                passphrase=work / "passphrase",
                vm=self.vm,
                consistency=consistency,
            )
        )

    def cli_argv(self) -> list[str]:
        if self.guest:
            return ["backup", "vm", self.vm, "--consistency", self.consistency]
        return ["check"]

    def cli(self, runs: int) -> list[float]:
        walls = []
        for _ in range(runs):
            started = time.monotonic()
            proc = subprocess.run(
                [sys.executable, "-m", "surety", *self.cli_argv()],
                env=self.env,
                capture_output=True,
                text=True,
                check=False,
            )
            walls.append(time.monotonic() - started)
            if proc.returncode != 0:
                raise SystemExit(f"surety {' '.join(self.cli_argv())}: {proc.stderr}")
        return walls

    @contextlib.contextmanager
    def service(self, spare: bool, log: Path) -> Iterator[subprocess.Popen[str]]:
        env = {**self.env, "SURETY_WORKER_SPARE": "1" if spare else "0"}
        argv = ["service", "--config", str(self.config), "--tick", "0.1"]
        with log.open("w") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "surety", *argv],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=out,
                text=True,
            )
        try:
            wait_for("the service's start", lambda: "started on" in log.read_text(), 60)
            yield proc
        finally:
            proc.terminate()
            proc.wait(timeout=120)

    def service_runs(self, spare: bool, runs: int) -> list[list[tuple[str, float]]]:
        from surety.catalog import Catalog  # noqa: PLC0415 - after the bench's environment

        log = self.work / f"service-{'spare' if spare else 'fresh'}.log"
        catalog = Catalog(self.work / "catalog.sqlite")
        timings: list[list[tuple[str, float]]] = []
        with self.service(spare, log) as proc:
            for _ in range(runs):
                if spare:
                    self._wait_spare(catalog, proc.pid)
                time.sleep(1.0)  # the same pause between runs (a spare's guardian settles)
                timings.append(self._one(catalog, log))
        failed = [r for r in catalog.runs() if r.state not in ("succeeded", "warning")]
        if failed:
            raise SystemExit(f"runs failed: {[(r.id, r.state, r.result) for r in failed]}")
        return timings

    @staticmethod
    def _wait_spare(catalog: Any, service: int) -> None:
        ran = {r.pid for r in catalog.runs() if r.pid is not None}
        wait_for("a ready spare", lambda: spare_ready(service, ran), 120)

    def _one(self, catalog: Any, log: Path) -> list[tuple[str, float]]:
        """Ask the service for one run; its timings once its worker logged them."""
        seen = len(self._lines(log))
        catalog.request_run(self.job, vm=self.vm if self.guest else None)
        lines = wait_for("the run's timings", lambda: self._lines(log)[seen:], 600)
        return list(lines[0][1])

    @staticmethod
    def _lines(log: Path) -> list[tuple[int, list[tuple[str, float]]]]:
        parsed = (parse_timings(line) for line in log.read_text().splitlines())
        return [found for found in parsed if found is not None]


def imports(runs: int) -> list[float]:
    """Wall seconds of a fresh interpreter importing the worker (what a spare saves)."""
    walls = []
    for _ in range(runs):
        started = time.monotonic()
        subprocess.run([sys.executable, "-c", "import surety.service.worker"], check=True)
        walls.append(time.monotonic() - started)
    return walls


def medians(rows: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(row[key] for row in rows) for key in rows[0]}


def report(figures: Mapping[str, Any]) -> str:
    lines = [f"job: {figures['job']} ({figures['runs']} runs each, medians, seconds)"]
    lines.append(f"fresh interpreter + `import surety.service.worker`: {figures['imports']:.3f}")
    lines.append(f"CLI `surety {figures['cli_argv']}`: wall {figures['cli']:.3f} (whole run)")
    head = f"{'variant':<20}" + "".join(f"{c:>16}" for c in CATEGORIES) + f"{'fixed':>9}"
    lines.append(head)
    for variant in ("service, no spare", "service, spare"):
        row = figures[variant]
        cells = "".join(f"{row[c]:>16.3f}" for c in CATEGORIES)
        lines.append(f"{variant:<20}{cells}{row['fixed']:>9.3f}")
    lines.append(
        "job set-up, service with spare: " + set_up_detail(figures["service, spare (steps)"])
    )
    fixed = figures["service, spare"]["fixed"]
    before = figures["service, no spare"]["fixed"]
    met = "met" if fixed <= GOAL else "NOT met"
    lines.append(
        f"goal 5b: fixed cost inside the service {fixed:.3f} s with the spare "
        f"({before:.3f} s without) <= {GOAL} s: {met}"
    )
    return "\n".join(lines)


def setup(bench: Bench) -> None:
    init_repository(bench.env)
    if bench.guest:  # the full backup first: the runs measured are incrementals
        subprocess.run(
            [sys.executable, "-m", "surety", *bench.cli_argv()], env=bench.env, check=True
        )
        return
    image = bench.work / "small.img"
    image.write_bytes(os.urandom(4 << 20) + bytes(4 << 20))
    subprocess.run(
        [sys.executable, "-m", "surety", "backup", "image", str(image), "--name", "small"],
        env=bench.env,
        check=True,
        stdout=subprocess.DEVNULL,
    )


def measure(bench: Bench, runs: int) -> dict[str, Any]:
    setup(bench)
    figures: dict[str, Any] = {"job": bench.job, "runs": runs}
    figures["cli_argv"] = " ".join(bench.cli_argv())
    figures["imports"] = statistics.median(imports(runs))
    figures["cli"] = statistics.median(bench.cli(runs))
    for variant, spare in (("service, no spare", False), ("service, spare", True)):
        timings = bench.service_runs(spare, runs)
        rows = [categorise(steps) for steps in timings]
        for row in rows:
            row["fixed"] = sum(row[c] for c in FIXED)
        figures[variant] = medians(rows)
        figures[variant + " (each)"] = rows
        figures[variant + " (steps)"] = timings
    return figures


def set_up_detail(timings: list[list[tuple[str, float]]]) -> str:
    """The job set-up's steps (medians): where a backup's libvirt set-up goes."""
    names = [name for name, _ in timings[0] if categorise([(name, 1.0)])["job set-up"]]
    parts = []
    for name in names:
        values = [sum(v for n, v in steps if n == name) for steps in timings]
        parts.append(f"{name} {statistics.median(values):.3f}")
    return "; ".join(parts)


@contextlib.contextmanager
def test_guest(wanted: bool) -> Iterator[None]:
    """The fresh test VM (``--guest``), always torn down."""
    if not wanted:
        yield
        return
    from tests.guests import testvm  # noqa: PLC0415 - libvirt only when a guest is wanted

    testvm.down(GUEST)
    try:
        testvm.up(GUEST, app="none", disk_size="4G")
        yield
    finally:
        testvm.down(GUEST)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--guest", action="store_true", help="back up a real test VM")
    parser.add_argument("--consistency", default="crash", choices=["crash", "filesystem"])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/surety-service-cost"))
    parser.add_argument("--json", type=Path)
    return parser.parse_args(argv)


def main() -> int:
    args = parse_args()
    work = args.workdir
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        with test_guest(args.guest):
            figures = measure(Bench(work, args.guest, args.consistency), args.runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    figures["load"] = Path("/proc/loadavg").read_text().split()[:3]
    figures["consistency"] = args.consistency if args.guest else None
    print(report(figures))
    print(f"load average after: {' '.join(figures['load'])}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
