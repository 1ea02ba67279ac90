"""The ``samba-ad`` writer's host side: parsing Samba's own output (captured from a real
Samba 4.17 DC), the guest script's event protocol through the fake guest, failures, and
the tombstone rule. The guest script itself ran against a real two-DC lab (see the
writer's docstring); a stage-1 host has no Samba."""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from surety.core.errors import SourceError
from surety.core.progress import NullProgress
from surety.quiesce.coordinator import QuiescePolicy, Requester
from surety.quiesce.session import guest_script
from surety.quiesce.writer import APPLICATION, QuiesceJob, WriterFailed, load_writers
from surety.quiesce.writers.fsfreeze import FsFreezeWriter
from surety.quiesce.writers.samba_ad import (
    DEFAULT_TOMBSTONE_DAYS,
    SambaAdWriter,
    dc_name,
    describe,
    parse_fsmo,
    parse_ldif,
    parse_servers,
    parse_tombstone,
    point_too_old,
)
from surety.testing.fake_guest import FakeGuest, GuestResult

SITE = "CN=Default-First-Site-Name,CN=Sites,CN=Configuration,DC=lab,DC=test"
NTDS1 = f"CN=NTDS Settings,CN=DC1,CN=Servers,{SITE}"

ROOTDSE = (
    "# record 1\ndn: \n"
    + """defaultNamingContext: DC=lab,DC=test
dnsHostName: dc1.lab.test
highestCommittedUSN: 4044

# returned 1 records
# 1 entries
# 0 referrals
"""
)
NTDS = """debug_lookup_classname: Unknown classname[dsdb_repl] -> adding it...
# record 1
dn: CN=NTDS Settings,CN=DC1,CN=Servers,CN=Default-First-Site-Name,CN=Sites,C
 N=Configuration,DC=lab,DC=test
invocationId: 595cdccf-4dcc-41b5-b7e9-0dd0f4422d98

# returned 1 records
"""
FSMO = "\n".join(
    f"{role} owner: CN=NTDS Settings,CN={owner},CN=Servers,{SITE}"
    for role, owner in [
        ("SchemaMasterRole", "DC1"),
        ("InfrastructureMasterRole", "DC1"),
        ("RidAllocationMasterRole", "DC2"),
        ("PdcEmulationMasterRole", "DC1"),
        ("DomainNamingMasterRole", "DC1"),
        ("DomainDnsZonesMasterRole", "DC1"),
        ("ForestDnsZonesMasterRole", "DC2"),
    ]
)
TOMBSTONE = """# record 1
dn: CN=Directory Service,CN=Windows NT,CN=Services,CN=Configuration,DC=lab,DC=test
tombstoneLifetime: 60

# returned 1 records
"""
SERVERS = f"""# record 1
dn: CN=NTDS Settings,CN=DC1,CN=Servers,{SITE}

# record 2
dn: CN=DC2,CN=Servers,{SITE}
dNSHostName: dc2.lab.test

# record 3
dn: CN=DC1,CN=Servers,{SITE}
dNSHostName: dc1.lab.test

# record 4
dn: CN=NTDS Settings,CN=DC2,CN=Servers,{SITE}

# record 5
dn: CN=OLD3,CN=Servers,{SITE}
dNSHostName: old3.lab.test

# returned 5 records
"""
BACKUP = "/var/lib/surety/samba-ad/samba-backup-2026-12-06T17-14-04.931230.tar.bz2"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _events(**extra: str) -> str:
    lines = [
        (
            "conf",
            "LAB.TEST\tLAB\tDC1\t/var/lib/samba/private\t/var/lib/samba/sysvol"
            "\t/etc/samba/smb.conf",
        ),
        ("marker", "CN=surety-marker-DC1,CN=Users,DC=lab,DC=test\t2026-12-06T17:14:03.723774Z"),
        ("rootdse", _b64(ROOTDSE)),
        ("ntds", _b64(NTDS)),
        ("fsmo", _b64(FSMO)),
        ("tombstone", _b64(TOMBSTONE)),
        ("servers", _b64(SERVERS)),
        ("address", "dc1.lab.test\t10.0.0.1"),
        ("address", "dc2.lab.test\t10.0.0.2"),
        ("address", "old3.lab.test\t"),
        ("version", "Version 4.17.12-Debian"),
        ("backup", f"{BACKUP}\t1594816\t3325"),
        ("prepared", ""),
    ]
    lines += list(extra.items())
    return "".join(f"{name}\t{value}\n" for name, value in lines)


def test_ldif_is_unfolded_and_base64_values_decoded() -> None:
    text = "# record 1\ndn: CN=a,\n DC=x\ninfo:: " + _b64("tok\u00e9n") + "\n\n# x\n"
    assert parse_ldif(text) == [{"dn": ["CN=a,DC=x"], "info": ["tok\u00e9n"]}]
    assert parse_ldif(NTDS)[-1]["dn"] == [NTDS1]


def test_fsmo_owners_are_dc_names_and_missing_roles_none() -> None:
    owners = parse_fsmo(FSMO)
    assert owners["RidAllocationMasterRole"] == "DC2"
    assert owners["SchemaMasterRole"] == "DC1"
    assert len(owners) == 7
    assert parse_fsmo("")["PdcEmulationMasterRole"] is None
    assert dc_name(NTDS1) == "DC1"
    assert dc_name("CN=Users,DC=lab,DC=test") is None


def test_tombstone_lifetime_is_read_or_defaults_to_180() -> None:
    assert parse_tombstone(TOMBSTONE) == 60
    unset = "# record 1\ndn: CN=Directory Service,CN=Windows NT,CN=Services,CN=Configuration\n"
    assert parse_tombstone(unset) == DEFAULT_TOMBSTONE_DAYS == 180
    assert parse_tombstone("") == 180


def test_other_dcs_are_servers_with_ntds_settings_not_this_one() -> None:
    dcs = parse_servers(SERVERS, "DC1", {"dc2.lab.test": "10.0.0.2"})
    # OLD3 lost its NTDS Settings (demoted): not a DC any more
    assert dcs == [{"name": "DC2", "dns_host_name": "dc2.lab.test", "address": "10.0.0.2"}]
    assert parse_servers(SERVERS, "DC2", {})[0]["address"] is None


def test_metadata_matches_the_contract() -> None:
    events = [tuple(line.split("\t", 1)) for line in _events().splitlines()]
    meta = describe([(n, v) for n, v in events], "tokA2")
    assert meta == {
        "realm": "LAB.TEST",
        "domain": "LAB",
        "base_dn": "DC=lab,DC=test",
        "dc_name": "DC1",
        "dns_host_name": "dc1.lab.test",
        "ntds_settings_dn": NTDS1,
        "invocation_id": "595cdccf-4dcc-41b5-b7e9-0dd0f4422d98",
        "highest_committed_usn": 4044,
        "fsmo": parse_fsmo(FSMO),
        "dcs": [{"name": "DC2", "dns_host_name": "dc2.lab.test", "address": "10.0.0.2"}],
        "tombstone_lifetime_days": 60,
        "backup": {"file": BACKUP, "seconds": 3.325, "bytes": 1594816},
        "marker": {
            "dn": "CN=surety-marker-DC1,CN=Users,DC=lab,DC=test",
            "token": "tokA2",
            "at": "2026-12-06T17:14:03.723774Z",
        },
        "sysvol": "/var/lib/samba/sysvol",
        "private_dir": "/var/lib/samba/private",
        "smb_conf": "/etc/samba/smb.conf",
        "samba_version": "4.17.12-Debian",
    }


def test_a_point_older_than_the_tombstone_lifetime_is_refused() -> None:
    now = datetime(2026, 12, 6, tzinfo=UTC)
    assert point_too_old({"tombstone_lifetime_days": 180}, now - timedelta(days=179), now) is None
    why = point_too_old({"tombstone_lifetime_days": 180}, now - timedelta(days=181), now)
    assert why is not None
    assert "181 days old" in why
    assert "tombstone lifetime of 180 days" in why
    # unset in the metadata: Samba's default; text and epoch inputs work too
    assert point_too_old({}, "2026-07-01T00:00:00Z", now) is None
    assert point_too_old({}, "2026-01-01T00:00:00Z", now.timestamp()) is not None
    assert point_too_old({"tombstone_lifetime_days": 30}, now - timedelta(days=31), now)


def _discover(answer: str, ok: bool = True) -> FakeGuest:
    return FakeGuest(handlers={"*": lambda _a: GuestResult(0 if ok else 1, answer.encode())})


def test_discover_needs_an_ad_dc_role() -> None:
    job = QuiesceJob("t")
    assert SambaAdWriter(_discover("active directory domain controller\n"), job).applies()
    assert not SambaAdWriter(_discover("standalone server\n"), job).applies()
    assert not SambaAdWriter(_discover("", ok=False), job).applies()
    guest = _discover("active directory domain controller")
    SambaAdWriter(guest, QuiesceJob("t", settings={"samba-ad.smb-conf": "/x y.conf"})).applies()
    assert "testparm -s '/x y.conf'" in guest.commands[0][2]


def _prepared(token: str, events: str) -> tuple[FakeGuest, SambaAdWriter]:
    guest = FakeGuest(handlers={"*": lambda _a: GuestResult(0)})
    guest.files[f"/run/surety-{token}-samba-ad/events"] = events.encode()
    writer = SambaAdWriter(guest, QuiesceJob(token, prepare_timeout=1))
    return guest, writer


def test_prepare_runs_the_guest_script_and_records_the_metadata() -> None:
    guest, writer = _prepared("tokA2", _events())
    writer.prepare()
    script = guest.files["/run/surety-tokA2-samba-ad/writer.sh"]
    assert b"samba-tool domain backup offline" in script
    assert guest.commands[-1][-3:] == ["tokA2", "/etc/samba/smb.conf", "/var/lib/surety/samba-ad"]
    assert writer.record.metadata["invocation_id"] == "595cdccf-4dcc-41b5-b7e9-0dd0f4422d98"
    assert writer.record.metadata["backup"]["file"] == BACKUP


def test_a_failed_backup_fails_the_writer_with_sambas_words() -> None:
    why = (
        "samba-tool domain backup offline failed (exit 255): ERROR(<class 'OSError'>): "
        "uncaught exception - [Errno 28] No space left on device"
    )
    _guest, writer = _prepared("tokF", "conf\tLAB.TEST\n" + f"error\t{why}\n")
    with pytest.raises(WriterFailed, match=r"No space left on device"):
        writer.prepare()


def test_freeze_only_reads_the_usn_and_a_failure_is_a_warning() -> None:
    guest, writer = _prepared("tokZ", _events())
    writer.prepare()
    guest.handlers["ldbsearch"] = lambda _a: GuestResult(
        0, ROOTDSE.replace("4044", "4050").encode()
    )
    writer.freeze(deadline=1e12)
    assert guest.commands[-1][:3] == ["ldbsearch", "-H", "/var/lib/samba/private/sam.ldb"]
    assert writer.record.metadata["usn_at_freeze"] == 4050
    assert writer.record.metadata["changes_since_backup"] == 6
    guest.handlers["ldbsearch"] = lambda _a: GuestResult(1, stderr=b"Unable to open tdb")
    writer.freeze(deadline=1e12)
    assert writer.record.metadata["usn_at_freeze"] is None
    assert "Unable to open tdb" in writer.record.warnings[-1]
    assert guest.freezes == 0  # the file systems are the coordinator's business


def test_nothing_to_truncate_and_it_never_fails() -> None:
    writer = SambaAdWriter(FakeGuest(reachable=False), QuiesceJob("t"))
    assert writer.after_commit("p", truncate_logs=False) == {}
    done = writer.after_commit("p", truncate_logs=True)
    assert done["done"] is True
    assert "nothing to truncate" in done["detail"]
    assert SambaAdWriter.truncate_recorded(FakeGuest(reachable=False), {})["done"] is True


def test_registered_as_a_plugin_and_its_script_is_valid_bash() -> None:
    assert load_writers(["samba-ad"])["samba-ad"] is SambaAdWriter
    script = guest_script("samba_ad")
    checked = subprocess.run(["bash", "-n"], input=script, capture_output=True, check=False)
    assert checked.returncode == 0, checked.stderr


class _Provider:
    def __init__(self, guest: FakeGuest) -> None:
        self.guest, self.saw_frozen = guest, False

    def begin(self) -> dict[str, str]:
        self.saw_frozen = self.guest.frozen
        return {"vda": "export"}


class _Guard:
    def freezing(self) -> None:
        pass

    def thawed(self) -> None:
        pass


def _requester(events: str, fallback: str) -> tuple[Requester, FakeGuest, _Provider]:
    def answer(argv: Sequence[str]) -> GuestResult:
        if argv[0] == "sh" and "testparm" in argv[2]:
            return GuestResult(0, b"active directory domain controller\n")
        if argv[0] == "ldbsearch":
            return GuestResult(0, ROOTDSE.encode())
        return GuestResult(0)

    guest = FakeGuest(handlers={"*": answer})
    guest.files["/run/surety-tokR-samba-ad/events"] = events.encode()
    job = QuiesceJob("tokR", prepare_timeout=1)
    provider = _Provider(guest)
    requester = Requester(
        [SambaAdWriter(guest, job), FsFreezeWriter(guest, job)],
        provider,
        QuiescePolicy(APPLICATION, fallback, window=10),
        NullProgress(),
    )
    return requester, guest, provider


def test_through_the_requester_the_point_is_application_consistent() -> None:
    requester, guest, provider = _requester(_events(), "fail")
    result = requester.snapshot(_Guard())
    assert result.level == "application"
    assert provider.saw_frozen
    assert not guest.frozen
    record = requester.records()["samba-ad"]
    assert record["state"] == "thawed"
    assert record["invocation_id"] == "595cdccf-4dcc-41b5-b7e9-0dd0f4422d98"
    assert record["changes_since_backup"] == 0
    assert set(record["timings"]) == {"prepare", "freeze", "thaw"}
    report = requester.after_commit("point", truncate_logs=True)
    assert report["samba-ad"]["done"] is True
    requester.cleanup()
    assert ["rm", "-rf", "/run/surety-tokR-samba-ad"] in guest.commands


def test_a_failed_backup_falls_back_to_filesystem_when_allowed() -> None:
    why = "samba-tool domain backup offline failed (exit 255): ERROR: no space"
    requester, guest, _ = _requester(f"error\t{why}\n", "filesystem")
    result = requester.snapshot(_Guard())
    assert result.level == "filesystem"
    assert f"samba-ad writer failed at prepare: {why}" in result.reason
    assert requester.records()["samba-ad"]["state"] == "failed"
    assert not guest.frozen
    requester, _, _ = _requester(f"error\t{why}\n", "fail")
    with pytest.raises(SourceError, match="samba-ad writer failed at prepare: samba-tool"):
        requester.snapshot(_Guard())
