"""Deduplication must not propagate damage: a damaged chunk is stored afresh and heals.

A byte flipped inside the first blob of a pack (not its header or trailer) is
found by ``check --read-data``; the next backup of the same data stores that
chunk again, so both the new and the old restore point restore byte-identically
(chunk ids are content hashes: the healthy copy serves both). On a read-only
repository ``check --read-data`` reports the damage but writes nothing.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

from surety.app.repository import open_repository
from surety.repo.pack import read_pack_header
from tests.cli import PASSPHRASE, Cli
from tests.faults.conftest import (
    assert_failed_cleanly,
    flip_bit,
    mounted_read_only,
    object_path,
    require_root,
    same_bytes,
)


def _damage_first_blob(cli: Cli) -> str:
    """Flip a byte in the middle of the first blob of the only pack; returns the pack id."""
    (pack,) = (p for p in (cli.repo / "data").rglob("*") if p.is_file())
    repo = open_repository(str(cli.repo), PASSPHRASE)
    first = min(read_pack_header(repo.storage, repo.keys, pack.name), key=lambda e: e.offset)
    assert first.offset == 0
    assert first.length > 2
    flip_bit(object_path(cli.repo, f"data/{pack.name}"), offset=first.length // 2, mask=0x01)
    return pack.name


def test_next_backup_heals_a_damaged_chunk(
    initialized: Cli, image_factory: Callable[..., Path], tmp_path: Path
) -> None:
    image = image_factory(size=2 << 20)
    initialized.run("backup", "image", image, "--name", "a")
    pack = _damage_first_blob(initialized)
    checked = initialized.run("check", "--read-data", check=False)
    assert_failed_cleanly(checked, {6})
    assert pack[:12] in checked.stdout, checked.stdout
    initialized.run("backup", "image", image, "--name", "again")
    for ref in ("again@latest", "a@latest"):
        target = tmp_path / f"{ref.partition('@')[0]}.img"
        proc = initialized.run("restore", "image", ref, "--to", target, check=False)
        assert proc.returncode == 0, f"{ref} does not restore after healing: {proc.stderr}"
        assert same_bytes(image, target), ref


def _fingerprint(repo: Path) -> dict[str, str]:
    """Every file (hidden ones too) with its content hash and mtime."""
    return {
        str(
            p.relative_to(repo)
        ): f"{hashlib.sha256(p.read_bytes()).hexdigest()} {p.stat().st_mtime_ns}"
        for p in sorted(repo.rglob("*"))
        if p.is_file()
    }


def test_read_only_check_reports_damage_and_writes_nothing(
    initialized: Cli, image_factory: Callable[..., Path], tmp_path: Path
) -> None:
    require_root("mount", "umount")
    initialized.run("backup", "image", image_factory(size=2 << 20), "--name", "a")
    pack = _damage_first_blob(initialized)
    before = _fingerprint(initialized.repo)
    with mounted_read_only(initialized.repo, tmp_path / "ro") as ro:
        checked = initialized.run("--repo", ro, "check", "--read-data", check=False)
    assert_failed_cleanly(checked, {6}, "no lock was taken")
    assert pack[:12] in checked.stdout, checked.stdout
    assert _fingerprint(initialized.repo) == before
    assert not os.path.ismount(tmp_path / "ro")
