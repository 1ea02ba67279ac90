"""Live VM backup figures on a real guest, compared in one run.

Usage (root; libvirt and the test guest as for ``make test-vm``)::

    PYTHONPATH=. .venv/bin/python bench/vm_backup.py [--workdir /tmp/surety-vmbench]
        [--skip-peers] [--freeze-runs 10]

1. Boots a test VM with PostgreSQL, fills a 2 GiB file in the guest.
2. Full backup of the running guest (``surety backup vm``) vs ``surety backup
   image`` of the same disk content as a raw file (the NBD path must not be the
   bottleneck): throughput over the bytes each read.
3. The guest rewrites ~3% of its 4 GiB disk's 4 KiB blocks in scattered runs;
   incremental backup: bytes read vs bytes changed, wall time vs the full.
   restic and borg back up the raw disk image before and after (they must
   re-read all of it).
4. Freeze window: ``--freeze-runs`` file-system-consistent backups while pgbench
   writes in the guest; median and max of freeze->thaw, split into the
   fs-freeze call, the snapshot (libvirt backupBegin) and the thaw call.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.common import PASSWORD, init_repository, stat, surety, surety_env
from tests.guests import agent, testvm

CHANGE_SCRIPT = r"""
use strict; my ($file, $blocks, $seed) = @ARGV; srand($seed);
open(my $fh, '+<', $file) or die; my $size = -s $file; my $n = int($size / 4096); my $done = 0;
while ($done < $blocks) {
  my $run = 1 + int(rand(90)); my $at = int(rand($n - $run));
  seek($fh, $at * 4096, 0); print $fh pack('L*', map { int(rand(2**32)) } 1 .. $run * 1024);
  $done += $run;
}
close($fh); print "$done\n";
"""


def timed(argv: list[str], env: dict[str, str], **kw: object) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, check=True, capture_output=True, **kw)  # type: ignore[call-overload]
    return time.perf_counter() - start


def raw_copy(vm: str, target: Path) -> None:
    """The guest's disk content as a raw file (VM paused so the disk is still)."""
    dom = agent.connect().lookupByName(vm)
    dom.suspend()
    try:
        overlay = testvm.VM_ROOT / vm / "vda.qcow2"
        subprocess.run(
            ["qemu-img", "convert", "-U", "-O", "raw", str(overlay), str(target)], check=True
        )
    finally:
        dom.resume()


def peers(work: Path, before: Path, after: Path) -> dict[str, dict[str, float]]:
    env = dict(
        os.environ,
        RESTIC_REPOSITORY=str(work / "restic"),
        RESTIC_PASSWORD=PASSWORD,
        BORG_REPO=str(work / "borg"),
        BORG_PASSPHRASE=PASSWORD,
    )
    subprocess.run(["restic", "init"], env=env, check=True, capture_output=True)
    subprocess.run(
        ["borg", "init", "-e", "repokey-blake2"], env=env, check=True, capture_output=True
    )
    result: dict[str, dict[str, float]] = {"restic": {}, "borg": {}}
    for label, image in (("full", before), ("second", after)):
        with open(image, "rb") as stdin:
            result["restic"][label] = timed(
                ["restic", "backup", "--stdin", "--stdin-filename", "vda.img"], env, stdin=stdin
            )
        result["borg"][label] = timed(
            ["borg", "create", "--compression", "zstd,1", f"::{label}", image.name],
            env,
            cwd=image.parent,
        )
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/surety-vmbench"))
    parser.add_argument("--freeze-runs", type=int, default=10)
    parser.add_argument("--skip-peers", action="store_true")
    args = parser.parse_args()
    work = args.workdir
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    vm = "surety-bench"
    testvm.down(vm)
    testvm.up(vm, app="postgresql")
    dom = agent.connect().lookupByName(vm)
    try:
        return run(work, vm, dom, args)
    finally:
        testvm.down(vm)


def run(work: Path, vm: str, dom: object, args: argparse.Namespace) -> int:
    env = surety_env(work / "repo")
    init_repository(env)
    # realistic content: a copy of the guest's /usr (compressible) + 1.5 GiB of random data
    agent.guest_shell(
        dom,
        "cp -a /usr /var/usr-copy && head -c 1536M /dev/urandom > /var/fill.bin && sync",
        timeout=1200,
    ).check()
    full = surety(env, "backup", "vm", vm, "--consistency", "crash")
    before = work / "before.img"
    raw_copy(vm, before)
    image_env = surety_env(work / "image-repo")
    init_repository(image_env)
    image = surety(image_env, "backup", "image", str(before), "--name", "vda")

    blocks = int(4 * 2**30 / 4096 * 0.03)
    changed = agent.guest_exec(
        dom, ["perl", "-e", CHANGE_SCRIPT, "/var/fill.bin", str(blocks), "7"], timeout=900
    ).check()
    agent.guest_shell(dom, "sync").check()
    changed_bytes = int(changed.stdout.decode().split()[-1]) * 4096
    incremental = surety(env, "backup", "vm", vm, "--consistency", "crash")
    after = work / "after.img"
    raw_copy(vm, after)

    print(
        f"\nfull backup of the running guest: {full['read_bytes'] / 1e6:.0f} MB read in "
        f"{full['seconds']:.2f} s = {full['read_bytes'] / full['seconds'] / 1e6:.0f} MB/s "
        f"(surety backup image of the same content: "
        f"{image['read_bytes'] / image['seconds'] / 1e6:.0f} MB/s)"
    )
    print(
        f"incremental after ~3% rewritten: changed {changed_bytes / 1e6:.1f} MB, read "
        f"{incremental['read_bytes'] / 1e6:.1f} MB, stored {incremental['stored_bytes'] / 1e6:.1f}"
        f" MB, {incremental['seconds']:.2f} s = {incremental['seconds'] / full['seconds']:.1%} "
        "of the full backup's wall time"
    )
    if not args.skip_peers:
        for tool, times in peers(work, before, after).items():
            print(
                f"{tool}: full {times['full']:.1f} s, second {times['second']:.1f} s "
                f"(re-reads the whole image); surety incremental is "
                f"{times['second'] / incremental['seconds']:.0f}x faster"
            )
    freeze_window(env, vm, dom, args.freeze_runs)
    return 0


def freeze_window(env: dict[str, str], vm: str, dom: object, runs: int) -> None:
    agent.guest_shell(
        dom, "su postgres -c 'pgbench -i -q -s 5 postgres' >/dev/null 2>&1", timeout=900
    ).check()
    agent.exec_start(
        dom, ["su", "postgres", "-c", "pgbench -T 100000 -c 2 postgres"], capture=False
    )
    frozen, parts = [], []
    for _ in range(runs):
        point = surety(env, "backup", "vm", vm, "--consistency", "filesystem")
        source = point["source"]
        assert isinstance(source, dict)
        frozen.append(float(source["frozen_seconds"]))
        parts.append(source["freeze_timings"])
    agent.guest_shell(dom, "pkill pgbench || true").check()
    print(f"freeze window over {runs} backups under pgbench: {stat(frozen, 3)}")
    for key in ("freeze_calls", "snapshot", "thaw_calls"):
        print(f"  {key:<12} {stat([float(p[key]) for p in parts], 3)}")


if __name__ == "__main__":
    sys.exit(main())
