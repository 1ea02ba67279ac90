"""Configuration files written into a temporary folder, with the files they name."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).parents[3] / "examples" / "surety.toml"

WriteConfig = Callable[[str], Path]


@pytest.fixture
def write_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> WriteConfig:
    """Write a surety.toml (and a passphrase file next to it); return its path."""
    monkeypatch.delenv("SURETY_PASSPHRASE", raising=False)
    (tmp_path / "passphrase").write_text("secret\n")

    def write(text: str) -> Path:
        path = tmp_path / "surety.toml"
        path.write_text(text)
        return path

    return write


def example_in(folder: Path, uncomment: bool = False) -> str:
    """The shipped example with its /etc/surety/ files placed in ``folder`` (created).

    ``uncomment``: every commented setting switched on, as an admin would."""
    text = EXAMPLE.read_text().replace("/etc/surety/", f"{folder}/")
    for name in (
        "passphrase",
        "offsite.passphrase",
        "smtp.password",
        "databases.group.toml",
        "s3-ca.pem",
    ):
        (folder / name).write_text("x\n")
    (folder / "aws-credentials").write_text(
        "[surety-backup]\naws_access_key_id = AKEXAMPLE\naws_secret_access_key = secret\n"
    )
    if uncomment:
        lines = []
        for line in text.splitlines():
            setting = line.removeprefix("# ")
            if line.startswith("# ") and (
                setting.startswith("[") or " = " in setting.split("#")[0]
            ):
                lines.append(setting)
            else:
                lines.append(line)
        text = "\n".join(lines) + "\n"
    return text
