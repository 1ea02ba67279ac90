"""kill -9 of a backup into an S3 repository: no point appears, nothing reads as damage,
and the next backup completes (and the one after that finds the orphaned packs' chunks
or re-uploads them — either way every restore is byte-exact)."""

from __future__ import annotations

import filecmp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.cli import PASSPHRASE, Cli, without_surety
from tests.s3.fixtures import S3Bucket


def test_kill_9_during_an_s3_backup_then_the_next_one_completes(
    s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    env = without_surety(s3_bucket.environ())
    env.update(SURETY_REPOSITORY=f"s3://{s3_bucket.name}/k9", SURETY_PASSPHRASE=PASSPHRASE)
    cli = Cli(tmp_path, env)
    cli.run("init", "--chunk-size", "64K")
    image = tmp_path / "disk.img"
    image.write_bytes(os.urandom(48 << 20))  # three packs or more
    client = s3_bucket.client()
    proc = subprocess.Popen(
        [sys.executable, "-m", "surety", "backup", "image", str(image), "--name", "web1"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not client.list_objects_v2(Bucket=s3_bucket.name, Prefix="k9/data/").get("KeyCount"):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the backup uploaded no pack"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert cli.json("points") == []
    check = cli.run("check", check=False)
    assert check.returncode == 0, check.stdout + check.stderr  # orphans are garbage, not damage
    assert "damag" not in check.stdout.lower()
    cli.run("backup", "image", image, "--name", "web1")
    restored = tmp_path / "restored.img"
    cli.run("restore", "image", "web1@latest", "--to", restored)
    assert filecmp.cmp(image, restored, shallow=False)
    final = cli.run("check", "--read-data", check=False)
    assert final.returncode == 0, final.stdout + final.stderr
