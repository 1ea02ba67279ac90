"""Freeze window and quiesce time per writer, on a real guest under write load.

Usage (root; libvirt and the test guest as for ``make test-vm``)::

    PYTHONPATH=. .venv/bin/python bench/quiesce.py [--runs 10] [--workdir DIR]

Boots a test VM running PostgreSQL (pgbench, 2 clients) and MariaDB (a
single-row-insert loop) with binary logs, then takes ``--runs`` backups at
each level - filesystem, application with each writer alone, application with
both - and prints, per level, the freeze window (first freeze call to last
thaw, ``source.frozen_seconds``) and, per writer, its freeze step and its
total quiesce time (prepare + freeze + thaw), median and max.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from bench.common import init_repository, stat, surety, surety_env
from tests.guests import agent, testvm

MARIADB_LOAD = (
    "mariadb -e 'CREATE DATABASE IF NOT EXISTS bench; CREATE TABLE IF NOT EXISTS bench.t "
    "(id bigint auto_increment primary key, at datetime(6) default now(6))'; "
    "while :; do mariadb -e 'INSERT INTO bench.t () VALUES ()'; done"
)
LEVELS = {
    "filesystem": ["--consistency", "filesystem"],
    "application: postgresql": ["--consistency", "application", "--writer", "postgresql"],
    "application: mariadb": ["--consistency", "application", "--writer", "mariadb"],
    "application: both": ["--consistency", "application"],
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/surety-quiescebench"))
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--only", action="append", choices=list(LEVELS), help="level(s) to run")
    args = parser.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    vm = "surety-qbench"
    testvm.down(vm)
    testvm.up(vm, app="postgresql")
    dom = agent.connect().lookupByName(vm)
    try:
        levels = {k: v for k, v in LEVELS.items() if not args.only or k in args.only}
        return run(args.workdir, vm, dom, args.runs, levels)
    finally:
        testvm.down(vm)


def run(work: Path, vm: str, dom: object, runs: int, levels: dict[str, list[str]]) -> int:
    env = surety_env(work / "repo")
    init_repository(env)
    agent.guest_shell(
        dom,
        "printf '[mariadbd]\\nlog_bin=/var/lib/mysql/mariadb-bin\\nserver_id=11\\n' "
        "> /etc/mysql/mariadb.conf.d/90-bench.cnf && systemctl start mariadb && "
        "su postgres -c 'pgbench -i -q -s 5 postgres' >/dev/null 2>&1",
        timeout=900,
    ).check()
    agent.exec_start(
        dom, ["su", "postgres", "-c", "pgbench -T 100000 -c 2 postgres"], capture=False
    )
    agent.exec_start(dom, ["sh", "-c", MARIADB_LOAD], capture=False)
    surety(env, "backup", "vm", vm, "--consistency", "crash")  # the full read, once
    try:
        for label, options in levels.items():
            report(label, [surety(env, "backup", "vm", vm, *options) for _ in range(runs)])
    finally:
        agent.guest_shell(dom, "pkill pgbench; pkill -f 'INSERT INTO bench[.]t'; true")
    return 0


def report(label: str, points: list[dict[str, object]]) -> None:
    levels = {str(p["consistency"]) for p in points}
    frozen = [float(p["source"]["frozen_seconds"]) for p in points]  # type: ignore[index]
    print(f"\n{label} ({len(points)} backups under load, level(s) reached: {', '.join(levels)})")
    fs_frozen = [float(p["source"]["freeze_timings"]["filesystems_frozen"]) for p in points]  # type: ignore[index]
    print(f"  freeze window          {stat(frozen, 3)}  (first freeze call .. last thaw)")
    print(f"  file systems frozen    {stat(fs_frozen, 3)}  (fs-freeze call .. fs-thaw done)")
    writers = points[0]["applications"]
    assert isinstance(writers, dict)
    for name in writers:
        timings = [p["applications"][name]["timings"] for p in points]  # type: ignore[index]
        freeze = [t.get("freeze", 0.0) for t in timings]
        total = [sum(t.values()) for t in timings]
        print(f"  {name:<10} freeze     {stat(freeze, 3)}")
        print(f"  {name:<10} quiesce    {stat(total, 3)}  (prepare + freeze + thaw)")


if __name__ == "__main__":
    sys.exit(main())
