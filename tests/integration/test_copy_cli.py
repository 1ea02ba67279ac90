"""``surety copy`` through the real CLI: local -> local, local -> S3 and S3 -> local.

Copies restore byte-exact from the target (``restore image``), the target passes
``check --read-data``, a second copy transfers nothing, ``--verified-only``
copies only the point whose latest verification passed, and mistakes are one
line and an exit code.
"""

from __future__ import annotations

import filecmp
import os
from pathlib import Path

from surety.app.repository import create_repository
from surety.catalog import Catalog, Verification
from tests.cli import PASSPHRASE, Cli, cli_for
from tests.faults.conftest import CHEAP_KDF
from tests.integration.conftest import rewrite_blocks, write_image
from tests.s3.fixtures import S3Bucket

TO_PASSPHRASE = "another passphrase for the target"


def _pair(source: str, target: str, tmp_path: Path, environ: dict[str, str]) -> Cli:
    """Two new repositories (64 KiB and 128 KiB chunks) and a Cli whose --repo is the source."""
    cli = cli_for(tmp_path / "unused", environ)
    cli.env.update(SURETY_REPOSITORY=source, SURETY_TO_PASSPHRASE=TO_PASSPHRASE)
    cli.env["SURETY_CATALOG"] = str(tmp_path / "catalog.sqlite")
    if source.startswith("s3://") or target.startswith("s3://"):  # through the CLI: no client
        cli.run("init", "--chunk-size", "64K")  # left open in this process
        _as_target(cli, target).run("init", "--chunk-size", "128K")
    else:
        create_repository(source, PASSPHRASE, 64 << 10, kdf=CHEAP_KDF)
        create_repository(target, TO_PASSPHRASE, 128 << 10, kdf=CHEAP_KDF)
    return cli


def _as_target(cli: Cli, target: str) -> Cli:
    env = dict(cli.env, SURETY_REPOSITORY=target, SURETY_PASSPHRASE=TO_PASSPHRASE)
    return Cli(cli.repo, env)


def _two_points(cli: Cli, tmp_path: Path) -> list[Path]:
    """Two restore points of web01 from an image changed in between; copies of each state."""
    image, states = tmp_path / "disk.img", []
    write_image(image, 6 << 20, seed=5)
    for number in range(2):
        if number:
            rewrite_blocks(image, 0.1)
        cli.run("backup", "image", image, "--name", "web01")
        states.append(tmp_path / f"state{number}.img")
        states[-1].write_bytes(image.read_bytes())
    return states


def _copy_round_trip(cli: Cli, target: str, tmp_path: Path) -> None:
    states = _two_points(cli, tmp_path)
    report = cli.json("copy", "--all", "--to", target)
    assert (report["copied"], report["skipped"]) == (2, 0)
    assert report["bytes_transferred"] > 0
    to = _as_target(cli, target)
    copies = to.json("points")
    originals = cli.json("points")
    assert [c["source"]["copied_from"]["point"] for c in copies] == [o["id"] for o in originals]
    for copy, original, state in zip(copies, originals, states, strict=True):
        assert (copy["name"], copy["started"], copy["finished"]) == (
            original["name"],
            original["started"],
            original["finished"],
        )
        restored = tmp_path / f"restored-{copy['id'][:8]}.img"
        to.run("restore", "image", copy["id"][:12], "--to", restored)
        assert filecmp.cmp(state, restored, shallow=False)
    check = to.run("check", "--read-data")
    assert check.returncode == 0, check.stdout + check.stderr
    again = cli.json("copy", "web01@latest", "--to", target)
    assert (again["copied"], again["skipped"], again["bytes_transferred"]) == (0, 1, 0)


def test_local_to_local(tmp_path: Path) -> None:
    source, target = str(tmp_path / "source"), str(tmp_path / "target")
    cli = _pair(source, target, tmp_path, dict(os.environ))
    _copy_round_trip(cli, target, tmp_path)
    text = cli.run("copy", "--all", "--to", target).stdout
    assert "0 copied, 2 skipped (already there)" in text


def test_local_to_s3(tmp_path: Path, s3_bucket: S3Bucket) -> None:
    environ = {**os.environ, **s3_bucket.environ()}
    target = f"s3://{s3_bucket.name}/copies"
    cli = _pair(str(tmp_path / "source"), target, tmp_path, environ)
    _copy_round_trip(cli, target, tmp_path)


def test_s3_to_local(tmp_path: Path, s3_bucket: S3Bucket) -> None:
    environ = {**os.environ, **s3_bucket.environ()}
    source = f"s3://{s3_bucket.name}/source"
    cli = _pair(source, str(tmp_path / "target"), tmp_path, environ)
    _copy_round_trip(cli, str(tmp_path / "target"), tmp_path)


def test_verified_only_copies_the_verified_point(tmp_path: Path) -> None:
    source, target = str(tmp_path / "source"), str(tmp_path / "target")
    cli = _pair(source, target, tmp_path, dict(os.environ))
    _two_points(cli, tmp_path)
    good, bad = cli.json("points")
    catalog = Catalog(Path(cli.env["SURETY_CATALOG"]))
    repository = cli.json("copy", "--all", "--dry-run", "--to", target)["source"]
    catalog.record_verification(
        repository, Verification(good["id"], "verified", "2026-12-01T10:00:00", "", "ok")
    )
    catalog.record_verification(
        repository, Verification(bad["id"], "failed", "2026-12-01T11:00:00", "", "no boot")
    )
    report = cli.json("copy", "--all", "--verified-only", "--to", target)
    assert (report["copied"], report["not_verified"]) == (1, 1)
    statuses = {p["point"]: p["status"] for p in report["points"]}
    assert statuses == {good["id"]: "copied", bad["id"]: "not verified"}
    copies = _as_target(cli, target).json("points")
    assert [c["source"]["copied_from"]["point"] for c in copies] == [good["id"]]


def test_dry_run_copies_nothing_and_mistakes_are_one_line(tmp_path: Path) -> None:
    source, target = str(tmp_path / "source"), str(tmp_path / "target")
    cli = _pair(source, target, tmp_path, dict(os.environ))
    _two_points(cli, tmp_path)
    dry = cli.json("copy", "--all", "--dry-run", "--to", target)
    assert (dry["would_copy"], dry["copied"]) == (2, 0)
    assert _as_target(cli, target).json("points") == []
    for args, code in (
        (("--all", "--to", target, "--limit-upload", "fast"), 2),
        (("--to", target), 2),
        (("nope@latest", "--to", target), 5),
    ):
        proc = cli.run("copy", *args, check=False)
        assert proc.returncode == code, (args, proc.stderr)
        assert "Traceback" not in proc.stderr
    itself = dict(cli.env, SURETY_TO_PASSPHRASE=PASSPHRASE)
    proc = cli.run("copy", "--all", "--to", source, check=False, env=itself)
    assert proc.returncode == 2, proc.stderr
    assert "same repository" in proc.stderr
    wrong = dict(cli.env, SURETY_TO_PASSPHRASE="wrong")
    proc = cli.run("copy", "--all", "--to", target, check=False, env=wrong)
    assert proc.returncode == 4, proc.stderr
    # two repositories, two passphrases: the message says which one was refused, and why
    assert proc.stderr.strip().splitlines() == [
        f"surety: error: the copy's target {target}: wrong passphrase for this repository "
        "(its passphrase: SURETY_TO_PASSPHRASE)"
    ]
    proc = cli.run(
        "copy", "--all", "--to", target, check=False, env=dict(wrong, SURETY_PASSPHRASE="x")
    )
    assert proc.returncode == 4, proc.stderr
    assert f"the copy's source {source}: wrong passphrase" in proc.stderr
    assert "(its passphrase: SURETY_PASSPHRASE)" in proc.stderr
    given = tmp_path / "target-passphrase"
    given.write_text("wrong\n")
    proc = cli.run("copy", "--all", "--to", target, "--to-passphrase-file", given, check=False)
    assert proc.returncode == 4, proc.stderr
    assert proc.stderr.strip().endswith(f"(its passphrase: {given})")
    limited = cli.json("copy", "--all", "--to", target, "--limit-upload", "64M/s")
    assert limited["copied"] == 2
