"""``surety check --read-data-subset`` through click: usage errors, report, JSON."""

from __future__ import annotations

import json
import random
from dataclasses import replace
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
    """A local repository with two restore points in several packs."""
    path = tmp_path / "repo"
    path.mkdir()
    repo = Repository.init(LocalStorage(path), PASSPHRASE, CHUNK_SIZE_MIN, CHEAP_KDF)
    repo.config = replace(repo.config, pack_size=2 * CHUNK_SIZE_MIN)
    rng = random.Random(3)
    for number in range(2):
        back_up(repo, {"vda": rng.randbytes(10 * CHUNK_SIZE_MIN)}, "web01", number)
    return path


def run(location: Path, *args: str) -> Result:
    env = {"SURETY_REPOSITORY": str(location), "SURETY_PASSPHRASE": PASSPHRASE}
    return CliRunner().invoke(cli, ["check", *args], env=env)


@pytest.mark.parametrize("value", ["0/5", "6/5", "0%", "150%", "garbage"])
def test_bad_subset_is_a_one_line_usage_error(location: Path, value: str) -> None:
    result = run(location, "--read-data-subset", value)
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"surety: error: --read-data-subset '{value}'")
    assert "Traceback" not in result.output + result.stderr
    assert result.stdout == ""


def test_parts_in_json_cover_every_pack(location: Path) -> None:
    full = json.loads(run(location, "--read-data", "--json").stdout)
    assert full["ok"]
    assert full["subset"] == "all packs"
    assert full["packs_read"] == full["packs"] > 3
    assert full["chunks_read"] == full["chunks"] == 20
    parts = [
        json.loads(run(location, f"--read-data-subset={n}/3", "--json").stdout) for n in (1, 2, 3)
    ]
    assert [p["subset"] for p in parts] == ["part 1 of 3", "part 2 of 3", "part 3 of 3"]
    for key in ("packs_read", "chunks_read", "bytes_read"):
        assert sum(p[key] for p in parts) == full[key]
    assert set(parts[0]) == set(full)


def test_structure_only_json_has_no_subset(location: Path) -> None:
    report = json.loads(run(location, "--json").stdout)
    assert report["ok"]
    assert report["points"] == 2
    assert (report["subset"], report["packs_read"], report["bytes_read"]) == (None, 0, 0)


def test_human_report_says_what_was_read(location: Path) -> None:
    result = run(location, "--read-data-subset", "100%")
    assert result.exit_code == 0, result.output
    assert "2 restore points, 20 chunks in" in result.stdout
    assert "; read a random 100% of packs: " in result.stdout
    assert "20 chunks, " in result.stdout.split("read", 1)[1]
    assert "no errors found" in result.stdout
