"""``samba-ad``: a Samba AD domain controller, with what its restore needs.

discover  a ``samba`` process runs (or ``samba-ad-dc.service`` is active) and
          smb.conf says ``server role = active directory domain controller``.
prepare   outside the freeze window (it may take minutes under TCG), a
          guest-side script reads, locally from ``sam.ldb`` as root: realm,
          domain, base DN, this DC's name, NTDS Settings DN, invocationId,
          highestCommittedUSN, the FSMO role owners, the other DCs (with their
          addresses from the guest's resolver) and the tombstone lifetime; sets
          this DC's marker contact ``CN=surety-marker-<DC>,CN=Users,<base>``
          (``info`` = the job token; a contact takes no RID and replicates);
          then ``samba-tool domain backup offline`` into
          ``/var/lib/surety/samba-ad/`` (a temporary directory renamed into
          place; only the newest tarball is kept). That tarball is the
          application-consistent copy, and it is inside the restore point.
freeze    nothing holds Samba: the supported restore paths never boot the live
          ``sam.ldb`` of the image (a DC rejoins fresh, or the tarball is
          restored), and the file-system freeze leaves it crash-consistent for
          ``--naive``. One local read records ``usn_at_freeze``, so the restore
          side knows how many changes the image holds beyond the tarball.
thaw      nothing.
after-commit  Samba keeps no transaction log: nothing to truncate.
"""

from __future__ import annotations

import base64
import binascii
import re
import shlex
import time
from datetime import UTC, datetime
from typing import Any, ClassVar

from surety.core.errors import SourceError
from surety.quiesce.channel import GuestChannel
from surety.quiesce.session import GuestSession, guest_script
from surety.quiesce.writer import APPLICATION, QuiesceJob, WriterRecord

__all__ = [
    "DEFAULT_TOMBSTONE_DAYS",
    "FSMO_ROLES",
    "SambaAdWriter",
    "dc_name",
    "parse_fsmo",
    "parse_ldif",
    "point_too_old",
]

SMB_CONF = "/etc/samba/smb.conf"
KEEP_DIR = "/var/lib/surety/samba-ad"
BACKUP_TIMEOUT = 900.0  # `domain backup offline` of a big directory under TCG
DEFAULT_TOMBSTONE_DAYS = 180  # Samba's and Windows' default when tombstoneLifetime is unset
FSMO_ROLES = (
    "SchemaMasterRole",
    "InfrastructureMasterRole",
    "RidAllocationMasterRole",
    "PdcEmulationMasterRole",
    "DomainNamingMasterRole",
    "DomainDnsZonesMasterRole",
    "ForestDnsZonesMasterRole",
)
_DISCOVER = (
    "command -v samba-tool >/dev/null && command -v ldbsearch >/dev/null"
    " && { pgrep -x samba >/dev/null || systemctl is-active --quiet samba-ad-dc; }"
    " && testparm -s {conf} --parameter-name='server role' 2>/dev/null"
)
_FSMO_LINE = re.compile(r"^(\w+Role) owner: (.+)$")


def parse_ldif(text: str) -> list[dict[str, list[str]]]:
    """The records of ``ldbsearch`` output: folded lines joined, ``attr::`` base64 decoded."""
    lines: list[str] = []
    for raw in text.splitlines():
        if raw.startswith(" ") and lines:
            lines[-1] += raw[1:]
        else:
            lines.append(raw)
    records: list[dict[str, list[str]]] = []
    current: dict[str, list[str]] = {}
    for line in lines:
        if not line.strip() or line.startswith("#"):
            if current:
                records.append(current)
                current = {}
            continue
        name, sep, value = line.partition(":")
        if not sep:
            continue
        if value.startswith(":"):
            try:
                value = base64.b64decode(value[1:].strip()).decode(errors="replace")
            except binascii.Error:
                value = value[1:].strip()
        current.setdefault(name.strip(), []).append(value.strip())
    if current:
        records.append(current)
    return records


def _first(record: dict[str, list[str]], name: str) -> str | None:
    values = record.get(name)
    return values[0] if values else None


def _fields(text: str | None, count: int) -> list[str]:
    return ((text or "").split("\t") + [""] * count)[:count]


def _entry(text: str) -> dict[str, list[str]]:
    """The first record of ``ldbsearch`` output that is an entry (has a ``dn``)."""
    return next((r for r in parse_ldif(text) if "dn" in r), {})


def dc_name(dn: str | None) -> str | None:
    """``DC1`` from ``CN=NTDS Settings,CN=DC1,CN=Servers,...`` or ``CN=DC1,CN=Servers,...``."""
    if not dn:
        return None
    parts = [p.strip() for p in dn.split(",")]
    if parts and parts[0].lower() == "cn=ntds settings":
        parts = parts[1:]
    if len(parts) >= 2 and parts[1].lower() == "cn=servers" and parts[0][:3].lower() == "cn=":
        return parts[0][3:]
    return None


def parse_fsmo(text: str) -> dict[str, str | None]:
    """Role -> owner DC name from ``samba-tool fsmo show``; a role it does not list is None."""
    owners: dict[str, str | None] = dict.fromkeys(FSMO_ROLES)
    for line in text.splitlines():
        found = _FSMO_LINE.match(line.strip())
        if found:
            owners[found.group(1)] = dc_name(found.group(2)) or found.group(2)
    return owners


def parse_tombstone(text: str) -> int:
    """``tombstoneLifetime`` in days; the default when it is unset (or the object is missing)."""
    for record in parse_ldif(text):
        value = _first(record, "tombstoneLifetime")
        if value and value.isdigit() and int(value) > 0:
            return int(value)
    return DEFAULT_TOMBSTONE_DAYS


def parse_servers(
    text: str, own: str | None, addresses: dict[str, str | None]
) -> list[dict[str, Any]]:
    """The other DCs: servers that hold an NTDS Settings object (a live DSA), this one excluded."""
    hosts: dict[str, str | None] = {}
    dsas: set[str] = set()
    for record in parse_ldif(text):
        dn = _first(record, "dn") or ""
        name = dc_name(dn)
        if name is None:
            continue
        if dn.lower().startswith("cn=ntds settings,"):
            dsas.add(name.upper())
        else:
            hosts[name] = _first(record, "dNSHostName")
    return [
        {"name": name, "dns_host_name": host, "address": addresses.get(host or "") or None}
        for name, host in sorted(hosts.items())
        if name.upper() in dsas and name.upper() != (own or "").upper()
    ]


def _as_datetime(value: datetime | str | float) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def point_too_old(
    metadata: dict[str, Any], point_time: datetime | str | float, now: datetime | str | float
) -> str | None:
    """Why a DC must not come back from this point (it is older than the domain's tombstone
    lifetime: its partners have purged deletions it never saw, so it would bring deleted
    objects back as lingering objects), or None when it is young enough.

    ``point_time``/``now``: datetimes (naive ones are UTC), ISO 8601 text or epoch seconds.
    """
    days = metadata.get("tombstone_lifetime_days")
    lifetime = int(days) if isinstance(days, int) and days > 0 else DEFAULT_TOMBSTONE_DAYS
    age = _as_datetime(now) - _as_datetime(point_time)
    if age.total_seconds() < lifetime * 86400:
        return None
    return (
        f"the restore point is {age.days} days old, beyond the domain's tombstone lifetime "
        f"of {lifetime} days: a DC restored from it would bring back objects its partners "
        "have deleted and purged (lingering objects); join a fresh DC instead"
    )


class SambaAdWriter:
    name: ClassVar[str] = "samba-ad"
    level: ClassVar[str] = APPLICATION

    def __init__(self, guest: GuestChannel, job: QuiesceJob) -> None:
        self.guest, self.job = guest, job
        self.record = WriterRecord()
        self.session: GuestSession | None = None
        self.conf = job.settings.get("samba-ad.smb-conf", SMB_CONF)
        self.keep = job.settings.get("samba-ad.backup-dir", KEEP_DIR)

    def applies(self) -> bool:
        found = self.guest.run(
            ["sh", "-c", _DISCOVER.replace("{conf}", shlex.quote(self.conf))], timeout=30
        )
        return found.ok and found.stdout.decode(errors="replace").strip() == (
            "active directory domain controller"
        )

    def prepare(self) -> None:
        self.session = GuestSession(self.guest, self.name, self.job.token)
        self.session.start(
            guest_script("samba_ad"), self.job.window, [self.job.token, self.conf, self.keep]
        )
        budget = max(self.job.prepare_timeout, BACKUP_TIMEOUT)
        self.session.wait("prepared", time.monotonic() + budget)
        self.record.metadata.update(describe(self.session.events, self.job.token))

    def freeze(self, deadline: float) -> None:
        sam = f"{self.record.metadata.get('private_dir') or '/var/lib/samba/private'}/sam.ldb"
        usn: int | None = None
        try:
            read = self.guest.run(
                ["ldbsearch", "-H", sam, "-s", "base", "-b", "", "highestCommittedUSN"],
                timeout=max(0.5, deadline - time.monotonic()),
            )
            if read.ok:
                found = _entry(read.stdout.decode(errors="replace"))
                value = _first(found, "highestCommittedUSN")
                usn = int(value) if value and value.isdigit() else None
            if usn is None:
                self.record.warnings.append(f"usn at freeze not read: {read.text()[-200:]}")
        except SourceError as exc:
            self.record.warnings.append(f"usn at freeze not read: {exc}")
        before = self.record.metadata.get("highest_committed_usn")
        self.record.metadata.update(
            usn_at_freeze=usn,
            changes_since_backup=usn - before if usn is not None and before is not None else None,
            summary="directory recorded; samba-tool domain backup offline taken at prepare",
        )

    def thaw(self) -> None:
        pass

    def after_commit(self, point_id: str, truncate_logs: bool) -> dict[str, Any]:
        return nothing_to_truncate() if truncate_logs else {}

    @classmethod
    def truncate_recorded(cls, guest: GuestChannel, metadata: dict[str, Any]) -> dict[str, Any]:
        """Truncation deferred past the commit (``after-verify``): there is none."""
        return nothing_to_truncate()

    def cleanup(self) -> None:
        if self.session is not None:
            self.session.remove()


def nothing_to_truncate() -> dict[str, Any]:
    return {"done": True, "detail": "Samba AD keeps no transaction log: nothing to truncate"}


def describe(events: list[tuple[str, str]], token: str) -> dict[str, Any]:
    """The restore point's ``applications["samba-ad"]`` from the guest side's events."""
    values = dict(events)

    def decoded(name: str) -> str:
        try:
            return base64.b64decode(values.get(name, "")).decode(errors="replace")
        except binascii.Error:
            return ""

    realm, domain, netbios, private_dir, sysvol, conf = _fields(values.get("conf"), 6)
    rootdse = _entry(decoded("rootdse"))
    ntds = _entry(decoded("ntds"))
    addresses: dict[str, str | None] = {}
    for name, value in events:
        if name == "address":
            host, _, address = value.partition("\t")
            addresses[host] = address or None
    usn = _first(rootdse, "highestCommittedUSN")
    ntds_dn = _first(ntds, "dn")
    own = dc_name(ntds_dn) or netbios or None
    marker_dn, _, marker_at = values.get("marker", "").partition("\t")
    backup_file, bytes_, millis = _fields(values.get("backup"), 3)
    return {
        "realm": realm or None,
        "domain": domain or None,
        "base_dn": _first(rootdse, "defaultNamingContext"),
        "dc_name": own,
        "dns_host_name": _first(rootdse, "dnsHostName"),
        "ntds_settings_dn": ntds_dn,
        "invocation_id": _first(ntds, "invocationId"),
        "highest_committed_usn": int(usn) if usn and usn.isdigit() else None,
        "fsmo": parse_fsmo(decoded("fsmo")),
        "dcs": parse_servers(decoded("servers"), own, addresses),
        "tombstone_lifetime_days": parse_tombstone(decoded("tombstone")),
        "backup": {
            "file": backup_file or None,
            "seconds": round(int(millis) / 1000, 3) if millis.isdigit() else None,
            "bytes": int(bytes_) if bytes_.isdigit() else None,
        },
        "marker": (
            {"dn": marker_dn, "token": token, "at": marker_at or None} if marker_dn else None
        ),
        "sysvol": sysvol or None,
        "private_dir": private_dir or None,
        "smb_conf": conf or None,
        "samba_version": values.get("version", "").removeprefix("Version ").strip() or None,
    }
