"""The ``ad`` probe through the fake guest, answering with output captured from a real
Samba 4.17 DC (LDAP bind, ``samba-tool dns query``, ``drs showrepl --json``, the marker)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from surety.testing.fake_guest import FakeGuest, GuestResult
from surety.verify.probes import PROBE_KINDS, ProbeContext, ProbeSpec, run_probe

MARKER = "CN=surety-marker-DC1,CN=Users,DC=lab,DC=test"
META = {
    "state": "thawed",
    "realm": "LAB.TEST",
    "private_dir": "/var/lib/samba/private",
    "smb_conf": "/etc/samba/smb.conf",
    "marker": {"dn": MARKER, "token": "tokP1", "at": "2026-12-06T17:14:03Z"},
}
BIND = "# record 1\ndn: \ndnsHostName: dc1.lab.test\n\n# returned 1 records\n"
SRV = (
    "  Name=, Records=1, Children=0\n"
    "    SRV: dc1.lab.test. (389, 0, 100) (flags=f0, serial=1, ttl=900)\n"
)
NO_RECORD = "ERROR: Record or zone does not exist.\n"


def _link(failures: int, message: str) -> dict[str, Any]:
    return {
        "NC dn": "DC=lab,DC=test",
        "consecutive failures": failures,
        "last attempt message": message,
        "DSA": "Default-First-Site-Name\\DC2",
    }


CLEAN = json.dumps({"repsFrom": [_link(0, "was successful")], "repsTo": [_link(0, "ok")]})
BROKEN = json.dumps(
    {"repsFrom": [_link(3, "failed, result 64 (WERR_NETNAME_DELETED)")], "repsTo": []}
)


def _guest(
    *, srv: str = SRV, showrepl: str = CLEAN, marker: str = "tokP1", bind: str = BIND
) -> FakeGuest:
    def answer(argv: Sequence[str]) -> GuestResult:
        line = argv[2]
        if line.startswith("ldbsearch -H ldap://"):
            return GuestResult(0 if bind else 1, (bind or "failed to connect").encode())
        if "dns query" in line:
            return GuestResult(0 if "SRV:" in srv else 255, srv.encode())
        if "drs showrepl" in line:
            return GuestResult(0, ("debug line\n" + showrepl).encode())
        if line.startswith("ldbsearch -H /var/lib/samba/private/sam.ldb"):
            if not marker:
                return GuestResult(32, b'ERR: (No such object) "No such Base DN"')
            return GuestResult(0, f"# record 1\ndn: {MARKER}\ninfo: {marker}\n".encode())
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
    assert "_ldap._tcp.lab.test SRV -> dc1.lab.test." in evidence
    assert "drs showrepl: no failures" in evidence
    assert f"marker tokP1 present ({MARKER})" in evidence
    assert all(" -P" in c[2] for c in guest.commands[:3])  # machine account: no secret needed
    assert "ad" in PROBE_KINDS


def test_replication_failures_fail_the_probe_unless_it_is_off() -> None:
    ok, evidence = _probe(_guest(showrepl=BROKEN))
    assert not ok
    assert "3 failure(s), failed, result 64 (WERR_NETNAME_DELETED)" in evidence
    guest = _guest(showrepl=BROKEN)
    ok, evidence = _probe(guest, {"replication": False})
    assert ok, evidence
    assert "drs showrepl skipped" in evidence
    assert not any("showrepl" in c[2] for c in guest.commands)


def test_a_missing_or_different_marker_fails() -> None:
    ok, evidence = _probe(_guest(marker="an-older-token"))
    assert not ok
    assert "not tokP1" in evidence
    ok, evidence = _probe(_guest(marker=""))
    assert not ok
    assert f"marker {MARKER} missing" in evidence


def test_no_srv_record_or_no_ldap_is_a_failure_with_samba_words() -> None:
    ok, evidence = _probe(_guest(srv=NO_RECORD))
    assert not ok
    assert "Record or zone does not exist" in evidence
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
