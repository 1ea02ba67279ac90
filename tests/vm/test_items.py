"""Item-level recovery on a real guest: ``surety items postgresql`` through the lab.

The restore point (``lab_points.good``) boots from the repository in a lab,
PostgreSQL comes up from the point's instant and ``pg_dump -t victim`` runs
inside it; the dump is checked row by row without loading it anywhere (the
COPY block is parsed). Two lab boots in all: the good dump and a missing
table; the refused target needs no boot.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

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
