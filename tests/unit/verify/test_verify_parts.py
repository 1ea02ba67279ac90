"""The pure parts of verification: groups, addresses, proofs, the catalog, lab XML."""

from __future__ import annotations

import ipaddress
import json
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from surety.catalog import Catalog, Verification
from surety.core.errors import UsageError
from surety.hypervisor import labnet
from surety.hypervisor.guest_agent import parse_interfaces
from surety.hypervisor.port import GuestAgentError
from surety.hypervisor.restore_xml import DiskPlacement, DomainRewrite, onto_taps, rewrite_domain
from surety.testing.fake_guest import FakeGuest, GuestResult
from surety.verify import addressing
from surety.verify.addressing import LAB_SUBNET, prober_address, readdress, wanted_addresses
from surety.verify.application_group import default_probes, parse_group
from surety.verify.probes import ProbeContext, ProbeResult, ProbeSpec, run_probe
from surety.verify.proof import Proof, VmProof, render_html, write_proof

DOMAIN = """<domain type='kvm'>
  <name>db1</name><uuid>7d2c3f5e-0000-4000-8000-000000000001</uuid>
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
      <source file='/var/lib/libvirt/images/db1.qcow2'/><target dev='vda' bus='virtio'/></disk>
    <interface type='network'><mac address='52:54:00:11:22:33'/>
      <source network='prod' portid='x'/><model type='virtio'/><filterref filter='clean-traffic'/>
    </interface>
    <interface type='bridge'><mac address='52:54:00:11:22:34'/><source bridge='br9'/></interface>
  </devices>
</domain>"""


# -- groups -----------------------------------------------------------------------------
def test_group_members_keep_file_order_and_probe_options() -> None:
    group = parse_group(
        {
            "name": "orders",
            "vm": [
                {
                    "point": "db1@latest",
                    "probes": ["heartbeat"],
                    "probe": [{"kind": "tcp", "port": 5432}],
                },
                {"point": "db2@latest", "name": "standby", "boot_timeout": 90},
            ],
        }
    )
    assert [m.point for m in group.members] == ["db1@latest", "db2@latest"]
    first, second = group.members
    assert first.probes is not None
    assert [p.label for p in first.probes] == ["heartbeat", "tcp:5432"]
    assert second.probes is None
    assert second.boot_timeout == 90
    assert second.name == "standby"


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({}, "no [[vm]] members"),
        ({"vm": [{"name": "x"}]}, "needs point"),
        ({"vm": [{"point": "a", "probes": ["smoke"]}]}, "unknown probe 'smoke'"),
        ({"vm": [{"point": "a", "probe": [{"kind": "tcp"}]}]}, "needs port"),
        ({"vm": [{"point": "a", "probe": [{"kind": "script"}]}]}, "needs run"),
        ({"vm": [{"point": "a", "boot_timeout": -1}]}, "positive number"),
        ({"vm": [{"point": "a"}, {"point": "a"}]}, "share a name"),
        ({"vm": [{"point": "a"}], "colour": "red"}, "unknown key"),
    ],
)
def test_bad_groups_are_usage_errors(doc: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_group(doc)


def test_default_probes_follow_the_writers_that_held_their_app() -> None:
    apps = {"postgresql": {"state": "thawed"}, "mariadb": {"state": "failed"}}
    assert [p.kind for p in default_probes(apps, has_nic=True)] == [
        "heartbeat",
        "ping",
        "postgresql",
    ]
    assert [p.kind for p in default_probes({}, has_nic=False)] == ["heartbeat"]


def test_a_domain_controller_verified_alone_gets_the_ad_probe_without_replication() -> None:
    probes = default_probes({"samba-ad": {"state": "thawed"}}, has_nic=True)
    assert [(p.kind, p.options) for p in probes] == [
        ("heartbeat", {}),
        ("ping", {}),
        ("ad", {"replication": False}),
    ]
    probes[-1].options["replication"] = True  # each point gets its own options
    assert default_probes({"samba-ad": {"state": "thawed"}}, True)[-1].options == {
        "replication": False
    }


# -- addresses ----------------------------------------------------------------------------
def test_a_clone_gets_the_addresses_recorded_for_its_production_mac() -> None:
    recorded = [{"mac": "52:54:00:11:22:33", "name": "eth0", "ipv4": ["10.231.7.10/24"]}]
    assert wanted_addresses(recorded, "52:54:00:11:22:33", 10) == (
        ipaddress.IPv4Interface("10.231.7.10/24"),
    )
    fallback = wanted_addresses(recorded, "52:54:00:99:99:99", 12)
    assert fallback == (ipaddress.IPv4Interface(f"{LAB_SUBNET[12]}/24"),)


def test_the_prober_takes_the_highest_free_address() -> None:
    net = ipaddress.IPv4Network("10.0.2.0/24")
    assert str(prober_address(net, [])) == "10.0.2.254/24"
    taken = [ipaddress.IPv4Address("10.0.2.254")]
    assert str(prober_address(net, taken)) == "10.0.2.253/24"


def test_agent_interfaces_are_parsed_without_loopback() -> None:
    reply = [
        {"name": "lo", "hardware-address": "00:00:00:00:00:00", "ip-addresses": []},
        {
            "name": "eth0",
            "hardware-address": "52:54:00:AA:BB:01",
            "ip-addresses": [
                {"ip-address-type": "ipv4", "ip-address": "10.0.2.15", "prefix": 24},
                {"ip-address-type": "ipv6", "ip-address": "fe80::1", "prefix": 64},
            ],
        },
    ]
    assert parse_interfaces(reply) == [
        {"name": "eth0", "mac": "52:54:00:aa:bb:01", "ipv4": ["10.0.2.15/24"]}
    ]


# -- lab XML and names ----------------------------------------------------------------------
def test_lab_nics_become_unmanaged_taps_and_disks_overlays_over_nbd() -> None:
    xml = rewrite_domain(
        DOMAIN,
        DomainRewrite(
            name="surety-lab-0a1b2c3d-db1",
            uuid="7d2c3f5e-0000-4000-8000-000000000002",
            macs=("52:54:00:00:00:01", "52:54:00:00:00:02"),
            disks=(DiskPlacement("vda", "/run/lab/vda.qcow2", "qcow2", "/run/lab/nbd.sock"),),
        ),
    )
    root = ET.fromstring(onto_taps(xml, ["sl0a1b2c3dn0", "sl0a1b2c3dn1"]))
    nics = root.findall("./devices/interface")
    assert [n.get("type") for n in nics] == ["ethernet", "ethernet"]
    assert [n.find("target").get("dev") for n in nics] == ["sl0a1b2c3dn0", "sl0a1b2c3dn1"]  # type: ignore[union-attr]
    assert all(n.find("target").get("managed") == "no" for n in nics)  # type: ignore[union-attr]
    assert all(n.find("source") is None and n.find("filterref") is None for n in nics)
    assert [n.find("mac").get("address") for n in nics] == [
        "52:54:00:00:00:01",
        "52:54:00:00:00:02",
    ]  # type: ignore[union-attr]
    disk = root.find("./devices/disk")
    assert disk is not None
    assert disk.find("source").get("file") == "/run/lab/vda.qcow2"  # type: ignore[union-attr]
    backing = disk.find("backingStore")
    assert backing is not None
    assert backing.get("type") == "network"
    host = backing.find("source/host")
    assert host is not None
    assert (host.get("transport"), host.get("socket")) == ("unix", "/run/lab/nbd.sock")
    with pytest.raises(ValueError, match="1 taps for 2 interfaces"):
        onto_taps(xml, ["only-one"])


def test_lab_names_fit_the_kernel_and_are_checked() -> None:
    assert len(labnet.tap_name("0a1b2c3d", 12)) <= 15
    assert labnet.namespace_of("0a1b2c3d") == "surety-lab-0a1b2c3d"
    with pytest.raises(ValueError, match="bad lab id"):
        labnet.namespace_of("../etc")


# -- proofs and the catalog ----------------------------------------------------------------------
def _proof(ok: bool) -> Proof:
    proof = Proof("0a1b2c3d", "orders", time.time() - 5)
    vm = VmProof("db1", "ab" * 32, "db1", "application", "2026-12-02T10:00:00+00:00")
    vm.probes = [
        ProbeResult("heartbeat", True, "guest agent answers", 0.2, time.time()),
        ProbeResult(
            "postgresql", ok, "pg_amcheck exit 2: <relation victim> corrupt", 3.0, time.time()
        ),
    ]
    vm.result = "passed" if ok else "failed"
    vm.console_tail = "login: <script>"
    proof.vms = [vm]
    proof.event(time.time(), "db1", "started")
    proof.finished = time.time()
    return proof


def test_a_proof_is_written_whole_and_escaped(tmp_path: Path) -> None:
    directory = write_proof(_proof(False), tmp_path)
    doc = json.loads((directory / "proof.json").read_text())
    assert doc["result"] == "failed"
    assert doc["vms"][0]["probes"][1]["ok"] is False
    html = (directory / "proof.html").read_text()
    assert "&lt;relation victim&gt;" in html
    assert "<script>" not in html
    assert "FAILED" in html
    assert not list(tmp_path.glob(".proof-*"))
    assert "PASSED" in render_html(_proof(True).document())


def test_the_catalog_keeps_the_latest_verification_per_point(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "sub" / "catalog.sqlite")
    assert catalog.latest_verifications("repo1") == {}
    catalog.record_verification(
        "repo1", Verification("p1", "failed", "2026-12-01T10:00:00+00:00", "a", "")
    )
    catalog.record_verification(
        "repo1", Verification("p1", "verified", "2026-12-02T10:00:00+00:00", "b", "")
    )
    catalog.record_verification(
        "repo2", Verification("p1", "failed", "2026-12-03T10:00:00+00:00", "c", "")
    )
    latest = catalog.latest_verifications("repo1")
    assert latest["p1"].status == "verified"
    assert latest["p1"].proof == "b"
    assert catalog.latest_verifications("repo1", ["p2"]) == {}


# -- a guest still booting ------------------------------------------------------------------
def test_readdress_waits_out_an_agent_that_does_not_answer_yet() -> None:
    """A lab VM that answered its first ping may miss the next calls (CI: one missed
    guest-network-get-interfaces left the primary without an address, ping and tcp failed)."""
    mac = "52:54:00:aa:bb:01"
    answers: list[object] = [
        GuestAgentError("guest agent guest-network-get-interfaces: not available for now"),
        [],  # the NIC is not up yet
        [{"name": "eth0", "hardware-address": mac, "ip-addresses": []}],
        GuestAgentError("guest agent guest-network-get-interfaces: not available for now"),
        [
            {
                "name": "eth0",
                "hardware-address": mac,
                "ip-addresses": [
                    {"ip-address-type": "ipv4", "ip-address": "10.0.2.15", "prefix": 24}
                ],
            }
        ],
    ]

    def agent(command: str) -> object:
        assert command == "guest-network-get-interfaces"
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    guest = FakeGuest(handlers={"*": lambda _argv: GuestResult(1)})
    wanted = (ipaddress.IPv4Interface("10.0.2.15/24"),)
    how = readdress(guest, agent, mac, wanted, timeout=30)
    assert how == "eth0 re-addressed to 10.0.2.15/24 with ip addr"
    assert ["ip", "addr", "replace", "10.0.2.15/24", "dev", "eth0"] in guest.commands
    assert answers == []


def test_readdress_applies_again_what_the_guest_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    """CI: a lab NIC stayed without its address for 120 s (set before systemd-networkd
    came up and dropped it); the addresses are set again until they hold."""
    monkeypatch.setattr(addressing, "APPLY_SECONDS", 1.0)
    mac = "52:54:00:aa:bb:03"
    guest = FakeGuest(handlers={"*": lambda _argv: GuestResult(1)})

    def agent(_command: str) -> object:
        applied = sum(c[:3] == ["ip", "addr", "replace"] for c in guest.commands)
        ipv4 = [{"ip-address-type": "ipv4", "ip-address": "10.0.2.15", "prefix": 24}]
        return [{"name": "eth0", "hardware-address": mac, "ip-addresses": ipv4 * (applied >= 2)}]

    wanted = (ipaddress.IPv4Interface("10.0.2.15/24"),)
    how = readdress(guest, agent, mac, wanted, timeout=30)
    assert how == "eth0 re-addressed to 10.0.2.15/24 with ip addr (applied 2 times)"
    waits = [c for c in guest.commands if "is-system-running --wait" in " ".join(c)]
    assert len(waits) == 1, "the boot is waited for once, before the first application"


def test_readdress_gives_up_at_its_deadline_with_the_reason() -> None:
    def agent(_command: str) -> object:
        raise GuestAgentError("guest agent guest-network-get-interfaces: not available for now")

    started = time.monotonic()
    with pytest.raises(TimeoutError, match="no NIC with the lab MAC 52:54:00:aa:bb:02"):
        readdress(
            FakeGuest(),
            agent,
            "52:54:00:aa:bb:02",
            (ipaddress.IPv4Interface(f"{LAB_SUBNET[10]}/24"),),
            timeout=2,
        )
    assert time.monotonic() - started < 10


def test_a_tcp_probe_without_an_address_fails_at_once() -> None:
    ctx = ProbeContext(FakeGuest(), "surety-lab-none", None, {}, {})
    started = time.monotonic()
    result = run_probe(ProbeSpec("tcp", {"port": 5432}, 60), ctx)
    assert not result.ok
    assert result.evidence == "the VM has no address in the lab"
    assert time.monotonic() - started < 5
