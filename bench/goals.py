"""Issue 16's goals in one run: every bench side by side with its peers, one verdict table.

Usage (root; ``restic``, ``borgbackup``, ``zstd`` and ``virtnbdbackup`` installed; libvirt
and the test guest as for ``make test-vm``)::

    PYTHONPATH=. .venv/bin/python bench/goals.py [--workdir DIR] [--size 4G] [--runs 2]
        [--fill-mib 1536] [--instant-runs 5] [--entries 4000000]
        [--only vm,instant,compare,index,service] [--json FILE]
    PYTHONPATH=. .venv/bin/python bench/goals.py --report FILE   # an earlier run's table again

Runs each bench in a child process, one after the other, its own output streamed:

1. ``vm``: ``bench/vm_backup.py --tools surety,virtnbdbackup --skip-peers``: two fresh
   guests filled by one seeded script, full backup, 3 % scattered change,
   incremental, restore (goal 3);
2. ``instant``: ``bench/instant.py --runs N``: plain boots against instant recoveries,
   interleaved (goal 6);
3. ``compare``: ``bench/compare.py --size SIZE --runs N``: surety, ``zstd -1 -T2``,
   restic and borg on the bench's image and its 3 %-changed copy (goals 1, 2, and the
   stored half of 5), and surety on a 64 KiB-chunk repository (goal 5's trade-off);
4. ``index``: ``bench/index_scale.py --entries N --image base.img``: a synthetic
   repository's index built, looked up, merged, checked and pruned, and a 4 GiB backup
   into it and into an empty repository (goal 4; ``docs/format.md`` has the 40-million
   run, ~45 min here);
5. ``service``: ``bench/service_cost.py --guest``: a small incremental of a real test
   VM run by the service, with and without its spare worker: the fixed cost (the
   other half of goal 5).

Then one table: each goal, what was measured, the target, met or not. A bench that
fails is named in the table (the others still run) and the exit code is 1; a goal
measured but not met is reported, not an error. ``--json FILE`` writes every bench's
figures and the verdicts.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BENCHES = ("vm", "instant", "compare", "index", "service")
ANON_LIMIT_MIB = 300


@dataclass(frozen=True)
class Verdict:
    """One goal's line: what was measured against its target; ``met`` None: not measured."""

    goal: str
    measured: str
    target: str
    met: bool | None


def _ratio_line(goal: str, value: float, target: float, below: bool, what: str) -> Verdict:
    met = value <= target if below else value >= target
    sign = "<=" if below else ">="
    return Verdict(goal, f"{value:.2f}x {what}", f"{sign} {target:g}x", met)


def _missing(goal: str, bench: str, figures: Mapping[str, Any]) -> Verdict:
    why = figures.get("errors", {}).get(bench, "not run (--only)")
    return Verdict(goal, f"{bench}: {why}", "", None)


def verdicts(figures: Mapping[str, Any]) -> list[Verdict]:
    """The goals' lines from the benches' JSON documents (pure: tested on its own)."""
    lines: list[Verdict] = []
    compare = figures.get("compare")
    if compare:
        tools = compare["tools"]
        surety = tools["surety"]
        if "zstd" in tools:
            lines.append(
                _ratio_line(
                    "1 full backup time / zstd -1 -T2",
                    surety["full_s"] / tools["zstd"]["full_s"],
                    1.0,
                    True,
                    f"({surety['full_s']:.1f} s / {tools['zstd']['full_s']:.1f} s)",
                )
            )
        if "restic" in tools:
            lines.append(
                _ratio_line(
                    "2 restore speed / restic",
                    surety["restore_mb_s"] / tools["restic"]["restore_mb_s"],
                    1.5,
                    False,
                    f"({surety['restore_mb_s']:.0f} / {tools['restic']['restore_mb_s']:.0f} MB/s)",
                )
            )
        stored = surety["second_added_mb"] * 1e6 / compare["changed"]
        lines.append(
            _ratio_line(
                "5 incremental stored / changed bytes",
                stored,
                1.2,
                True,
                f"({surety['second_added_mb']:.0f} MB for {compare['changed'] / 1e6:.0f} MB)",
            )
        )
        small = tools.get("surety-64k")
        if small:  # the chunk-size trade-off: a 64 KiB repository in the same run
            lines.append(
                _ratio_line(
                    "5 incremental stored / changed bytes, 64 KiB chunks",
                    small["second_added_mb"] * 1e6 / compare["changed"],
                    1.2,
                    True,
                    f"({small['second_added_mb']:.0f} MB; its full backup "
                    f"{small['full_s'] / surety['full_s']:.2f}x and restore "
                    f"{surety['restore_mb_s'] / small['restore_mb_s']:.2f}x the time at 256 KiB)",
                )
            )
    else:
        lines.append(_missing("1, 2, 5 (stored)", "compare", figures))
    vm = figures.get("vm")
    if vm and vm.get("ratios"):
        for key, label in (
            ("full_s", "full"),
            ("incremental_s", "incremental"),
            ("restore_s", "restore"),
        ):
            ours, theirs = vm["tools"]["surety"][key], vm["tools"]["virtnbdbackup"][key]
            lines.append(
                _ratio_line(
                    f"3 {label} time / virtnbdbackup",
                    vm["ratios"][key],
                    vm["goals"][key],
                    True,
                    f"({ours:.1f} s / {theirs:.1f} s)",
                )
            )
    else:
        lines.append(_missing("3", "vm", figures))
    index = figures.get("index")
    if index:
        peaks = {
            "lookups": index["lookups"]["rss_anon_mib"],
            "check": index["check"]["peak_anon_mib"],
            "prune": index["prune"]["peak_anon_mib"],
        }
        if "backup_large" in index:
            peaks["backup"] = index["backup_large"]["peak_anon_mib"]
        worst = max(peaks, key=lambda name: peaks[name])
        lines.append(
            Verdict(
                f"4 anonymous memory at {index['entries'] / 1e6:g} million entries",
                ", ".join(f"{name} {mib:.0f}" for name, mib in peaks.items()) + " MiB",
                f"<= {ANON_LIMIT_MIB} MiB",
                peaks[worst] <= ANON_LIMIT_MIB,
            )
        )
        if "backup_large" in index and "backup_empty" in index:
            large, empty = index["backup_large"]["mb_per_s"], index["backup_empty"]["mb_per_s"]
            lines.append(
                _ratio_line(
                    "4 backup speed into the large / an empty repository",
                    large / empty,
                    0.9,
                    False,
                    f"({large:.0f} / {empty:.0f} MB/s)",
                )
            )
    else:
        lines.append(_missing("4", "index", figures))
    service = figures.get("service")
    if service and "service, spare" in service:
        cost = float(service["service, spare"]["fixed"])
        before = float(service["service, no spare"]["fixed"])
        lines.append(
            Verdict(
                "5 fixed cost of a small run in the service",
                f"{cost:.3f} s ({before:.3f} s without the spare worker; {service['job']})",
                "<= 0.3 s",
                cost <= 0.3,
            )
        )
    else:
        lines.append(_missing("5 (fixed cost)", "service", figures))
    instant = figures.get("instant")
    if instant:
        plain = statistics.median(instant["plain_seconds_to_agent"])
        ours = statistics.median(instant["instant_seconds_to_ping"])
        slack = float(instant["goal_slack_s"])
        lines.append(
            Verdict(
                "6 instant VM's agent - plain boot's (medians)",
                f"{ours - plain:+.1f} s ({ours:.1f} / {plain:.1f} s, "
                f"{len(instant['plain_seconds_to_agent'])} boots each)",
                f"<= +{slack:g} s",
                ours <= plain + slack,
            )
        )
    else:
        lines.append(_missing("6", "instant", figures))
    return lines


def table(lines: list[Verdict]) -> str:
    width = max(len(line.goal) for line in lines)
    out = [f"{'goal':<{width}}  {'target':<10}  {'verdict':<8}  measured"]
    for line in lines:
        verdict = {True: "met", False: "NOT met", None: "-"}[line.met]
        out.append(f"{line.goal:<{width}}  {line.target:<10}  {verdict:<8}  {line.measured}")
    return "\n".join(out)


def commands(args: argparse.Namespace, work: Path) -> dict[str, list[str]]:
    """Each bench's command line, writing its JSON to ``work/NAME.json``."""
    py = [sys.executable]
    images = work / "images"
    return {
        "vm": [
            *py, str(HERE / "vm_backup.py"), "--tools", "surety,virtnbdbackup", "--skip-peers",
            "--fill-mib", str(args.fill_mib), "--workdir", str(work / "vm"),
            "--json", str(work / "vm.json"),
        ],
        "instant": [
            *py, str(HERE / "instant.py"), "--runs", str(args.instant_runs),
            "--json", str(work / "instant.json"),
        ],
        "compare": [
            *py, str(HERE / "compare.py"), "--workdir", str(images), "--size", args.size,
            "--runs", str(args.runs), "--json", str(work / "compare.json"),
        ],
        "index": [
            *py, str(HERE / "index_scale.py"), str(work / "index"), "--entries",
            str(args.entries), "--image", str(images / "base.img"),
            "--json", str(work / "index.json"),
        ],
        "service": [
            *py, str(HERE / "service_cost.py"), "--guest", "--workdir", str(work / "service"),
            "--json", str(work / "service.json"),
        ],
    }  # fmt: skip


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/surety-goals"))
    parser.add_argument("--size", default="4G", help="compare.py's image")
    parser.add_argument("--runs", type=int, default=2, help="compare.py's runs (median)")
    parser.add_argument("--fill-mib", type=int, default=1536, help="vm_backup.py's guest fill")
    parser.add_argument("--instant-runs", type=int, default=5)
    parser.add_argument("--entries", type=int, default=4_000_000, help="index_scale.py's")
    parser.add_argument("--only", default=",".join(BENCHES), help=",".join(BENCHES))
    parser.add_argument("--json", type=Path, metavar="FILE")
    parser.add_argument(
        "--report", type=Path, metavar="FILE", help="print the table of an earlier run's --json"
    )
    args = parser.parse_args()
    if args.report:
        try:
            earlier = json.loads(args.report.read_text())
        except (OSError, ValueError) as exc:
            parser.error(f"--report {args.report}: not a goals.py --json file ({exc})")
        print(
            f"issue 16's goals, one run (load {earlier['load_before']} -> {earlier['load_after']})"
        )
        print(table(verdicts(earlier)))
        return 0
    chosen = [name for name in args.only.split(",") if name]
    unknown = set(chosen) - set(BENCHES)
    if unknown:
        parser.error(
            f"unknown bench(es) {', '.join(sorted(unknown))} (choose from {', '.join(BENCHES)})"
        )
    if "index" in chosen and "compare" not in chosen:
        parser.error("index backs up compare's image: run compare too")
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    figures: dict[str, Any] = {"load_before": load(), "errors": {}, "seconds": {}}
    runs = commands(args, work)
    for name in BENCHES:
        if name not in chosen:
            continue
        out = work / f"{name}.json"
        out.unlink(missing_ok=True)
        print(f"\n=== {name}: {' '.join(runs[name][1:])} (load {load()})", flush=True)
        began = time.monotonic()
        code = subprocess.run(runs[name], env=env, check=False).returncode
        figures["seconds"][name] = round(time.monotonic() - began, 1)
        if code == 0 and out.exists():
            figures[name] = json.loads(out.read_text())
        else:
            figures["errors"][name] = f"failed (exit {code})"
        print(f"=== {name}: exit {code} after {figures['seconds'][name]:.0f} s", flush=True)
    figures["load_after"] = load()
    lines = verdicts(figures)
    print(f"\nissue 16's goals, one run (load {figures['load_before']} -> {figures['load_after']})")
    print(table(lines))
    if args.json:
        figures["verdicts"] = [asdict(line) for line in lines]
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 1 if figures["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
