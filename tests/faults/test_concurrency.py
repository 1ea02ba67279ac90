"""Commands racing each other: exactly one ``init`` wins; two backups at once both commit."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cli import PASSPHRASE
from tests.faults.conftest import (
    Cli,
    assert_failed_cleanly,
    cli_for,
    random_image,
    run_many,
    same_bytes,
)
from tests.integration.conftest import rewrite_blocks


def _gated(cli: Cli, gate: Path, *args: str | Path) -> subprocess.Popen[str]:
    """``surety`` that waits at its passphrase (a FIFO) until ``_open_gates``."""
    os.mkfifo(gate)
    return cli.popen("--passphrase-file", gate, *args)


def _open_gates(*gates: Path) -> None:
    """Let every gated command go at once: each is blocked reading its FIFO until now."""
    writers = [open(gate, "w") for gate in gates]  # noqa: SIM115 - closed together below
    for writer in writers:
        writer.write(PASSPHRASE)
    for writer in writers:
        writer.close()


@pytest.mark.parametrize("attempt", [1, 2, 3])
def test_concurrent_init_has_exactly_one_winner(
    tmp_path: Path, image_factory: Callable[..., Path], attempt: int
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    cli = cli_for(repo, dict(os.environ))
    gates = [tmp_path / f"gate-{i}" for i in range(8)]
    racers = [_gated(cli, gate, "init", "--chunk-size", "64K") for gate in gates]
    _open_gates(*gates)
    outputs = [p.communicate(timeout=120) for p in racers]
    results = [
        subprocess.CompletedProcess(p.args, p.returncode, *out)
        for p, out in zip(racers, outputs, strict=True)
    ]
    winners = [r for r in results if r.returncode == 0]
    assert len(winners) == 1, [(r.returncode, r.stderr) for r in results]
    for loser in (r for r in results if r.returncode != 0):
        assert_failed_cleanly(loser, {3})
    assert len(list((repo / "keys").iterdir())) == 1
    assert cli.json("points") == []
    image = image_factory(size=1 << 20, seed=attempt)
    cli.run("backup", "image", image, "--name", "first")
    cli.run("restore", "image", "first@latest", "--to", tmp_path / "back.img")
    assert same_bytes(image, tmp_path / "back.img")


def test_two_backups_at_once_both_commit(quick: Cli, tmp_path: Path) -> None:
    x = random_image(tmp_path / "x.img", 12 << 20, seed=21)
    y = tmp_path / "y.img"
    shutil.copyfile(x, y)
    rewrite_blocks(y, 0.05, seed=22)
    racers = [
        _gated(quick, tmp_path / f"gate-{name}", "backup", "image", image, "--name", name)
        for name, image in (("x", x), ("y", y))
    ]
    _open_gates(tmp_path / "gate-x", tmp_path / "gate-y")
    for proc in racers:
        _out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    points = quick.json("points")
    assert max(p["started"] for p in points) < min(p["finished"] for p in points), points
    checked = json.loads(quick.run("check", "--json").stdout)
    assert checked["errors"] == [], checked
    assert not [w for w in checked["warnings"] if "not in any index" in w], checked
    quick.run("prune")
    clean = json.loads(quick.run("check", "--read-data", "--json").stdout)
    assert clean["ok"], clean
    assert clean["errors"] == [], clean
    assert clean["warnings"] == [], clean
    restores = run_many(
        quick,
        [("restore", "image", f"{n}@latest", "--to", tmp_path / f"{n}.out") for n in "xy"],
    )
    for name, source, restored in zip("xy", (x, y), restores, strict=True):
        assert restored.returncode == 0, restored.stderr
        assert same_bytes(source, tmp_path / f"{name}.out")
