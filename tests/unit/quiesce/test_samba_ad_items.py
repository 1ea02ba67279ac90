"""Re-creating one AD object from a restore point's LDIF: what is kept, dropped and said."""

from __future__ import annotations

import pytest

from surety.quiesce.writers.samba_ad_items import parse_ldif, recreate

USER = """# record 1
dn: CN=lost1,CN=Users,DC=lab,DC=test
objectClass: top
objectClass: person
objectClass: organizationalPerson
objectClass: user
cn: lost1
sAMAccountName: lost1
givenName: Lost
description: a user made on DC1 only, with a long description that ldbsearch fo
 lds onto a second line
userAccountControl: 512
objectSid: S-1-5-21-3863473158-2990555329-532917632-1107
objectGUID: 4ce7b7b9-cebf-4419-920f-fcf6dc8d1923
whenCreated: 20261206172714.0Z
uSNChanged: 4050
pwdLastSet: 134093000000000000
unicodePwd:: IgBQAHcALQA=
replPropertyMetaData:: AQAAAAAAAAA=
nTSecurityDescriptor: O:DAG:DAD:AI(A;;RPWPCRCCDCLCLORCWOWDSDDTSW;;;SY)
memberOf: CN=Helpdesk,CN=Users,DC=lab,DC=test
memberOf: CN=VPN,OU=Groups,DC=lab,DC=test
primaryGroupID: 513
thumbnailPhoto:: /9j/4AAQSkZJRgABAQ==

# Referral
ref: ldap:///CN=Configuration,DC=lab,DC=test
"""
OU = """dn: OU=Sales,DC=lab,DC=test
objectClass: top
objectClass: organizationalUnit
ou: Sales
objectGUID: 11111111-cebf-4419-920f-fcf6dc8d1923
instanceType: 4
"""
GROUP = """dn: CN=VPN,OU=Groups,DC=lab,DC=test
objectClass: group
cn: VPN
groupType: -2147483646
member: CN=lost1,CN=Users,DC=lab,DC=test
objectSid: S-1-5-21-1-2-3-1110
"""


def test_a_user_comes_back_disabled_without_its_sid_password_or_metadata() -> None:
    plan = recreate(USER)
    lines = plan.ldif.splitlines()
    assert lines[:3] == [
        "dn: CN=lost1,CN=Users,DC=lab,DC=test",
        "changetype: add",
        "objectClass: top",
    ]
    assert "userAccountControl: 514" in lines  # 512 | ACCOUNTDISABLE
    assert (
        "description: a user made on DC1 only, with a long description that ldbsearch folds "
        "onto a second line"
    ) in lines
    assert "thumbnailPhoto:: /9j/4AAQSkZJRgABAQ==" in lines  # binary kept as base64
    for gone in ("objectSid", "objectGUID", "unicodePwd", "replPropertyMetaData", "whenCreated",
                 "uSNChanged", "pwdLastSet", "nTSecurityDescriptor", "primaryGroupID"):  # fmt: skip
        assert not any(line.startswith(gone + ":") for line in lines), gone
        assert gone in plan.dropped
    assert "S-1-5-21-3863473158-2990555329-532917632-1107 cannot be reused" in plan.notes[0]
    assert "created disabled" in plan.notes[1]
    assert "samba-tool user setpassword lost1" in plan.notes[1]


def test_group_memberships_come_back_as_modifications_of_the_groups() -> None:
    plan = recreate(USER)
    text = plan.ldif
    assert "memberOf" not in text
    assert (
        "dn: CN=VPN,OU=Groups,DC=lab,DC=test\nchangetype: modify\nadd: member\n"
        "member: CN=lost1,CN=Users,DC=lab,DC=test\n-\n"
    ) in text
    assert text.count("changetype: modify") == 2
    assert any("2 group(s)" in note for note in plan.notes)


def test_an_ou_and_a_group_keep_their_own_attributes() -> None:
    ou = recreate(OU)
    assert ou.ldif.splitlines() == [
        "dn: OU=Sales,DC=lab,DC=test", "changetype: add", "objectClass: top",
        "objectClass: organizationalUnit", "ou: Sales",
    ]  # fmt: skip
    assert "new objectGUID" in ou.notes[0]
    group = recreate(GROUP)
    assert "member: CN=lost1,CN=Users,DC=lab,DC=test" in group.ldif
    assert "groupType: -2147483646" in group.ldif
    assert any("members are added by DN" in note for note in group.notes)


def test_refusals() -> None:
    with pytest.raises(ValueError, match="no object"):
        recreate("# returned 0 records\n")
    with pytest.raises(ValueError, match="no objectClass"):
        recreate("dn: CN=x,DC=lab,DC=test\ncn: x\n")
    dc = "dn: CN=DC1,OU=Domain Controllers,DC=lab,DC=test\nobjectClass: computer\n"
    with pytest.raises(ValueError, match="domain controller: join it again"):
        recreate(dc + "userAccountControl: 532480\n")


def test_parse_ldif_reads_base64_dns_and_skips_referrals() -> None:
    entries = parse_ldif("dn:: Q049w6lsaW5lLERDPWxhYg==\ncn: x\n\n# Referral\nref: ldap:///X\n")
    assert [e.dn for e in entries] == ["CN=éline,DC=lab"]
    assert entries[0].values("CN") == ["x"]
