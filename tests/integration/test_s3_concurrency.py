"""Several hosts back up into one bucket at once: chunk and pack uploads need no lock, commits
do not collide, and ``check --read-data`` finds every point whole afterwards.

Two ``surety backup image`` processes start together against one S3 repository (the test
radosgw on loopback, ``tests/s3``); their images share half their data, so both race to
store the same chunks. Then a third backs up while a ``restore image`` reads.
"""

from __future__ import annotations

import filecmp
import os
import subprocess
import sys
from pathlib import Path

from tests.cli import PASSPHRASE, Cli, without_surety
from tests.s3.fixtures import S3Bucket


def _cli(bucket: S3Bucket, tmp_path: Path) -> Cli:
    env = without_surety(bucket.environ())
    env.update(SURETY_REPOSITORY=f"s3://{bucket.name}/shared", SURETY_PASSPHRASE=PASSPHRASE)
    return Cli(tmp_path, env)


def _backup(cli: Cli, image: Path, name: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "surety", "backup", "image", str(image), "--name", name, "--json"],
        env=cli.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_concurrent_backups_into_one_bucket_then_check_read_data(
    s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    cli = _cli(s3_bucket, tmp_path)
    cli.run("init", "--chunk-size", "64K")
    shared = os.urandom(6 << 20)
    images = {}
    for host in ("host-a", "host-b", "host-c"):
        images[host] = tmp_path / f"{host}.img"
        images[host].write_bytes(shared + os.urandom(6 << 20))
    racing = [_backup(cli, images[h], h) for h in ("host-a", "host-b")]
    for proc in racing:
        _out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    restoring = subprocess.Popen(
        [sys.executable, "-m", "surety", "restore", "image", "host-a@latest",
         "--to", str(tmp_path / "a.out")],
        env=cli.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    third = _backup(cli, images["host-c"], "host-c")
    for proc in (restoring, third):
        _out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    assert filecmp.cmp(images["host-a"], tmp_path / "a.out", shallow=False)
    names = sorted(p["name"] for p in cli.json("points"))
    assert names == ["host-a", "host-b", "host-c"]
    check = cli.run("check", "--read-data", check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    for host in ("host-b", "host-c"):
        target = tmp_path / f"{host}.out"
        cli.run("restore", "image", f"{host}@latest", "--to", target)
        assert filecmp.cmp(images[host], target, shallow=False)
