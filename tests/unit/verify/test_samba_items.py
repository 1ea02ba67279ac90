"""``surety items samba-ad`` without a VM: DNs, several objects, the guest steps, refusals.

The guest side runs against ``FakeGuest``; the real twin is tests/samba/test_samba_items.py
(two real Samba DCs on this host).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from surety.cli import items_cmds
from surety.cli.main import cli
from surety.core.errors import LabError, PathNotFound, TargetError, UsageError
from surety.core.progress import NullProgress
from surety.quiesce.writers.samba_ad_items import (
    check_dn,
    dn_parts,
    parse_ldif,
    recreate_objects,
)
from surety.testing.fake_guest import FakeGuest, GuestResult
from surety.testing.fake_hypervisor import FakeHypervisor
from surety.verify.items import Clock
from surety.verify.samba_items import (
    AdItemsOptions,
    apply_plan,
    check_ad_options,
    extract_ad_items,
    live_dc,
    read_objects,
    write_and_apply,
)
from tests.unit.conftest import make_manifest

BASE = "DC=lab,DC=test"
USER = f"CN=lost1,CN=Users,{BASE}"
OU_TEXT = f"""# record 1
dn: CN=Team,OU=Sales,{BASE}
objectClass: top
objectClass: group
cn: Team
member: CN=ann,OU=Sales,{BASE}
member: CN=Administrator,CN=Users,{BASE}
objectSid: S-1-5-21-1-2-3-1201

# record 2
dn: OU=Sales,{BASE}
objectClass: top
objectClass: organizationalUnit
ou: Sales

# record 3
dn: CN=ann,OU=Sales,{BASE}
objectClass: top
objectClass: user
cn: ann
userAccountControl: 512
memberOf: CN=Team,OU=Sales,{BASE}
memberOf: CN=VPN,CN=Users,{BASE}
objectSid: S-1-5-21-1-2-3-1200

# Referral
ref: ldap:///CN=Configuration,{BASE}

# returned 4 records
# 3 entries
# 1 referrals
"""


# -- DNs -----------------------------------------------------------------------------
def test_dn_parts_keep_escaped_commas() -> None:
    assert dn_parts(r"CN=Doe\, John,OU=Sales, DC=lab,DC=test") == [
        r"CN=Doe\, John", "OU=Sales", "DC=lab", "DC=test",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("dn", "says"),
    [
        ("jdoe", "not a DN"),
        ("CN=jdoe,,DC=lab", "not a DN"),
        ("-b=x,DC=lab", "not a DN"),
        ("CN=a\nchangetype: delete,DC=lab", "control character"),
        ("CN=a,DC=other,DC=test", "not below the point's domain DC=lab,DC=test"),
        (BASE, "not below"),
        ("DC=test", "not below"),
    ],
)
def test_bad_dns(dn: str, says: str) -> None:
    assert says in check_dn(dn, BASE)


def test_good_dns_are_below_the_base_whatever_their_case() -> None:
    assert check_dn(USER) == ""
    assert check_dn("cn=Lost1, cn=users, dc=LAB, dc=test", BASE) == ""
    assert check_dn(r"CN=Doe\, John,OU=Sales,DC=lab,DC=test", BASE) == ""


# -- several objects -------------------------------------------------------------------
def test_an_ou_comes_back_parents_first_and_memberships_once_after_every_add() -> None:
    plan = recreate_objects(OU_TEXT)
    assert plan.objects[0].dn == f"OU=Sales,{BASE}"
    assert {o.dn for o in plan.objects[1:]} == {
        f"CN=Team,OU=Sales,{BASE}",
        f"CN=ann,OU=Sales,{BASE}",
    }
    team = next(o for o in plan.objects if o.dn.startswith("CN=Team"))
    assert f"member: CN=ann,OU=Sales,{BASE}" not in team.ldif  # ann is added later
    assert f"member: CN=Administrator,CN=Users,{BASE}" in team.ldif  # outside: kept
    assert plan.memberships == [
        (f"CN=Team,OU=Sales,{BASE}", f"CN=ann,OU=Sales,{BASE}"),
        (f"CN=VPN,CN=Users,{BASE}", f"CN=ann,OU=Sales,{BASE}"),
    ]
    text = plan.ldif
    assert recreate_objects(OU_TEXT + OU_TEXT).ldif == text  # an object read twice comes once
    assert text.count("changetype: add") == 3
    assert text.count("changetype: modify") == 2
    assert text.rindex("changetype: add") < text.index("changetype: modify")
    assert plan.old_sids() == {
        f"CN=Team,OU=Sales,{BASE}": "S-1-5-21-1-2-3-1201",
        f"CN=ann,OU=Sales,{BASE}": "S-1-5-21-1-2-3-1200",
    }
    assert "userAccountControl: 514" in text


# -- options -----------------------------------------------------------------------------
def test_check_ad_options(tmp_path: Path) -> None:
    target = tmp_path / "u.ldif"
    check_ad_options(AdItemsOptions("p", (USER,), target))
    for dns, says in (((), "at least one --dn"), ((USER, USER.lower()), "twice"),
                      (("jdoe",), "not a DN")):  # fmt: skip
        with pytest.raises(UsageError, match=says):
            check_ad_options(AdItemsOptions("p", dns, target))
    target.write_text("keep")
    with pytest.raises(TargetError, match="exists; remove it or use --force"):
        check_ad_options(AdItemsOptions("p", (USER,), target))
    check_ad_options(AdItemsOptions("p", (USER,), target, force=True))


# -- the guest side ------------------------------------------------------------------------
def trailer(ldif: str) -> bytes:
    """What ldbsearch prints last (already in ``ldif`` if it says ``entries``)."""
    count = sum(line.startswith("dn:") for line in ldif.splitlines())
    return b"" if "entries" in ldif else f"# returned {count} records\n# {count} entries\n".encode()


def directory(objects: dict[str, str]) -> FakeGuest:
    """A guest whose ldbsearch answers from ``objects`` (DN -> LDIF), as Samba's does."""
    guest = FakeGuest()

    def ldbsearch(argv: Sequence[str]) -> GuestResult:
        dn = argv[argv.index("-b") + 1]
        if dn == "CN=broken":
            return GuestResult(1, stderr=b"Unable to open tdb\nNo such file\n")
        if dn not in objects:
            return GuestResult(32, stderr=f"search failed - No such Base DN: {dn}\n".encode())
        return GuestResult(0, stdout=objects[dn].encode() + trailer(objects[dn]))

    guest.handlers.update(ldbsearch=ldbsearch, systemctl=lambda argv: GuestResult(0))
    return guest


def test_read_objects_stops_samba_then_reads_sam_ldb_offline() -> None:
    guest = directory({USER: f"dn: {USER}\nobjectClass: user\n", f"OU=Sales,{BASE}": OU_TEXT})
    text = read_objects(guest, "/srv/private", [USER, f"OU=Sales,{BASE}"], True, NullProgress())
    assert guest.commands[0] == ["systemctl", "stop", "samba-ad-dc.service"]
    assert guest.commands[1] == [
        "ldbsearch", "-H", "/srv/private/sam.ldb", "-b", USER, "-s", "sub", "*", "memberOf",
    ]  # fmt: skip
    assert len(recreate_objects(text).objects) == 4


def test_a_dn_the_point_does_not_hold_is_named() -> None:
    guest = directory({"CN=empty": "# returned 0 records\n# 0 entries\n"})
    with pytest.raises(PathNotFound, match=f"holds no object {USER}$"):
        read_objects(guest, "/p", [USER], False, NullProgress())
    with pytest.raises(PathNotFound, match="holds no object CN=empty"):
        read_objects(guest, "/p", ["CN=empty"], False, NullProgress())
    with pytest.raises(LabError, match=r"ldbsearch CN=broken in fake failed \(exit 1\): Unable"):
        read_objects(guest, "/p", ["CN=broken"], False, NullProgress())
    guest.handlers["ldbsearch"] = lambda argv: GuestResult(0, stdout=OU_TEXT[:300].encode())
    with pytest.raises(LabError, match=r"CN=cut read in fake is incomplete \(2 records, ldbsearch"):
        read_objects(guest, "/p", ["CN=cut"], True, NullProgress())


def live_guest(objects: dict[str, str], modify_exit: int = 0) -> FakeGuest:
    guest = directory(objects)
    guest.handlers["testparm"] = lambda argv: GuestResult(0, stdout=b"/srv/samba/private\n")
    guest.handlers["mktemp"] = lambda argv: GuestResult(0, stdout=b"/tmp/surety-items.x\n")
    guest.handlers["rm"] = lambda argv: GuestResult(0)

    def ldbmodify(argv: Sequence[str]) -> GuestResult:
        if modify_exit:
            return GuestResult(modify_exit, stderr=b"ERR: No such object\n")
        for e in parse_ldif(guest.files[argv[-1]].decode()):
            if e.values("changetype") == ["add"]:
                objects[e.dn] = f"dn: {e.dn}\nobjectSid: S-1-5-21-9-9-9-{1600 + len(objects)}\n"
        return GuestResult(0)

    guest.handlers["ldbmodify"] = ldbmodify
    return guest


def test_apply_adds_in_one_ldbmodify_on_the_live_sam_ldb_and_reads_the_new_sids() -> None:
    objects = {BASE: f"dn: {BASE}\n"}
    guest = live_guest(objects)
    dc = live_dc("dc2", guest, BASE, [f"OU=Sales,{BASE}"])
    assert dc.sam == "/srv/samba/private/sam.ldb"
    sids = apply_plan(dc, recreate_objects(OU_TEXT))
    assert sorted(sids) == sorted(o.dn for o in recreate_objects(OU_TEXT).objects)
    assert all(s.startswith("S-1-5-21-9-9-9-") for s in sids.values())
    assert ["ldbmodify", "-H", "/srv/samba/private/sam.ldb", "/tmp/surety-items.x/items.ldif"] in (
        guest.commands
    )
    assert guest.commands[-4] == ["rm", "-rf", "--", "/tmp/surety-items.x"]
    with pytest.raises(TargetError, match=r"OU=Sales,DC=lab,DC=test \(and 2 more\) already exists"):
        apply_plan(dc, recreate_objects(OU_TEXT))


def test_a_failed_apply_says_nothing_was_added_and_cleans_up() -> None:
    guest = live_guest({BASE: f"dn: {BASE}\n"}, modify_exit=32)
    dc = live_dc("dc2", guest, BASE, [])
    with pytest.raises(TargetError, match=r"exit 32\): ERR: No such object; nothing was added"):
        apply_plan(dc, recreate_objects(OU_TEXT))
    assert guest.commands[-1] == ["rm", "-rf", "--", "/tmp/surety-items.x"]


def test_a_dc_of_another_domain_is_refused() -> None:
    with pytest.raises(TargetError, match="dc9 does not hold DC=lab,DC=test: not a DC of"):
        live_dc("dc9", live_guest({"DC=other": ""}), BASE, [])


# -- the use case refuses before any lab ---------------------------------------------------
def test_refusals_before_the_lab(repo: Any, tmp_path: Path) -> None:
    host = FakeHypervisor()
    host.inject("domain_names", AssertionError("no lab may start"))  # the lab's first call
    pg = repo.commit(make_manifest(applications={"postgresql": {"state": "thawed"}}))
    options = AdItemsOptions(pg[:8], (USER,), tmp_path / "u.ldif")
    with pytest.raises(UsageError, match=r"no samba-ad writer ran \(applications held: postgres"):
        extract_ad_items(repo, options, NullProgress(), host=host)
    meta = {"state": "thawed", "base_dn": BASE}
    ad = repo.commit(make_manifest(applications={"samba-ad": meta}, name="dc1"))
    outside = AdItemsOptions(ad[:8], ("CN=x,DC=other,DC=test",), tmp_path / "u.ldif")
    with pytest.raises(UsageError, match="CN=x,DC=other,DC=test is not below the point's domain"):
        extract_ad_items(repo, outside, NullProgress(), host=host)
    absent = AdItemsOptions(ad[:8], (USER,), tmp_path / "u.ldif", apply_to="nosuch")
    with pytest.raises(TargetError, match="--apply-to nosuch: no VM named 'nosuch'"):
        extract_ad_items(repo, absent, NullProgress(), host=host)
    assert list(tmp_path.iterdir()) == []
    assert host.events == []


# -- through click ---------------------------------------------------------------------------
def invoke(*args: str | Path) -> Any:
    env = {"SURETY_REPOSITORY": "/nonexistent/repo", "SURETY_PASSPHRASE": "x"}
    return CliRunner().invoke(cli, ["items", "samba-ad", *map(str, args)], env=env)


def test_cli_refuses_bad_input_before_opening_the_repository(tmp_path: Path) -> None:
    bad = invoke("ab12", "--dn", "jdoe", "--to", tmp_path / "u.ldif")
    assert bad.exit_code == 2
    assert bad.stderr.count("\n") == 1
    assert "not a DN: 'jdoe'" in bad.stderr
    assert "Traceback" not in bad.output
    (tmp_path / "u.ldif").write_text("keep")
    exists = invoke("ab12", "--dn", USER, "--to", tmp_path / "u.ldif")
    assert exists.exit_code == 11
    assert "exists; remove it or use --force" in exists.stderr
    assert (tmp_path / "u.ldif").read_text() == "keep"
    forced = invoke("ab12", "--dn", USER, "--to", tmp_path / "u.ldif", "--force", "--json")
    assert forced.exit_code == 3  # got past the checks: no repository there
    assert invoke("ab12", "--to", tmp_path / "v.ldif").exit_code == 2  # --dn is required


def test_without_apply_to_the_file_is_written_and_the_commands_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    meta = {"state": "thawed", "base_dn": BASE, "dns_host_name": "dc1.lab.test"}
    point = make_manifest(applications={"samba-ad": meta}, name="dc1")
    options = AdItemsOptions("p", (f"OU=Sales,{BASE}",), tmp_path / "s.ldif", subtree=True)
    result = write_and_apply(options, point, OU_TEXT, None, Clock(0.0), NullProgress(), "lab1")
    assert (tmp_path / "s.ldif").read_text() == result.plan.ldif
    doc = result.document()
    assert doc["applied_to"] is None
    assert doc["apply_commands"]["on_dc"] == (
        f"ldbmodify -H /var/lib/samba/private/sam.ldb {tmp_path / 's.ldif'}"
    )
    assert "ldap://dc1.lab.test -U Administrator" in doc["apply_commands"]["over_ldap"]
    assert [o["object_class"] for o in doc["objects"]] == ["organizationalUnit", "group", "user"]
    items_cmds._render_ad(result)
    shown = capsys.readouterr().out
    assert "wrote " in shown
    assert "3 object(s), 2 membership(s)" in shown
    assert f"user CN=ann,OU=Sales,{BASE}, SID at the point S-1-5-21-1-2-3-1200" in shown
    assert "the SID S-1-5-21-1-2-3-1200 cannot be reused" in shown
    assert "created disabled" in shown
    assert "to apply: copy the file to a DC" in shown
    assert "ldbmodify -H /var/lib/samba/private/sam.ldb" in shown
    with pytest.raises(TargetError, match=r"s\.ldif appeared meanwhile; use --force"):
        write_and_apply(options, point, OU_TEXT, None, Clock(0.0), NullProgress())  # not replaced
