"""Golden repositories: every earlier format version stays readable (see tests/golden).

Each case is a copy of ``tests/golden/vN`` (the golden copy itself is never
written), opened with the current code: its points are listed, every point
restores byte for byte, every stored chunk checks, and a prune keeps them all.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cli import Cli, cli_for

GOLDEN = Path(__file__).parent.parent / "golden"


@dataclass(frozen=True)
class GoldenPoint:
    id: str  # 12 hex digits
    sha256: str  # of the restored disk


@dataclass(frozen=True)
class Golden:
    version: str
    passphrase: str
    disk_size: int
    points: tuple[GoldenPoint, ...]  # oldest first; all named ``golden``, disk ``golden.img``


CASES = [
    Golden(
        "v1",
        "golden",
        6_303_801,
        (
            GoldenPoint(
                "c94bf14ae3b6", "6c9374a1ad68bad57dcd1ce6f69acfcc6fe5681dfb417ad03e6d7fc6cd921677"
            ),
            GoldenPoint(
                "a9fc5f4cb51d", "b673841d9b85495d9efb75bbc34b8480624c066fbc52e2dc611082b1d76a6771"
            ),
        ),
    ),
]


@pytest.fixture(params=CASES, ids=[case.version for case in CASES])
def golden(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Golden, Cli]:
    case: Golden = request.param
    repo = tmp_path / case.version
    shutil.copytree(GOLDEN / case.version, repo)
    cli = cli_for(repo, dict(os.environ))
    cli.env["SURETY_PASSPHRASE"] = case.passphrase
    return case, cli


def _restores_byte_exact(cli: Cli, name: str, point: GoldenPoint, size: int, to: Path) -> None:
    target = to / f"{point.id}.img"
    cli.run("restore", "image", name, "--to", target)
    data = target.read_bytes()
    assert len(data) == size
    assert hashlib.sha256(data).hexdigest() == point.sha256, f"{name} restored other bytes"
    target.unlink()


def test_points_lists_every_point(golden: tuple[Golden, Cli]) -> None:
    case, cli = golden
    listed = cli.json("points")
    assert [p["id"][:12] for p in listed] == [point.id for point in case.points]
    assert {p["name"] for p in listed} == {"golden"}


def test_every_point_restores_byte_exact(golden: tuple[Golden, Cli], tmp_path: Path) -> None:
    case, cli = golden
    for point in case.points:
        _restores_byte_exact(cli, point.id, point, case.disk_size, tmp_path)
    _restores_byte_exact(cli, "golden@latest", case.points[-1], case.disk_size, tmp_path)


def test_check_read_data_passes(golden: tuple[Golden, Cli]) -> None:
    _case, cli = golden
    report = cli.json("check", "--read-data")
    assert report["ok"], report
    assert report["errors"] == []


def test_prune_keeps_every_point_restorable(golden: tuple[Golden, Cli], tmp_path: Path) -> None:
    case, cli = golden
    cli.run("prune")
    assert [p["id"][:12] for p in cli.json("points")] == [point.id for point in case.points]
    for point in case.points:
        _restores_byte_exact(cli, point.id, point, case.disk_size, tmp_path)
    assert cli.json("check", "--read-data")["ok"]
