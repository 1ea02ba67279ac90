"""An error's one line reaches the user intact: text in [brackets] is not taken for markup."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from surety.cli.main import cli


def test_brackets_in_an_error_message_are_printed(tmp_path: Path) -> None:
    config = tmp_path / "surety.toml"
    config.write_text(
        '[repository.local]\nlocation = "repo"\n\n'
        '[policy.nightly]\nvms = "all"\nschedule = "daily"\nnotify = ["admins"]\n'
    )
    result = CliRunner().invoke(cli, ["status", "--config", str(config)], env={})
    assert result.exit_code == 2, result.output
    assert "policy.nightly.notify: no [notify.admins] in this file" in result.stderr
