"""An application group in the lab: a PostgreSQL primary and its standby, restored together.

A real pair (tests/guests/replication.py: an isolated network, streaming
replication) is backed up member by member - the standby first, so that the
primary's restore point holds all the WAL the standby's has seen - and then
both points boot in one lab in group order: the primary, then the standby,
which must find its primary at the production address (the lab gives the
clones their recorded addresses back) and stream from it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli import Cli
from tests.guests import replication as rep

pytestmark = [pytest.mark.scenario, pytest.mark.timeout(2400)]


def _backup(cli: Cli, member: rep.Member) -> str:
    proc = cli.run("backup", "vm", member.name, "--consistency", "application", "--json",
                   timeout=900)  # fmt: skip
    point = json.loads(proc.stdout)
    assert point["consistency"] == "application", point["consistency_reason"]
    return str(point["id"])


def test_primary_and_standby_verify_in_order_and_replicate(
    scenario_cli: Cli, tmp_path: Path
) -> None:
    with rep.pg_pair() as pair:
        rep.pg_write_rows(pair.a, n=10, tag="group", first_id=1)
        rep.pg_wait_caught_up(pair.a, pair.b)
        standby = _backup(scenario_cli, pair.b)
        primary = _backup(scenario_cli, pair.a)
        addresses = (pair.a.address, pair.b.address)
    group = tmp_path / "group.toml"
    group.write_text(
        'name = "pg-pair"\n\n'
        f'[[vm]]\npoint = "{primary}"\nname = "primary"\n'
        'probes = ["heartbeat", "ping"]\n[[vm.probe]]\nkind = "tcp"\nport = 5432\n\n'
        f'[[vm]]\npoint = "{standby}"\nname = "standby"\n'
        'probes = ["heartbeat", "ping", "postgresql", "replication"]\n'
    )
    proc = scenario_cli.run(
        "verify", "--group", group, "--proofs", tmp_path / "proofs", "--json",
        "--catalog", tmp_path / "catalog.sqlite", check=False, timeout=1800,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr + proc.stdout[-3000:]
    proof = json.loads(proc.stdout)
    first, second = proof["vms"]
    assert (first["name"], second["name"]) == ("primary", "standby")
    probes = {p["probe"]: p for p in second["probes"]}
    assert probes["replication"]["ok"]
    assert f"streaming from {addresses[0]}" in probes["replication"]["evidence"]
    assert "standby" in probes["postgresql"]["evidence"]
    assert any(addresses[1] in line for line in second["network"])
    order = [t["vm"] for t in proof["timeline"] if t["event"].startswith("started")]
    assert order == ["primary", "standby"]
    agent_ok = {t["vm"]: t["at"] for t in proof["timeline"] if "probe" in t["event"]}
    assert agent_ok["primary"] <= min(t["at"] for t in proof["timeline"] if t["vm"] == "standby")
