"""Verification time per VM in the lab, and where it goes.

Usage (root; libvirt and the test guest as for ``make test-vm``)::

    PYTHONPATH=. .venv/bin/python bench/verify.py [--runs 3] [--workdir DIR]

Boots a test VM running PostgreSQL (pgbench, 2 clients), takes one
application-consistent backup, powers the VM off (the lab reads the
repository only), then runs ``surety verify POINT`` ``--runs`` times and
prints, median and max: the whole command, lab start to the guest agent's
first answer (boot from the repository over NBD + overlay), the re-addressing
step, and each probe (heartbeat, ping, postgresql with pg_amcheck).
For scale: the same guest's plain boot to guest-ping from its own local disk.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from datetime import datetime
from pathlib import Path

from bench.common import init_repository, stat, surety, surety_env
from tests.guests import testvm


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/surety-verifybench"))
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    env = surety_env(
        args.workdir / "repo",
        SURETY_CATALOG=str(args.workdir / "catalog.sqlite"),
        SURETY_PROOFS=str(args.workdir / "proofs"),
    )
    init_repository(env)
    vm = "surety-vbench"
    testvm.down(vm)
    info = testvm.up(vm, app="postgresql", net=True)
    try:
        testvm.exec_command(vm, ["sh", "-c", "su postgres -c 'pgbench -i -q -s 5 postgres'"])
        testvm.exec_command(
            vm, ["sh", "-c", "(su postgres -c 'pgbench -T 100000 -c 2 postgres' >/dev/null 2>&1 &)"]
        )
        point = surety(env, "backup", "vm", vm, "--consistency", "application")
    finally:
        testvm.down(vm)
    print(
        f"plain boot of the test guest from its local disk to guest-ping: {info.boot_seconds:.1f} s"
    )
    runs = [_verify(env, str(point["id"])) for _ in range(args.runs)]
    print(f"\nsurety verify of one PostgreSQL VM, {len(runs)} runs (all passed: "
          f"{all(r['passed'] for r in runs)})")  # fmt: skip
    print(f"  whole command              {stat([r['total'] for r in runs])}")
    print(f"  start -> guest agent       {stat([r['boot'] for r in runs])}")
    for name in runs[0]["probes"]:
        print(f"  probe {name:<20} {stat([r['probes'][name] for r in runs])}")
    return 0


def _verify(env: dict[str, str], point: str) -> dict[str, object]:
    start = time.monotonic()
    proof = surety(env, "verify", point, check=False)
    total = time.monotonic() - start
    (vm,) = proof["vms"]  # type: ignore[misc]
    timeline = proof["timeline"]  # type: ignore[index]
    assert isinstance(timeline, list)
    at = [datetime.fromisoformat(t["at"]) for t in timeline]
    return {
        "passed": proof["result"] == "passed",
        "total": total,
        "boot": float(vm["boot_seconds"] or 0),
        "probes": {p["probe"]: float(p["seconds"]) for p in vm["probes"]},
        "span": (at[-1] - at[0]).total_seconds() if at else 0.0,
    }


if __name__ == "__main__":
    sys.exit(main())
