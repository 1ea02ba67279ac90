"""Instant recovery: seconds to guest-ping and to PostgreSQL ready, finish time, served reads.

Usage (root; libvirt and the test guest as for ``make test-vm``)::

    PYTHONPATH=. .venv/bin/python bench/instant.py [--runs 3] [--workdir DIR]

Boots a test VM running PostgreSQL, takes one backup, removes the VM (only
the repository holds it), then ``--runs`` times: ``surety instant-recover
POINT --as NAME --ready-command 'pg_isready -q'`` and prints, median and max,
the seconds from the command to the VM running, to guest-ping and to
PostgreSQL ready; the first run is finished (``finish --storage``, timed),
the others aborted. Then the served disk is read sequentially once through a
detached server (1 MiB requests, one connection). For scale: the same
guest's plain boot from its own local disk.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from bench.common import PASSWORD, init_repository, stat, surety, surety_env
from tests.guests import testvm

from surety.app.repository import open_repository
from surety.hypervisor.nbd import NbdDisk
from surety.restore.export import start_detached_server, stop_server

STEP = 1 << 20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, default=testvm.VM_ROOT / "instant-bench")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    testvm.make_public_dir(args.workdir / "storage")
    env = surety_env(args.workdir / "repo", SURETY_INSTANT_DIR=str(args.workdir / "instant"))
    init_repository(env)
    vm = "surety-ibench"
    testvm.down(vm)
    try:
        info = testvm.up(vm, app="postgresql")
        point = str(surety(env, "backup", "vm", vm, "--consistency", "application")["id"])
    finally:
        testvm.down(vm)
    runs = []
    for number in range(args.runs):
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
    print(f"plain boot from the local disk: agent {info.boot_seconds:.1f} s, "
          f"PostgreSQL {info.app_seconds:.1f} s later")  # fmt: skip
    print(f"\ninstant recovery of one PostgreSQL VM, {len(runs)} runs")
    for key in ("seconds_to_start", "seconds_to_ping", "seconds_to_ready"):
        print(f"  {key:<18} {stat([float(r[key] or 0) for r in runs])}")  # type: ignore[arg-type]
    print(f"  served sequential read: {served_read(args.workdir, point):.0f} MB/s")
    return 0


def served_read(workdir: Path, point: str) -> float:
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
