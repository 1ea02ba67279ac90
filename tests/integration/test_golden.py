"""Golden repositories: every earlier format version stays readable (see tests/golden)."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from tests.cli import cli_for

GOLDEN = Path(__file__).parent.parent / "golden"
CASES = [
    (
        "v1",
        "golden",
        "682ac442a3a2",
        302_144,
        "99ddace0d0ec62dcc2aa8a6e7abf11ed4a544c3df77a3d0e90eebcfb2ed6ed6c",
    )
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_golden_repository_restores_and_checks(
    tmp_path: Path, case: tuple[str, str, str, int, str]
) -> None:
    version, passphrase, point, size, sha256 = case
    repo = tmp_path / version
    shutil.copytree(GOLDEN / version, repo)  # the golden copy itself is never written
    cli = cli_for(repo, dict(os.environ))
    cli.env["SURETY_PASSPHRASE"] = passphrase
    listed = cli.json("points")
    assert [p["id"][:12] for p in listed] == [point]
    cli.run("check", "--read-data")
    cli.run("restore", "image", point, "--to", tmp_path / "disk.img")
    data = (tmp_path / "disk.img").read_bytes()
    assert len(data) == size
    assert hashlib.sha256(data).hexdigest() == sha256
