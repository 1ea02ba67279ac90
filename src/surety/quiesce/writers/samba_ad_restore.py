"""Samba AD DC's restore procedure: never replicate under the old identity.

A restored image of a domain controller keeps its ``invocationId`` but winds
its USNs back: partners have already seen those USNs from it, so its new
changes never reach them and its RID pool re-issues SIDs ("USN rollback"),
silently. Samba has no in-place non-authoritative restore, so the image's
directory must never serve. Two supported paths, chosen by the role:

``rejoin`` (the default: ``--partner DC`` or the DCs the writer recorded)
    configure (samba held): refuse a point older than the tombstone lifetime;
    check a survivor answers LDAP with the operator's credentials; move the
    image's directory aside (``point-db``: it is only read from now on);
    ``samba-tool domain demote --remove-other-dead-server`` on the survivor
    (it also seizes the FSMO roles the lost DC held, checked and seized here
    if not). start: ``samba-tool domain join`` under the DC's *own* name,
    with the old machine keys kept as an older key version (the survivors'
    cached Kerberos tickets for the old account otherwise break the
    survivor-to-DC replication until they expire), SYSVOL files restored from
    the point (Samba does not replicate SYSVOL), samba started, every
    partition replicated both ways, and the proof: a new invocationId,
    ``drs showrepl`` clean, a marker contact made on each side seen on the
    other, ``ldapcmp`` equal, and the objects only the point holds reported.

``authoritative`` (``--role authoritative``/``primary``, or no other DC recorded)
    the whole domain is lost: ``samba-tool domain backup restore`` of the
    writer's offline backup from the point (new invocationId, every FSMO role
    seized, the old DCs removed, krbtgt rotated), which samba then serves.

Credentials: ``--set samba-ad.user=`` (default Administrator) and
``samba-ad.password`` (``samba-ad.password_file=`` reads it from a host file).
The password reaches the guest as a file only readable by root
(``PASSWD_FILE``), never on a command line.
"""

from __future__ import annotations

import json
import re
import shlex
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

from surety.quiesce.channel import GuestChannel
from surety.quiesce.procedure import PRIMARY, RestoreRequest, canonical_role
from surety.quiesce.writer import WriterFailed
from surety.quiesce.writers.samba_ad import point_too_old

__all__ = [
    "SambaAdRestore",
    "carried_options",
    "keytab_kvnos",
    "only_in_point",
    "parse_guids",
    "seized_roles",
]

NAME = "samba-ad"
WORK = "/var/lib/surety/samba-ad"
POINT_DB = f"{WORK}/point-db"
AUTH_DIR = "/run/surety-samba-ad"
LDAPCMP_TRIES = 3
DEFAULT_PRIVATE = "/var/lib/samba/private"
REQUIRED = ("realm", "domain", "base_dn", "dc_name", "invocation_id", "private_dir", "smb_conf")
# Set by the join itself (identity, paths): never carried over from the point's smb.conf.
NOT_CARRIED = {
    "netbios name",
    "realm",
    "workgroup",
    "server role",
    "private dir",
    "state directory",
    "cache directory",
    "lock dir",
    "lock directory",
    "binddns dir",
    "path",
    "server services",
}


# -- pure helpers -------------------------------------------------------------
def parse_guids(ldif: str) -> list[tuple[str, str]]:
    """``ldbsearch`` output with ``objectGUID`` -> [(guid, dn)] (folded lines joined)."""
    text = re.sub(r"\n ", "", ldif)
    found: list[tuple[str, str]] = []
    for block in text.split("\n\n"):
        dn = re.search(r"^dn: (.*)$", block, re.M)
        guid = re.search(r"^objectGUID: ([0-9a-fA-F-]{36})$", block, re.M)
        if dn and guid:
            found.append((guid.group(1).lower(), dn.group(1)))
    return found


def only_in_point(
    point: Iterable[tuple[str, str]], live: Iterable[tuple[str, str]], skip: Sequence[str] = ()
) -> list[str]:
    """DNs of the point's objects the live directory lacks (by objectGUID), sorted.

    ``skip``: DNs whose object and children are expected to differ (the DC's
    own computer account: the join made it anew).
    """
    have = {guid for guid, _ in live}
    lowered = [s.lower() for s in skip]

    def skipped(dn: str) -> bool:
        low = dn.lower()
        return any(low == s or low.endswith("," + s) for s in lowered)

    return sorted(dn for guid, dn in point if guid not in have and not skipped(dn))


def carried_options(smb_conf: str) -> dict[str, str]:
    """The point's ``[global]`` settings a fresh join must keep (not identity or paths)."""
    options: dict[str, str] = {}
    section = ""
    for raw in smb_conf.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line.strip("[]").strip().lower()
            continue
        key, sep, value = line.partition("=")
        key = " ".join(key.lower().split())
        if section == "global" and sep and key not in NOT_CARRIED:
            options[key] = value.strip()
    return options


def keytab_kvnos(klist: str) -> set[int]:
    """``klist -k`` output -> the key version numbers it lists."""
    return {int(m.group(1)) for m in re.finditer(r"^\s*(\d+)\s+\S+@\S+", klist, re.M)}


def seized_roles(demote_output: str) -> list[str]:
    """The naming contexts whose FSMO role ``remove_dc`` seized (its warning lines)."""
    return re.findall(r"Seizing FSMO role on: (.+?) \(now owned by", demote_output)


def _rdn_value(dn: str) -> str:
    return dn.split(",", 1)[0].partition("=")[2]


class SambaAdRestore:
    name: ClassVar[str] = NAME
    hold_units: ClassVar[tuple[str, ...]] = ("samba-ad-dc.service",)

    def __init__(
        self, guest: GuestChannel, recorded: Mapping[str, Any], request: RestoreRequest
    ) -> None:
        self.guest, self.recorded, self.request = guest, dict(recorded), request
        missing = [key for key in REQUIRED if not self.recorded.get(key)]
        if missing:
            raise WriterFailed(
                NAME,
                f"restore point {request.point_id[:12]} has no usable Samba AD metadata "
                f"(missing: {', '.join(missing)}); restore it with --naive",
            )
        self.dc = str(self.recorded["dc_name"]).upper()
        self.base = str(self.recorded["base_dn"])
        self.user = request.setting(NAME, "user", "Administrator") or "Administrator"
        self.password = request.setting(NAME, "password")
        self.survivors = self._survivors()
        explicit = canonical_role(request.asked_role) if request.asked_role else None
        self.mode = (
            "authoritative"
            if explicit == PRIMARY or (request.role == PRIMARY and not self.survivors)
            else "rejoin"
        )
        if self.password is None:
            raise WriterFailed(
                NAME,
                "restoring a DC needs a domain admin's password: "
                "--set samba-ad.password_file=PATH (or samba-ad.password=, test/lab only)",
            )
        private = str(self.recorded["private_dir"]).rstrip("/")
        # a DC provisioned with --targetdir keeps everything under it (the lab's DCs)
        self.targetdir = "" if private == DEFAULT_PRIVATE else private.rsplit("/", 1)[0]
        self.survivor: dict[str, str] = {}
        self.steps: dict[str, float] = {}
        self.evidence: dict[str, Any] = {
            "role": self.mode,
            "invocation_id_at_backup": self.recorded["invocation_id"],
            "seconds": self.steps,
        }

    def _survivors(self) -> list[str]:
        if self.request.partner:
            return [self.request.partner]
        dcs = self.recorded.get("dcs") or []
        return [
            str(d.get("address") or d.get("dns_host_name"))
            for d in dcs
            if isinstance(d, Mapping) and (d.get("address") or d.get("dns_host_name"))
        ]

    # -- with samba held ------------------------------------------------------
    def configure(self) -> None:
        self._refuse_too_old()
        self._write_password()
        try:
            if self.mode == "rejoin":
                self._step("survivor", self._find_survivor)
                self._step("move_aside", self._move_aside)
                self._step("demote_old_identity", self._demote)
            else:
                self._step("move_aside", self._move_aside)
                self._step("backup_restore", self._backup_restore)
        except BaseException:
            self.guest.run(["rm", "-rf", AUTH_DIR])  # start() will not run: no password left
            raise

    def _refuse_too_old(self) -> None:
        at = (self.recorded.get("marker") or {}).get("at")
        if not at:
            self.evidence["point_age_checked"] = False  # no marker time recorded
            return
        reason = point_too_old(self.recorded, str(at), datetime.now(UTC))
        if reason:
            raise WriterFailed(NAME, f"{reason}; the VM is left held")
        self.evidence["point_age_checked"] = True

    def _find_survivor(self) -> None:
        if not self.survivors:
            raise WriterFailed(
                NAME,
                f"no surviving DC to rejoin: give --partner DC, or --role authoritative "
                f"if every DC of {self.recorded['realm']} is lost",
            )
        errors = []
        for host in self.survivors:
            found = self._run(
                [
                    "ldbsearch",
                    "-H",
                    f"ldap://{host}",
                    *self._creds(),
                    "-s",
                    "base",
                    "-b",
                    "",
                    "dnsHostName",
                    "dsServiceName",
                ],
                timeout=60,
            )
            if found.ok and "dnsHostName:" in found.text():
                attrs = dict(re.findall(r"^(dnsHostName|dsServiceName): (.*)$", found.text(), re.M))
                server = attrs.get("dsServiceName", "").split(",")
                name = server[1].partition("=")[2] if len(server) > 1 else host
                self.survivor = {"host": host, "dns_host_name": attrs["dnsHostName"], "name": name}
                self.evidence["survivor"] = self.survivor
                return
            detail = _last_line(found.text())
            if "INVALID_CREDENTIALS" in found.text():
                raise WriterFailed(
                    NAME, f"survivor {host} refused the credentials of {self.user}: {detail}"
                )
            errors.append(f"{host}: {detail}")
        raise WriterFailed(
            NAME,
            f"survivor {'; '.join(errors)} unreachable — the VM is left held; "
            "bring a DC up or use --role authoritative",
        )

    def _move_aside(self) -> None:
        private = str(self.recorded["private_dir"])
        sysvol = str(self.recorded.get("sysvol") or "")
        conf = str(self.recorded["smb_conf"])
        state = private.rstrip("/").rsplit("/", 1)[0]
        script = f"""set -e
P={shlex.quote(POINT_DB)}
test -d {shlex.quote(private)} || {{ echo "no directory at {private}" >&2; exit 1; }}
rm -rf "$P"; mkdir -p "$P"; chmod 700 {shlex.quote(WORK)} "$P"
mv {shlex.quote(private)} "$P/private"
if [ -n {shlex.quote(sysvol)} ] && [ -d {shlex.quote(sysvol)} ]; then mv {shlex.quote(sysvol)} "$P/sysvol"; fi
if [ -f {shlex.quote(conf)} ]; then mv {shlex.quote(conf)} "$P/smb.conf"; fi
for f in {shlex.quote(state)}/*.tdb; do [ -e "$f" ] && mv "$f" "$P/" || true; done
ls -1 "$P"
"""  # noqa: E501
        moved = self._sh(script).split()
        self.evidence["point_db"] = {"path": POINT_DB, "moved": moved}

    def _demote(self) -> None:
        held = [
            role
            for role, owner in (self.recorded.get("fsmo") or {}).items()
            if str(owner).upper() == self.dc
        ]
        out = self._sh_auth(
            f"samba-tool domain demote --remove-other-dead-server={shlex.quote(self.dc)} "
            f"-H ldap://{shlex.quote(self.survivor['host'])} -U {shlex.quote(self.user)} 2>&1",
            allow_fail=("not found", "Unable to find"),
        )
        seized = seized_roles(out)
        after = self._fsmo_show()
        still = [role for role, owner in after.items() if f"CN={self.dc}," in owner.upper()]
        for role in still:  # remove_dc seizes them; this is the fallback
            self._sh_auth(
                f"samba-tool fsmo seize --role={_SEIZE_NAMES[role]} --force "
                f"-H ldap://{shlex.quote(self.survivor['host'])} -U {shlex.quote(self.user)} 2>&1"
            )
        self.evidence.update(
            fsmo_held_by_lost_dc=held,
            fsmo_seized_by_demote=seized,
            fsmo_seized_here=still,
            fsmo_after={
                role: _rdn_value(owner.split(",", 1)[1])
                for role, owner in (self._fsmo_show() if still else after).items()
            },
        )

    def _fsmo_show(self, host: str = "") -> dict[str, str]:
        out = self._sh_auth(
            f"samba-tool fsmo show -H ldap://{shlex.quote(host or self.survivor['host'])} "
            f"-U {shlex.quote(self.user)} 2>&1"
        )
        return dict(re.findall(r"^(\w+Role) owner: (.*)$", out, re.M))

    def _backup_restore(self) -> None:
        backup = (self.recorded.get("backup") or {}).get("file")
        if not backup:
            raise WriterFailed(
                NAME, "the restore point holds no offline backup: the authoritative path needs it"
            )
        target = f"{WORK}/dc"
        # the backup holds the old DC's account: Samba refuses to restore under its name
        # ("Entry CN=DC1,OU=Domain Controllers,... already exists")
        new = (self.request.setting(NAME, "new_name") or f"{self.dc[:14]}R").upper()
        if new == self.dc:
            raise WriterFailed(NAME, f"samba-ad.new_name must differ from {self.dc}")
        out = self._sh(
            f"set -e; test -f {shlex.quote(backup)} || {{ echo 'no file {backup} on the restored "
            f"disk' >&2; exit 1; }}; rm -rf {shlex.quote(target)}; "
            f"samba-tool domain backup restore --backup-file={shlex.quote(backup)} "
            f"--newservername={shlex.quote(new)} --targetdir={shlex.quote(target)} 2>&1; "
            f"cp {shlex.quote(target)}/etc/smb.conf {shlex.quote(str(self.recorded['smb_conf']))}",
            timeout=900,
        )
        self.evidence.update(
            restored_as=new,
            restored_from=backup,
            restored_into=target,
            fsmo_seized=seized_roles(out) or "all (samba-tool domain backup restore)",
        )

    # -- starting it and proving the result -----------------------------------
    def start(self) -> dict[str, Any]:
        try:
            if self.mode == "rejoin":
                self._step("join", self._join)
                self._step("keep_old_keys", self._keep_old_keys)
                self._step("sysvol", self._restore_sysvol)
            self._step("start", self._start_samba)
            if self.mode == "rejoin":
                self._step("replicate", self._replicate_all)
                self._step("markers", self._markers)
                self._step("showrepl", self._showrepl)
                self._step("ldapcmp", self._ldapcmp)
                self._step("only_in_point", self._only_in_point)
            else:
                owners = self._fsmo_show(self._me())
                self.evidence["fsmo_after"] = {
                    role: _rdn_value(owner.split(",", 1)[1]) for role, owner in owners.items()
                }
            self.evidence["invocation_id"] = self._invocation_id()
            if self.evidence["invocation_id"] == self.recorded["invocation_id"]:
                raise WriterFailed(NAME, "the DC still runs under its recorded invocationId")
            self.evidence["summary"] = self._summary()
            return self.evidence
        finally:
            self.guest.run(["rm", "-rf", AUTH_DIR])

    def _join(self) -> None:
        point_conf = self.guest.read_file(f"{POINT_DB}/smb.conf") or b""
        options = carried_options(point_conf.decode(errors="replace"))
        options["netbios name"] = self.dc
        argv = [
            "samba-tool",
            "domain",
            "join",
            str(self.recorded["realm"]).lower(),
            "DC",
            f"--server={self.survivor['host']}",
            "-U",
            self.user,
            "--dns-backend=SAMBA_INTERNAL",
            *(f"--option={key}={value}" for key, value in options.items()),
        ]
        if self.targetdir:
            argv.append(f"--targetdir={self.targetdir}")
        self._sh_auth(shlex.join(argv) + " 2>&1", timeout=900)
        self.evidence["joined_as"] = {"name": self.dc, "via": self.survivor["dns_host_name"]}

    def _keep_old_keys(self) -> None:
        """Accept the tickets survivors still hold for the old account (its older kvno)."""
        old, new = (
            f"{POINT_DB}/private/secrets.keytab",
            f"{self.recorded['private_dir']}/secrets.keytab",
        )
        listed = self._run(["sh", "-c", f"klist -k {old}; echo ===; klist -k {new}"])
        before, _, after = listed.text().partition("===")
        old_kvnos, new_kvnos = keytab_kvnos(before), keytab_kvnos(after)
        if not listed.ok or not old_kvnos or old_kvnos & new_kvnos:
            self.evidence["old_keys_kept"] = False
            self.evidence["old_keys_note"] = (
                f"old key versions {sorted(old_kvnos)} vs new {sorted(new_kvnos)}: not merged; "
                "restart samba on the survivors if they fail to replicate to this DC"
            )
            return
        self._sh(f"printf 'rkt %s\\nwkt %s\\nquit\\n' {old} {new} | ktutil >/dev/null")
        self.evidence["old_keys_kept"] = sorted(old_kvnos)

    def _restore_sysvol(self) -> None:
        sysvol = str(self.recorded.get("sysvol") or "")
        if not sysvol:
            self.evidence["sysvol_restored"] = []
            return
        point = f"{POINT_DB}/sysvol"
        q, p = shlex.quote(sysvol), shlex.quote(point)
        out = self._sh(
            f"set -e; mkdir -p {q}; [ -d {p} ] || exit 0; cd {p}; "
            f"find . -type f | sort > /tmp/surety-sysvol.point; "
            f"(cd {q} && find . -type f | sort) > /tmp/surety-sysvol.live; "
            "comm -23 /tmp/surety-sysvol.point /tmp/surety-sysvol.live; "
            f"cp -a -n . {q}/; rm -f /tmp/surety-sysvol.point /tmp/surety-sysvol.live"
        )
        restored = [line.removeprefix("./") for line in out.splitlines() if line.strip()]
        reset = self._run(["samba-tool", "ntacl", "sysvolreset", *self._conf()], timeout=600)
        if not reset.ok:
            raise WriterFailed(NAME, f"samba-tool ntacl sysvolreset: {_last_line(reset.text())}")
        self.evidence["sysvol_restored"] = restored

    def _start_samba(self) -> None:
        started = self.guest.run(["systemctl", "start", "samba-ad-dc.service"], timeout=300)
        if not started.ok:
            raise self._failure(f"systemctl start samba-ad-dc: {started.text()}")
        self._wait(lambda: self._local_ldap().ok, "to answer LDAP", 180)

    def _local_ldap(self) -> Any:
        return self._run(
            [
                "ldbsearch",
                "-H",
                f"ldap://{self._me()}",
                *self._creds(),
                "-s",
                "base",
                "-b",
                "",
                "dnsHostName",
            ],
        )

    def _me(self) -> str:
        return str(self.recorded.get("dns_host_name") or self.dc.lower())

    def _partitions(self) -> list[str]:
        b = self.base
        return [
            b,
            f"CN=Configuration,{b}",
            f"CN=Schema,CN=Configuration,{b}",
            f"DC=DomainDnsZones,{b}",
            f"DC=ForestDnsZones,{b}",
        ]

    def _replicate_all(self, partitions: Sequence[str] | None = None) -> None:
        them, me = self.survivor["dns_host_name"], self._me()
        done = []
        for nc in partitions or self._partitions():
            for dest, src in ((me, them), (them, me)):
                cmd = f"samba-tool drs replicate {dest} {src} {shlex.quote(nc)} -U {self.user} 2>&1"
                self._wait(self._replicated(cmd), f"to replicate {nc} {src} -> {dest}", 120)
                done.append(f"{src} -> {dest}: {nc}")
        self.evidence.setdefault("replicated", done)

    def _replicated(self, command: str) -> Callable[[], bool]:
        return lambda: "successful" in self._sh_auth(command, allow_fail=("",))

    def _markers(self) -> None:
        token = self.request.point_id[:8]
        them = self.survivor["dns_host_name"]
        sides = {
            self._me(): f"surety-restore-{self.dc}-{token}",
            them: f"surety-restore-{self.survivor['name']}-{token}",
        }
        for host, cn in sides.items():
            self._sh_auth(
                f"samba-tool contact delete {cn} -H ldap://{host} -U {self.user} >/dev/null 2>&1; "
                f"samba-tool contact create {cn} --description='surety restore proof' "
                f"-H ldap://{host} -U {self.user} 2>&1"
            )
        self._replicate_all([self.base])
        seen: dict[str, list[str]] = {}
        for host in sides:
            out = self._run(
                [
                    "ldbsearch",
                    "-H",
                    f"ldap://{host}",
                    *self._creds(),
                    "-b",
                    self.base,
                    "(cn=surety-restore-*-" + token + ")",
                    "cn",
                ]
            )
            seen[host] = sorted(re.findall(r"^cn: (.*)$", out.text(), re.M))
        missing = {h: sorted(set(sides.values()) - set(s)) for h, s in seen.items()}
        missing = {h: m for h, m in missing.items() if m}
        for host, cn in sides.items():
            self._sh_auth(
                f"samba-tool contact delete {cn} -H ldap://{host} -U {self.user} 2>&1",
                allow_fail=("",),
            )
        self._replicate_all([self.base])  # the deletions too, before ldapcmp compares
        self.evidence["markers"] = {"created": sides, "seen": seen, "deleted": True}
        if missing:
            raise WriterFailed(NAME, f"marker contacts did not converge: missing {missing}")

    def _showrepl(self) -> None:
        failures: dict[str, list[str]] = {}
        stale: dict[str, list[str]] = {}
        for host in (self._me(), self.survivor["dns_host_name"]):
            out = self._sh_auth(f"samba-tool drs showrepl {host} --json -U {self.user}")
            try:
                report = json.loads(out)
            except ValueError as exc:
                raise WriterFailed(NAME, f"drs showrepl {host}: {out[-200:]}") from exc
            # a link from a deleted DSA (the old identity just demoted; samba-tool names no
            # "DSA" for it) is stale, not a failure: the KCC drops it
            links = report.get("repsFrom", [])
            failures[host] = [
                f"{r.get('NC dn')} from {r.get('DSA') or r.get('NTDS DN')}: "
                f"{r.get('last attempt message')}"
                for r in links
                if r.get("consecutive failures") and not r.get("is deleted")
            ]
            stale[host] = [str(r.get("NC dn")) for r in links if r.get("is deleted")]
        self.evidence["showrepl_failures"] = failures
        self.evidence["showrepl_stale_links"] = stale
        if any(failures.values()):
            raise WriterFailed(NAME, f"drs showrepl reports failures: {failures}")

    def _ldapcmp(self) -> None:
        # A DC that just joined keeps writing its configuration for a while (its KCC adds
        # connection objects): a difference is compared again after a full sync, up to 3 times.
        for attempt in range(1, LDAPCMP_TRIES + 1):
            if attempt > 1:
                self._replicate_all()
            out = self._sh_auth(
                f"samba-tool ldapcmp ldap://{self._me()} ldap://{self.survivor['dns_host_name']} "
                f"domain configuration schema -U {self.user} 2>&1",
                allow_fail=("",),
                timeout=600,
            )
            results = dict(re.findall(r"Result for \[(\w+)\]: (\w+)", out))
            self.evidence["ldapcmp"] = results
            self.evidence["ldapcmp_attempts"] = attempt
            equal = sorted(results) == ["CONFIGURATION", "DOMAIN", "SCHEMA"]
            if equal and set(results.values()) == {"SUCCESS"}:
                return
        raise WriterFailed(NAME, f"ldapcmp: {results or _last_line(out)}")

    def _only_in_point(self) -> None:
        def guids(url: str) -> list[tuple[str, str]]:
            out = self._run(
                ["ldbsearch", "-H", url, "-b", self.base, "(objectGUID=*)", "objectGUID"],
                timeout=300,
            )
            if not out.ok:
                raise WriterFailed(NAME, f"reading {url}: {_last_line(out.text())}")
            return parse_guids(out.text())

        point = guids(f"tdb://{POINT_DB}/private/sam.ldb")
        live = guids(f"tdb://{self.recorded['private_dir']}/sam.ldb")
        computer = f"CN={self.dc},OU=Domain Controllers,{self.base}"
        topology = f"CN={self.dc},CN=Topology,CN=Domain System Volume,CN=DFSR-GlobalSettings,CN=System,{self.base}"  # noqa: E501
        dns = [dn for _, dn in point if dn.lower().startswith(f"dc={self.dc.lower()},")]
        lost = only_in_point(point, live, skip=[computer, topology, *dns])
        self.evidence["only_in_point"] = {"count": len(lost), "dns": lost}

    def _invocation_id(self) -> str:
        out = self._sh_auth(f"samba-tool drs showrepl {self._me()} --json -U {self.user}")
        match = re.search(r'"invocationId": "([0-9a-f-]+)"', out)
        return match.group(1) if match else ""

    def _summary(self) -> str:
        if self.mode != "rejoin":
            return (
                f"{self.dc} restored authoritatively from the point's offline backup as "
                f"{self.evidence['restored_as']}: new invocationId, every FSMO role seized, "
                "the old DCs removed; join the other DCs to it afresh"
            )
        lost = self.evidence["only_in_point"]
        text = (
            f"{self.dc} rejoined via {self.survivor['dns_host_name']} with a new invocationId, "
            f"converged both ways, ldapcmp equal; sysvol files restored: "
            f"{len(self.evidence['sysvol_restored'])}; "
            f"only in the restore point: {lost['count']} objects"
        )
        return text + (": " + "; ".join(lost["dns"]) if lost["dns"] else "")

    # -- guest helpers --------------------------------------------------------
    def _step(self, name: str, action: Callable[[], None]) -> None:
        start = time.monotonic()
        action()
        self.steps[name] = round(time.monotonic() - start, 1)

    def _conf(self) -> list[str]:
        return ["-s", str(self.recorded["smb_conf"])]

    def _creds(self) -> list[str]:
        return ["-U", self.user]

    def _write_password(self) -> None:
        self._sh(f"umask 077; mkdir -p {AUTH_DIR}; : > {AUTH_DIR}/pw")
        self.guest.write_file(f"{AUTH_DIR}/pw", (self.password or "").encode())

    def _run(self, argv: Sequence[str], timeout: float = 120) -> Any:
        """Run with the password file in the environment (never on the command line)."""
        script = f"PASSWD_FILE={AUTH_DIR}/pw exec {shlex.join(argv)}"
        return self.guest.run(["sh", "-c", script], timeout=timeout)

    def _sh_auth(self, script: str, allow_fail: Sequence[str] = (), timeout: float = 300) -> str:
        result = self.guest.run(
            ["sh", "-c", f"export PASSWD_FILE={AUTH_DIR}/pw; {script}"], timeout=timeout
        )
        text = result.stdout.decode(errors="replace")
        if not result.ok and not any(word in result.text() for word in allow_fail):
            command = script.split(" 2>", maxsplit=1)[0][:90]
            raise WriterFailed(NAME, f"{command}: {_last_line(result.text())}")
        return text

    def _sh(self, script: str, timeout: float = 300) -> str:
        result = self.guest.run(["sh", "-c", script], timeout=timeout)
        if not result.ok:
            raise WriterFailed(NAME, f"in the guest: {result.text()[-400:]}")
        return result.stdout.decode(errors="replace")

    def _wait(self, done: Callable[[], bool], what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            try:
                if done():
                    return
            except WriterFailed as exc:
                last = exc.detail
            time.sleep(2)
        raise self._failure(f"did not manage {what} within {timeout:g} s {last}".strip())

    def _failure(self, message: str) -> WriterFailed:
        tail = self.guest.run(
            ["sh", "-c", "journalctl -u samba-ad-dc -n 8 --no-pager 2>/dev/null | tail -n 8"]
        )
        self.evidence["log_tail"] = tail.stdout.decode(errors="replace").splitlines()
        return WriterFailed(NAME, message)


_SEIZE_NAMES = {
    "SchemaMasterRole": "schema",
    "InfrastructureMasterRole": "infrastructure",
    "RidAllocationMasterRole": "rid",
    "PdcEmulationMasterRole": "pdc",
    "DomainNamingMasterRole": "naming",
    "DomainDnsZonesMasterRole": "domaindns",
    "ForestDnsZonesMasterRole": "forestdns",
}


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"
