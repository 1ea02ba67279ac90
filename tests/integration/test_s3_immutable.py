"""Immutable restore points (format 3) through the real CLI, against a real radosgw.

The proofs of issue 15 item 4: with the backup identity, a delete (refused by the
bucket policy, or a delete marker without it) and an overwrite (unlocked, or
even locked) of every object of a locked point leave it restorable byte-exact,
and restore says it read the locked version; deleting the locked version is
refused by the server to the maintenance identity too until it expires;
``forget`` of a locked point is refused by name with its date; after expiry
``forget`` + ``prune`` with the maintenance identity remove it.

Locks are short here: ``SURETY_TESTING_LOCK_SECONDS`` makes a "day" that many
seconds (``repo.immutable.lock_period``), so the buckets can be emptied.
"""

from __future__ import annotations

import filecmp
import json
import os
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.cli import PASSPHRASE, Cli, without_surety
from tests.s3.candidates import backdate_candidates, open_in_process
from tests.s3.fixtures import S3Bucket

LOCK_SECONDS = "40"  # one "day" = 40 s; objects stay locked 40 s + a step of 10 s
PREFIX = "hosts/a"


def _cli(bucket: S3Bucket, tmp_path: Path, identity: str = "backup", maint: bool = True) -> Cli:
    env = without_surety(os.environ)
    env.update(bucket.environ(identity))  # type: ignore[arg-type]
    if not maint:
        env.pop("SURETY_S3_MAINT_ACCESS_KEY_ID")
        env.pop("SURETY_S3_MAINT_SECRET_ACCESS_KEY")
    env.update(
        SURETY_REPOSITORY=f"s3://{bucket.name}/{PREFIX}",
        SURETY_PASSPHRASE=PASSPHRASE,
        SURETY_CATALOG=str(tmp_path / "catalog.sqlite"),
        SURETY_TESTING_LOCK_SECONDS=LOCK_SECONDS,
    )
    return Cli(tmp_path, env)


def _keys(client: Any, bucket: str) -> list[str]:
    answer = client.list_objects_v2(Bucket=bucket, Prefix=f"{PREFIX}/")
    return [item["Key"] for item in answer.get("Contents", [])]


def _versions(client: Any, bucket: str, key: str) -> list[dict[str, Any]]:
    answer = client.list_object_versions(Bucket=bucket, Prefix=key)
    return [v for v in answer.get("Versions", []) if v["Key"] == key]


def _image(tmp_path: Path, seed: int) -> Path:
    path = tmp_path / f"disk{seed}.img"
    rng = random.Random(seed)
    path.write_bytes(rng.randbytes(1 << 20) + bytes(1 << 20) + rng.randbytes(1 << 20))
    return path


@pytest.fixture
def guarded(s3_make_bucket: Callable[..., S3Bucket], tmp_path: Path) -> S3Bucket:
    """An Object Lock bucket owned by the maintenance identity, with `surety s3 policy`."""
    bucket = s3_make_bucket("maintenance", object_lock=True)
    maint = _cli(bucket, tmp_path, "maintenance")
    users = ("--backup-user", "surety-backup", "--maintenance-user", "surety-maint")
    printed = json.loads(maint.run("s3", "policy", *users).stdout)
    assert any(s["Effect"] == "Deny" for s in printed["Statement"])
    maint.run("s3", "policy", *users, "--apply")
    return bucket


def test_a_locked_point_survives_the_backup_identity(guarded: S3Bucket, tmp_path: Path) -> None:
    backup = _cli(guarded, tmp_path)
    backup.run("init", "--chunk-size", "64K", "--immutable-days", "1")
    first, second = _image(tmp_path, 1), _image(tmp_path, 2)
    backup.run("backup", "image", first, "--name", "web01")
    backup.run("backup", "image", second, "--name", "web01")  # shares chunks with the first
    points = backup.json("points")
    assert len(points) == 2
    now = datetime.now(UTC)
    for point in points:
        assert datetime.fromisoformat(point["locked_until"]) > now
    table = backup.run("points").stdout
    assert "locked until" in table

    # the locked version: refused to the bucket's owner (maintenance) too
    owner, name = guarded.client("maintenance"), guarded.name
    pack = next(k for k in _keys(owner, name) if "/data/" in k)
    original = _versions(owner, name, pack)[-1]
    with pytest.raises(ClientError) as refused:
        owner.delete_object(Bucket=name, Key=pack, VersionId=original["VersionId"])
    assert refused.value.response["Error"]["Code"] == "AccessDenied"

    no_maint = _cli(guarded, tmp_path, maint=False).run("forget", points[0]["id"], check=False)
    assert no_maint.returncode == 2
    assert "maintenance identity" in no_maint.stderr

    maint = _cli(guarded, tmp_path, "maintenance")
    early = maint.run("forget", points[0]["id"], check=False)
    assert early.returncode == 7, early.stderr
    assert points[0]["id"][:12] in early.stderr
    assert "locked until" in early.stderr
    assert "Traceback" not in early.stderr
    assert len(backup.json("points")) == 2  # nothing was forgotten

    attacker, name = guarded.client("backup"), guarded.name
    keys = [k for k in _keys(attacker, name) if "/locks/" not in k]
    assert any("/data/" in k for k in keys)
    assert any("/points/" in k for k in keys)
    for key in keys:  # the policy: no delete; an overwrite goes through, unlocked
        with pytest.raises(ClientError) as refused:
            attacker.delete_object(Bucket=name, Key=key)
        assert refused.value.response["Error"]["Code"] == "AccessDenied"
        attacker.put_object(Bucket=name, Key=key, Body=b"ransom note")

    restored = tmp_path / "restored.img"
    out = backup.run("restore", "image", points[0]["id"], "--to", restored)
    assert filecmp.cmp(first, restored, shallow=False)
    assert "read its locked version" in out.stderr
    assert "replaced by one without a lock" in out.stderr
    check = backup.run("check", "--read-data", check=False)
    assert check.returncode == 0, check.stdout + check.stderr

    # even a *locked* overwrite of every pack (same length) is caught by the hash
    packs = [k for k in keys if "/data/" in k]
    for pack in packs:
        original = _versions(attacker, name, pack)[-1]  # newest first: the oldest is ours
        attacker.put_object(
            Bucket=name,
            Key=pack,
            Body=random.randbytes(int(original["Size"])),
            ObjectLockMode="COMPLIANCE",
            ObjectLockRetainUntilDate=datetime.now(UTC) + timedelta(seconds=2),
        )
    restored.unlink()
    out = backup.run("restore", "image", points[1]["id"], "--to", restored)
    assert filecmp.cmp(second, restored, shallow=False)
    assert "does not match its hash" in out.stderr
    check = backup.run("check", "--read-data", check=False)  # it lists: the first locked version
    assert check.returncode == 0, check.stdout + check.stderr
    assert "versions with different bytes" in check.stderr

    latest = max(datetime.fromisoformat(p["locked_until"]) for p in points)
    time.sleep(max(0.0, (latest - datetime.now(UTC)).total_seconds()) + 1)
    maint.run("forget", points[0]["id"], points[1]["id"])
    marked = json.loads(maint.run("prune", "--json").stdout)  # on S3 a prune marks first
    assert (marked["two_phase"], marked["deleted_packs"]) == (True, 0), marked
    with pytest.MonkeyPatch.context() as patch:  # the back-dated list is locked 40 s too
        patch.setenv("SURETY_TESTING_LOCK_SECONDS", LOCK_SECONDS)
        repo = open_in_process(guarded, PREFIX, "maintenance")
        backdate_candidates(repo, timedelta(minutes=61), delete_old=False)
    pruned = json.loads(maint.run("prune", "--json").stdout)  # a grace later: deletes
    assert pruned["deleted_packs"] >= 1
    assert pruned["kept_locked"] == 0, pruned
    assert backup.json("points") == []
    left = [k for k in _keys(owner, name) if "/data/" in k or "/points/" in k]
    assert left == []


def test_delete_markers_hide_nothing(
    s3_make_bucket: Callable[..., S3Bucket], tmp_path: Path
) -> None:
    """Without a policy the backup identity's DELETE only adds markers: the point stays."""
    bucket = s3_make_bucket("backup", object_lock=True)
    backup = _cli(bucket, tmp_path)
    backup.run("init", "--chunk-size", "64K", "--immutable-days", "1")
    image = _image(tmp_path, 3)
    backup.run("backup", "image", image, "--name", "db1")
    client = bucket.client("backup")
    for key in _keys(client, bucket.name):
        if "/locks/" not in key:
            client.delete_object(Bucket=bucket.name, Key=key)
    assert [k for k in _keys(client, bucket.name) if "/locks/" not in k] == []
    (point,) = backup.json("points")
    restored = tmp_path / "restored.img"
    out = backup.run("restore", "image", point["id"], "--to", restored)
    assert filecmp.cmp(image, restored, shallow=False)
    assert "current version is a delete marker" in out.stderr


def test_init_refusals(
    s3_make_bucket: Callable[..., S3Bucket], s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    plain = _cli(s3_bucket, tmp_path).run("init", "--immutable-days", "1", check=False)
    assert plain.returncode == 2
    assert "has no Object Lock" in plain.stderr
    assert "Traceback" not in plain.stderr
    assert _keys(s3_bucket.client(), s3_bucket.name) == []  # nothing written
    local = _cli(s3_bucket, tmp_path)
    local.env["SURETY_REPOSITORY"] = str(tmp_path / "local-repo")
    refused = local.run("init", "--immutable-days", "3", check=False)
    assert refused.returncode == 2
    assert "needs an S3 location" in refused.stderr
    zero = _cli(s3_bucket, tmp_path).run("init", "--immutable-days", "0", check=False)
    assert zero.returncode == 2
