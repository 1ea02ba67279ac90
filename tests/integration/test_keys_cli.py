"""Key slots through the real CLI: a damaged or replaced key is not the end."""

from __future__ import annotations

import filecmp
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.cli import PASSPHRASE
from tests.integration.conftest import Cli

SECOND = "a second, longer passphrase"


def _as(cli: Cli, passphrase: str) -> dict[str, str]:
    return {**cli.env, "SURETY_PASSPHRASE": passphrase}


def _slots(cli: Cli, passphrase: str = PASSPHRASE) -> list[dict[str, Any]]:
    proc = cli.run("key", "list", "--json", env=_as(cli, passphrase))
    return list(json.loads(proc.stdout))


def _one_line_error(proc: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    assert proc.returncode == code, proc.stderr
    assert text in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") <= 2, proc.stderr


def _add_second(cli: Cli, tmp_path: Path) -> str:
    secret = tmp_path / "new-passphrase"
    secret.write_text(SECOND + "\n")
    out = cli.run("key", "add", "--new-passphrase-file", secret).stdout
    assert out.startswith("added key ")
    return out.split()[-1]


def _flip_byte(cli: Cli, key_id: str) -> None:
    path = cli.repo / "keys" / key_id
    data = bytearray(path.read_bytes())
    data[data.index(b'"master"') + 20] ^= 0x01  # inside the wrapped master keys
    path.write_bytes(bytes(data))


def test_a_second_key_survives_damage_to_the_first(
    initialized: Cli, image_factory: Callable[..., Path], tmp_path: Path
) -> None:
    image = image_factory(size=2 << 20)
    initialized.run("backup", "image", image, "--name", "k")
    (first,) = [slot["id"] for slot in _slots(initialized)]
    second = _add_second(initialized, tmp_path)

    slots = _slots(initialized)
    assert {slot["id"] for slot in slots} == {first, second}
    assert [slot["id"] for slot in slots if slot["current"]] == [first]
    assert all(slot["version"] == 2 and not slot["damaged"] for slot in slots)
    assert [slot["id"] for slot in _slots(initialized, SECOND) if slot["current"]] == [second]
    target = tmp_path / "restored.img"
    initialized.run("restore", "image", "k@latest", "--to", target, env=_as(initialized, SECOND))
    assert filecmp.cmp(image, target, shallow=False)

    _flip_byte(initialized, first)
    # the first passphrase: its key is damaged, the other one refuses it
    proc = initialized.run("points", check=False)
    _one_line_error(proc, 4, f"wrong passphrase for this repository, and keys/{first} is damaged")
    # the second passphrase: everything still works, and the damage is shown
    target.unlink()
    initialized.run("restore", "image", "k@latest", "--to", target, env=_as(initialized, SECOND))
    assert filecmp.cmp(image, target, shallow=False)
    by_id = {slot["id"]: slot for slot in _slots(initialized, SECOND)}
    assert by_id[first]["damaged"]
    assert "checksum mismatch" in by_id[first]["problem"]
    assert not by_id[second]["damaged"]
    initialized.run("key", "remove", first[:8], env=_as(initialized, SECOND))
    assert [slot["id"] for slot in _slots(initialized, SECOND)] == [second]


def test_the_only_key_damaged_is_exit_6(initialized: Cli) -> None:
    (first,) = [slot["id"] for slot in _slots(initialized)]
    _flip_byte(initialized, first)
    proc = initialized.run("points", check=False)
    _one_line_error(proc, 6, f"keys/{first}: damaged key file (checksum mismatch)")


def test_passwd_replaces_the_passphrase(initialized: Cli) -> None:
    (first,) = [slot["id"] for slot in _slots(initialized)]
    out = initialized.run("key", "passwd", env={**initialized.env, "SURETY_NEW_PASSPHRASE": SECOND})
    assert first in out.stdout
    _one_line_error(initialized.run("points", check=False), 4, "wrong passphrase")
    (slot,) = _slots(initialized, SECOND)
    assert slot["id"] != first
    assert slot["current"]
    assert not (initialized.repo / "keys" / first).exists()


def test_key_list_shows_the_slots(initialized: Cli, tmp_path: Path) -> None:
    second = _add_second(initialized, tmp_path)
    out = initialized.run("key", "list", env=_as(initialized, SECOND)).stdout
    (current,) = [line for line in out.splitlines() if line.strip().startswith("*")]
    assert second in current
    assert "2 keys" in out


def test_remove_refuses_the_current_key_and_bad_ids(initialized: Cli) -> None:
    (first,) = [slot["id"] for slot in _slots(initialized)]
    _one_line_error(initialized.run("key", "remove", first, check=False), 2, "cannot remove itself")
    _one_line_error(initialized.run("key", "remove", "zz", check=False), 2, "hex digits")
    _one_line_error(initialized.run("key", "remove", "0000", check=False), 2, "no key")
    assert [slot["id"] for slot in _slots(initialized)] == [first]


def test_key_add_needs_a_new_passphrase(initialized: Cli) -> None:
    proc = initialized.run("key", "add", check=False)  # stdin is not a terminal: no prompt
    _one_line_error(proc, 2, "SURETY_NEW_PASSPHRASE")
    assert len(_slots(initialized)) == 1


def test_missing_config_beside_data_is_damage(
    initialized: Cli, image_factory: Callable[..., Path]
) -> None:
    initialized.run("backup", "image", image_factory(size=1 << 20), "--name", "c")
    (initialized.repo / "config").unlink()
    proc = initialized.run("points", check=False)
    _one_line_error(proc, 6, "the repository is damaged: its config is missing")
    proc = initialized.run("init", check=False)  # and init refuses to paper over it
    assert proc.returncode == 3, proc.stderr
