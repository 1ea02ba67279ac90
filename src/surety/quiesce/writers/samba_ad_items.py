"""Item-level restore for Samba AD: the LDIF that re-creates one object from a restore point.

Input: the LDIF of one object as read from the point's directory
(``ldbsearch -H tdb://.../point-db/private/sam.ldb -b DN -s base '*' memberOf``).
Output: LDIF to apply on a live DC (``ldbmodify -H ldap://DC``). It adds the
object, then adds it back to the groups it belonged to.

What cannot come back, and why:

- the **SID** (``objectSid``) and ``objectGUID``: the directory issues new
  ones. Anything that named the old SID (ACLs on files and shares, foreign
  group members, SID history) must be redone. Group memberships inside the
  domain are re-added by DN below;
- the **password** and the Kerberos keys: they are system-only. A user comes
  back *disabled*; set a password (``samba-tool user setpassword``) and then
  enable it;
- replication metadata, USNs, timestamps, back links (``memberOf``) and the
  security descriptor (the default one for the class applies).

Pure: no I/O. The CLI around it is not built yet.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field

__all__ = ["DROPPED", "LdifEntry", "Recreation", "parse_ldif", "recreate"]

# System-only or per-DC attributes: an LDAP add of them fails or means nothing.
DROPPED = frozenset(
    a.lower()
    for a in (
        "objectSid", "objectGUID", "replPropertyMetaData", "whenCreated", "whenChanged",
        "uSNCreated", "uSNChanged", "dSCorePropagationData", "isDeleted", "isRecycled",
        "lastKnownParent", "objectCategory", "instanceType", "nTSecurityDescriptor",
        "distinguishedName", "name", "sAMAccountType", "primaryGroupID", "pwdLastSet",
        "badPwdCount", "badPasswordTime", "lastLogon", "lastLogoff", "lastLogonTimestamp",
        "logonCount", "unicodePwd", "dBCSPwd", "ntPwdHistory", "lmPwdHistory",
        "supplementalCredentials", "msDS-KeyVersionNumber", "msDS-SupportedEncryptionTypes",
        "servicePrincipalName", "sIDHistory", "isCriticalSystemObject", "systemFlags",
        "showInAdvancedViewOnly", "msDS-RevealedUsers", "lockoutTime", "rIDSetReferences",
        "memberOf", "userParameters", "msDS-User-Account-Control-Computed",
    )
)  # fmt: skip
UF_ACCOUNTDISABLE = 0x2
UF_SERVER_TRUST_ACCOUNT = 0x2000


@dataclass
class LdifEntry:
    dn: str
    attrs: list[tuple[str, str, bool]] = field(default_factory=list)  # (name, value, base64)

    def values(self, name: str) -> list[str]:
        return [v for a, v, _ in self.attrs if a.lower() == name.lower()]


@dataclass(frozen=True)
class Recreation:
    dn: str
    ldif: str  # apply with ldbmodify on a live DC
    dropped: list[str]  # attribute names left out
    notes: list[str]  # what the operator must know or do


def parse_ldif(text: str) -> list[LdifEntry]:
    """Entries of ``ldbsearch`` output: folded lines joined, ``::`` values kept base64."""
    entries: list[LdifEntry] = []
    unfolded = re.sub(r"\r?\n ", "", text)
    for block in re.split(r"\n\s*\n", unfolded):
        entry: LdifEntry | None = None
        for line in block.splitlines():
            if not line or line.startswith(("#", "ref:")):
                continue
            name, sep, value = line.partition(":")
            if not sep:
                continue
            encoded = value.startswith(":")
            value = value[1:].strip() if encoded else value.strip()
            if name.lower() == "dn":
                dn = base64.b64decode(value).decode() if encoded else value
                entry = LdifEntry(dn)
                entries.append(entry)
            elif entry is not None:
                entry.attrs.append((name, value, encoded))
    return entries


def recreate(text: str) -> Recreation:
    """The LDIF that re-creates the (first) object in ``text`` on a live DC."""
    entries = parse_ldif(text)
    if not entries:
        raise ValueError("no object in the LDIF (expected a dn: line)")
    entry = entries[0]
    classes = {c.lower() for c in entry.values("objectClass")}
    if not classes:
        raise ValueError(f"{entry.dn}: no objectClass in the LDIF (read it with '*')")
    uac = entry.values("userAccountControl")
    if "computer" in classes and uac and int(uac[0]) & UF_SERVER_TRUST_ACCOUNT:
        raise ValueError(f"{entry.dn} is a domain controller: join it again instead")
    kept: list[str] = []
    dropped: set[str] = set()
    notes: list[str] = []
    for name, value, encoded in entry.attrs:
        if name.lower() in DROPPED:
            dropped.add(name)
            continue
        text = (
            str(int(value) | UF_ACCOUNTDISABLE) if name.lower() == "useraccountcontrol" else value
        )
        kept.append(f"{name}:{':' if encoded else ''} {text}")
    sid = entry.values("objectSid")
    notes.append(
        f"the SID {sid[0] if sid else '(none recorded)'} cannot be reused: the object gets a "
        "new SID; ACLs, foreign memberships and SID history that named the old one must be redone"
        if "user" in classes or "group" in classes or "computer" in classes
        else "the object gets a new objectGUID; references to the old one are not restored"
    )
    if "user" in classes:
        notes.append(
            "the password cannot be restored: the account is created disabled; "
            f"set one (samba-tool user setpassword {_rdn(entry.dn)}) and enable it"
        )
    lines = [f"dn: {entry.dn}", "changetype: add", *kept, ""]
    groups = entry.values("memberOf")
    for group in groups:
        lines += [
            f"dn: {group}",
            "changetype: modify",
            "add: member",
            f"member: {entry.dn}",
            "-",
            "",
        ]
    if groups:
        notes.append(f"re-added to {len(groups)} group(s) it belonged to at the restore point")
    if entry.values("member"):
        notes.append(
            "its members are added by DN: members deleted since the point make the add fail"
        )
    return Recreation(entry.dn, "\n".join(lines), sorted(dropped, key=str.lower), notes)


def _rdn(dn: str) -> str:
    return dn.split(",", 1)[0].partition("=")[2]
