"""Item-level recovery on a real guest: ``surety items postgresql`` through the lab.

The restore point (``lab_points.good``) boots from the repository in a lab,
PostgreSQL comes up from the point's instant and ``pg_dump -t victim`` runs
inside it; the dump is checked row by row without loading it anywhere (the
COPY block is parsed). Three lab boots in all: the good dump, a missing
table, and the same dump from an S3 copy of the point (issue 15: items read a
point from an S3 repository too); the refused target needs no boot.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cli import PASSPHRASE, Cli
from tests.s3.fixtures import S3Bucket
from tests.vm.conftest import LabPoints

pytestmark = pytest.mark.vm

ITEMS_TIMEOUT = 1200


def copy_rows(dump: str, table: str) -> dict[int, str]:
    """The rows of ``table``'s COPY block in a plain pg_dump (id -> v)."""
    lines = iter(dump.splitlines())
    for line in lines:
        if line.startswith(f"COPY public.{table} (id, v) FROM stdin;"):
            break
    else:
        raise AssertionError(f"no COPY block for {table} in the dump")
    rows = {}
    for line in lines:
        if line == "\\.":
            return rows
        key, value = line.split("\t")
        rows[int(key)] = value
    raise AssertionError("the COPY block does not end")


def items(lab_points: LabPoints, target: Path, *args: str) -> list[str | Path]:
    return ["items", "postgresql", lab_points.good, "--db", "postgres", *args, "--to", target]


def test_existing_target_is_refused_before_any_boot(lab_points: LabPoints, tmp_path: Path) -> None:
    target = tmp_path / "victim.sql"
    target.write_text("keep me")
    proc = lab_points.cli.run(*items(lab_points, target, "--table", "victim"), check=False)
    assert proc.returncode == 11, proc.stderr
    assert "exists" in proc.stderr
    assert "--force" in proc.stderr
    assert target.read_text() == "keep me"


def test_pg_dump_of_one_table_from_the_restore_point(lab_points: LabPoints, tmp_path: Path) -> None:
    target = tmp_path / "victim.sql"
    proc = lab_points.cli.run(
        *items(lab_points, target, "--table", "victim", "--json"), timeout=ITEMS_TIMEOUT
    )
    doc = json.loads(proc.stdout)
    data = target.read_bytes()
    assert doc["bytes"] == len(data)
    assert doc["sha256"] == hashlib.sha256(data).hexdigest()
    assert doc["path"] == str(target)
    assert doc["tables"] == ["victim"]
    print("items timings (s):", doc["seconds"])
    rows = copy_rows(data.decode(), "victim")
    assert rows == {i: hashlib.md5(str(i).encode()).hexdigest() for i in range(1, 501)}
    assert "pgbench_accounts" not in data.decode()  # only the table asked for
    assert target.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["victim.sql"]  # no temporary left


def test_missing_table_is_one_line_and_writes_nothing(
    lab_points: LabPoints, tmp_path: Path
) -> None:
    target = tmp_path / "nosuch.sql"
    proc = lab_points.cli.run(
        *items(lab_points, target, "--table", "victim", "--table", "nosuch"),
        check=False,
        timeout=ITEMS_TIMEOUT,
    )
    assert proc.returncode == 15, proc.stderr
    error = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(error) == 1, proc.stderr
    assert "pg_dump" in error[0]
    assert "nosuch" in error[0]
    assert "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_same_dump_from_an_s3_copy_of_the_point(
    lab_points: LabPoints, s3_make_bucket: Callable[..., S3Bucket], tmp_path: Path
) -> None:
    """The point copied to a bucket, then dumped from there: the lab's disks are served by
    nbdkit reading the bucket (every chunk hash-checked), with the backup identity only."""
    bucket = s3_make_bucket()
    location = f"s3://{bucket.name}/items"
    env = {**lab_points.cli.env, **bucket.environ("backup")}
    for maintenance in ("SURETY_S3_MAINT_ACCESS_KEY_ID", "SURETY_S3_MAINT_SECRET_ACCESS_KEY"):
        env.pop(maintenance)  # a backup host never holds them
    local = Cli(lab_points.cli.repo, {**env, "SURETY_TO_PASSPHRASE": PASSPHRASE})
    remote = Cli(
        lab_points.cli.repo,
        {**env, "SURETY_REPOSITORY": location, "SURETY_CATALOG": str(tmp_path / "catalog.sqlite")},
    )
    remote.run("init")
    copied = local.run("copy", lab_points.good, "--to", location, "--json", timeout=ITEMS_TIMEOUT)
    assert json.loads(copied.stdout)["copied"], copied.stdout
    (point,) = remote.json("points")
    target = tmp_path / "victim.sql"
    proc = remote.run(
        "items", "postgresql", point["id"], "--db", "postgres", "--table", "victim",
        "--to", target, "--json", timeout=ITEMS_TIMEOUT,
    )  # fmt: skip
    doc = json.loads(proc.stdout)
    print("items from S3 timings (s):", doc["seconds"])
    rows = copy_rows(target.read_text(), "victim")
    assert rows == {i: hashlib.md5(str(i).encode()).hexdigest() for i in range(1, 501)}
