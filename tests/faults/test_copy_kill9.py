"""kill -9 at a random moment of ``surety copy``: nothing half-copied is ever visible.

After each kill the target passes ``check --read-data`` and lists the point
only if the killed copy committed it whole (it restores byte-exact); the rerun
completes the copy (byte-exact restore
from the target) and sends only what the killed run had not indexed yet.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from pathlib import Path

from tests.cli import PASSPHRASE, Cli
from tests.faults.conftest import make_repository, random_image, same_bytes

TRIALS = 4
CHECKPOINT = "4M"


def _locks(repo: Path) -> set[str]:
    where = repo / "locks"
    return {p.name for p in where.iterdir()} if where.is_dir() else set()


def _copy(cli: Cli, target: Path) -> subprocess.Popen[str]:
    args = ("copy", "--all", "--to", target, "--checkpoint-every", CHECKPOINT, "--json")
    return cli.popen(*args)


def _started(proc: subprocess.Popen[str], target: Path) -> float:
    """Wait until the copy holds the target's lock (it starts working); returns that time."""
    while proc.poll() is None and not _locks(target):
        time.sleep(0.002)
    return time.monotonic()


def _as_target(cli: Cli, target: Path) -> Cli:
    return Cli(target, dict(cli.env, SURETY_REPOSITORY=str(target)))


def test_kill_9_during_copy(quick: Cli, tmp_path: Path) -> None:
    rng = random.Random(9015)
    quick.env["SURETY_TO_PASSPHRASE"] = PASSPHRASE
    image = random_image(tmp_path / "disk.img", 24 << 20, seed=15)
    quick.run("backup", "image", image, "--name", "c")
    first = tmp_path / "timing"
    make_repository(first)
    proc = _copy(quick, first)
    began = _started(proc, first)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    window = time.monotonic() - began
    full = int(json.loads(out)["bytes_transferred"])
    killed, saved = 0, 0
    for trial in range(TRIALS):
        target = tmp_path / f"target-{trial}"
        make_repository(target)
        to = _as_target(quick, target)
        proc = _copy(quick, target)
        _started(proc, target)
        try:
            proc.wait(timeout=rng.uniform(0.3, 0.95) * window)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=60)
            killed += 1
        else:
            proc.communicate()
        visible = len(to.json("points"))  # 0, or 1 if the kill came after the commit
        assert visible in {0, 1}
        check = to.run("check", "--read-data", check=False)
        assert check.returncode == 0, check.stdout + check.stderr
        rerun = quick.json("copy", "--all", "--to", target, "--checkpoint-every", CHECKPOINT)
        assert (rerun["copied"], rerun["skipped"]) == (1 - visible, visible)
        assert rerun["bytes_transferred"] <= full
        saved += rerun["bytes_transferred"] < full
        (point,) = to.json("points")
        restored = tmp_path / f"restored-{trial}.img"
        to.run("restore", "image", point["id"], "--to", restored)
        assert same_bytes(image, restored)
        assert to.run("check", "--read-data").returncode == 0
    assert killed, "no trial killed a copy: the kill times are too late"
    assert saved, "no rerun reused what a killed copy had uploaded"
