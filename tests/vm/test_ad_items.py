"""``surety items samba-ad`` on real Samba AD guests (issue 18): deleted objects come back.

On the two-DC pair (``ad_lab``): a user in CN=Users who is a member of Server
Operators, and an OU holding a user, exist on DC1; DC1 is backed up
(application-consistent: the Samba writer). Then both are deleted and the
deletion replicates to DC2. ``surety items samba-ad POINT --dn USER --dn OU
--subtree --apply-to DC2`` boots the point in the lab, reads the objects from
the point's own directory and adds them on the live DC2 in one transaction:
they exist again with new SIDs (the old ones cannot come back: the command
says so), the user disabled and back in its group, and DC1 pulls them from
DC2 like any other change. A second run is refused: the objects exist.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
from pathlib import Path

import pytest

from tests.cli import Cli, cli_for
from tests.guests import ad

pytestmark = [pytest.mark.vm, pytest.mark.ad, pytest.mark.timeout(3600)]

FREEZE_WINDOW = (
    60  # a DC's fs-freeze under TCG on a loaded host (tests/scenarios/test_ad_replication)
)
ITEMS_TIMEOUT = 1800


def _account(dc: ad.DC, sam: str, *attrs: str) -> str:
    """The LDIF of account ``sam`` on ``dc`` (empty when there is none)."""
    return ad.ldbsearch(dc, ad.BASE_DN, f"(sAMAccountName={sam})", ["dn", *attrs])


def _sid(dc: ad.DC, sam: str) -> str:
    values = ad.ldif_values(_account(dc, sam, "objectSid"), "objectSid")
    return values[0] if values else ""


def test_deleted_user_and_ou_come_back_on_the_live_dc_from_a_point(
    ad_lab: ad.AdPair, tmp_path: Path
) -> None:
    dc1, dc2 = ad_lab.dc1, ad_lab.dc2
    tag = secrets.token_hex(2)
    user, ou_name, inner = f"item-u{tag}", f"ItemOU{tag}", f"item-o{tag}"
    user_dn = f"CN={user},CN=Users,{ad.BASE_DN}"
    ou_dn = f"OU={ou_name},{ad.BASE_DN}"
    inner_dn = f"CN={inner},{ou_dn}"
    password = f"Lab.{secrets.token_hex(4)}-X9"
    ad.sh(
        dc1,
        f"samba-tool user create {user} {shlex.quote(password)} && "
        f"samba-tool group addmembers 'Server Operators' {user} && "
        f"samba-tool ou create {shlex.quote(ou_dn)} && "
        f"samba-tool user create {inner} {shlex.quote(password)} --userou=OU={ou_name}",
        "objects to lose",
    )
    accounts = {user_dn: user, inner_dn: inner}
    old = {dn: _sid(dc1, sam) for dn, sam in accounts.items()}
    assert all(old.values()), old

    cli: Cli = cli_for(tmp_path / "repo", dict(os.environ))
    cli.run("init")
    proc = cli.run(
        "backup", "vm", dc1.name, "--consistency", "application",
        "--freeze-window", str(FREEZE_WINDOW), "--json", timeout=1800,
    )  # fmt: skip
    point = json.loads(proc.stdout)
    assert point["consistency"] == "application", point.get("consistency_reason")

    ad.sh(
        dc1,
        f"samba-tool user delete {user} && "
        f"samba-tool ou delete {shlex.quote(ou_dn)} --force-subtree-delete",
        "lose them",
    )
    ad.drs_replicate(dc2, dc1)
    assert not _sid(dc2, user)
    assert not _sid(dc2, inner)

    target = tmp_path / "back.ldif"
    args = [
        "items", "samba-ad", point["id"], "--dn", user_dn, "--dn", ou_dn, "--subtree",
        "--to", target, "--apply-to", dc2.name,
    ]  # fmt: skip
    proc = cli.run(*args, "--json", timeout=ITEMS_TIMEOUT)
    doc = json.loads(proc.stdout)
    print("items samba-ad timings (s):", doc.get("seconds"))
    assert doc["applied_to"] == dc2.name
    assert {o["dn"] for o in doc["objects"]} == {user_dn, ou_dn, inner_dn}, doc["objects"]
    assert [o["dn"] for o in doc["objects"]].index(ou_dn) < [o["dn"] for o in doc["objects"]].index(
        inner_dn
    )  # parents first
    assert target.read_text().count("changetype: add") >= 3
    new = {o["dn"]: o["new_sid"] for o in doc["objects"] if o.get("new_sid")}
    for dn, sid in old.items():
        now = _sid(dc2, accounts[dn])
        assert now, f"{dn} was not re-created on DC2"
        assert now != sid  # a SID cannot come back
        assert new[dn] == now
        assert any(sid in note for o in doc["objects"] for note in o["cannot_come_back"])
    back = _account(dc2, user, "memberOf", "userAccountControl")
    assert "CN=Server Operators" in back
    assert int(ad.ldif_values(back, "userAccountControl")[0]) & 2  # disabled: no password
    # the adds replicate like any other change
    ad.drs_replicate(dc1, dc2)
    for dn in old:
        assert _sid(dc1, accounts[dn]) == new[dn], dn

    again = cli.run(*args, "--force", check=False, timeout=ITEMS_TIMEOUT)
    assert again.returncode != 0
    assert "exist" in again.stderr, again.stderr
    assert "Traceback" not in again.stderr
    assert _sid(dc2, user) == new[user_dn]  # nothing changed by the refused run
