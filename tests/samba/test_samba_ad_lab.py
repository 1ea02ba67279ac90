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

from surety.core.progress import NullProgress
from surety.quiesce.coordinator import Quiesced, QuiescePolicy, Requester
from surety.quiesce.procedure import RestoreRequest, request_role
from surety.quiesce.writer import QuiesceJob
from surety.quiesce.writers.fsfreeze import FsFreezeWriter
from surety.quiesce.writers.samba_ad import FSMO_ROLES, SambaAdWriter
from surety.quiesce.writers.samba_ad_items import recreate
from surety.quiesce.writers.samba_ad_restore import SambaAdRestore
from surety.verify.probes import ProbeContext, ProbeFailed, ad
from tests.samba.lab import (
    ADDR,
    BASE,
    PASSWORD,
    CopyProvider,
    Dc,
    DcChannel,
    Lab,
    attr,
    ntds_dn,
    replicate,
)

pytestmark = pytest.mark.timeout(300)  # one unit of work for xdist: tests/conftest.py

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


def tarball_name(meta: dict[str, Any]) -> str:
    return str(meta["backup"]["file"]).rsplit("/", 1)[1]


def user(dc: Dc, name: str) -> None:
    dc.must(
        [
            "samba-tool",
            "user",
            "create",
            name,
            f"Pw-{name}.x9",
            "-H",
            f"ldap://{dc.addr}",
            "-U",
            f"Administrator%{PASSWORD}",
        ]
    )


def contact(dc: Dc, name: str) -> None:
    dc.must(
        [
            "samba-tool",
            "contact",
            "create",
            name,
            "-H",
            f"ldap://{dc.addr}",
            "-U",
            f"Administrator%{PASSWORD}",
        ]
    )


def has(dc: Dc, cn: str) -> bool:
    out = dc.ldb("-b", BASE, f"(cn={cn})", "cn")
    return f"cn: {cn}" in out


def marker_info(dc: Dc, dn: str) -> str:
    return attr(dc.ldb("-b", dn, "-s", "base", "info"), "info")


def restore(dc: Dc, meta: dict[str, Any], role: str | None = None) -> dict[str, Any]:
    """SambaAdRestore through the DcChannel, samba held (not running) as restore mode leaves it."""
    assert not dc.running()
    request = RestoreRequest(
        "ab" * 32, "dc1", request_role(role, None), None, {"samba-ad.password": PASSWORD}, role
    )
    channel = DcChannel(dc)
    procedure = SambaAdRestore(channel, meta, request)
    procedure.configure()
    evidence = procedure.start()
    channel.close()
    return evidence


def requester_backup(dc: Dc, image: Path) -> tuple[dict[str, Any], Quiesced]:
    """The real requester: fsfreeze + samba-ad writers, the lab's SIGSTOP as the freeze and a
    copy of the DC's disk as the snapshot."""
    channel = DcChannel(dc)
    job = QuiesceJob(token=f"ad5{secrets.token_hex(8)}")
    samba = SambaAdWriter(channel, job)
    requester = Requester(
        [FsFreezeWriter(channel, job), samba],
        CopyProvider(dc, image),
        QuiescePolicy(wanted="application", fallback="fail", window=10),
        NullProgress(),
    )

    class NoGuard:
        def freezing(self) -> None: ...

        def thawed(self) -> None: ...

    try:
        result = requester.snapshot(NoGuard())
    finally:
        samba.cleanup()
        channel.close()
    assert samba.record.state == "thawed", samba.record
    return dict(samba.record.metadata, state=samba.record.state), result


def test_writer_records_the_dc_backs_it_up_and_marks_it(lab: Lab, tmp_path: Path) -> None:
    dc1, dc2 = lab["DC1"], lab["DC2"]
    started = time.monotonic()
    meta, result = requester_backup(dc1, tmp_path / "image")
    took = time.monotonic() - started
    assert result.level == "application", result
    assert result.snapshot == tmp_path / "image"
    window = result.frozen_seconds or 0.0
    assert meta["realm"] == "LAB.TEST"
    assert meta["domain"] == "LAB"
    assert meta["base_dn"] == BASE
    assert meta["dc_name"] == "DC1"
    assert meta["dns_host_name"] == "dc1.lab.test"
    assert meta["ntds_settings_dn"].startswith("CN=NTDS Settings,CN=DC1,CN=Servers,")
    assert meta["invocation_id"]
    assert meta["highest_committed_usn"] > 0
    assert meta["fsmo"] == dict.fromkeys(FSMO_ROLES, "DC1")
    assert meta["dcs"] == [{"name": "DC2", "dns_host_name": "dc2.lab.test", "address": ADDR["DC2"]}]
    assert meta["tombstone_lifetime_days"] == 180
    assert meta["sysvol"] == "/var/lib/samba/sysvol"
    assert meta["private_dir"] == "/var/lib/samba/private"
    assert meta["smb_conf"] == "/etc/samba/smb.conf"
    assert meta["samba_version"].startswith("4.")
    assert meta["usn_at_freeze"] >= meta["highest_committed_usn"]
    image = tmp_path / "image" / "var-lib/surety/samba-ad" / tarball_name(meta)
    assert image.is_file()  # the tarball is inside the snapshot
    tarball = meta["backup"]["file"]
    assert tarball.startswith("/var/lib/surety/samba-ad/samba-backup-")
    assert meta["backup"]["bytes"] > 100_000
    assert meta["backup"]["seconds"] > 0
    assert "private/sam.ldb" in dc1.must(["tar", "-tjf", tarball])
    # the marker: on DC1 at once, on DC2 once replicated
    marker = meta["marker"]
    assert marker["dn"] == f"CN=surety-marker-DC1,{USERS}"
    assert marker_info(dc1, marker["dn"]) == marker["token"]
    assert replicate(dc2, dc1).ok
    assert marker_info(dc2, marker["dn"]) == marker["token"]
    # a second backup keeps only the newest tarball and moves the marker on
    again, _ = backup(dc1)
    assert dc1.must(["ls", "/var/lib/surety/samba-ad"]).split() == [
        again["backup"]["file"].rsplit("/", 1)[1]
    ]
    assert marker_info(dc1, marker["dn"]) == again["marker"]["token"]
    print(f"writer: prepare+freeze {took:.1f} s, freeze window {window * 1000:.0f} ms")
    assert window < 2

    # the `ad` probe on the healthy DC, then on a point whose marker token is not the DC's
    ctx = ProbeContext(
        channel=DcChannel(dc1),
        netns="",
        address=dc1.addr,
        applications={"samba-ad": again},
        source={},
    )
    options = {"user": "Administrator", "password": PASSWORD}
    evidence = ad(ctx, options)
    assert f"marker {again['marker']['token']} present" in evidence
    assert "_ldap._tcp.lab.test SRV" in evidence
    wrong = copy.deepcopy(again)
    wrong["marker"]["token"] = "not-this-job"
    ctx = dataclasses.replace(ctx, applications={"samba-ad": wrong})
    with pytest.raises(ProbeFailed, match=f"holds .*{again['marker']['token']}.*not not-this-job"):
        ad(ctx, options)


def lose_dc1(lab: Lab, image: Path) -> dict[str, Any]:
    """DC1 backed up and imaged while DC2 is down (so ``lost1``/``lostc1`` exist only in the
    point), then DC1 crashes and its disk is gone; DC2 comes back and changes the domain."""
    dc1, dc2 = lab["DC1"], lab["DC2"]
    user(dc1, "pre1")
    assert replicate(dc2, dc1).ok
    dc2.kill_samba()
    user(dc1, "lost1")
    contact(dc1, "lostc1")
    dc1.must(
        [
            "samba-tool",
            "group",
            "addmembers",
            "Server Operators",
            "lost1",
            "-H",
            f"ldap://{dc1.addr}",
            "-U",
            f"Administrator%{PASSWORD}",
        ]
    )
    meta, _ = backup(dc1)
    dc1.snapshot(image)
    dc1.crash()
    return meta


def test_rejoin_brings_dc1_back_with_a_new_identity_and_reports_what_only_the_point_held(
    lab: Lab, tmp_path: Path
) -> None:
    dc1, dc2 = lab["DC1"], lab["DC2"]
    meta = lose_dc1(lab, tmp_path / "image")
    assert dc2.start_samba().ok
    user(dc2, "other1")
    dc1.replace_state(tmp_path / "image")  # the restored disk, samba held
    started = time.monotonic()
    evidence = restore(dc1, meta)
    took = time.monotonic() - started
    print(f"rejoin: {took:.1f} s; ldapcmp x{evidence['ldapcmp_attempts']}; {evidence['seconds']}")
    assert evidence["role"] == "rejoin"
    assert evidence["invocation_id"] != meta["invocation_id"]
    assert evidence["joined_as"]["name"] == "DC1"
    failures = evidence["showrepl_failures"]
    assert sorted(failures) == ["dc1.lab.test", "dc2.lab.test"]
    assert not any(failures.values()), failures
    seen = evidence["markers"]["seen"]
    assert (
        seen["dc1.lab.test"]
        == seen["dc2.lab.test"]
        == sorted(evidence["markers"]["created"].values())
    )
    assert evidence["ldapcmp"] == dict.fromkeys(("DOMAIN", "CONFIGURATION", "SCHEMA"), "SUCCESS")
    lost = evidence["only_in_point"]["dns"]
    assert any("CN=lost1," in dn for dn in lost), lost
    assert any("CN=lostc1," in dn for dn in lost), lost
    assert not any("CN=pre1," in dn or "CN=other1," in dn for dn in lost), lost
    # the rejoined DC holds the domain as DC2 has it, and new objects flow both ways
    assert has(dc1, "other1")
    assert has(dc1, "pre1")
    contact(dc1, "after1")
    contact(dc2, "after2")
    assert replicate(dc2, dc1).ok
    assert replicate(dc1, dc2).ok
    assert has(dc2, "after1")
    assert has(dc1, "after2")


def test_naive_boot_of_the_image_rolls_usns_back_and_its_new_writes_never_replicate(
    lab: Lab, tmp_path: Path
) -> None:
    dc1, dc2 = lab["DC1"], lab["DC2"]
    invocation = attr(dc1.ldb("-b", ntds_dn("DC1"), "-s", "base", "invocationId"), "invocationId")
    dc1.snapshot(tmp_path / "image")
    for i in (1, 2, 3):  # after the image: DC1's changes that reach DC2
        contact(dc1, f"post{i}")
    user(dc1, "postu1")
    assert replicate(dc2, dc1).ok
    assert has(dc2, "post3")
    assert has(dc2, "postu1")
    user(dc2, "other1")
    dc1.crash()
    dc1.replace_state(tmp_path / "image")
    assert dc1.start_samba().ok  # --naive: the image boots as it is
    assert (
        attr(dc1.ldb("-b", ntds_dn("DC1"), "-s", "base", "invocationId"), "invocationId")
        == invocation
    )
    contact(dc1, "cnew1")
    assert replicate(dc2, dc1).ok  # "successful"...
    assert has(dc1, "cnew1")
    assert not has(dc2, "cnew1"), "USN rollback not reproduced: DC2 got DC1's new write"
    # (whether post1..3 come back to DC1 depends on which side pulls first: not asserted)


def test_authoritative_restore_brings_the_domain_back_under_a_new_name_with_every_role(
    lab: Lab, tmp_path: Path
) -> None:
    dc1, dc2 = lab["DC1"], lab["DC2"]
    meta = lose_dc1(lab, tmp_path / "image")
    dc2.crash()  # both lost: the whole domain comes back from DC1's point
    dc1.replace_state(tmp_path / "image")
    started = time.monotonic()
    evidence = restore(dc1, meta, role="authoritative")
    print(f"authoritative: configure+start {time.monotonic() - started:.1f} s")
    assert evidence["role"] == "authoritative"
    assert evidence["restored_as"] == "DC1R"
    assert evidence["fsmo_after"] == dict.fromkeys(FSMO_ROLES, "DC1R"), evidence["fsmo_after"]
    assert evidence["invocation_id"] != meta["invocation_id"]
    assert has(dc1, "lost1")  # the point's directory, including what never replicated
    assert has(dc1, "pre1")


def test_item_level_restore_recreates_a_deleted_user_with_a_new_sid(
    lab: Lab, tmp_path: Path
) -> None:
    dc1, dc2 = lab["DC1"], lab["DC2"]
    user(dc1, "gone1")
    dc1.must(
        [
            "samba-tool",
            "group",
            "addmembers",
            "Server Operators",
            "gone1",
            "-H",
            f"ldap://{dc1.addr}",
            "-U",
            f"Administrator%{PASSWORD}",
        ]
    )
    assert replicate(dc2, dc1).ok
    dn = f"CN=gone1,{USERS}"
    old_sid = attr(dc2.ldb("-b", dn, "-s", "base", "objectSid"), "objectSid")
    assert old_sid
    dc1.snapshot(tmp_path / "image")  # the restore point's directory
    assert dc2.tool("user", "delete", "gone1", "-H", f"ldap://{dc2.addr}").ok
    assert not has(dc2, "gone1")
    point = tmp_path / "image" / "var-lib/samba/private/sam.ldb"
    ldif = dc2.must(["ldbsearch", "-H", f"tdb://{point}", "-b", dn, "-s", "base", "*", "memberOf"])
    plan = recreate(ldif)
    dc2.must(["sh", "-c", f"cat > /run/recreate.ldif <<'EOF'\n{plan.ldif}\nEOF"])
    dc2.must(
        [
            "ldbmodify",
            "-H",
            f"ldap://{dc2.addr}",
            "-U",
            f"Administrator%{PASSWORD}",
            "/run/recreate.ldif",
        ]
    )
    back = dc2.ldb("-b", dn, "-s", "base", "objectSid", "memberOf", "userAccountControl")
    new_sid = attr(back, "objectSid")
    assert new_sid
    assert new_sid != old_sid
    assert "CN=Server Operators" in attr(back, "memberOf")
    assert int(attr(back, "userAccountControl")) & 2  # disabled until a password is set
    assert plan.notes
