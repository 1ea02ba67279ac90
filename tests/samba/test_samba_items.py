"""``surety items samba-ad`` against two real Samba AD DCs (tests/samba/lab.py): the objects are
read from a stopped DC's own sam.ldb (what the lab VM of the restore point holds) and re-created
on the live DC through the product's guest commands (``verify.samba_items``), unchanged.

The lab boot itself (``open_lab``) is the one ``surety items postgresql`` uses; only the steps
after it differ, and those run here for real. Stage 1: seconds per test, no guests.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from surety.core.errors import PathNotFound, TargetError
from surety.core.progress import NullProgress
from surety.quiesce.writers.samba_ad_items import recreate_objects
from surety.verify.items import Clock
from surety.verify.samba_items import (
    DEFAULT_PRIVATE,
    AdItemsOptions,
    apply_plan,
    live_dc,
    read_objects,
    write_and_apply,
)
from tests.samba.lab import BASE, PASSWORD, Dc, DcChannel, Lab, attr, replicate
from tests.unit.conftest import make_manifest

pytestmark = pytest.mark.timeout(300)  # one unit of work for xdist: tests/conftest.py

USERS = f"CN=Users,{BASE}"
OU = f"OU=Sales,{BASE}"


def tool(dc: Dc, *args: str) -> None:
    dc.must(["samba-tool", *args, "-H", f"ldap://{dc.addr}", "-U", f"Administrator%{PASSWORD}"])


def search(dc: Dc, dn: str, *attrs: str) -> str:
    done = dc.run(
        ["ldbsearch", "-H", f"ldap://{dc.addr}", "-U", f"Administrator%{PASSWORD}", "-b", dn,
         "-s", "base", *attrs]
    )  # fmt: skip
    return done.stdout.decode() if done.ok else ""


def point_of_dc1(lab: Lab) -> tuple[Dc, Dc, dict[str, str]]:
    """On DC1: a user in a group, an OU holding a user and a group of it; replicated to DC2,
    then DC1 stops (its disk is the restore point) and DC2 deletes them all."""
    dc1, dc2 = lab["DC1"], lab["DC2"]
    tool(dc1, "user", "create", "gone1", "Pw-gone1.x9")
    tool(dc1, "group", "addmembers", "Server Operators", "gone1")
    tool(dc1, "ou", "create", OU)
    tool(dc1, "user", "create", "sam1", "Pw-sam1.x9", f"--userou={OU.removesuffix(',' + BASE)}")
    tool(dc1, "group", "add", "SalesTeam", f"--groupou={OU.removesuffix(',' + BASE)}")
    tool(dc1, "group", "addmembers", "SalesTeam", "sam1")
    assert replicate(dc2, dc1).ok
    old = {
        dn: attr(search(dc2, dn, "objectSid"), "objectSid")
        for dn in (f"CN=gone1,{USERS}", f"CN=sam1,{OU}", f"CN=SalesTeam,{OU}")
    }
    assert all(old.values()), old
    dc1.kill_samba()  # the point: nothing of DC2's deletions reaches it
    tool(dc2, "user", "delete", "gone1")
    tool(dc2, "ou", "delete", OU, "--force-subtree-delete")
    assert not search(dc2, f"CN=gone1,{USERS}", "dn")
    assert not search(dc2, OU, "dn")
    return dc1, dc2, old


def test_a_deleted_user_and_ou_come_back_on_the_live_dc_with_new_sids(
    lab: Lab, tmp_path: Path
) -> None:
    dc1, dc2, old = point_of_dc1(lab)
    point = DcChannel(dc1)
    user_dn = f"CN=gone1,{USERS}"
    text = read_objects(point, DEFAULT_PRIVATE, [user_dn, OU], True, NullProgress())
    assert ["systemctl", "stop", "samba-ad-dc.service"] in point.commands
    live = live_dc("dc2", DcChannel(dc2), BASE, [user_dn, OU])
    manifest = make_manifest(
        applications={"samba-ad": {"state": "thawed", "base_dn": BASE,
                                   "dns_host_name": "dc1.lab.test"}}
    )  # fmt: skip
    options = AdItemsOptions("p", (user_dn, OU), tmp_path / "back.ldif", subtree=True)
    started = time.monotonic()
    result = write_and_apply(options, manifest, text, live, Clock(started), NullProgress())
    print(f"apply of 4 objects: {time.monotonic() - started:.1f} s; {result.seconds}")
    doc = json.loads(json.dumps(result.document()))
    assert [o["dn"] for o in doc["objects"]][:2] == [OU, user_dn]  # parents first
    assert {o["dn"] for o in doc["objects"]} == {OU, user_dn, f"CN=sam1,{OU}", f"CN=SalesTeam,{OU}"}
    assert (tmp_path / "back.ldif").read_text() == result.plan.ldif
    assert doc["applied_to"] == "dc2"
    new_sids = {o["dn"]: o["new_sid"] for o in doc["objects"]}
    for dn, sid in old.items():
        new = attr(search(dc2, dn, "objectSid"), "objectSid")
        assert new, f"{dn} was not re-created"
        assert new != sid
        assert new_sids[dn] == new
        assert any(sid in note for o in doc["objects"] for note in o["cannot_come_back"])
    back = search(dc2, user_dn, "memberOf", "userAccountControl")
    assert "CN=Server Operators" in back
    assert int(attr(back, "userAccountControl")) & 2  # disabled until a password is set
    assert f"CN=SalesTeam,{OU}" in search(dc2, f"CN=sam1,{OU}", "memberOf")
    assert search(dc2, OU, "ou")
    # the adds replicate like any other change: DC1 (back up) pulls them with their new SIDs
    assert dc1.start_samba().ok
    assert replicate(dc1, dc2).ok
    for dn in old:
        assert attr(search(dc1, dn, "objectSid"), "objectSid") == new_sids[dn], dn


def test_refusals_and_one_transaction_against_real_directories(lab: Lab) -> None:
    dc1, dc2 = lab["DC1"], lab["DC2"]
    dc1.kill_samba()
    with pytest.raises(PathNotFound, match=f"holds no object CN=nosuch,{USERS}"):
        read_objects(DcChannel(dc1), DEFAULT_PRIVATE, [f"CN=nosuch,{USERS}"], False, NullProgress())
    with pytest.raises(PathNotFound, match="holds no object CN=x,OU=Nowhere"):
        read_objects(
            DcChannel(dc1), DEFAULT_PRIVATE, [f"CN=x,OU=Nowhere,{BASE}"], True, NullProgress()
        )
    with pytest.raises(TargetError, match="does not hold DC=other,DC=test: not a DC of"):
        live_dc("dc2", DcChannel(dc2), "DC=other,DC=test", [])
    dc = read_objects(
        DcChannel(dc1), DEFAULT_PRIVATE, [f"CN=DC1,OU=Domain Controllers,{BASE}"], False,
        NullProgress(),
    )  # fmt: skip
    with pytest.raises(ValueError, match="domain controller: join it again"):
        recreate_objects(dc)
    # one transaction: a membership add that fails undoes the object added before it
    text = (
        f"dn: CN=tx1,{USERS}\nobjectClass: top\nobjectClass: contact\ncn: tx1\n"
        f"memberOf: CN=NoSuchGroup,{USERS}\n"
    )
    plan = recreate_objects(text)
    live = live_dc("dc2", DcChannel(dc2), BASE, [])
    with pytest.raises(TargetError, match=r"ldbmodify on dc2 failed .* nothing was added"):
        apply_plan(live, plan)
    assert not search(dc2, f"CN=tx1,{USERS}", "dn")  # the add before the failure is undone
