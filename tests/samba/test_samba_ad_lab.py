"""The ``samba-ad`` writer, restore procedure, item-level restore and ``ad`` probe, run for real
against two Samba AD DCs on this host (tests/samba/lab.py): the product's own guest-side
commands, unchanged, through ``DcChannel``. Stage 1: seconds per test, no guests.
"""

from __future__ import annotations

import copy
import dataclasses
import secrets
import time
from pathlib import Path
from typing import Any

import pytest

from surety.quiesce.procedure import RestoreRequest, request_role
from surety.quiesce.writer import QuiesceJob
from surety.quiesce.writers.samba_ad import FSMO_ROLES, SambaAdWriter
from surety.quiesce.writers.samba_ad_items import recreate
from surety.quiesce.writers.samba_ad_restore import SambaAdRestore
from surety.verify.probes import ProbeContext, ProbeFailed, ad
from tests.samba.lab import ADDR, BASE, PASSWORD, Dc, DcChannel, Lab, attr, replicate

pytestmark = [pytest.mark.xdist_group("samba"), pytest.mark.timeout(300)]

USERS = f"CN=Users,{BASE}"


def backup(dc: Dc) -> tuple[dict[str, Any], float]:
    """The writer's phases on ``dc`` as the requester runs them; its metadata, freeze seconds."""
    channel = DcChannel(dc)
    writer = SambaAdWriter(channel, QuiesceJob(token=f"ad5{secrets.token_hex(8)}"))
    try:
        assert writer.applies()
        writer.prepare()
        frozen = time.monotonic()
        writer.freeze(time.monotonic() + 10)
        writer.thaw()
        window = time.monotonic() - frozen
    finally:
        writer.cleanup()
        channel.close()
    meta = dict(writer.record.metadata, state="thawed")
    assert not writer.record.warnings, writer.record.warnings
    return meta, window


def user(dc: Dc, name: str) -> None:
    dc.must(["samba-tool", "user", "create", name, f"Pw-{name}.x9", "-H", f"ldap://{dc.addr}",
             "-U", f"Administrator%{PASSWORD}"])


def contact(dc: Dc, name: str) -> None:
    dc.must(["samba-tool", "contact", "create", name, "-H", f"ldap://{dc.addr}",
             "-U", f"Administrator%{PASSWORD}"])


def has(dc: Dc, cn: str) -> bool:
    out = dc.ldb("-b", BASE, f"(cn={cn})", "cn")
    return f"cn: {cn}" in out


def marker_info(dc: Dc, dn: str) -> str:
    return attr(dc.ldb("-b", dn, "-s", "base", "info"), "info")


def restore(dc: Dc, meta: dict[str, Any], role: str | None = None) -> dict[str, Any]:
    """SambaAdRestore through the DcChannel, samba held (not running) as restore mode leaves it."""
    assert not dc.running()
    request = RestoreRequest("ab" * 32, "dc1", request_role(role, None), None,
                             {"samba-ad.password": PASSWORD}, role)
    channel = DcChannel(dc)
    procedure = SambaAdRestore(channel, meta, request)
    procedure.configure()
    evidence = procedure.start()
    channel.close()
    return evidence


def test_writer_records_the_dc_backs_it_up_and_marks_it(lab: Lab) -> None:
    dc1, dc2 = lab["DC1"], lab["DC2"]
    started = time.monotonic()
    meta, window = backup(dc1)
    took = time.monotonic() - started
    assert meta["realm"] == "LAB.TEST" and meta["domain"] == "LAB" and meta["base_dn"] == BASE
    assert meta["dc_name"] == "DC1" and meta["dns_host_name"] == "dc1.lab.test"
    assert meta["ntds_settings_dn"].startswith("CN=NTDS Settings,CN=DC1,CN=Servers,")
    assert meta["invocation_id"] and meta["highest_committed_usn"] > 0
    assert meta["fsmo"] == dict.fromkeys(FSMO_ROLES, "DC1")
    assert meta["dcs"] == [{"name": "DC2", "dns_host_name": "dc2.lab.test",
                            "address": ADDR["DC2"]}]
    assert meta["tombstone_lifetime_days"] == 180
    assert meta["sysvol"] == "/var/lib/samba/sysvol"
    assert meta["private_dir"] == "/var/lib/samba/private"
    assert meta["smb_conf"] == "/etc/samba/smb.conf"
    assert meta["samba_version"].startswith("4.")
    assert meta["usn_at_freeze"] >= meta["highest_committed_usn"]
    tarball = meta["backup"]["file"]
    assert tarball.startswith("/var/lib/surety/samba-ad/samba-backup-")
    assert meta["backup"]["bytes"] > 100_000 and meta["backup"]["seconds"] > 0
    assert "private/sam.ldb" in dc1.must(["tar", "-tjf", tarball])
    # the marker: on DC1 at once, on DC2 once replicated
    marker = meta["marker"]
    assert marker["dn"] == f"CN=surety-marker-DC1,{USERS}"
    assert marker_info(dc1, marker["dn"]) == marker["token"]
    assert replicate(dc2, dc1).ok
    assert marker_info(dc2, marker["dn"]) == marker["token"]
    # a second backup keeps only the newest tarball and moves the marker on
    again, _ = backup(dc1)
    assert dc1.must(["ls", "/var/lib/surety/samba-ad"]).split() == [again["backup"]["file"]
                                                                     .rsplit("/", 1)[1]]
    assert marker_info(dc1, marker["dn"]) == again["marker"]["token"]
    print(f"writer: prepare+freeze {took:.1f} s, freeze window {window * 1000:.0f} ms")
    assert window < 2

    # the `ad` probe on the healthy DC, then on a point whose marker token is not the DC's
    ctx = ProbeContext(channel=DcChannel(dc1), netns="", address=dc1.addr,
                       applications={"samba-ad": again}, source={})
    options = {"user": "Administrator", "password": PASSWORD}
    evidence = ad(ctx, options)
    assert f"marker {again['marker']['token']} present" in evidence
    assert "_ldap._tcp.lab.test SRV" in evidence
    wrong = copy.deepcopy(again)
    wrong["marker"]["token"] = "not-this-job"
    ctx = dataclasses.replace(ctx, applications={"samba-ad": wrong})
    with pytest.raises(ProbeFailed, match=f"holds .*{again['marker']['token']}.*not not-this-job"):
        ad(ctx, options)
