"""``surety backup vm --set WRITER.OPTION=VALUE`` reaches the writers' job."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import click
import pytest
from click.testing import CliRunner

from surety.backup import vm
from surety.backup.vm import VmBackupOptions
from surety.cli.main import cli
from surety.cli.options import writer_settings
from surety.core.progress import NullProgress
from surety.quiesce.writer import QuiesceJob


def test_settings_reach_every_writer_job(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[QuiesceJob] = []

    def factory(_guest: Any, job: QuiesceJob) -> Any:
        seen.append(job)
        return SimpleNamespace(name="w")

    monkeypatch.setattr(vm, "load_writers", lambda names=None: {"w": factory})
    options = VmBackupOptions("dc1", "application", settings={"samba-ad.backup-dir": "/srv/ad"})
    run = SimpleNamespace(
        options=options, token="t0", domain=SimpleNamespace(name="dc1"), progress=NullProgress()
    )
    vm._requester(run, SimpleNamespace())  # type: ignore[arg-type]
    assert seen
    assert all(job.settings == {"samba-ad.backup-dir": "/srv/ad"} for job in seen)


def test_set_parses_writer_options_and_reads_secrets_from_files(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    values = ("samba-ad.user=admin", f"samba-ad.password_file={secret}")
    parsed = writer_settings(None, None, values)  # type: ignore[arg-type]
    assert parsed == {"samba-ad.user": "admin", "samba-ad.password": "s3cret"}
    with pytest.raises(click.BadParameter, match=r"WRITER\.OPTION=VALUE"):
        writer_settings(None, None, ("nodot=1",))  # type: ignore[arg-type]
    with pytest.raises(click.BadParameter, match="No such file"):
        writer_settings(None, None, ("a.b_file=/nonexistent/x",))  # type: ignore[arg-type]


@pytest.mark.parametrize("command", [["backup", "vm", "dc1"], ["restore", "vm", "dc1@latest"]])
def test_both_commands_take_set_and_refuse_a_bad_one(command: list[str]) -> None:
    result = CliRunner().invoke(cli, [*command, "--set", "nodot=1"])
    assert result.exit_code == 2
    assert "'nodot=1' is not WRITER.OPTION=VALUE" in result.output
