"""The Samba AD DC restore procedure against a scripted guest: roles, refusals, command order.

Its real twin: the same procedure drove two Samba 4.17 DCs in a host network
namespace (docs/restore.md, "Samba AD domain controllers"); the guest scenario
lives in tests/scenarios.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest

from surety.core.errors import UsageError
from surety.quiesce.procedure import PRIMARY, REPLICA, RestoreRequest, load_procedures, request_role
from surety.quiesce.writer import WriterFailed
from surety.quiesce.writers.samba_ad_restore import (
    SambaAdRestore,
    carried_options,
    keytab_kvnos,
    only_in_point,
    parse_guids,
    seized_roles,
)
from surety.testing.fake_guest import FakeGuest, GuestResult

BASE = "DC=lab,DC=test"
OLD_ID = "855d3dff-0be4-4224-b3d4-0ef98a5e41e7"
NEW_ID = "c196c0e5-7e8d-4374-89f9-3eaa2c17dc66"
PASSWORD = "Passw0rd.Lab1"
RECORDED: dict[str, Any] = {
    "state": "thawed",
    "realm": "LAB.TEST",
    "domain": "LAB",
    "base_dn": BASE,
    "dc_name": "DC1",
    "dns_host_name": "dc1.lab.test",
    "invocation_id": OLD_ID,
    "fsmo": {"RidAllocationMasterRole": "DC1", "SchemaMasterRole": "DC2"},
    "dcs": [{"name": "DC2", "dns_host_name": "dc2.lab.test", "address": "10.0.0.3"}],
    "tombstone_lifetime_days": 180,
    "backup": {"file": "/var/lib/surety/samba-ad/samba-backup-1.tar.bz2"},
    "marker": {"dn": f"CN=surety-marker-DC1,CN=Users,{BASE}", "at": "2026-12-01T10:00:00+00:00"},
    "sysvol": "/var/lib/samba/sysvol",
    "private_dir": "/var/lib/samba/private",
    "smb_conf": "/etc/samba/smb.conf",
}
POINT_LDIF = f"""# record 1
dn: CN=lost1,CN=Users,{BASE}
objectGUID: 4ce7b7b9-cebf-4419-920f-fcf6dc8d1923

# record 2
dn: CN=pre1,CN=Users,{BASE}
objectGUID: 11111111-cebf-4419-920f-fcf6dc8d1923

# record 3
dn: CN=DC1,OU=Domain Controllers,{BASE}
objectGUID: 22222222-cebf-4419-920f-fcf6dc8d1923

# record 4
dn: CN=RID Set,CN=DC1,OU=Domain Controllers,{BASE}
objectGUID: 33333333-cebf-4419-920f-fcf6dc8d1923
"""
LIVE_LDIF = f"""dn: CN=pre1,CN=Users,{BASE}
objectGUID: 11111111-CEBF-4419-920f-fcf6dc8d1923
"""
DEMOTE = (
    "WARNING ... Seizing FSMO role on: CN=RID Manager$,CN=System,DC=lab,DC=test "
    "(now owned by CN=NTDS Settings,CN=DC2,CN=Servers,...)\n"
)
FSMO_SHOW = "\n".join(
    f"{role} owner: CN=NTDS Settings,CN=DC2,CN=Servers,CN=Default-First-Site-Name,CN=Sites,"
    f"CN=Configuration,{BASE}"
    for role in ("SchemaMasterRole", "RidAllocationMasterRole")
)


def _request(
    role: str | None = None, partner: str | None = None, **settings: str
) -> RestoreRequest:
    given = {"samba-ad.password": PASSWORD, **settings}
    return RestoreRequest("ab" * 32, "dc1", request_role(role, partner), partner, given, role)


class ScriptedDc:
    """Answers the procedure's guest commands like a survivor DC2 and a rejoining DC1."""

    def __init__(self, survivor: str = "ok", invocation: str = NEW_ID) -> None:
        self.survivor, self.invocation = survivor, invocation
        self.guest = FakeGuest(name="dc1")
        self.guest.handlers["*"] = self.answer
        self.guest.files["/var/lib/surety/samba-ad/point-db/smb.conf"] = (
            b"[global]\n\tnetbios name = DC1\n\tdns forwarder = 10.0.0.1\n\trealm = LAB.TEST\n"
        )

    def answer(self, argv: Sequence[str]) -> GuestResult:
        line = " ".join(argv)
        if "ldap://10.0.0.3" in line and "-s base" in line:
            if self.survivor == "down":
                return GuestResult(1, stderr=b"NT_STATUS_CONNECTION_REFUSED")
            if self.survivor == "badpw":
                return GuestResult(1, stderr=b"LDAP error 49 LDAP_INVALID_CREDENTIALS")
            return GuestResult(
                0, b"dn: \ndsServiceName: CN=NTDS Settings,CN=DC2,CN=Servers\n"
                b"dnsHostName: dc2.lab.test\n"
            )  # fmt: skip
        answers = {
            "ls -1": b"private\nsmb.conf\nsysvol\n",
            "domain demote": DEMOTE.encode(),
            "fsmo show": FSMO_SHOW.encode(),
            "klist -k": b"KVNO Principal\n   1 DC1$@LAB.TEST\n===\n   2 DC1$@LAB.TEST\n",
            "comm -23": b"./lab.test/Policies/{31B2F340}/GPT.INI\n",
            "drs replicate": b"Replicate from dc2 to dc1 was successful.\n",
            "(cn=surety-restore": b"cn: surety-restore-DC1-abababab\n"
            b"cn: surety-restore-DC2-abababab\n",
            "showrepl": json.dumps(
                {
                    "dsa": {"invocationId": self.invocation},
                    "repsFrom": [{"consecutive failures": 0}],
                }
            ).encode(),
            "ldapcmp": b"* Result for [DOMAIN]: SUCCESS\n* Result for [CONFIGURATION]: SUCCESS\n"
            b"* Result for [SCHEMA]: SUCCESS\n",
            "point-db/private/sam.ldb": POINT_LDIF.encode(),
            "tdb:///var/lib/samba/private/sam.ldb": LIVE_LDIF.encode(),
        }
        for key, out in answers.items():
            if key in line:
                return GuestResult(0, out)
        return GuestResult(0, b"dnsHostName: dc1.lab.test\n")

    def lines(self) -> list[str]:
        return [" ".join(c) for c in self.guest.commands]


def test_roles_default_to_rejoin_and_authoritative_is_asked_for_or_forced() -> None:
    dc = ScriptedDc()
    assert SambaAdRestore(dc.guest, RECORDED, _request()).mode == "rejoin"
    partnered = SambaAdRestore(dc.guest, RECORDED, _request(partner="dc3.lab.test"))
    assert (partnered.mode, partnered.survivors) == ("rejoin", ["dc3.lab.test"])
    for role in ("authoritative", "primary"):
        assert SambaAdRestore(dc.guest, RECORDED, _request(role)).mode == "authoritative"
    alone = {**RECORDED, "dcs": []}  # the writer saw no other DC: the domain has only this one
    assert SambaAdRestore(dc.guest, alone, _request()).mode == "authoritative"
    assert request_role("authoritative", None) == PRIMARY
    assert request_role(None, "dc2") == REPLICA
    with pytest.raises(UsageError, match="--partner is for"):
        request_role("authoritative", "dc2")
    assert list(load_procedures({"samba-ad": RECORDED})) == ["samba-ad"]


def test_bad_input_is_refused_with_a_reason() -> None:
    guest = ScriptedDc().guest
    with pytest.raises(WriterFailed, match=r"no usable Samba AD metadata \(missing: realm"):
        SambaAdRestore(guest, {"state": "thawed", "dc_name": "DC1"}, _request())
    no_password = RestoreRequest("ab" * 32, "dc1", PRIMARY, None, {}, None)
    with pytest.raises(WriterFailed, match=r"samba-ad.password_file=PATH"):
        SambaAdRestore(guest, RECORDED, no_password)
    alone = {**RECORDED, "dcs": [], "backup": None}
    with pytest.raises(WriterFailed, match="holds no offline backup"):
        SambaAdRestore(guest, alone, _request()).configure()


def test_a_point_older_than_the_tombstone_lifetime_is_refused_before_anything_moves() -> None:
    dc = ScriptedDc()
    old = {**RECORDED, "marker": {"at": "2020-01-01T00:00:00+00:00"}}
    with pytest.raises(WriterFailed, match=r"tombstone lifetime.*left held"):
        SambaAdRestore(dc.guest, old, _request()).configure()
    assert dc.guest.commands == []


@pytest.mark.parametrize(
    ("survivor", "message"),
    [
        ("down", r"survivor 10.0.0.3: NT_STATUS_CONNECTION_REFUSED unreachable — the VM is left "
                 r"held; bring a DC up or use --role authoritative"),
        ("badpw", "survivor 10.0.0.3 refused the credentials of Administrator"),
    ],
)  # fmt: skip
def test_an_unusable_survivor_stops_the_procedure_with_the_dc_untouched(
    survivor: str, message: str
) -> None:
    dc = ScriptedDc(survivor)
    with pytest.raises(WriterFailed, match=message):
        SambaAdRestore(dc.guest, RECORDED, _request()).configure()
    assert not any("mv " in line or "demote" in line for line in dc.lines())
    assert dc.lines()[-1] == "rm -rf /run/surety-samba-ad"  # the password does not stay


def test_rejoin_runs_the_supported_sequence_and_proves_it() -> None:
    dc = ScriptedDc()
    procedure = SambaAdRestore(dc.guest, RECORDED, _request())
    procedure.configure()
    evidence = procedure.start()
    lines = dc.lines()

    def first(word: str) -> int:
        return next(i for i, line in enumerate(lines) if word in line)

    order = [
        "ldap://10.0.0.3", '/private "$P/private"', "demote --remove-other-dead-server=DC1",
        "domain join lab.test DC", "ktutil", "ntacl sysvolreset", "systemctl start",
        "drs replicate", "contact create", "showrepl", "ldapcmp", "point-db/private/sam.ldb",
    ]  # fmt: skip
    assert [first(word) for word in order] == sorted(first(word) for word in order)
    join = lines[first("domain join")]
    assert "'--option=netbios name=DC1'" in join
    assert "'--option=dns forwarder=10.0.0.1'" in join
    assert "realm=" not in join
    assert "--targetdir" not in join
    assert not any(PASSWORD in line for line in lines)  # only in the guest's password file
    assert dc.guest.files["/run/surety-samba-ad/pw"] == PASSWORD.encode()
    assert lines[-1] == "rm -rf /run/surety-samba-ad"
    assert evidence["invocation_id"] == NEW_ID != evidence["invocation_id_at_backup"]
    assert evidence["joined_as"] == {"name": "DC1", "via": "dc2.lab.test"}
    assert evidence["fsmo_held_by_lost_dc"] == ["RidAllocationMasterRole"]
    assert evidence["fsmo_seized_by_demote"] == ["CN=RID Manager$,CN=System,DC=lab,DC=test"]
    assert evidence["fsmo_seized_here"] == []
    assert evidence["old_keys_kept"] == [1]
    assert evidence["sysvol_restored"] == ["lab.test/Policies/{31B2F340}/GPT.INI"]
    assert evidence["ldapcmp"] == dict.fromkeys(("DOMAIN", "CONFIGURATION", "SCHEMA"), "SUCCESS")
    assert evidence["only_in_point"] == {"count": 1, "dns": [f"CN=lost1,CN=Users,{BASE}"]}
    assert "only in the restore point: 1 objects: CN=lost1" in evidence["summary"]
    assert set(evidence["seconds"]) >= {"join", "replicate", "ldapcmp", "only_in_point"}


def test_a_dc_still_on_its_recorded_invocation_id_fails() -> None:
    dc = ScriptedDc(invocation=OLD_ID)
    procedure = SambaAdRestore(dc.guest, RECORDED, _request())
    procedure.configure()
    with pytest.raises(WriterFailed, match="recorded invocationId"):
        procedure.start()


def test_authoritative_restores_the_points_offline_backup() -> None:
    dc = ScriptedDc()
    procedure = SambaAdRestore(dc.guest, RECORDED, _request("authoritative"))
    procedure.configure()
    evidence = procedure.start()
    lines = dc.lines()
    restore = next(line for line in lines if "domain backup restore" in line)
    assert "--backup-file=/var/lib/surety/samba-ad/samba-backup-1.tar.bz2" in restore
    assert "--newservername=DC1R" in restore
    assert not any("demote" in line or "domain join" in line for line in lines)
    assert evidence["role"] == "authoritative"
    assert evidence["invocation_id"] == NEW_ID
    assert evidence["restored_as"] == "DC1R"
    assert set(evidence["fsmo_after"].values()) == {"DC2"}  # as the scripted DC answers


def test_only_in_point_compares_by_guid_and_skips_the_dcs_own_objects() -> None:
    point, live = parse_guids(POINT_LDIF), parse_guids(LIVE_LDIF)
    assert len(point) == 4
    assert live == [("11111111-cebf-4419-920f-fcf6dc8d1923", f"CN=pre1,CN=Users,{BASE}")]
    skip = [f"CN=DC1,OU=Domain Controllers,{BASE}"]
    assert only_in_point(point, live, skip) == [f"CN=lost1,CN=Users,{BASE}"]
    assert len(only_in_point(point, live)) == 3
    folded = (
        "dn: CN=a-very-long-name,CN=Us\n ers,DC=lab,DC=test\nobjectGUID: "
        + "a" * 8
        + "-aaaa-aaaa-aaaa-"
        + "a" * 12
        + "\n"
    )
    assert parse_guids(folded)[0][1] == "CN=a-very-long-name,CN=Users,DC=lab,DC=test"


def test_small_parsers() -> None:
    conf = "[global]\n  Netbios Name = DC1\n  dns forwarder = 1.1.1.1\n  # x = y\n"
    conf += "[sysvol]\n  path = /x\n"
    assert carried_options(conf) == {"dns forwarder": "1.1.1.1"}
    assert keytab_kvnos(
        "KVNO Principal\n---- ----\n   1 DC1$@LAB.TEST\n   3 HOST/dc1@LAB.TEST\n"
    ) == {1, 3}
    assert seized_roles(DEMOTE) == ["CN=RID Manager$,CN=System,DC=lab,DC=test"]
