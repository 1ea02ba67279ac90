"""Prune in two phases on a real radosgw (format 4): mark, wait out the grace, delete.

Through the real CLI: ``prune`` on S3 marks what no restore point references
and deletes nothing; a later prune deletes a candidate only once it was marked
a grace period ago (the tests back-date the candidate list instead of waiting
an hour) and only if it is still unreferenced - a candidate referenced again is
kept and named. The race two phases exist for, with two processes: a backup
whose lock is judged stale (back-dated on purpose) while it sits between its
lock check and its manifest write, and a prune that removes that lock and runs
meanwhile; the backup commits, every pack it needs survives, and its point
restores byte-exact. kill -9 between mark and delete and during the deletes
leaves a valid repository, and a rerun goes on.
"""

from __future__ import annotations

import filecmp
import json
import os
import random
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from surety.repo.repository import Repository
from surety.repo.storage.retry import RetryingStorage
from surety.repo.storage.s3 import S3Storage
from tests.cli import PASSPHRASE, Cli, without_surety
from tests.s3.candidates import backdate_candidates, open_in_process
from tests.s3.fixtures import S3Bucket
from tests.unit.conftest import CHEAP_KDF

PREFIX = "repo"
CHUNK = 64 << 10
PAST_GRACE = timedelta(minutes=61)

# `surety ARGS` with one storage call of S3Storage wrapped: STOP_ON="put:points/" stops
# before the first put of a name under points/, "after-delete:data/" after the first
# delete under data/. When stopped, it creates $STOP_MARK and waits for $STOP_RELEASE.
_STOPPING = """
import os, runpy, sys, time
from pathlib import Path
from surety.repo.storage.s3 import S3Storage
when, _, rest = os.environ["STOP_ON"].rpartition("-")
method, _, prefix = rest.partition(":")
real = getattr(S3Storage, method)
def stop():
    Path(os.environ["STOP_MARK"]).touch()
    while not Path(os.environ["STOP_RELEASE"]).exists():
        time.sleep(0.05)
def wrapped(self, name, *args, **kwargs):
    hit = name.startswith(prefix)
    if hit and when != "after":
        stop()
    result = real(self, name, *args, **kwargs)
    if hit and when == "after":
        stop()
    return result
setattr(S3Storage, method, wrapped)
sys.argv = ["surety", *sys.argv[1:]]
runpy.run_module("surety", run_name="__main__", alter_sys=True)
"""


@pytest.fixture
def cli(s3_bucket: S3Bucket, tmp_path: Path) -> Cli:
    """A repository in a plain bucket (64 KiB chunks, cheap KDF) and its ``Cli``."""
    storage = RetryingStorage(S3Storage(s3_bucket.name, PREFIX, s3_bucket.client("backup")))
    Repository.init(storage, PASSPHRASE, CHUNK, CHEAP_KDF)
    env = without_surety(os.environ)
    env.update(s3_bucket.environ("backup"))
    for key in ("SURETY_S3_MAINT_ACCESS_KEY_ID", "SURETY_S3_MAINT_SECRET_ACCESS_KEY"):
        env.pop(key)  # the backup identity owns this bucket: it prunes
    env.update(
        SURETY_REPOSITORY=f"s3://{s3_bucket.name}/{PREFIX}",
        SURETY_PASSPHRASE=PASSPHRASE,
        SURETY_CATALOG=str(tmp_path / "catalog.sqlite"),
    )
    return Cli(tmp_path, env)


def _image(tmp_path: Path, name: str, seed: int, size: int = 2 << 20) -> Path:
    path = tmp_path / name
    path.write_bytes(random.Random(seed).randbytes(size))
    return path


def _point(cli: Cli, image: Path, name: str) -> str:
    return str(cli.json("backup", "image", image, "--name", name)["id"])


def _prune(cli: Cli, *args: str) -> dict[str, Any]:
    proc = cli.run("prune", "--json", *args)
    report: dict[str, Any] = json.loads(proc.stdout)
    report["stderr"] = proc.stderr
    return report


def _keys(bucket: S3Bucket, kind: str) -> set[str]:
    answer = bucket.client().list_objects_v2(Bucket=bucket.name, Prefix=f"{PREFIX}/{kind}")
    return {item["Key"] for item in answer.get("Contents", [])}


def _restores(cli: Cli, point: str, source: Path) -> None:
    target = cli.repo / f"restored-{point[:8]}.img"
    cli.run("restore", "image", point, "--to", target)
    assert filecmp.cmp(source, target, shallow=False)
    target.unlink()


def _clean(cli: Cli) -> dict[str, Any]:
    checked: dict[str, Any] = cli.json("check", "--read-data")
    assert checked["errors"] == [], checked
    return checked


def _backdate(bucket: S3Bucket) -> None:
    repo = open_in_process(bucket, PREFIX)
    assert backdate_candidates(repo, PAST_GRACE) >= 1


def test_mark_wait_then_delete_after_the_grace(
    cli: Cli, s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    first, second = _image(tmp_path, "a.img", 1), _image(tmp_path, "c.img", 2)
    gone = _point(cli, first, "a")
    kept = _point(cli, second, "c")
    cli.run("forget", gone)
    packs = _keys(s3_bucket, "data/")
    started = datetime.now(UTC)
    marked = _prune(cli)
    assert (marked["deleted_packs"], marked["deleted_images"], marked["marked"]) == (0, 0, 2)
    assert (marked["two_phase"], marked["grace_seconds"]) == (True, 3600)
    due = datetime.fromisoformat(marked["next_deletion"])
    assert started + timedelta(minutes=59) < due < datetime.now(UTC) + timedelta(minutes=61)
    assert _keys(s3_bucket, "data/") == packs
    assert len(_keys(s3_bucket, "candidates/")) == 1

    plain = cli.run("prune")  # a second prune inside the grace: the first mark counts
    assert "deleted 0 packs" in plain.stdout
    assert "marked 0 unreferenced object(s)" in plain.stdout
    assert "2 candidate(s)" in plain.stdout
    assert "grace 1h" in plain.stdout
    assert _keys(s3_bucket, "data/") == packs

    _backdate(s3_bucket)
    done = _prune(cli)
    assert (done["deleted_packs"], done["deleted_images"], done["waiting"]) == (1, 1, 0)
    assert done["freed_bytes"] > 0
    assert len(_keys(s3_bucket, "data/")) == len(packs) - 1
    _restores(cli, kept, second)
    assert _clean(cli)["warnings"] == []


def test_a_candidate_referenced_again_survives(
    cli: Cli, s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    image = _image(tmp_path, "a.img", 3)
    cli.run("forget", _point(cli, image, "a"))
    assert _prune(cli)["marked"] == 2
    again = _point(cli, image, "a")  # deduplicated against the marked, still indexed pack
    packs = _keys(s3_bucket, "data/")
    _backdate(s3_bucket)
    report = _prune(cli)
    assert (report["deleted_packs"], report["deleted_images"]) == (0, 0)
    assert report["referenced_again"] == 2
    assert "referenced again" in report["stderr"] or any(
        "referenced again" in n for n in report["notes"]
    )
    assert _keys(s3_bucket, "data/") == packs
    _restores(cli, again, image)
    assert _clean(cli)["candidates"] == 0


def _stopped(cli: Cli, tmp_path: Path, stop_on: str, *args: str) -> subprocess.Popen[str]:
    """``surety ARGS`` that stops at ``stop_on`` (see ``_STOPPING``); returns once stopped."""
    mark, release = tmp_path / f"stopped-{time.time_ns()}", tmp_path / "release"
    env = {**cli.env, "STOP_ON": stop_on, "STOP_MARK": str(mark), "STOP_RELEASE": str(release)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _STOPPING, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while not mark.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            out, err = proc.communicate(timeout=30) if proc.poll() is not None else ("", "")
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"surety {args} never reached {stop_on}: {proc.returncode}\n{out}\n{err}")
        time.sleep(0.05)
    return proc


def _make_lock_stale(bucket: S3Bucket) -> None:
    """Back-date the only lock (a backup's, from another host's PID namespace): stale."""
    client = bucket.client()
    (key,) = _keys(bucket, "locks/")
    doc = json.loads(client.get_object(Bucket=bucket.name, Key=key)["Body"].read())
    assert doc["exclusive"] is False
    doc.update(pid_ns="1", refreshed=time.time() - 31 * 60)
    client.put_object(Bucket=bucket.name, Key=key, Body=json.dumps(doc).encode())


def test_a_backup_whose_lock_went_stale_keeps_every_pack_it_commits(
    cli: Cli, s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    old = _image(tmp_path, "old.img", 4)
    cli.run("forget", _point(cli, old, "web01"))  # its pack stays indexed: deduplicated below
    new = tmp_path / "new.img"
    new.write_bytes(old.read_bytes()[: 1 << 20] + random.Random(5).randbytes(1 << 20))
    backup = _stopped(
        cli, tmp_path, "before-put:points/", "backup", "image", str(new), "--name", "web01"
    )
    try:
        _make_lock_stale(s3_bucket)  # it passed its lock check; its manifest is not written
        marked = _prune(cli)
        assert "removed stale shared lock by 'backup image" in marked["stderr"]
        # one phase would have deleted all four: the old pack and image index, and the
        # backup's own pack and image index (no manifest names them yet)
        assert (marked["deleted_packs"], marked["deleted_images"], marked["marked"]) == (0, 0, 4)
        (tmp_path / "release").touch()
        out, err = backup.communicate(timeout=120)
    finally:
        if backup.poll() is None:
            os.killpg(backup.pid, signal.SIGKILL)
    assert backup.returncode == 0, out + err
    (point,) = cli.json("points")
    _backdate(s3_bucket)  # a grace later: only the old image index is still unreferenced
    report = _prune(cli)
    assert (report["deleted_packs"], report["deleted_images"]) == (0, 1)
    # the old pack is half used now: repacked, and the replaced pack marked afresh
    assert (report["repacked_packs"], report["marked"], report["waiting"]) == (1, 1, 1)
    assert report["referenced_again"] == 3  # the old pack, the backup's pack and image index
    _restores(cli, point["id"], new)
    checked = _clean(cli)
    assert checked["warnings"] == [], checked


@pytest.mark.parametrize(
    "stop_on",
    [
        pytest.param("after-put:candidates/", id="between-mark-and-delete"),
        pytest.param("after-delete:data/", id="during-delete"),
    ],
)
def test_kill_9_in_the_delete_prune_leaves_a_valid_repository_and_a_rerun_goes_on(
    cli: Cli, s3_bucket: S3Bucket, tmp_path: Path, stop_on: str
) -> None:
    images = [_image(tmp_path, f"{n}.img", 10 + n, 1 << 20) for n in range(3)]
    points = [_point(cli, image, f"vm{n}") for n, image in enumerate(images)]
    cli.run("forget", points[0], points[1])
    assert _prune(cli)["marked"] == 4  # two packs, two image indexes
    _backdate(s3_bucket)
    killed = _stopped(cli, tmp_path, stop_on, "prune")
    os.killpg(killed.pid, signal.SIGKILL)
    killed.communicate(timeout=60)
    assert len(_keys(s3_bucket, "data/")) == (3 if stop_on.endswith("candidates/") else 2)
    structure = cli.json("check")  # valid: at most garbage warnings
    assert structure["errors"] == [], structure
    rerun = _prune(cli)
    assert rerun["deleted_packs"] == (2 if stop_on.endswith("candidates/") else 1), rerun
    assert rerun["waiting"] == 0
    assert len(_keys(s3_bucket, "data/")) == 1
    _restores(cli, points[2], images[2])
    checked = _clean(cli)
    assert checked["warnings"] == [], checked
