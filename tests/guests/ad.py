"""Two Samba AD domain controllers on an isolated libvirt network (issue 18).

The Samba AD scenario tests need a real multi-master domain: DC1 provisions
the realm ``LAB.TEST`` (NetBIOS ``LAB``), DC2 joins it as a second DC, and
the two replicate both ways through DRS. This module builds such a pair on
the AD guest image (``tests/guests/build_ad.sh``) and exposes what the DCs say
about themselves (invocationId, highestCommittedUSN, up-to-dateness vectors,
``drs showrepl``, ``ldapcmp``, SIDs, logs).

Shape::

    from tests.guests import ad

    with ad.ad_pair() as pair:                 # network + DC1 + DC2, replicating
        ad.create_contacts(pair.dc1, "post", 3)
        ad.drs_replicate(pair.dc2, pair.dc1)
        assert ad.contacts_on(pair.dc2, "post") == ["post1", "post2", "post3"]
        equal, diff = ad.ldapcmp_equal(pair.dc1, pair.dc2)
    # VMs and network are gone here, also after a failure

The network and the members are those of :mod:`tests.guests.replication`
(an isolated bridge, static addresses ``.1`` for DC1 and ``.2`` for DC2
written on the guests' disks, fixed MACs). Each DC has ``/etc/hosts`` with
both names, ``/etc/resolv.conf`` pointing at both DCs (its own first) and
``/etc/krb5.conf`` from the provision. ``samba-ad-dc.service`` is enabled, so
a DC's disk (or a restored copy of it) boots into a running DC.

The cache
    Provisioning and joining under TCG takes minutes, so the provisioned pair
    is cached: both DCs are shut down cleanly and their disk overlays (on the
    AD image), MACs, subnet and addresses go to
    ``${SURETY_GUEST_CACHE}/ad-pair-<key>/`` (``<key>`` = AD image key +
    :data:`PAIR_VERSION`). The next :func:`ad_pair` boots new VMs whose disks
    are overlays on those (nothing is copied; the cache is never written), on
    a new network with the same subnet and the same MACs, and checks that
    replication works both ways before it yields. An entry older than
    :data:`CACHE_MAX_AGE_DAYS` is rebuilt (tombstone lifetime, machine
    passwords). ``SURETY_AD_PAIR_CACHE=0`` provisions afresh without touching
    the cache.

Every helper runs commands through the guest agent. Local ``sam.ldb`` access
(``ldbsearch -H /var/lib/samba/private/sam.ldb``, ``samba-tool`` without
``-H``) is used where it is enough: it needs no network authentication and is
what the DC itself sees.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import libvirt

from tests.guests import agent, apps, testvm
from tests.guests import replication as rep
from tests.vm.conftest import Guest

REALM = "LAB.TEST"
DNS_DOMAIN = "lab.test"
DOMAIN = "LAB"
BASE_DN = "DC=lab,DC=test"
CONFIG_DN = f"CN=Configuration,{BASE_DN}"
SERVERS_DN = f"CN=Servers,CN=Default-First-Site-Name,CN=Sites,{CONFIG_DN}"
ADMIN = "Administrator"
ADMIN_PASSWORD = "Passw0rd.Lab1"
"""Lab-only password of the domain Administrator."""
CREDS = f"-U{ADMIN}%{ADMIN_PASSWORD}"
APP = "samba-ad"
SERVICE = "samba-ad-dc.service"
PRIVATE_DIR = "/var/lib/samba/private"
SAM_LDB = f"{PRIVATE_DIR}/sam.ldb"
SMB_CONF = "/etc/samba/smb.conf"
SAMBA_LOG = "/var/log/samba/log.samba"
DC_HOSTS = {"DC1": 1, "DC2": 2}
"""NetBIOS name of each DC and its host number on the lab network."""

MEMORY_MIB = 1024
"""RAM of a DC under TCG (samba + provision/join fit; see the README for measurements)."""
PAIR_VERSION = 1
"""Bump when provisioning changes: the cached pair's key changes with it."""
CACHE_MAX_AGE_DAYS = 30
BOOT_TIMEOUT = rep.BOOT_TIMEOUT
SETUP_TIMEOUT = 1200.0
"""Seconds for one provision or join under TCG on a busy host."""


def log(message: str) -> None:
    """Progress message on stderr (seen with ``pytest -s`` or on failure)."""
    print(f"ad: {message}", file=sys.stderr, flush=True)


class DC(rep.Member):
    """A domain controller of a pair: a lab Member plus its NetBIOS name (``DC1``)."""

    def __init__(
        self, name: str, conn: object, network: rep.LabNetwork, dc_name: str, mac: str
    ) -> None:
        super().__init__(name, conn, network, DC_HOSTS[dc_name], mac)
        self.dc_name = dc_name

    @property
    def hostname(self) -> str:
        return self.dc_name.lower()

    @property
    def fqdn(self) -> str:
        return f"{self.hostname}.{DNS_DOMAIN}"

    @property
    def ntds_settings_dn(self) -> str:
        return f"CN=NTDS Settings,CN={self.dc_name},{SERVERS_DN}"

    def __repr__(self) -> str:
        return f"DC({self.dc_name}, {self.name!r}, {self.address}, mac={self.mac})"


@dataclass
class AdPair:
    """DC1 (provisioned, all FSMO roles) and DC2 (joined) on one lab network."""

    network: rep.LabNetwork
    dc1: DC
    dc2: DC
    from_cache: bool
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds per setup step (``boot``, ``provision``, ``join``, ``replication``, ...)."""

    @property
    def dcs(self) -> tuple[DC, DC]:
        return self.dc1, self.dc2

    def other(self, dc: DC) -> DC:
        return self.dc2 if dc is self.dc1 else self.dc1


# --------------------------------------------------------------------------
# small building blocks


def sh(dc: Guest, script: str, what: str, timeout: float = 300) -> str:
    """Run ``script`` in the DC; its stdout. A failure names the DC and ``what``."""
    return rep._sh(dc, script, what, timeout=timeout)


def run(dc: Guest, script: str, timeout: float = 300) -> agent.ExecResult:
    """Run ``script`` in the DC; the result whatever the exit code."""
    return agent.guest_shell(dc.dom, script, timeout=timeout)


def ldbsearch(dc: Guest, base: str, expr: str, attrs: list[str], scope: str = "sub") -> str:
    """``ldbsearch`` on the DC's own sam.ldb (LDIF text)."""
    argv = ["ldbsearch", "-H", SAM_LDB, "-b", base, "-s", scope, expr, *attrs]
    return sh(dc, " ".join(shlex.quote(a) for a in argv), f"ldbsearch {expr}", timeout=180)


def ldif_values(text: str, attr: str) -> list[str]:
    """All values of ``attr`` in LDIF text (single-line values)."""
    prefix = f"{attr.lower()}:"
    return [
        line.split(":", 1)[1].strip()
        for line in text.splitlines()
        if line.lower().startswith(prefix) and not line.lower().startswith(f"{prefix}:")
    ]


def ldif_records(text: str) -> list[dict[str, list[str]]]:
    """LDIF text as records {attr lower-case: [values]} (continuation lines joined)."""
    records: list[dict[str, list[str]]] = []
    current: dict[str, list[str]] = {}
    last: tuple[str, int] | None = None
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        if not line.strip():
            if current:
                records.append(current)
            current, last = {}, None
            continue
        if line.startswith(" ") and last is not None:
            current[last[0]][last[1]] += line[1:]
            continue
        name, _, value = line.partition(":")
        value = value[1:].strip() if value.startswith(":") else value.strip()
        current.setdefault(name.lower(), []).append(value)
        last = (name.lower(), len(current[name.lower()]) - 1)
    if current:
        records.append(current)
    return records


# --------------------------------------------------------------------------
# what a DC says about itself


def invocation_id(dc: DC) -> str:
    """The invocationId of the DC's NTDS Settings object (as the DC sees it)."""
    text = ldbsearch(dc, dc.ntds_settings_dn, "(objectClass=*)", ["invocationId"], scope="base")
    values = ldif_values(text, "invocationId")
    assert values, f"{dc.name}: no invocationId on {dc.ntds_settings_dn}:\n{text}"
    return values[0]


def highest_usn(dc: DC) -> int:
    """The DC's highestCommittedUSN (rootDSE)."""
    text = ldbsearch(dc, "", "(objectClass=*)", ["highestCommittedUSN"], scope="base")
    values = ldif_values(text, "highestCommittedUSN")
    assert values, f"{dc.name}: no highestCommittedUSN in the rootDSE:\n{text}"
    return int(values[0])


UTDV_SCRIPT = """
import json, sys
from samba.auth import system_session
from samba.dcerpc import drsblobs
from samba.ndr import ndr_unpack
from samba.param import LoadParm
from samba.samdb import SamDB
import ldb
lp = LoadParm(); lp.load_default()
db = SamDB(url=sys.argv[1], lp=lp, session_info=system_session())
res = db.search(base=sys.argv[2], scope=ldb.SCOPE_BASE, attrs=["replUpToDateVector"])
out = {}
if res and "replUpToDateVector" in res[0]:
    blob = ndr_unpack(drsblobs.replUpToDateVectorBlob, res[0]["replUpToDateVector"][0])
    for c in blob.ctr.cursors:
        out[str(c.source_dsa_invocation_id)] = int(c.highest_usn)
print(json.dumps(out))
"""


def uptodateness_vector(dc: DC, nc: str = BASE_DN) -> dict[str, int]:
    """The DC's up-to-dateness vector of ``nc``: {invocationId: highest USN seen}."""
    script = apps.heredoc("cat >/tmp/surety-utdv.py", UTDV_SCRIPT.strip()) + (
        f"python3 /tmp/surety-utdv.py {SAM_LDB} {shlex.quote(nc)}"
    )
    out = sh(dc, script, "read replUpToDateVector", timeout=180)
    return {k: int(v) for k, v in json.loads(out.strip().splitlines()[-1]).items()}


def uptodateness(dc: DC, of_invocation_id: str, nc: str = BASE_DN) -> int | None:
    """The highest USN of ``of_invocation_id`` that ``dc`` has seen (None: never)."""
    return uptodateness_vector(dc, nc).get(of_invocation_id)


@dataclass(frozen=True)
class Created:
    """Outcome of creating several objects: the names created and the failures."""

    created: list[str]
    failed: dict[str, str]
    """name -> the error line samba-tool printed."""


def _create(dc: DC, kind: str, prefix: str, count: int, start: int) -> Created:
    names = [f"{prefix}{i}" for i in range(start, start + count)]
    lines = []
    for name in names:
        # The password must not contain the account name (complexity rules).
        args = [name] if kind == "contact" else [name, f"Lab.{secrets.token_hex(4)}-X9"]
        cmd = " ".join(shlex.quote(a) for a in ["samba-tool", kind, "create", *args])
        lines.append(
            f"if out=$({cmd} 2>&1); then echo 'OK {name}'; "
            f"else echo \"FAIL {name} $(echo \"$out\" | grep -m1 -iE 'error' | tr -d '\\n')\"; fi"
        )
    out = sh(dc, "\n".join(lines), f"create {kind}s {prefix}*", timeout=60 + 30 * count)
    created, failed = [], {}
    for line in out.splitlines():
        status, _, rest = line.partition(" ")
        name, _, message = rest.partition(" ")
        if status == "OK":
            created.append(name)
        elif status == "FAIL":
            failed[name] = message
    log(f"{dc.dc_name}: {kind}s {prefix}*: {len(created)} created, {len(failed)} failed")
    return Created(created=created, failed=failed)


def create_users(dc: DC, prefix: str, count: int, start: int = 1) -> Created:
    """Create users ``<prefix><start>..`` on the DC (each consumes a RID)."""
    return _create(dc, "user", prefix, count, start)


def create_contacts(dc: DC, prefix: str, count: int, start: int = 1) -> Created:
    """Create contacts ``<prefix><start>..`` in CN=Users (no SID, no RID)."""
    return _create(dc, "contact", prefix, count, start)


def _sort_key(name: str) -> tuple[str, int]:
    match = re.fullmatch(r"(.*?)(\d+)", name)
    return (match.group(1), int(match.group(2))) if match else (name, -1)


def users_on(dc: DC, prefix: str) -> list[str]:
    """sAMAccountNames of the users starting with ``prefix`` on the DC, sorted."""
    text = ldbsearch(
        dc, BASE_DN, f"(&(objectClass=user)(sAMAccountName={prefix}*))", ["sAMAccountName"]
    )
    return sorted(ldif_values(text, "sAMAccountName"), key=_sort_key)


def contacts_on(dc: DC, prefix: str) -> list[str]:
    """cn of the contacts starting with ``prefix`` on the DC, sorted."""
    text = ldbsearch(dc, BASE_DN, f"(&(objectClass=contact)(cn={prefix}*))", ["cn"])
    return sorted(ldif_values(text, "cn"), key=_sort_key)


def sids(dc: DC) -> dict[str, str]:
    """Every object with a SID in the domain NC on the DC: {objectSid: name}."""
    text = ldbsearch(dc, BASE_DN, "(objectSid=*)", ["objectSid", "sAMAccountName", "cn"])
    out: dict[str, str] = {}
    for record in ldif_records(text):
        for sid in record.get("objectsid", []):
            name = (record.get("samaccountname") or record.get("cn") or record.get("dn", ["?"]))[0]
            previous = out.get(sid)
            out[sid] = name if previous is None else f"{previous}|{name}"
    return out


def duplicate_sids(pair: AdPair) -> list[str]:
    """SIDs used by different objects: within one DC, or across DC1 and DC2."""
    found: list[str] = []
    per_dc = {dc.dc_name: sids(dc) for dc in pair.dcs}
    for dc_name, table in per_dc.items():
        found += [f"{sid}: {names} on {dc_name}" for sid, names in table.items() if "|" in names]
    one, two = per_dc["DC1"], per_dc["DC2"]
    for sid in sorted(one.keys() & two.keys()):
        if one[sid] != two[sid]:
            found.append(f"{sid}: {one[sid]} on DC1 vs {two[sid]} on DC2")
    return found


def drs_replicate(dest: DC, source: DC, nc: str = BASE_DN, timeout: float = 300) -> str:
    """``samba-tool drs replicate DEST SOURCE NC`` (run on DEST); its output.

    Raises AgentError when samba-tool fails (the message has its output).
    """
    cmd = f"samba-tool drs replicate {dest.fqdn} {source.fqdn} {shlex.quote(nc)} {CREDS}"
    return sh(dest, cmd + " 2>&1", f"drs replicate {dest.dc_name} <- {source.dc_name}", timeout)


def showrepl(dc: DC) -> dict[str, Any]:
    """``samba-tool drs showrepl --json`` of the DC (run on the DC)."""
    out = sh(dc, f"samba-tool drs showrepl --json {CREDS}", "drs showrepl", timeout=180)
    return dict(json.loads(out[out.index("{") :]))


def showrepl_failures(dc: DC) -> list[str]:
    """Inbound neighbours (repsFrom) with failures in ``drs showrepl`` ([] = clean).

    Outbound entries (repsTo) only count change notifications, which fail
    harmlessly while a partner boots.
    """
    data = showrepl(dc)
    problems = []
    for direction in ("repsFrom",):
        for n in data.get(direction, []):
            failures = int(n.get("consecutive failures", 0) or 0)
            result = int(n.get("last attempt result", 0) or 0)
            if failures or result:
                problems.append(
                    f"{dc.dc_name} {direction} {n.get('NC dn')} from {n.get('DSA')}: "
                    f"{failures} consecutive failures, last result {result}: "
                    f"{n.get('last attempt message', '')}"
                )
    return problems


def ldapcmp_equal(
    a: DC, b: DC, contexts: tuple[str, ...] = ("DOMAIN", "CONFIGURATION")
) -> tuple[bool, str]:
    """``samba-tool ldapcmp`` of the two DCs (run on ``a``): (equal?, its output)."""
    cmd = f"samba-tool ldapcmp ldap://{a.fqdn} ldap://{b.fqdn} {' '.join(contexts)} {CREDS} 2>&1"
    result = run(a, cmd, timeout=900)
    text = (result.stdout + result.stderr).decode(errors="replace")
    equal = result.ok and "FAILURE" not in text and "SUCCESS" in text
    return equal, text


def samba_log_tail(dc: DC, lines: int = 50) -> str:
    """Last lines of the DC's samba log."""
    return rep.file_tail(dc, SAMBA_LOG, lines)


def fsmo_roles(dc: DC) -> str:
    """``samba-tool fsmo show`` on the DC."""
    return sh(dc, "samba-tool fsmo show", "fsmo show", timeout=180)


# --------------------------------------------------------------------------
# setting up DCs


def hosts_file(network: rep.LabNetwork) -> str:
    lines = ["127.0.0.1 localhost", "::1 localhost ip6-localhost ip6-loopback"]
    for dc_name, host in DC_HOSTS.items():
        name = dc_name.lower()
        lines.append(f"{network.address(host)} {name}.{DNS_DOMAIN} {name}")
    return "\n".join(lines)


def resolv_conf(dc: DC) -> str:
    servers = [dc.address] + [dc.network.address(h) for n, h in DC_HOSTS.items() if n != dc.dc_name]
    return "\n".join([f"search {DNS_DOMAIN}", *(f"nameserver {s}" for s in servers)])


def prepare_host(dc: DC, *, nameservers: list[str] | None = None) -> None:
    """Host name, /etc/hosts and /etc/resolv.conf of a DC-to-be."""
    resolv = (
        resolv_conf(dc)
        if nameservers is None
        else "\n".join([f"search {DNS_DOMAIN}", *(f"nameserver {s}" for s in nameservers)])
    )
    script = (
        f"echo {dc.hostname} >/etc/hostname\nhostname {dc.hostname}\n"
        + apps.heredoc("cat >/etc/hosts", hosts_file(dc.network))
        + "rm -f /etc/resolv.conf\n"
        + apps.heredoc("cat >/etc/resolv.conf", resolv)
        + "sync\n"
    )
    sh(dc, script, "set host name, hosts and resolv.conf")


def start_samba(dc: DC, timeout: float = 600) -> float:
    """Enable and start samba-ad-dc; wait until its LDAP answers on the lab address."""
    start = time.monotonic()
    sh(
        dc,
        f"cp {PRIVATE_DIR}/krb5.conf /etc/krb5.conf\n"
        f"systemctl unmask {SERVICE}\n"
        f"SYSTEMCTL_SKIP_SYSV=1 systemctl enable --no-reload {SERVICE}\n"
        f"systemctl start {SERVICE}\nsync",
        "start samba-ad-dc",
    )
    wait_samba(dc, timeout=timeout)
    return time.monotonic() - start


def wait_samba(dc: DC, timeout: float = 600) -> float:
    """Wait until the DC's LDAP server answers an authenticated search on its address."""
    return rep._wait(
        dc,
        f"ldbsearch -H ldap://{dc.address} {CREDS} -s base -b '' dnsHostName "
        "| grep -q '^dnsHostName:'",
        "samba LDAP to answer",
        timeout,
        evidence=lambda: (
            samba_log_tail(dc, 30)
            + run(dc, f"systemctl status --no-pager {SERVICE}").stdout.decode(errors="replace")
        ),
        interval=2,
    )


def provision(dc: DC, timeout: float = SETUP_TIMEOUT) -> float:
    """``samba-tool domain provision`` of LAB.TEST on DC1; start it. Seconds."""
    start = time.monotonic()
    cmd = (
        "rm -f /etc/samba/smb.conf\n"
        f"samba-tool domain provision --realm={REALM} --domain={DOMAIN} --server-role=dc "
        f"--dns-backend=SAMBA_INTERNAL --adminpass={shlex.quote(ADMIN_PASSWORD)} "
        f"--host-name={dc.hostname} --host-ip={dc.address} "
        f"--option='netbios name = {dc.dc_name}' --option='interfaces = lo {dc.address}' "
        ">/root/surety-provision.log 2>&1\nrc=$?\ntail -n 30 /root/surety-provision.log\n"
        "sync\nexit $rc"
    )
    sh(dc, cmd, "domain provision", timeout=timeout)
    start_samba(dc)
    seconds = time.monotonic() - start
    log(f"{dc.dc_name}: provisioned {REALM} and started in {seconds:.1f}s")
    return seconds


def join(dc: DC, server: DC, timeout: float = SETUP_TIMEOUT) -> float:
    """``samba-tool domain join lab.test DC`` of ``dc`` against ``server``; start it."""
    start = time.monotonic()
    script = (
        "rm -f /etc/samba/smb.conf\n"
        f"cp /dev/stdin /etc/krb5.conf <<'EOF'\n{KRB5_CONF}\nEOF\n"
        f"samba-tool domain join {DNS_DOMAIN} DC --server={server.address} {CREDS} "
        f"--dns-backend=SAMBA_INTERNAL --option='netbios name = {dc.dc_name}' "
        f"--option='interfaces = lo {dc.address}' >/root/surety-join.log 2>&1\nrc=$?\n"
        "tail -n 30 /root/surety-join.log\nsync\nexit $rc"
    )
    out = sh(dc, script, "domain join", timeout=timeout)
    if "Joined domain" not in out:
        raise AssertionError(f"{dc.name}: domain join did not report success:\n{out}")
    start_samba(dc)
    seconds = time.monotonic() - start
    log(f"{dc.dc_name}: joined as a DC and started in {seconds:.1f}s")
    return seconds


KRB5_CONF = f"""[libdefaults]
	default_realm = {REALM}
	dns_lookup_realm = false
	dns_lookup_kdc = true"""


def ntds_guid(dc: DC, on: DC | None = None) -> str:
    """objectGUID of the DC's NTDS Settings (read on ``on``, default the DC)."""
    text = ldbsearch(on or dc, dc.ntds_settings_dn, "(objectClass=*)", ["objectGUID"], "base")
    values = ldif_values(text, "objectGUID")
    assert values, f"no objectGUID for {dc.ntds_settings_dn}:\n{text}"
    return values[0]


def dns_records(dc: DC) -> list[tuple[str, str, str, str]]:
    """(zone, name, type, data) records every DC needs, for ``dc``."""
    guid = ntds_guid(dc)
    return [
        (DNS_DOMAIN, dc.hostname, "A", dc.address),
        (f"_msdcs.{DNS_DOMAIN}", guid, "CNAME", dc.fqdn),
        (DNS_DOMAIN, "_ldap._tcp", "SRV", f"{dc.fqdn} 389 0 100"),
        (DNS_DOMAIN, "_kerberos._tcp", "SRV", f"{dc.fqdn} 88 0 100"),
        (DNS_DOMAIN, "_kerberos._udp", "SRV", f"{dc.fqdn} 88 0 100"),
    ]


DNS_CHECK_SCRIPT = """
import json, sys
import dns.resolver
server, records = sys.argv[1], json.loads(sys.argv[2])
res = dns.resolver.Resolver(configure=False)
res.nameservers = [server]
res.lifetime = 10
missing = []
for zone, name, rtype, data in records:
    try:
        answer = res.resolve(f"{name}.{zone}", rtype)
        text = " ".join(r.to_text() for r in answer).lower()
    except Exception:
        text = ""
    if data.split()[0].lower().rstrip(".") not in text:
        missing.append([zone, name, rtype, data])
print(json.dumps(missing))
"""


def missing_dns(server: DC, records: list[tuple[str, str, str, str]]) -> list[list[str]]:
    """The records that the DNS server of ``server`` does not answer (one dnspython run)."""
    script = apps.heredoc("cat >/tmp/surety-dns-check.py", DNS_CHECK_SCRIPT.strip()) + (
        f"python3 /tmp/surety-dns-check.py {server.address} {shlex.quote(json.dumps(records))}"
    )
    out = sh(server, script, "check DNS records", timeout=180)
    return [list(r) for r in json.loads(out.strip().splitlines()[-1])]


def ensure_dns(pair: AdPair) -> list[str]:
    """Add the DNS records of both DCs that a DNS server lacks; what was added."""
    records = dns_records(pair.dc1) + dns_records(pair.dc2)
    added = []
    for server in pair.dcs:
        for zone, name, rtype, data in missing_dns(server, records):
            add = (
                f"samba-tool dns add {server.address} {zone} {name} {rtype} "
                f"{shlex.quote(data)} {CREDS}"
            )
            result = run(server, add + " 2>&1", timeout=300)
            text = result.stdout.decode(errors="replace")
            if not result.ok and "already exist" not in text.lower():
                raise AssertionError(f"{server.name}: {add} failed:\n{text}")
            added.append(f"{name}.{zone} {rtype} {data} on {server.dc_name}")
    if added:
        log(f"DNS records added: {'; '.join(added)}")
    still = [r for server in pair.dcs for r in missing_dns(server, records)]
    assert not still, f"DNS records still missing after adding them: {still}"
    return added


def check_replication(pair: AdPair, timeout: float = 600) -> float:
    """A new contact on each DC reaches the other; seconds. Pulls with drs replicate."""
    start = time.monotonic()
    tag = secrets.token_hex(3)
    for dc in pair.dcs:
        created = create_contacts(dc, f"surety-probe-{tag}-{dc.hostname}-", 1)
        assert not created.failed, f"{dc.name}: probe contact not created: {created.failed}"
    pending = {(dest.dc_name, src.hostname) for dest in pair.dcs for src in (pair.other(dest),)}
    while pending:
        for dest in pair.dcs:
            src = pair.other(dest)
            if (dest.dc_name, src.hostname) not in pending:
                continue
            if contacts_on(dest, f"surety-probe-{tag}-{src.hostname}-"):
                pending.discard((dest.dc_name, src.hostname))
                continue
            with contextlib.suppress(agent.AgentError):
                drs_replicate(dest, src)
        if pending and time.monotonic() - start > timeout:
            raise AssertionError(
                f"replication: probe contacts missing after {timeout:.0f}s on {sorted(pending)}"
                f"\n{showrepl_failures(pair.dc1)}\n{showrepl_failures(pair.dc2)}"
            )
        if pending:
            time.sleep(3)
    seconds = time.monotonic() - start
    log(f"replication works both ways ({seconds:.1f}s)")
    return seconds


# --------------------------------------------------------------------------
# the cache of a provisioned pair


def cache_root() -> Path:
    return Path(os.environ.get("SURETY_GUEST_CACHE", Path.home() / ".cache/surety/guests"))


def pair_key(image_key: str) -> str:
    return hashlib.sha256(f"{image_key}:{PAIR_VERSION}".encode()).hexdigest()[:16]


def _cache_fresh(entry: Path) -> bool:
    try:
        meta = json.loads((entry / "pair.json").read_text())
    except (OSError, ValueError):
        return False
    age_days = (time.time() - float(meta["created"])) / 86400
    return age_days < CACHE_MAX_AGE_DAYS and all(
        (entry / f"{n.lower()}.qcow2").exists() for n in DC_HOSTS
    )


def store_pair(pair: AdPair, entry: Path, image: testvm.GuestImage) -> None:
    """Shut both DCs down cleanly and store their overlays and identities in ``entry``."""
    _parallel_shutdown(pair)
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}-", dir=entry.parent))
    try:
        for dc in pair.dcs:
            disk = tmp / f"{dc.hostname}.qcow2"
            shutil.copyfile(testvm.VM_ROOT / dc.name / "vda.qcow2", disk)
            # Relative to the cache entry, the AD image is ../ad-<key>/root.qcow2
            # (and likewise once staged below SURETY_TESTVM_DIR/.images).
            subprocess.run(
                ["qemu-img", "rebase", "-u", "-F", "qcow2",
                 "-b", f"../{image.key}/root.qcow2", str(disk)],
                check=True,
            )  # fmt: skip
            disk.chmod(0o644)
        meta = {
            "created": time.time(),
            "image_key": image.key,
            "pair_version": PAIR_VERSION,
            "subnet": pair.network.subnet,
            "network": pair.network.name,
            "dcs": {
                dc.dc_name: {"mac": dc.mac, "address": dc.address, "host": dc.host}
                for dc in pair.dcs
            },
            "timings": pair.timings,
        }
        (tmp / "pair.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        tmp.chmod(0o755)
        if entry.exists():
            shutil.rmtree(entry)
        tmp.rename(entry)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"provisioned pair stored in {entry}")


def shutdown(dc: DC, timeout: float = 300) -> float:
    """Clean power-off of the DC (``systemctl poweroff`` through the agent); seconds."""
    start = time.monotonic()
    with contextlib.suppress(agent.AgentError):  # the agent may die with the guest
        agent.exec_start(dc.dom, ["systemctl", "poweroff"], capture=False)
    while dc.dom.isActive():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{dc.name}: still running {timeout:.0f}s after poweroff")
        time.sleep(0.5)
    return time.monotonic() - start


def _parallel_shutdown(pair: AdPair) -> None:
    rep._parallel(*(lambda dc=dc: shutdown(dc) for dc in pair.dcs))


def stage_entry(entry: Path) -> Path:
    """Hard-link (or copy) the cache entry below SURETY_TESTVM_DIR/.images (QEMU can read it)."""
    dest = testvm.VM_ROOT / ".images" / entry.name
    if not (dest / "pair.json").exists():
        testvm.make_public_dir(dest.parent)
        tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}-", dir=dest.parent))
        for path in entry.iterdir():
            testvm.link_or_copy(path, tmp / path.name)
        tmp.chmod(0o755)
        try:
            tmp.rename(dest)
        except OSError:
            shutil.rmtree(tmp)
    return dest


# A DC's agent answers within a few minutes here, even beside CI's stage 2. A TCG guest can
# also hang early in its boot for good: CI 2026-12-07, DC1's console showed RCU stalls ("rcu_preempt
# kthread timer wakeup didn't happen", a vCPU idle whose timer never fired) until the 900 s ran
# out. After FIRST_BOOT_WAIT it is booted once more from a fresh overlay of the same cached disk.
FIRST_BOOT_WAIT = 420.0


def _overlay(disk: Path, vda: Path) -> None:
    """``vda``: a new qcow2 overlay of the cached DC disk ``disk`` (replaces one there)."""
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(disk), str(vda)],
        check=True,
    )
    vda.chmod(0o644)


def boot_cached_dc(
    name: str,
    disk: Path,
    *,
    image: testvm.GuestImage,
    network: rep.LabNetwork,
    dc_name: str,
    mac: str,
    conn: Any,
    memory_mib: int,
) -> DC:
    """Define and start VM ``name`` on an overlay of a cached DC disk; wait for its agent."""
    testvm.validate_name(name)
    accel = testvm.choose_accel(image, conn)
    vm_dir = testvm.VM_ROOT / name
    if vm_dir.exists():
        shutil.rmtree(vm_dir)
    testvm.make_public_dir(vm_dir)
    vda = vm_dir / "vda.qcow2"
    _overlay(disk, vda)
    testvm.make_qemu_dir(vm_dir / "backup")
    xml = testvm.domain_xml(
        name, image, vm_dir=vm_dir, accel=accel, app=APP, memory_mib=memory_mib, vcpus=2,
        net=False, nics=[testvm.Nic(network=network.name, mac=mac)],
    )  # fmt: skip
    (vm_dir / "domain.xml").write_text(xml)
    dom = conn.defineXML(xml)
    dom.create()
    try:
        try:
            agent.wait_for_agent(dom, timeout=FIRST_BOOT_WAIT)
        except agent.AgentTimeoutError:
            hung = testvm.console_tail(vm_dir)
            print(
                f"{name}: no agent after {FIRST_BOOT_WAIT:.0f} s, booted again:\n{hung}",
                file=sys.stderr,
            )
            dom.destroy()
            _overlay(disk, vda)  # the same cached disk, as if the first boot never happened
            dom.create()
            agent.wait_for_agent(dom, timeout=BOOT_TIMEOUT)
    except (agent.AgentError, libvirt.libvirtError) as exc:
        raise AssertionError(
            f"{name}: the guest agent did not answer: {exc}\n{testvm.console_tail(vm_dir)}"
        ) from exc
    dc = DC(name, conn, network, dc_name, mac)
    rep.wait_address(dc, dc.address)
    return dc


# --------------------------------------------------------------------------
# the pair


def _provision_pair(pair: AdPair) -> None:
    dc1, dc2 = pair.dcs
    rep._parallel(
        lambda: prepare_host(dc1, nameservers=[]),  # no forwarder to itself
        lambda: prepare_host(dc2, nameservers=[dc1.address]),
    )
    pair.timings["provision"] = round(provision(dc1), 1)
    pair.timings["join"] = round(join(dc2, dc1), 1)
    rep._parallel(lambda: prepare_host(dc1), lambda: prepare_host(dc2))
    start = time.monotonic()
    pair.timings["dns_added"] = len(ensure_dns(pair))
    pair.timings["dns"] = round(time.monotonic() - start, 1)


def _lock(path: Path) -> Any:
    handle = open(path, "w")  # noqa: SIM115 - held for the caller's block
    fcntl.flock(handle, fcntl.LOCK_EX)
    return handle


@contextlib.contextmanager
def ad_pair(
    *, conn: Any = None, prefix: str = "sad", memory_mib: int = MEMORY_MIB
) -> Iterator[AdPair]:
    """The lab network, DC1 and DC2 replicating both ways (from the cache if present).

    On exit (also on failure) both VMs are removed and the network destroyed.
    """
    conn = conn or agent.connect(testvm.URI)
    testvm.ensure_libvirtd()
    image = testvm.stage_image(testvm.build_guest(testvm.BUILD_AD_SH))
    use_cache = os.environ.get("SURETY_AD_PAIR_CACHE", "1") != "0"
    root = cache_root()
    entry = root / f"ad-pair-{pair_key(image.key)}"
    tag = secrets.token_hex(3)
    names = {n: f"{prefix}-{tag}-{n.lower()}" for n in DC_HOSTS}
    start = time.monotonic()
    lock = _lock(root / f".{entry.name}.lock") if use_cache else None
    network: rep.LabNetwork | None = None
    try:
        cached = use_cache and _cache_fresh(entry)
        if cached:
            lock.close()  # type: ignore[union-attr]
            lock = None
            meta = json.loads((entry / "pair.json").read_text())
            staged = stage_entry(entry)
            network = rep.create_network(conn, name=f"{rep.NETWORK_PREFIX}{tag}",
                                         subnet=meta["subnet"])  # fmt: skip
            net = network
            dc1, dc2 = rep._parallel(
                *(
                    lambda n=n: boot_cached_dc(
                        names[n],
                        staged / f"{n.lower()}.qcow2",
                        image=image,
                        network=net,
                        dc_name=n,
                        mac=meta["dcs"][n]["mac"],
                        conn=conn,
                        memory_mib=memory_mib,
                    )
                    for n in DC_HOSTS
                )
            )
            pair = AdPair(network=network, dc1=dc1, dc2=dc2, from_cache=True)
            pair.timings["boot"] = round(time.monotonic() - start, 1)
        else:
            network = rep.create_network(conn, name=f"{rep.NETWORK_PREFIX}{tag}")
            net = network
            dc1, dc2 = rep._parallel(
                *(lambda n=n: _up_dc(net, names[n], n, conn, memory_mib) for n in DC_HOSTS)
            )
            pair = AdPair(network=network, dc1=dc1, dc2=dc2, from_cache=False)
            pair.timings["boot"] = round(time.monotonic() - start, 1)
            _provision_pair(pair)
            # Both DCs are shut down cleanly and started again whether or not the pair
            # is cached: replication is checked on the same kind of boot either way (a
            # pair checked straight after its join failed to pull: WERR_INVALID_PARAMETER).
            if use_cache:
                store_pair(pair, entry, image)
                lock.close()  # type: ignore[union-attr]
                lock = None
            else:
                _parallel_shutdown(pair)
            t = time.monotonic()
            rep._parallel(*(lambda dc=dc: rep.start_again(dc, app="none") for dc in pair.dcs))
            pair.timings["reboot"] = round(time.monotonic() - t, 1)
        t = time.monotonic()
        rep._parallel(*(lambda dc=dc: wait_samba(dc) for dc in pair.dcs))
        pair.timings["samba"] = round(time.monotonic() - t, 1)
        pair.timings["replication"] = round(check_replication(pair), 1)
        pair.timings["total"] = round(time.monotonic() - start, 1)
        log(f"AD pair ready ({'from cache' if cached else 'provisioned'}): {pair.timings}")
        yield pair
    finally:
        if lock is not None:
            lock.close()
        for name in names.values():
            try:
                testvm.down(name)
            except Exception as exc:  # noqa: BLE001 - keep cleaning up
                log(f"could not remove {name}: {exc}")
        if network is not None:
            rep.destroy_network(conn, network.name)


def _up_dc(network: rep.LabNetwork, name: str, dc_name: str, conn: Any, memory_mib: int) -> DC:
    member = rep.up_member(
        network, name, DC_HOSTS[dc_name], app=APP, conn=conn, memory_mib=memory_mib
    )
    return DC(name, conn, network, dc_name, member.mac)
