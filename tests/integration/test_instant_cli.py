"""``surety instant-recover`` refusals that need no VM: one line, an exit code, nothing left."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli import Cli
from tests.integration.conftest import write_image


@pytest.fixture
def instant_cli(initialized: Cli, tmp_path: Path) -> Cli:
    initialized.env["SURETY_INSTANT_DIR"] = str(tmp_path / "instant")
    return initialized


def _refused(cli: Cli, code: int, *args: str) -> str:
    proc = cli.run("instant-recover", *args, check=False)
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""
    return proc.stderr


def test_unknown_point_and_image_points_are_refused(instant_cli: Cli, tmp_path: Path) -> None:
    assert "no restore point" in _refused(instant_cli, 5, "nothing@latest").lower()
    image = tmp_path / "disk.img"
    write_image(image, 1 << 20)
    instant_cli.run("backup", "image", image, "--name", "disk")
    assert "needs a VM" in _refused(instant_cli, 2, "disk@latest", "--as", "x")
    assert not (tmp_path / "instant" / "x").exists()


def test_unknown_instant_vms_are_refused(instant_cli: Cli) -> None:
    for command in ("finish", "abort"):
        assert "no instant VM named ghost" in _refused(instant_cli, 2, command, "ghost")
    assert instant_cli.run("instant-recover", "list").stdout.strip() == "no instant VMs"
    assert instant_cli.json("instant-recover", "list") == []
