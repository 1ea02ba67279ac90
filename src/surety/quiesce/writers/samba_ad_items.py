"""Item-level restore for Samba AD: the LDIF that re-creates one object from a restore point.

Input: the LDIF of one object as read from the point's directory
(``ldbsearch -H .../private/sam.ldb -b DN -s base '*' memberOf``).
Output: LDIF to apply on a live DC (``ldbmodify -H .../private/sam.ldb`` as
root on it, one transaction, or ``ldbmodify -H ldap://DC``). It adds the
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

Several objects (``recreate_objects``: the ``--dn``s asked for, or an OU and
everything below it): parents are added first, and a membership between two
re-created objects is added once, after every add (a group's ``member`` may
name an object created later). ``check_dn`` refuses what is not a DN below the
point's base DN before anything runs. The CLI is ``surety items samba-ad``
(``surety.verify.samba_items``).

Pure: no I/O.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field

__all__ = [
    "DROPPED",
    "ItemPlan",
    "LdifEntry",
    "Recreation",
    "check_dn",
    "dn_parts",
    "parse_ldif",
    "recreate",
    "recreate_objects",
]

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
    old_sid: str = ""  # the objectSid at the point (never reused)
    classes: tuple[str, ...] = ()  # its objectClass values, most specific last


@dataclass(frozen=True)
class ItemPlan:
    """Several objects re-created in one LDIF (one ``ldbmodify`` transaction)."""

    objects: list[Recreation]  # parents first; each ``ldif`` is its add record alone
    memberships: list[tuple[str, str]]  # (group DN, member DN), added after every object
    ldif: str

    def old_sids(self) -> dict[str, str]:
        return {o.dn: o.old_sid for o in self.objects if o.old_sid}


_RDN = re.compile(r"[A-Za-z][A-Za-z0-9-]*=.+", re.S)


def dn_parts(dn: str) -> list[str]:
    """The RDNs of ``dn``, split on the commas that are not escaped (``\\,``)."""
    parts, current, escaped = [], "", False
    for char in dn:
        if escaped:
            current, escaped = current + char, False
        elif char == "\\":
            current, escaped = current + char, True
        elif char == ",":
            parts.append(current.strip())
            current = ""
        else:
            current += char
    parts.append(current.strip())
    return parts


def check_dn(dn: str, base: str | None = None) -> str:
    """What is wrong with ``dn`` (empty if nothing): not a DN, or not below ``base``."""
    if any(ord(c) < 32 for c in dn):
        return f"not a DN: {dn!r} (it holds a control character)"
    parts = dn_parts(dn)
    if not all(_RDN.fullmatch(p) for p in parts):
        return f"not a DN: {dn!r} (expected NAME=VALUE,..., e.g. CN=jdoe,CN=Users,DC=lab,DC=test)"
    if base is None:
        return ""
    norm = [_norm(p) for p in parts]
    under = [_norm(p) for p in dn_parts(base)]
    if len(norm) <= len(under) or norm[-len(under) :] != under:
        return f"{dn} is not below the point's domain {base}"
    return ""


def _norm(rdn: str) -> str:
    name, _, value = rdn.partition("=")
    return f"{name.strip().lower()}={value.strip().lower()}"


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
    made = _recreation(entry, set())
    groups = entry.values("memberOf")
    lines = [made.ldif, *(_member_add(group, entry.dn) for group in groups)]
    return Recreation(
        entry.dn, "\n".join(lines), made.dropped, made.notes, made.old_sid, made.classes
    )


def recreate_objects(text: str) -> ItemPlan:
    """Every object in ``text`` (once each) re-created, parents first; memberships after
    every add."""
    unique: dict[str, LdifEntry] = {}
    for entry in parse_ldif(text):
        unique.setdefault(entry.dn.lower(), entry)  # a DN read twice (a --dn below another)
    entries = sorted(unique.values(), key=lambda e: len(dn_parts(e.dn)))
    if not entries:
        raise ValueError("no object in the LDIF (expected a dn: line)")
    made = {e.dn.lower() for e in entries}
    objects = [_recreation(entry, made) for entry in entries]
    pairs: dict[tuple[str, str], tuple[str, str]] = {}
    for entry in entries:
        found = [(g, entry.dn) for g in entry.values("memberOf")]
        found += [(entry.dn, m) for m in entry.values("member") if m.lower() in made]
        for group, member in found:
            pairs.setdefault((group.lower(), member.lower()), (group, member))
    memberships = list(pairs.values())
    lines = [o.ldif for o in objects] + [_member_add(g, m) for g, m in memberships]
    return ItemPlan(objects, memberships, "\n".join(lines))


def _recreation(entry: LdifEntry, deferred: set[str]) -> Recreation:
    """``entry``'s add record (``member`` values naming a DN in ``deferred`` left out)."""
    classes = [c.lower() for c in entry.values("objectClass")]
    if not classes:
        raise ValueError(f"{entry.dn}: no objectClass in the LDIF (read it with '*')")
    uac = entry.values("userAccountControl")
    if "computer" in classes and uac and int(uac[0]) & UF_SERVER_TRUST_ACCOUNT:
        raise ValueError(f"{entry.dn} is a domain controller: join it again instead")
    kept: list[str] = []
    dropped: set[str] = set()
    for name, value, encoded in entry.attrs:
        low = name.lower()
        if low in DROPPED:
            dropped.add(name)
        elif not (low == "member" and value.lower() in deferred):
            text = str(int(value) | UF_ACCOUNTDISABLE) if low == "useraccountcontrol" else value
            kept.append(f"{name}:{':' if encoded else ''} {text}")
    sid = (entry.values("objectSid") or [""])[0]
    ldif = "\n".join([f"dn: {entry.dn}", "changetype: add", *kept, ""])
    notes = _notes(entry, set(classes), sid)
    return Recreation(
        entry.dn,
        ldif,
        sorted(dropped, key=str.lower),
        notes,
        sid,
        tuple(entry.values("objectClass")),
    )


def _notes(entry: LdifEntry, classes: set[str], sid: str) -> list[str]:
    notes = [
        f"the SID {sid or '(none recorded)'} cannot be reused: the object gets a "
        "new SID; ACLs, foreign memberships and SID history that named the old one must be redone"
        if classes & {"user", "group", "computer"}
        else "the object gets a new objectGUID; references to the old one are not restored"
    ]
    if "user" in classes:
        notes.append(
            "the password cannot be restored: the account is created disabled; "
            f"set one (samba-tool user setpassword {_rdn(entry.dn)}) and enable it"
        )
    if groups := entry.values("memberOf"):
        notes.append(f"re-added to {len(groups)} group(s) it belonged to at the restore point")
    if entry.values("member"):
        notes.append(
            "its members are added by DN: members deleted since the point make the add fail"
        )
    return notes


def _member_add(group: str, member: str) -> str:
    return "\n".join(
        [f"dn: {group}", "changetype: modify", "add: member", f"member: {member}", "-", ""]
    )


def _rdn(dn: str) -> str:
    return dn.split(",", 1)[0].partition("=")[2]
