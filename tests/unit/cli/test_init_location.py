"""``surety init LOCATION``: the location as a new user types it, beside --repo and
SURETY_REPOSITORY; two different ones on the command line are refused, nothing created."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from surety.cli.main import cli

PASSPHRASE = "correct horse battery staple"


def _invoke(tmp_path: Path, *args: str, **env: str) -> tuple[int, str, str]:
    environ = {"SURETY_PASSPHRASE": PASSPHRASE, "SURETY_CACHE_DIR": str(tmp_path / "cache"), **env}
    result = CliRunner().invoke(cli, list(args), env=environ)
    return result.exit_code, result.stdout, result.stderr


def test_init_creates_the_repository_named_after_it(tmp_path: Path) -> None:
    code, out, err = _invoke(tmp_path, "init", str(tmp_path / "repo"), "--chunk-size", "64K")
    assert code == 0, err
    assert f"at {tmp_path / 'repo'} (chunk size 64.0 KiB)" in out
    assert (tmp_path / "repo" / "config").is_file()
    code, _out, err = _invoke(tmp_path, "--repo", str(tmp_path / "repo"), "check")
    assert code == 0, err


def test_two_locations_on_the_command_line_are_refused(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    code, _out, err = _invoke(tmp_path, "--repo", str(a), "init", str(b))
    assert code == 2
    assert f"two repository locations given: --repo {a} and {b}" in err
    assert not a.exists()
    assert not b.exists()
    code, _out, err = _invoke(tmp_path, "--repo", str(a), "init", str(a))  # the same: fine
    assert code == 0, err


def test_the_location_given_wins_over_the_environment_with_a_note(tmp_path: Path) -> None:
    elsewhere, here = tmp_path / "elsewhere", tmp_path / "here"
    code, _out, err = _invoke(tmp_path, "init", str(here), SURETY_REPOSITORY=str(elsewhere))
    assert code == 0, err
    assert (here / "config").is_file()
    assert not elsewhere.exists()
    assert f"SURETY_REPOSITORY names {elsewhere}" in err
    code, _out, err = _invoke(tmp_path, "init", SURETY_REPOSITORY=str(elsewhere))
    assert code == 0, err
    assert (elsewhere / "config").is_file()


def test_init_without_any_location_says_how_to_give_one(tmp_path: Path) -> None:
    code, _out, err = _invoke(tmp_path, "init")
    assert code == 2
    assert "surety init LOCATION (a directory or s3://BUCKET/PREFIX)" in err
    assert "Traceback" not in err
