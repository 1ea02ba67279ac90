"""``surety verify`` refusals that need no lab: one line, exit 2, nothing started."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.cli import Cli, cli_for


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    cli = cli_for(tmp_path / "repo", {**os.environ, "SURETY_CATALOG": str(tmp_path / "c.sqlite")})
    cli.run("init")
    image = tmp_path / "disk.img"
    image.write_bytes(os.urandom(1 << 20))
    cli.run("backup", "image", image, "--name", "disk")
    return cli


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "nothing to verify"),
        (("disk@latest",), "is a disk image, not a VM"),
        (("nosuch@latest",), "nosuch"),
        (("--group", "missing.toml"), "cannot read the group file"),
        (("disk@latest", "--group", "g.toml"), "not both"),
    ],
)
def test_verify_refuses_with_one_line(
    cli: Cli,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    args: tuple[str, ...],
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    proc = cli.run("verify", *args, "--proofs", tmp_path / "proofs", check=False)
    assert proc.returncode in (2, 5), proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "proofs").exists()


def test_a_bad_group_file_is_a_usage_error(cli: Cli, tmp_path: Path) -> None:
    group = tmp_path / "group.toml"
    group.write_text('[[vm]]\npoint = "disk@latest"\nprobes = ["smoke"]\n')
    proc = cli.run("verify", "--group", group, check=False)
    assert proc.returncode == 2
    assert "unknown probe 'smoke'" in proc.stderr
    group.write_text("[[vm]\n")
    proc = cli.run("verify", "--group", group, check=False)
    assert proc.returncode == 2
    assert "not valid TOML" in proc.stderr


def test_points_show_no_verification_yet(cli: Cli) -> None:
    proc = cli.run("points")
    header, row = proc.stdout.splitlines()[:2]
    assert header.split()[-1] == "verified"
    assert row.split()[-1] == "-"
