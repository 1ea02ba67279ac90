"""The ``ad`` probe through the fake guest, answering with output captured from a real
Samba 4.17 DC (LDAP bind, ``drs showrepl --json``, ``drs replicate``, the marker); its
DNS query runs for real against a local UDP server replaying the DC's DNS answers."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from surety.testing.fake_guest import FakeGuest, GuestResult
from surety.verify.probes import (
    DNS_SRV_QUERY,
    PROBE_KINDS,
    ProbeContext,
    ProbeSpec,
    run_probe,
)

MARKER = "CN=surety-marker-DC1,CN=Users,DC=lab,DC=test"
META = {
    "state": "thawed",
    "realm": "LAB.TEST",
    "dc_name": "DC1",
    "base_dn": "DC=lab,DC=test",
    "private_dir": "/var/lib/samba/private",
    "smb_conf": "/etc/samba/smb.conf",
    "marker": {"dn": MARKER, "token": "tokP1", "at": "2026-12-06T17:14:03Z"},
}
BIND = "# record 1\ndn: \ndnsHostName: dc1.lab.test\n\n# returned 1 records\n"
SRV = "rcode 0 dc1.lab.test:389\n"
NXDOMAIN = "rcode 3 \n"
# the DC's DNS server's answers (Samba 4.17 internal DNS), as captured in the host lab
ANSWER = bytes.fromhex(
    "537585800001000100010000055f6c646170045f746370036c616204746573740000210001c00c0021"
    "000100000384000c00000064018503646331c017c0170006000100000e100023c0370a686f73746d61"
    "73746572c0170000000200000384000002580001518000000e10"
)
NO_ANSWER = bytes.fromhex(
    "537585830001000000010000055f6e6f7065045f746370036c616204746573740000210001c0170006"
    "000100000e10002703646331c0170a686f73746d6173746572c0170000000200000384000002580001"
    "518000000e10"
)


def _link(failures: int, message: str, nc: str = "DC=lab,DC=test") -> dict[str, Any]:
    return {
        "NC dn": nc,
        "consecutive failures": failures,
        "last attempt message": message,
        "DSA": "Default-First-Site-Name\\DC2",
    }


CLEAN = json.dumps(
    {
        "repsFrom": [_link(0, "was successful"), _link(0, "was successful", "CN=Schema")],
        "repsTo": [_link(0, "was successful")],
    }
)
BROKEN = json.dumps(
    {"repsFrom": [_link(3, "failed, result 64 (WERR_NETNAME_DELETED)")], "repsTo": []}
)


def _guest(
    *,
    srv: str = SRV,
    showrepl: tuple[str, ...] = (CLEAN,),
    marker: str = "tokP1",
    bind: str = BIND,
) -> FakeGuest:
    answers = list(showrepl)

    def answer(argv: Sequence[str]) -> GuestResult:
        line = argv[2]
        if "drs showrepl" in line:
            text = answers.pop(0) if len(answers) > 1 else answers[0]
            return GuestResult(0, ("debug line\n" + text).encode())
        if line.startswith("ldbsearch -H /var/lib/samba/private/sam.ldb") and marker:
            return GuestResult(0, f"# record 1\ndn: {MARKER}\ninfo: {marker}\n".encode())
        canned = {
            "ldbsearch -H ldap://": (0 if bind else 1, bind or "failed to connect"),
            "python3 -c": (0, srv),
            "samba-tool drs replicate": (0, "Replicate from DC2 to DC1 was successful."),
            "ldbsearch -H /var/lib": (32, 'ERR: (No such object) "No such Base DN"'),
        }
        for start, (code, text) in canned.items():
            if line.startswith(start):
                return GuestResult(code, text.encode())
        return GuestResult(127)

    return FakeGuest(handlers={"*": answer})


def _probe(
    guest: FakeGuest, options: dict[str, Any] | None = None, meta: dict[str, Any] | None = None
) -> tuple[bool, str]:
    ctx = ProbeContext(guest, "surety-lab-x", "10.0.0.1", {"samba-ad": meta or META}, {})
    result = run_probe(ProbeSpec("ad", options or {}, timeout=0), ctx)
    return result.ok, result.evidence


def test_a_healthy_dc_passes_with_its_evidence() -> None:
    guest = _guest()
    ok, evidence = _probe(guest)
    assert ok, evidence
    assert "LDAP bind to 10.0.0.1 (machine account): dc1.lab.test" in evidence
    assert "DNS _ldap._tcp.lab.test SRV at 10.0.0.1:53 -> dc1.lab.test:389" in evidence
    assert "no inbound failure after pulling 1 link(s) now (from DC2)" in evidence
    pulls = [c[2] for c in guest.commands if "drs replicate" in c[2]]
    assert pulls == [
        "samba-tool drs replicate DC1 DC2 DC=lab,DC=test -P -s /etc/samba/smb.conf 2>&1"
    ]
    assert f"marker tokP1 present ({MARKER})" in evidence
    assert " -P " in guest.commands[0][2]  # the machine account: no secret needed
    assert "ad" in PROBE_KINDS


def test_replication_failures_fail_the_probe_unless_it_is_off() -> None:
    ok, evidence = _probe(_guest(showrepl=(BROKEN,)))
    assert not ok
    assert "from Default-First-Site-Name\\DC2 DC=lab,DC=test: 3 failure(s)" in evidence
    assert "WERR_NETNAME_DELETED" in evidence
    guest = _guest(showrepl=(BROKEN,))
    ok, evidence = _probe(guest, {"replication": False})
    assert ok, evidence
    assert "drs showrepl skipped" in evidence
    assert not any("drs " in c[2] for c in guest.commands)


def test_a_link_that_failed_before_the_partner_booted_is_pulled_and_then_clean() -> None:
    guest = _guest(showrepl=(BROKEN, CLEAN))
    ok, evidence = _probe(guest)
    assert ok, evidence
    assert sum("drs showrepl" in c[2] for c in guest.commands) == 2


def test_a_missing_or_different_marker_fails() -> None:
    ok, evidence = _probe(_guest(marker="an-older-token"))
    assert not ok
    assert "not tokP1" in evidence
    ok, evidence = _probe(_guest(marker=""))
    assert not ok
    assert f"marker {MARKER} missing" in evidence


def test_no_srv_record_or_no_ldap_is_a_failure_with_samba_words() -> None:
    ok, evidence = _probe(_guest(srv=NXDOMAIN))
    assert not ok
    assert "DNS _ldap._tcp.lab.test SRV at 10.0.0.1:53: rcode 3" in evidence
    ok, evidence = _probe(_guest(bind=""))
    assert not ok
    assert "LDAP bind to 10.0.0.1" in evidence


def test_credentials_from_the_options_are_quoted() -> None:
    guest = _guest()
    ok, evidence = _probe(guest, {"user": "Administrator", "password": "Pa ss'w0rd"})
    assert ok, evidence
    assert "(as Administrator)" in evidence
    assert """-U 'Administrator%Pa ss'"'"'w0rd'""" in guest.commands[0][2]


def test_without_a_recorded_realm_it_fails_at_once() -> None:
    guest = _guest()
    ok, evidence = _probe(guest, meta={"state": "thawed"})
    assert not ok
    assert "no usable realm" in evidence
    assert guest.commands == []
    ok, _ = _probe(_guest(), meta={**META, "marker": {"dn": MARKER, "token": "x'; rm -rf /"}})
    assert not ok


@pytest.fixture
def dns_server() -> Iterator[int]:
    """A UDP server on loopback that answers like the DC's DNS did (by the name asked)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.05)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                query, peer = sock.recvfrom(512)
            except TimeoutError:
                continue
            sock.sendto(ANSWER if b"_ldap" in query else NO_ANSWER, peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield sock.getsockname()[1]
    stop.set()
    thread.join()
    sock.close()


def test_the_dns_query_decodes_real_srv_answers(dns_server: int) -> None:
    def ask(name: str) -> str:
        done = subprocess.run(
            [sys.executable, "-c", DNS_SRV_QUERY, name, "127.0.0.1", str(dns_server)],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        )
        return done.stdout.strip()

    assert ask("_ldap._tcp.lab.test") == "rcode 0 dc1.lab.test:389"
    assert ask("_nope._tcp.lab.test") == "rcode 3"
