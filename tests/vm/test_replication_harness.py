"""Smoke test of tests/guests/replication.py: isolated network, PostgreSQL and MariaDB pairs.

Each pair test builds its pair (network + 2 VMs), writes on the primary /
source, checks that the rows replicate (checksums equal), fails over once and
asserts what the databases report. It also boots the former primary/source
again without any restore procedure, to show what the harness makes
observable: a second primary on the old timeline, a source with an old GTID
position. At most two VMs run per test. Times go to stderr (``pytest -s``).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.guests import agent, apps, testvm
from tests.guests import replication as rep

pytestmark = pytest.mark.vm

PAIR_TIMEOUT = 3600
"""Seconds per pair test: two TCG guests on a busy 2-core host."""


def report(name: str, timings: dict[str, float]) -> None:
    """Print the timings of a test (visible with ``pytest -s``)."""
    shown = ", ".join(f"{k}={v:.1f}s" for k, v in timings.items())
    print(f"[{name}] {shown}", file=sys.stderr, flush=True)


def assert_gone(conn: object, pair: rep.Pair) -> None:
    """After the ``with`` block: no VM, no VM directory, no network, no bridge left."""
    for member in pair.members:
        assert testvm.lookup(conn, member.name) is None, f"{member.name} still defined"
        assert not (testvm.VM_ROOT / member.name).exists(), f"{member.name}: directory left"
    assert not rep.network_exists(conn, pair.network.name), f"{pair.network.name} left"
    assert not Path(f"/sys/class/net/{pair.network.bridge}").exists(), "bridge left"


def test_network_is_isolated_and_removed(libvirt_conn: object) -> None:
    with rep.lab_network(libvirt_conn) as net:
        xml = libvirt_conn.networkLookupByName(net.name).XMLDesc(0)
        assert "<forward" not in xml
        assert "<ip" not in xml
        assert f"<bridge name='{net.bridge}'" in xml
        assert Path(f"/sys/class/net/{net.bridge}").exists()
        assert rep.bridge_host_addresses(net.bridge) == []
        assert net.cidr.startswith("10.231.")
        assert net.cidr.endswith(".0/24")
    assert not rep.network_exists(libvirt_conn, net.name)
    assert not Path(f"/sys/class/net/{net.bridge}").exists()
    assert rep.destroy_network(libvirt_conn, net.name) is False


@pytest.mark.timeout(PAIR_TIMEOUT)
def test_postgresql_pair_replicates_and_fails_over(libvirt_conn: object, tmp_path: Path) -> None:
    t: dict[str, float] = {}
    start = time.monotonic()
    with rep.pg_pair(conn=libvirt_conn, archive=True, slot="standby_b") as pair:
        t.update(pair.timings)
        t["pair_ready"] = time.monotonic() - start
        a, b = pair.a, pair.b
        assert (rep.pg_role(a), rep.pg_role(b)) == ("primary", "standby")
        assert (rep.pg_timeline(a), rep.pg_timeline(b)) == (1, 1)
        (row,) = rep.pg_replication_state(a)
        assert row["client_addr"] == b.address, row
        assert row["application_name"] == b.name, row
        assert row["state"] == "streaming", row
        (slot,) = rep.pg_slots(a)
        assert (slot["slot_name"], slot["active"]) == ("standby_b", "true"), slot
        assert rep.pg_wal_receiver(b)["sender_host"] == a.address

        step = time.monotonic()
        rep.pg_write_rows(a, "items", 500, "a1")
        t["catch_up"] = rep.pg_wait_caught_up(a, b)
        t["write_and_catch_up"] = time.monotonic() - step
        before = rep.pg_table_checksum(a)
        assert before.rows == 500
        assert rep.pg_table_checksum(b) == before
        with pytest.raises(agent.AgentError, match="read-only transaction"):
            rep.pg_write_rows(b, "items", 1, "b0", first_id=10_000)

        # fail over: the primary loses power, the standby is promoted (timeline 1 -> 2)
        step = time.monotonic()
        rep.hard_power_off(a)
        t["promote"] = rep.pg_promote(b)
        t["failover"] = time.monotonic() - step
        assert rep.pg_role(b) == "primary"
        assert rep.pg_timeline(b) == 2
        assert "selected new timeline ID: 2" in rep.pg_log_tail(b, 200)
        rep.pg_write_rows(b, "items", 100, "b2", first_id=1, upsert=True)  # same ids, new content
        after = rep.pg_table_checksum(b)
        assert after.rows == 500
        assert after != before
        assert rep.pg_tags(b) == {"a1": 400, "b2": 100}

        # the old primary's disk, booted as a new VM with the same MAC (a naive "restore")
        raw = tmp_path / "a.img"
        step = time.monotonic()
        subprocess.run(
            ["qemu-img", "convert", "-q", "-O", "raw", str(testvm.VM_ROOT / a.name / "vda.qcow2"),
             str(raw)],
            check=True,
        )  # fmt: skip
        testvm.down(a.name)  # at most two VMs at a time
        old = rep.boot_restored_member(
            f"{a.name}r", raw, pair.network, a.host, a.mac, app="postgresql", conn=libvirt_conn
        )
        try:
            t["restored_boot"] = time.monotonic() - step
            assert old.address == a.address
            rep.wait_ping(old, b.address)
            # crash recovery on timeline 1: a second primary with the old rows
            assert rep.pg_role(old) == "primary"
            assert rep.pg_timeline(old) == 1
            assert rep.pg_table_checksum(old) == before
            assert "not properly shut down" in rep.pg_log_tail(old, 100)
            assert rep.pg_slots(old)[0]["slot_name"] == "standby_b"  # stale slot came back
            assert rep.pg_replication_state(old) == []
        finally:
            testvm.down(old.name)
    t["total"] = time.monotonic() - start
    assert_gone(libvirt_conn, pair)
    report("postgresql", t)


@pytest.mark.timeout(PAIR_TIMEOUT)
def test_mariadb_pair_replicates_and_fails_over(libvirt_conn: object) -> None:
    t: dict[str, float] = {}
    start = time.monotonic()
    with rep.mariadb_pair(conn=libvirt_conn) as pair:
        t.update(pair.timings)
        t["pair_ready"] = time.monotonic() - start
        a, b = pair.a, pair.b
        status = rep.mariadb_slave_status(b)
        assert status["Slave_IO_Running"] == "Yes", status
        assert status["Slave_SQL_Running"] == "Yes", status
        assert status["Master_Host"] == a.address, status
        assert status["Using_Gtid"] == "Slave_Pos", status
        assert status["Last_IO_Errno"] == "0", status
        assert rep.mariadb_slave_status(a) == {}

        step = time.monotonic()
        rep.mariadb_write_rows(a, "items", 500, "a1")
        t["catch_up"] = rep.mariadb_wait_caught_up(a, b)
        t["write_and_catch_up"] = time.monotonic() - step
        before = rep.mariadb_table_checksum(a)
        assert before.rows == 500
        assert rep.mariadb_table_checksum(b) == before
        ga, gb = rep.mariadb_gtid(a), rep.mariadb_gtid(b)
        assert (ga["server_id"], gb["server_id"]) == ("11", "21")
        domain, server, seq_a = ga["gtid_binlog_pos"].split("-")
        assert (domain, server) == ("0", "11"), ga
        assert gb["gtid_slave_pos"] == ga["gtid_binlog_pos"], (ga, gb)
        assert gb["gtid_binlog_pos"] == ga["gtid_binlog_pos"], (ga, gb)  # log_slave_updates

        # fail over: the source loses power, the replica forgets it and takes writes
        step = time.monotonic()
        rep.hard_power_off(a)
        rep.mariadb_promote(b)
        t["failover"] = time.monotonic() - step
        assert rep.mariadb_slave_status(b) == {}
        rep.mariadb_write_rows(b, "items", 100, "b2", first_id=1, upsert=True)
        gb = rep.mariadb_gtid(b)
        domain, server, seq_b = gb["gtid_binlog_pos"].split("-")
        assert (domain, server) == ("0", "21"), gb
        assert int(seq_b) == int(seq_a) + 1, (ga, gb)
        after = rep.mariadb_table_checksum(b)
        assert after.rows == 500
        assert after.content != before.content
        assert after.server != before.server
        assert rep.mariadb_tags(b) == {"a1": 400, "b2": 100}

        # the old source boots again as it was: its GTID position is behind b's
        t["start_again"] = rep.start_again(a)
        assert rep.ping_ok(a, b.address)
        ga2 = rep.mariadb_gtid(a)
        assert ga2["gtid_binlog_pos"] == ga["gtid_binlog_pos"], (ga, ga2)
        assert rep.mariadb_table_checksum(a) == before
        assert rep.mariadb_slave_status(a) == {}
        assert "ready for connections" in rep.mariadb_error_log_tail(a, 30)
        apps.wait_mariadb_ready(a)
    t["total"] = time.monotonic() - start
    assert_gone(libvirt_conn, pair)
    report("mariadb", t)
