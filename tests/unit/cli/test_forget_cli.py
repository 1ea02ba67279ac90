"""``surety forget --keep-within`` through click: the rule, its reasons, bad values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from surety.cli.main import cli
from surety.repo.format import CHUNK_SIZE_MIN
from surety.repo.repository import Repository
from surety.repo.storage import LocalStorage
from tests.unit.conftest import CHEAP_KDF, PASSPHRASE
from tests.unit.repo.test_check import back_up


@pytest.fixture
def location(tmp_path: Path) -> Path:
    """A local repository with three restore points of one name."""
    path = tmp_path / "repo"
    path.mkdir()
    repo = Repository.init(LocalStorage(path), PASSPHRASE, CHUNK_SIZE_MIN, CHEAP_KDF)
    for number in range(3):
        back_up(repo, {"vda": bytes([number]) * CHUNK_SIZE_MIN}, "web01", number)
    return path


def run(location: Path, *args: str) -> Result:
    env = {"SURETY_REPOSITORY": str(location), "SURETY_PASSPHRASE": PASSPHRASE}
    return CliRunner().invoke(cli, ["forget", *args], env=env)


def test_keep_within_keeps_the_recent_points_with_the_reason(location: Path) -> None:
    result = run(location, "--keep-within", "2d", "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    decisions = json.loads(result.stdout)
    assert len(decisions) == 3
    assert all(d["keep"] for d in decisions)  # points taken seconds apart
    assert {tuple(d["reasons"]) for d in decisions} == {("within 2d",)}


@pytest.mark.parametrize("value", ["2", "2x", "0d"])
def test_bad_keep_within_is_a_usage_error(location: Path, value: str) -> None:
    result = run(location, "--keep-within", value)
    assert result.exit_code == 2
    assert "--keep-within" in result.stderr
    assert "Traceback" not in result.output


def test_keep_within_with_ids_is_refused(location: Path) -> None:
    result = run(location, "--keep-within", "2d", "abcd")
    assert result.exit_code == 2
    assert "not both" in result.stderr
