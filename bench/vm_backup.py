"""Live VM backup figures on real guests: surety beside virtnbdbackup, in one run.

Usage (root; libvirt and the test guest as for ``make test-vm``; virtnbdbackup
from Debian: ``apt-get install virtnbdbackup``)::

    PYTHONPATH=. .venv/bin/python bench/vm_backup.py [--workdir /tmp/surety-vmbench]
        [--tools surety,virtnbdbackup] [--skip-peers] [--freeze-runs 10]
        [--fill-mib 1536] [--disk-size 4G] [--json FILE]

One fresh test VM per tool (``surety-bench-s``, ``surety-bench-v``: their
checkpoints would interfere on one VM), each running PostgreSQL, booted one
after the other (only one guest runs at a time), filled by the same seeded
script (a copy of ``/usr`` and ``--fill-mib`` of AES-CTR keystream: the same
bytes in both guests). Per tool, page cache dropped before each timed step:

1. full backup of the running guest, file-system consistent on both sides
   (virtnbdbackup always freezes when the guest agent answers: so does surety);
2. the guest rewrites ~3% of the disk's 4 KiB blocks in scattered runs (the
   same seeded change in both guests); incremental backup;
3. full restore of the incremental point to a file (surety: ``restore image``,
   sparse raw; virtnbdbackup: ``virtnbdrestore`` of the whole chain, qcow2);
   the restored file system's fill file must hash as the guest's does.

Prints one table (seconds, stored MB, surety/virtnbdbackup with the goals of
issue 16: full and restore <= 0.5x, incremental <= 1.0x). Then, on the surety
guest: ``surety backup image`` of the same content as a raw file (the NBD path
must not be the bottleneck), restic and borg backing up the raw disk before
and after (they re-read all of it; ``--skip-peers`` leaves them out), and the
freeze window: ``--freeze-runs`` file-system-consistent backups while pgbench
writes; median and max of freeze->thaw, split into the fs-freeze call, the
snapshot (libvirt backupBegin) and the thaw call.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.common import PASSWORD, drop_caches, init_repository, stat, surety, surety_env
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

FILL_KEY = "000102030405060708090a0b0c0d0e0f"
FILL_IV = "00000000000000000000000000000000"
FILL_SCRIPT = (
    "cp -a /usr /var/usr-copy && "
    f"openssl enc -aes-128-ctr -nosalt -K {FILL_KEY} -iv {FILL_IV} < /dev/zero 2>/dev/null"
    " | head -c {size} > /var/fill.bin && sync"
)
"""Incompressible, unique, and the same bytes in every guest (a fixed key over zeros)."""

CHANGE_SEED = 7
FILL_PATH = "/var/fill.bin"
TOOLS = ("surety", "virtnbdbackup")
GUESTS = {"surety": "surety-bench-s", "virtnbdbackup": "surety-bench-v"}
GOALS = (
    ("full_s", "full", 0.5),
    ("incremental_s", "incremental", 1.0),
    ("restore_s", "restore", 0.5),
)
"""(figure, label, the goal for surety's time / virtnbdbackup's) from issue 16, goal 3."""


@dataclass(frozen=True)
class ToolFigures:
    """One tool's run on its own guest: wall seconds, stored bytes, and the check."""

    full_s: float
    incremental_s: float
    restore_s: float
    stored_full_mb: float
    stored_incremental_mb: float
    changed_mb: float
    verified: bool
    cpu_s: dict[str, float] = field(default_factory=dict)
    """user+sys seconds of the tool's own processes per step (not QEMU's NBD serving)."""
    qemu_cpu_s: dict[str, float] = field(default_factory=dict)
    """user+sys seconds of the guest's QEMU process per backup step (its NBD export, the
    TCG guest): where the rest of a backup's CPU goes."""
    host_busy_s: dict[str, float] = field(default_factory=dict)
    """core-seconds the whole host was busy per step (``/proc/stat``; 2 cores: at most
    2 x the step's seconds): how near the step ran to the machine's limit."""


# --------------------------------------------------------------------------
# the report (pure)


def ratios(tools: Mapping[str, ToolFigures]) -> dict[str, float]:
    """surety's time / virtnbdbackup's per step; empty unless both ran."""
    if "surety" not in tools or "virtnbdbackup" not in tools:
        return {}
    ours, theirs = asdict(tools["surety"]), asdict(tools["virtnbdbackup"])
    return {key: ours[key] / theirs[key] for key, _label, _goal in GOALS if theirs[key] > 0}


def table(tools: Mapping[str, ToolFigures]) -> str:
    """The one table: a row per tool, then the ratios with the goal beside each."""
    lines = [
        "| tool | full s | incremental s | restore s | stored MB full | stored MB incremental "
        "| restore verified |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, fig in tools.items():
        lines.append(
            f"| {name} | {fig.full_s:.1f} | {fig.incremental_s:.1f} | {fig.restore_s:.1f} "
            f"| {fig.stored_full_mb:.1f} | {fig.stored_incremental_mb:.1f} "
            f"| {'yes' if fig.verified else 'NO'} |"
        )
    found = ratios(tools)
    if found:
        cells = [verdict(found.get(key), goal) for key, _label, goal in GOALS]
        lines.append(f"| surety / virtnbdbackup | {' | '.join(cells)} | | | |")
    return "\n".join(lines)


def cpu_line(name: str, fig: ToolFigures) -> str:
    """The user+sys seconds of a tool's own processes per step (where the wall time goes),
    with QEMU's and the whole host's when they were measured."""
    steps = ", ".join(f"{step} {seconds:.1f} s" for step, seconds in fig.cpu_s.items())
    line = f"{name} CPU (user+sys of its processes): {steps or 'not measured'}"
    if fig.qemu_cpu_s:
        line += "; the guest's QEMU: " + ", ".join(
            f"{step} {seconds:.1f} s" for step, seconds in fig.qemu_cpu_s.items()
        )
    if fig.host_busy_s:
        walls = {"full": fig.full_s, "incremental": fig.incremental_s, "restore": fig.restore_s}
        line += "; host busy: " + ", ".join(
            f"{step} {busy:.1f} core-s ({busy / walls[step]:.2f} of {os.cpu_count()} cores)"
            for step, busy in fig.host_busy_s.items()
            if walls.get(step)
        )
    return line


def verdict(ratio: float | None, goal: float) -> str:
    """``0.42x (goal <= 0.5x: met)``; a missing figure says so."""
    if ratio is None:
        return f"- (goal <= {goal}x)"
    return f"{ratio:.2f}x (goal <= {goal}x: {'met' if ratio <= goal else 'not met'})"


def document(tools: Mapping[str, ToolFigures], **context: object) -> dict[str, Any]:
    """What ``--json FILE`` writes: the figures, the ratios and the goals, plus context."""
    return {
        **context,
        "tools": {name: asdict(fig) for name, fig in tools.items()},
        "ratios": ratios(tools),
        "goals": {key: goal for key, _label, goal in GOALS},
    }


# --------------------------------------------------------------------------
# running things


def children_cpu() -> float:
    """user+sys seconds of this process's waited-for children so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass(frozen=True)
class Step:
    """One timed command: wall seconds and the user+sys seconds of its processes, of the
    guest's QEMU (when a VM is named) and of the whole host (busy core-seconds)."""

    seconds: float
    cpu: float
    qemu_cpu: float = 0.0
    host_busy: float = 0.0


def host_busy() -> float:
    """Core-seconds the host has been busy since boot (``/proc/stat``: all but idle, iowait)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def qemu_cpu(vm: str | None) -> float:
    """user+sys seconds of the VM's QEMU process so far (0 when there is none)."""
    if vm is None:
        return 0.0
    try:
        pid = Path(f"/run/libvirt/qemu/{vm}.pid").read_text().strip()
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")


class _Meter:
    """The CPU counters at a step's start; ``step()`` makes its ``Step``."""

    def __init__(self, vm: str | None) -> None:
        drop_caches()
        self.vm = vm
        self.cpu, self.qemu, self.host = children_cpu(), qemu_cpu(vm), host_busy()
        self.start = time.perf_counter()

    def step(self) -> Step:
        seconds = time.perf_counter() - self.start
        return Step(
            seconds,
            round(children_cpu() - self.cpu, 2),
            round(qemu_cpu(self.vm) - self.qemu, 2),
            round(host_busy() - self.host, 2),
        )


def timed(
    argv: list[str], env: Mapping[str, str] | None = None, vm: str | None = None, **kw: Any
) -> Step:
    """``argv`` run after dropping the page cache; exits with its stderr if it fails."""
    meter = _Meter(vm)
    proc = subprocess.run(argv, env=env, capture_output=True, check=False, **kw)
    step = meter.step()
    if proc.returncode != 0:
        tail = proc.stderr.decode(errors="replace")[-3000:]
        raise SystemExit(f"{' '.join(argv)} -> exit {proc.returncode}\n{tail}")
    return step


def timed_surety(
    env: dict[str, str], *args: str, vm: str | None = None
) -> tuple[Step, dict[str, object]]:
    """``surety ARGS`` timed as ``timed`` does (process start included) and its JSON."""
    meter = _Meter(vm)
    result = surety(env, *args)
    return meter.step(), result


def dir_bytes(path: Path, suffix: str = "") -> int:
    """Bytes of the files below ``path`` (those ending in ``suffix``)."""
    return sum(f.stat().st_size for f in path.rglob(f"*{suffix}") if f.is_file())


def mb(bytes_: int) -> float:
    return round(bytes_ / 1e6, 1)


@contextlib.contextmanager
def guest(name: str, size: str) -> Iterator[Any]:
    """A fresh PostgreSQL test VM; destroyed, undefined (checkpoints too) and removed after."""
    testvm.down(name)
    try:
        testvm.up(name, app="postgresql", disk_size=size)
        yield agent.connect().lookupByName(name)
    finally:
        testvm.down(name)


def fill(dom: Any, fill_mib: int) -> None:
    """The seeded content: the same bytes in every guest."""
    script = FILL_SCRIPT.replace("{size}", f"{fill_mib}M")
    agent.guest_shell(dom, script, timeout=1800).check()


def change(dom: Any, disk_bytes: int) -> int:
    """Rewrite ~3% of the disk's 4 KiB blocks inside the fill file (seeded); bytes changed."""
    blocks = int(disk_bytes / 4096 * 0.03)
    done = agent.guest_exec(
        dom, ["perl", "-e", CHANGE_SCRIPT, FILL_PATH, str(blocks), str(CHANGE_SEED)], timeout=1800
    ).check()
    agent.guest_shell(dom, "sync").check()
    return int(done.stdout.decode().split()[-1]) * 4096


def guest_hash(dom: Any) -> str:
    """sha256 of the fill file as the guest sees it."""
    out = agent.guest_exec(dom, ["sha256sum", FILL_PATH], timeout=900).check()
    return out.stdout.decode().split()[0]


def restored_hash(image: Path, scratch: Path) -> str:
    """sha256 of the fill file in a restored disk (ext4 on the whole disk), read with debugfs."""
    raw = image
    if image.suffix == ".qcow2":
        raw = scratch / "restored.raw"
        # -U: virtnbdrestore's qemu-nbd may still hold the image's lock as it exits (a run
        # failed on "Failed to get shared write lock"); the hash below checks the content
        subprocess.run(["qemu-img", "convert", "-U", "-O", "raw", str(image), str(raw)], check=True)
    out = scratch / "fill.bin"
    subprocess.run(
        ["debugfs", "-R", f"dump {FILL_PATH} {out}", str(raw)], check=True, capture_output=True
    )
    digest = hashlib.sha256()
    with open(out, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    out.unlink()
    if raw != image:
        raw.unlink()
    return digest.hexdigest()


def disk_size(vm: str) -> int:
    return testvm.image_virtual_size(testvm.VM_ROOT / vm / "vda.qcow2")


# --------------------------------------------------------------------------
# one tool on its own guest


def figures_of(
    steps: tuple[Step, Step, Step], stored: tuple[int, int], changed: int, verified: bool
) -> ToolFigures:
    """A tool's figures from its (full, incremental, restore) steps and stored bytes."""
    full, incremental, restore = steps
    named = {"full": full, "incremental": incremental, "restore": restore}
    return ToolFigures(
        full.seconds, incremental.seconds, restore.seconds, mb(stored[0]), mb(stored[1]),
        mb(changed), verified,
        {name: step.cpu for name, step in named.items()},
        {name: step.qemu_cpu for name, step in named.items() if name != "restore"},
        {name: step.host_busy for name, step in named.items()},
    )  # fmt: skip


def run_surety(work: Path, vm: str, dom: Any, fill_mib: int, raw: bool) -> ToolFigures:
    """surety's full, incremental and restore; with ``raw``, the disk as raw files
    before the change and after it (``before.img``, ``after.img``) for the peers."""
    repo = work / "surety" / "repo"
    repo.parent.mkdir(parents=True)
    env = surety_env(repo)
    init_repository(env)
    fill(dom, fill_mib)
    empty = dir_bytes(repo)
    full, full_point = timed_surety(env, "backup", "vm", vm, "--consistency", "filesystem", vm=vm)
    stored_full = dir_bytes(repo) - empty
    if raw:
        raw_copy(vm, work / "before.img")
    changed = change(dom, disk_size(vm))
    expected = guest_hash(dom)
    incremental, point = timed_surety(env, "backup", "vm", vm, "--consistency", "filesystem", vm=vm)
    stored_incremental = dir_bytes(repo) - empty - stored_full
    if raw:
        raw_copy(vm, work / "after.img")
    target = work / "surety" / "restored.raw"
    restore, _ = timed_surety(env, "restore", "image", str(point["id"]), "--to", str(target))
    read = [float(str(p["read_bytes"])) / 1e6 for p in (full_point, point)]
    print(f"surety read {read[0]:.1f} MB for the full, {read[1]:.1f} MB for the incremental")
    verified = restored_hash(target, work / "surety") == expected
    target.unlink()
    return figures_of(
        (full, incremental, restore), (stored_full, stored_incremental), changed, verified
    )


def run_virtnbdbackup(work: Path, vm: str, dom: Any, fill_mib: int, raw: bool) -> ToolFigures:
    """virtnbdbackup's full and incremental, virtnbdrestore of the chain (``raw`` unused)."""
    base = work / "virtnbdbackup"
    out, restored = base / "backup", base / "restored"
    restored.mkdir(parents=True)
    # QEMU (the libvirt-qemu user) creates the NBD socket and the scratch file:
    # the VM's backup directory is made for that (tests/guests/testvm.py).
    qemu_dir = testvm.VM_ROOT / vm / "backup"
    common = ["-d", vm, "-o", str(out), "-n", "-S", str(qemu_dir)]
    common += ["-f", str(qemu_dir / "virtnbdbackup.sock")]
    fill(dom, fill_mib)
    full = timed(["virtnbdbackup", "-l", "full", *common], vm=vm)
    stored_full = dir_bytes(out, ".data")
    changed = change(dom, disk_size(vm))
    expected = guest_hash(dom)
    incremental = timed(["virtnbdbackup", "-l", "inc", *common], vm=vm)
    stored_incremental = dir_bytes(out, ".data") - stored_full
    restore = timed(
        ["virtnbdrestore", "-i", str(out), "-o", str(restored), "-n",
         "-L", str(base / "virtnbdrestore.log"), "-f", str(base / "restore.sock")]
    )  # fmt: skip
    images = sorted(restored.glob("vda*"))
    verified = len(images) == 1 and restored_hash(images[0], base) == expected
    print(f"virtnbdbackup read {stored_full / 1e6:.1f} MB for the full (its .data files)")
    print(
        f"virtnbdbackup's directory holds {dir_bytes(out) / 1e6:.1f} MB in all "
        f"({(dir_bytes(out) - dir_bytes(out, '.data')) / 1e6:.1f} MB besides the disk data: "
        "configuration, kernel, initrd, checkpoints, logs)"
    )
    shutil.rmtree(restored)
    return figures_of(
        (full, incremental, restore), (stored_full, stored_incremental), changed, verified
    )


# --------------------------------------------------------------------------
# surety's own figures on its guest (image path, peers on raw copies, freeze window)


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
            ).seconds
        result["borg"][label] = timed(
            ["borg", "create", "--compression", "zstd,1", f"::{label}", image.name],
            env,
            cwd=image.parent,
        ).seconds
    return result


def surety_extras(work: Path, vm: str, dom: Any, args: argparse.Namespace) -> dict[str, Any]:
    """On the surety guest after its run: image path, restic/borg, freeze window."""
    extras: dict[str, Any] = {}
    before, after = work / "before.img", work / "after.img"
    image_env = surety_env(work / "image-repo")
    init_repository(image_env)
    image = surety(image_env, "backup", "image", str(after), "--name", "vda")
    extras["image_mb_s"] = round(image["read_bytes"] / image["seconds"] / 1e6)  # type: ignore[operator]
    print(f"surety backup image of the same content as a raw file: {extras['image_mb_s']} MB/s")
    if not args.skip_peers:
        extras["peers"] = peers(work, before, after)
        for tool, times in extras["peers"].items():
            print(
                f"{tool}: full {times['full']:.1f} s, second {times['second']:.1f} s "
                "(re-reads the whole image)"
            )
    before.unlink(missing_ok=True)
    after.unlink(missing_ok=True)
    if args.freeze_runs:
        extras["freeze"] = freeze_window(
            surety_env(work / "surety" / "repo"), vm, dom, args.freeze_runs
        )
    return extras


def freeze_window(env: dict[str, str], vm: str, dom: Any, runs: int) -> dict[str, list[float]]:
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
    found = {"frozen": frozen}
    for key in ("freeze_calls", "snapshot", "thaw_calls"):
        found[key] = [float(p[key]) for p in parts]
        print(f"  {key:<12} {stat(found[key], 3)}")
    return found


# --------------------------------------------------------------------------
# command line


def load() -> str:
    return Path("/proc/loadavg").read_text().rsplit(" ", 2)[0]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/surety-vmbench"))
    parser.add_argument("--tools", default=",".join(TOOLS), help="surety,virtnbdbackup")
    parser.add_argument("--freeze-runs", type=int, default=10)
    parser.add_argument("--skip-peers", action="store_true", help="no restic/borg")
    parser.add_argument("--fill-mib", type=int, default=1536, help="random fill in the guest")
    parser.add_argument("--disk-size", default="4G", help="the guests' virtual disk")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the figures there")
    args = parser.parse_args(argv)
    args.tool_list = [t for t in args.tools.split(",") if t]
    unknown = set(args.tool_list) - set(TOOLS)
    if unknown:
        parser.error(
            f"unknown tool(s) {', '.join(sorted(unknown))} (choose from {', '.join(TOOLS)})"
        )
    return args


def main() -> int:
    args = parse_args()
    if "virtnbdbackup" in args.tool_list and shutil.which("virtnbdbackup") is None:
        raise SystemExit("virtnbdbackup is not installed (apt-get install virtnbdbackup)")
    work = args.workdir
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    context: dict[str, Any] = {"load_before": load(), "fill_mib": args.fill_mib}
    context["disk_size"] = args.disk_size
    tools: dict[str, ToolFigures] = {}
    try:
        for tool in args.tool_list:
            vm = GUESTS[tool]
            with guest(vm, args.disk_size) as dom:
                runner = run_surety if tool == "surety" else run_virtnbdbackup
                tools[tool] = runner(work, vm, dom, args.fill_mib, raw=True)
                print(f"{tool}: {tools[tool]}", flush=True)
                if tool == "surety":
                    context["surety_extras"] = surety_extras(work, vm, dom, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    context["load_after"] = load()
    context["cold_cache"] = drop_caches()
    print(f"\nload average before {context['load_before']}, after {context['load_after']}")
    print(table(tools))
    for name, fig in tools.items():
        print(cpu_line(name, fig))
    if args.json:
        args.json.write_text(json.dumps(document(tools, **context), indent=2) + "\n")
    return 0 if all(fig.verified for fig in tools.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
