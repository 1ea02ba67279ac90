"""Smoke test of tests/guests/replication.py: the isolated lab network.

The pairs themselves (two VMs, replication, failover, power-off) are exercised
by every case of tests/scenarios/test_replication.py, which asserts on each
pair that the host has no address on the bridge and the guests no route beyond
the lab; their separate smoke tests were dropped to keep CI within its budget.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.guests import replication as rep
from tests.guests import testvm

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
