"""kill -9 at a random moment of ``backup``, ``prune`` and ``restore``: nothing is ever lost.

Each loop runs a few trials with kill times drawn from a seeded RNG, scaled to
how long the command takes here. After every kill, ``check --read-data``
exits 0 (warnings about garbage are allowed) and every committed restore point
restores byte-identically; a restore into a directory leaves no hidden partial
file of a killed one behind.
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

from tests.faults.conftest import PARTIAL_PREFIX, Cli, random_image, run_many, same_bytes
from tests.integration.conftest import rewrite_blocks

TRIALS = 6


def _locks(cli: Cli) -> set[str]:
    where = cli.repo / "locks"
    return {p.name for p in where.iterdir()} if where.is_dir() else set()


def _wait_for_work(cli: Cli, proc: subprocess.Popen[str]) -> float:
    """Wait until ``proc`` holds its repository lock (it starts working); returns that time."""
    before = _locks(cli)
    while proc.poll() is None and not _locks(cli) - before:
        time.sleep(0.002)
    return time.monotonic()


def _work_time(cli: Cli, *args: str | Path) -> float:
    """Run a command whole; seconds from taking its lock to its end (the kill window)."""
    proc = cli.popen(*args)
    locked = _wait_for_work(cli, proc)
    _out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return time.monotonic() - locked


def _kill_during(cli: Cli, rng: random.Random, window: float, *args: str | Path) -> bool:
    """Start a command; SIGKILL it a random moment into its work; True if it was killed."""
    proc = cli.popen(*args)
    _wait_for_work(cli, proc)
    try:
        proc.wait(timeout=rng.uniform(0, window))
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        return True
    _out, err = proc.communicate()
    assert proc.returncode == 0, err
    return False


def _assert_consistent(cli: Cli, sources: dict[str, Path], out: Path) -> list[str]:
    """``check --read-data`` exits 0 and every committed point restores byte-identically."""
    checked = cli.run("check", "--read-data", "--json", check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert json.loads(checked.stdout)["errors"] == []
    points = cli.json("points")
    out.mkdir()
    restores = run_many(
        cli, [("restore", "image", p["id"], "--to", out / f"{p['id']}.img") for p in points]
    )
    for point, proc in zip(points, restores, strict=True):
        assert proc.returncode == 0, proc.stderr
        assert same_bytes(sources[point["name"]], out / f"{point['id']}.img"), point["name"]
    shutil.rmtree(out)
    return [p["name"] for p in points]


def test_kill_9_during_backup(quick: Cli, tmp_path: Path) -> None:
    rng = random.Random(9001)
    size = 20 << 20  # more than one 16 MiB pack: kills land between pack writes too
    sources = {"base": random_image(tmp_path / "base.img", size, seed=100)}
    window = _work_time(quick, "backup", "image", sources["base"], "--name", "base")
    killed = 0
    for trial in range(TRIALS):
        name = f"k{trial}"
        sources[name] = random_image(tmp_path / f"{name}.img", size, seed=trial)
        killed += _kill_during(quick, rng, window, "backup", "image", sources[name], "--name", name)
        names = _assert_consistent(quick, sources, tmp_path / f"restored-{trial}")
        assert "base" in names
    assert killed, "no trial killed a backup: the kill times are too late"


def test_kill_9_during_prune(quick: Cli, tmp_path: Path) -> None:
    rng = random.Random(9002)
    size = 16 << 20
    sources = {"keep": random_image(tmp_path / "keep.img", size, seed=200)}
    quick.run("backup", "image", sources["keep"], "--name", "keep")
    current = tmp_path / "current.img"
    shutil.copyfile(sources["keep"], current)
    window = None
    killed = 0
    for trial in range(TRIALS):
        rewrite_blocks(current, 0.3, seed=300 + trial)  # the old point's data becomes garbage
        sources["p"] = tmp_path / f"p{trial}.img"
        shutil.copyfile(current, sources["p"])
        quick.run("backup", "image", sources["p"], "--name", "p")
        quick.run("forget", "--keep-last", "1")
        if window is None:  # the first prune runs whole: it times the others' kills
            window = _work_time(quick, "prune")
        else:
            killed += _kill_during(quick, rng, window, "prune")
        names = _assert_consistent(quick, sources, tmp_path / f"restored-{trial}")
        assert sorted(names) == ["keep", "p"]
    assert killed, "no trial killed a prune: the kill times are too late"


def test_kill_9_during_restore(quick: Cli, tmp_path: Path) -> None:
    rng = random.Random(9003)
    image = random_image(tmp_path / "disk.img", 24 << 20, seed=400)
    quick.run("backup", "image", image, "--name", "r")
    into = tmp_path / "restores"
    into.mkdir()
    window = _work_time(quick, "restore", "image", "r@latest", "--to", into / "first.img")
    (into / "first.img").unlink()
    killed = 0
    for trial in range(TRIALS):
        victim = into / f"killed-{trial}.img"
        killed += _kill_during(quick, rng, window, "restore", "image", "r@latest", "--to", victim)
        if victim.exists():  # killed after the rename: complete
            assert same_bytes(image, victim)
            victim.unlink()
        _assert_consistent(quick, {"r": image}, tmp_path / f"check-{trial}")
        target = into / f"next-{trial}.img"
        quick.run("restore", "image", "r@latest", "--to", target)
        assert same_bytes(image, target)
        target.unlink()
        left = [p.name for p in into.iterdir() if p.name.startswith(PARTIAL_PREFIX)]
        assert left == [], f"partial files left after the next restore: {left}"
        assert list(into.iterdir()) == []
    assert killed, "no trial killed a restore: the kill times are too late"
