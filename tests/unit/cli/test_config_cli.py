"""``surety config check`` through click: summary and exit 0, or one line per problem and exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from surety.cli.main import cli
from tests.unit.config.conftest import example_in


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, ["config", "check", *args], env=env or {})


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("SURETY_PASSPHRASE", raising=False)
    path = tmp_path / "surety.toml"
    path.write_text(
        example_in(tmp_path).replace("[service]", "") + '[service]\ntimezone = "Europe/Berlin"\n'
    )
    return path


def test_valid_config_prints_a_summary_with_next_runs(config: Path) -> None:
    result = run("--config", str(config))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"{config}: valid — 1 policy, 1 repository, 0 notification targets"
    assert lines[1] == "  policy nightly: vms all -> repository local"
    assert lines[2].startswith("    backup  *-*-* 02:00 (Europe/Berlin, DST observed); next ")
    assert lines[2].endswith((" 02:00 CET", " 02:00 CEST"))
    assert result.stderr == ""


def test_valid_config_as_json(config: Path) -> None:
    result = run("--config", str(config), "--json")
    assert result.exit_code == 0
    document = json.loads(result.stdout)
    assert document["valid"] is True
    (policy,) = document["policies"]
    assert (policy["name"], policy["vms"], policy["timezone"]) == (
        "nightly",
        ["all"],
        "Europe/Berlin",
    )
    assert policy["next_run"][11:16] == "02:00"


def test_surety_config_names_the_file(config: Path) -> None:
    assert run(env={"SURETY_CONFIG": str(config)}).exit_code == 0


def test_problems_are_one_line_each_on_stderr_and_exit_2(config: Path) -> None:
    config.write_text(
        config.read_text().replace('"*-*-* 02:00"', '"*-*-* 26:00"') + "max_job = 3\n"
    )
    lines = config.read_text().splitlines()
    schedule = 1 + next(n for n, line in enumerate(lines) if "26:00" in line)
    result = run("--config", str(config))
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"{config}:{schedule}: policy.nightly.schedule: hour 26 is out of range 0..23",
        f"{config}:{len(lines)}: service.max_job: unknown key (did you mean 'max_jobs'?)",
    ]
    assert "Traceback" not in result.output


def test_problems_in_json_too(config: Path) -> None:
    config.write_text(config.read_text() + "max_job = 3\n")
    last = len(config.read_text().splitlines())
    result = run("--config", str(config), "--json")
    assert result.exit_code == 2
    document = json.loads(result.stdout)
    assert document["valid"] is False
    assert document["problems"] == [
        {
            "file": str(config),
            "line": last,
            "key": "service.max_job",
            "why": "unknown key (did you mean 'max_jobs'?)",
            "text": f"{config}:{last}: service.max_job: unknown key (did you mean 'max_jobs'?)",
        }
    ]


def test_missing_file_is_one_line(tmp_path: Path) -> None:
    result = run("--config", str(tmp_path / "nope.toml"))
    assert result.exit_code == 2
    why = "no such configuration file (give --config FILE or set SURETY_CONFIG)"
    assert result.stderr == f"{tmp_path / 'nope.toml'}: {why}\n"
