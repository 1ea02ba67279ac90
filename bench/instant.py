"""Instant recovery: seconds to guest-ping and to PostgreSQL ready, against plain boots.

Usage (root; libvirt and the test guest as for ``make test-vm``)::

    PYTHONPATH=. .venv/bin/python bench/instant.py [--runs 5] [--workdir DIR] [--json FILE]

Boots a test VM running PostgreSQL, takes one backup, removes the VM (only
the repository holds it), then ``--runs`` times, interleaved: a plain boot of
the same guest from its own local disk (``testvm up``: seconds to the guest
agent and to PostgreSQL ready; the first is the backed-up VM), and ``surety
instant-recover POINT --as NAME --ready-command 'pg_isready -q'`` (seconds
from the command to the VM running, to guest-ping and to PostgreSQL ready).
The first instant VM is finished (``finish --storage``, timed), the others
aborted. Prints medians and maxima and issue 16's goal 6: the median agent
answer of the instant VMs within the median plain boot + 5 s. Then the served
disk is read sequentially once through a detached server (1 MiB requests, one
connection). ``--json FILE`` writes the seconds of every boot and the verdict.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

from bench.common import PASSWORD, init_repository, stat, surety, surety_env
from tests.guests import testvm

from surety.app.repository import open_repository
from surety.hypervisor.nbd import NbdDisk
from surety.restore.export import start_detached_server, stop_server

STEP = 1 << 20
GOAL_SLACK = 5.0
"""Issue 16, goal 6: the agent of an instant VM answers within a plain boot + 5 s."""


def goal_verdict(plain: list[float], instant: list[float]) -> str:
    """The goal's line from the seconds to the guest agent of plain and instant boots."""
    normal, ours = statistics.median(plain), statistics.median(instant)
    met = ours <= normal + GOAL_SLACK
    return (
        f"goal: instant agent median {ours:.1f} s <= plain boot median {normal:.1f} s "
        f"+ {GOAL_SLACK:.0f} s: {'met' if met else 'NOT met'} (difference {ours - normal:+.1f} s)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, default=testvm.VM_ROOT / "instant-bench")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the figures there")
    args = parser.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    testvm.make_public_dir(args.workdir / "storage")
    env = surety_env(args.workdir / "repo", SURETY_INSTANT_DIR=str(args.workdir / "instant"))
    init_repository(env)
    vm = "surety-ibench"
    testvm.down(vm)
    plain = []
    try:
        plain.append(testvm.up(vm, app="postgresql"))
        point = str(surety(env, "backup", "vm", vm, "--consistency", "application")["id"])
    finally:
        testvm.down(vm)
    runs = []
    for number in range(args.runs):
        if number > 0:
            try:
                plain.append(testvm.up(vm, app="postgresql"))
            finally:
                testvm.down(vm)
        name = f"{vm}-{number}"
        try:
            started = surety(
                env, "instant-recover", point, "--as", name, "--ready-command", "pg_isready -q"
            )
            runs.append(started)
            if number == 0:
                began = time.monotonic()
                surety(
                    env,
                    "instant-recover",
                    "finish",
                    name,
                    "--storage",
                    str(args.workdir / "storage"),
                )
                print(f"finish of a 4 GiB disk: {time.monotonic() - began:.1f} s")
            else:
                surety(env, "instant-recover", "abort", name)
        finally:
            testvm.down(name)
    agent_seconds = [info.boot_seconds for info in plain]
    print(f"\nplain boot from the local disk, {len(plain)} runs")
    print(f"  {'seconds_to_agent':<18} {stat(agent_seconds)}")
    print(f"  {'then PostgreSQL':<18} {stat([info.app_seconds for info in plain])}")
    print(f"instant recovery of one PostgreSQL VM, {len(runs)} runs")
    for key in ("seconds_to_start", "seconds_to_ping", "seconds_to_ready"):
        print(f"  {key:<18} {stat([float(r[key] or 0) for r in runs])}")  # type: ignore[arg-type]
    pings = [float(r["seconds_to_ping"] or 0) for r in runs]  # type: ignore[arg-type]
    print(f"  each: plain {agent_seconds}, instant {pings}")
    print(goal_verdict(agent_seconds, pings))
    read_mb_s = served_read(args.workdir, point)
    print(f"  served sequential read: {read_mb_s:.0f} MB/s")
    if args.json:
        figures = {
            "plain_seconds_to_agent": agent_seconds,
            "instant_seconds_to_ping": pings,
            "instant_seconds_to_start": [float(r["seconds_to_start"] or 0) for r in runs],  # type: ignore[arg-type]
            "instant_seconds_to_ready": [float(r["seconds_to_ready"] or 0) for r in runs],  # type: ignore[arg-type]
            "goal_slack_s": GOAL_SLACK,
            "verdict": goal_verdict(agent_seconds, pings),
            "served_read_mb_s": read_mb_s,
        }
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


def served_read(workdir: Path, point: str) -> float:
    # opened in this process: its index cache in the work dir, not the host's /var/cache/surety
    os.environ["SURETY_CACHE_DIR"] = str(workdir / "surety-cache")
    repo = open_repository(str(workdir / "repo"), PASSWORD)
    server = start_detached_server(repo, point, "vda", workdir=workdir / "read-server")
    try:
        disk = NbdDisk(str(server.socket), "", "vda")
        began = time.monotonic()
        for offset in range(0, disk.size, STEP):
            disk.read(offset, min(STEP, disk.size - offset))
        seconds = time.monotonic() - began
        disk.close()
        return disk.size / seconds / 1e6
    finally:
        stop_server(server.pid_file)


if __name__ == "__main__":
    sys.exit(main())
