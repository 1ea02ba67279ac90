"""Probes: what a verification proves about a restore point running in the lab.

Each probe returns a ``ProbeResult`` with its evidence - what it saw, not
just pass/fail - and retries until its deadline (a booting guest is not a
failed one). Probes reach the guest only through the ``GuestChannel`` (the
agent) and the lab only through its namespace (ping and TCP from the prober).

heartbeat     the guest agent answers (``guest-ping``), with the guest's uptime
ping          the VM answers ICMP from the prober inside the lab
tcp           a TCP port of the VM accepts a connection from the prober
postgresql    every cluster the writer held accepts a query; the writer's marker
              row from the restore point's instant is present; ``pg_amcheck``
              finds no corruption (primaries; a standby is read-only)
mariadb       the server answers; the marker row is present (sources);
              ``mysqlcheck --all-databases`` finds no corrupt table
ad            Samba AD DC: an LDAP bind works, the DC's DNS server answers
              ``_ldap._tcp.<realm>`` SRV (a UDP query from the guest), the domain
              partition pulls from every partner and ``samba-tool drs showrepl`` then
              shows no inbound failure (option ``replication: false`` skips it in a
              one-DC lab), and the writer's marker contact holds the point's token
replication   PostgreSQL: a standby streams from its primary; MariaDB: a replica's
              IO and SQL threads run
script        a user's command inside the guest exits 0
"""

from __future__ import annotations

import json
import re
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from surety.core.errors import SuretyError
from surety.hypervisor.labnet import run_in_lab
from surety.quiesce.channel import GuestChannel

SMB_CONF = "/etc/samba/smb.conf"

__all__ = ["PROBE_KINDS", "ProbeContext", "ProbeResult", "ProbeSpec", "run_probe"]


@dataclass(frozen=True)
class ProbeSpec:
    kind: str
    options: dict[str, Any] = field(default_factory=dict)
    timeout: float = 120.0

    @property
    def label(self) -> str:
        detail = self.options.get("port") or self.options.get("name") or ""
        return f"{self.kind}:{detail}" if detail else self.kind


@dataclass(frozen=True)
class ProbeResult:
    probe: str
    ok: bool
    evidence: str
    seconds: float
    finished: float  # epoch seconds


@dataclass(frozen=True)
class ProbeContext:
    """What a probe may use: the guest, the lab, and what the restore point recorded."""

    channel: GuestChannel
    netns: str
    address: str | None  # the VM's first lab address
    applications: dict[str, Any]
    source: dict[str, Any]


class ProbeFailed(Exception):
    """The probe saw something wrong (its message is the evidence)."""


class NotYet(Exception):
    """Not answering yet: retry until the deadline."""


def run_probe(spec: ProbeSpec, ctx: ProbeContext) -> ProbeResult:
    check = PROBE_KINDS.get(spec.kind)
    start = time.monotonic()
    if check is None:
        return _result(spec, False, f"unknown probe kind {spec.kind!r}", start)
    last = "no answer"
    while True:
        try:
            return _result(spec, True, check(ctx, spec.options), start)
        except ProbeFailed as exc:
            return _result(spec, False, str(exc), start)
        except (NotYet, SuretyError, TimeoutError) as exc:
            last = str(exc) or type(exc).__name__
        if time.monotonic() - start > spec.timeout:
            return _result(spec, False, f"no success within {spec.timeout:.0f} s: {last}", start)
        time.sleep(2)


def _result(spec: ProbeSpec, ok: bool, evidence: str, start: float) -> ProbeResult:
    return ProbeResult(spec.label, ok, evidence.strip(), time.monotonic() - start, time.time())


def _sh(ctx: ProbeContext, script: str, timeout: float = 120.0) -> tuple[int, str]:
    out = ctx.channel.run(["sh", "-c", script], timeout=timeout)
    return out.exitcode, (out.stdout + out.stderr).decode(errors="replace").strip()


# -- infrastructure ----------------------------------------------------------------
def heartbeat(ctx: ProbeContext, _options: dict[str, Any]) -> str:
    ctx.channel.ping(timeout=5)
    code, uptime = _sh(ctx, "cut -d' ' -f1 /proc/uptime")
    return f"guest agent answers; guest uptime {uptime} s" if code == 0 else "guest agent answers"


def ping(ctx: ProbeContext, options: dict[str, Any]) -> str:
    address = options.get("address") or ctx.address
    if not address:
        raise ProbeFailed("the VM has no address in the lab")
    proc = run_in_lab(ctx.netns, ["ping", "-c", "3", "-i", "0.3", "-W", "2", str(address)])
    if proc.returncode != 0:
        raise NotYet(f"no ICMP answer from {address}")
    summary = [line for line in proc.stdout.splitlines() if "packets" in line or "rtt" in line]
    return f"{address}: " + "; ".join(summary)


def tcp(ctx: ProbeContext, options: dict[str, Any]) -> str:
    address, port = options.get("address") or ctx.address, int(options["port"])
    if not address:
        raise ProbeFailed("the VM has no address in the lab")
    code = (
        "import socket,sys\n"
        f"s=socket.create_connection(({str(address)!r},{port}),timeout=3)\n"
        "print(s.getsockname()[0])"
    )
    proc = run_in_lab(ctx.netns, ["/usr/bin/python3", "-c", code])
    if proc.returncode != 0:
        raise NotYet(f"{address}:{port} refused or silent: {proc.stderr.strip().splitlines()[-1:]}")
    return f"{address}:{port} accepted a connection from {proc.stdout.strip()} (in the lab)"


def script(ctx: ProbeContext, options: dict[str, Any]) -> str:
    code, output = _sh(ctx, str(options["run"]), float(options.get("timeout", 120)))
    if code != 0:
        raise ProbeFailed(f"exit {code}: {output[-800:]}")
    return f"exit 0: {output[-400:]}" if output else "exit 0"


# -- applications ------------------------------------------------------------------
def _psql(port: int, sql: str, db: str = "postgres") -> str:
    return f"runuser -u postgres -- psql -X -p {port} -d {db} -Atc {shlex.quote(sql)}"


def _clusters(ctx: ProbeContext) -> list[dict[str, Any]]:
    meta = ctx.applications.get("postgresql") or {}
    clusters = meta.get("clusters") or []
    return clusters or [{"port": 5432}]


def postgresql(ctx: ProbeContext, _options: dict[str, Any]) -> str:
    evidence = []
    for cluster in _clusters(ctx):
        port = int(cluster.get("port", 5432))
        code, out = _sh(ctx, _psql(port, "select pg_is_in_recovery(), count(*) from pg_database"))
        if code != 0:
            raise NotYet(f"port {port}: {out[-300:]}")
        standby = out.startswith("t")
        evidence.append(f"port {port}: answers ({'standby' if standby else 'primary'})")
        marker = cluster.get("marker")
        if marker:
            sql = f"select at from surety.markers where token = '{_token(marker)}'"  # noqa: S608
            code, at = _sh(ctx, _psql(port, sql))
            if code != 0:
                raise NotYet(f"port {port}: {at[-300:]}")
            if not at:
                raise ProbeFailed(
                    f"port {port}: marker row {marker['token']} missing ({at[-300:]})"
                )
            evidence.append(f"marker {marker['token']} present (written {at})")
        if standby:
            evidence.append("pg_amcheck skipped (a standby is read-only)")
            continue
        amcheck = (
            f"runuser -u postgres -- pg_amcheck -p {port} --all --install-missing --heapallindexed"
        )
        bindirs = "for d in /usr/lib/postgresql/*/bin; do PATH=$PATH:$d; done"
        code, out = _sh(ctx, f"{bindirs}; {amcheck} 2>&1", 600)
        if code != 0:
            raise ProbeFailed(f"port {port}: pg_amcheck exit {code}: {out[:1500]}")
        evidence.append("pg_amcheck --all --heapallindexed: no corruption")
    return "; ".join(evidence)


def mariadb(ctx: ProbeContext, _options: dict[str, Any]) -> str:
    code, out = _sh(ctx, "mariadb -NBe 'select @@server_id, @@read_only'")
    if code != 0:
        raise NotYet(out[-300:])
    evidence = [f"server answers (server_id, read_only: {out})"]
    marker = (ctx.applications.get("mariadb") or {}).get("marker")
    if marker:
        sql = f"select at from surety.markers where token = '{_token(marker)}'"  # noqa: S608
        code, at = _sh(ctx, f"mariadb -NBe {shlex.quote(sql)}")
        if code != 0:
            raise NotYet(at[-300:])
        if not at:
            raise ProbeFailed(f"marker row {marker['token']} missing ({at[-300:]})")
        evidence.append(f"marker {marker['token']} present (written {at})")
    code, out = _sh(ctx, "mysqlcheck --all-databases --check 2>&1", 600)
    bad = [line for line in out.splitlines() if line.split()[-1:] != ["OK"] and line.strip()]
    if code != 0 or any("error" in line.lower() or "corrupt" in line.lower() for line in bad):
        raise ProbeFailed(f"mysqlcheck exit {code}: {' / '.join(bad)[:1500]}")
    evidence.append(f"mysqlcheck --all-databases: {len(out.splitlines())} tables OK")
    return "; ".join(evidence)


DNS_SRV_QUERY = r"""
import socket, struct, sys
name, server, port = sys.argv[1], sys.argv[2], int((sys.argv[3:] or [53])[0])
q = struct.pack(">6H", 0x5375, 0x100, 1, 0, 0, 0)
q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0\0\x21\0\1"
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
s.sendto(q, (server, port))
r = s.recv(4096)
def label(i):
    out = []
    while r[i]:
        if r[i] >= 192:
            return out + label(((r[i] & 63) << 8) | r[i + 1])[0], i + 2
        out.append(r[i + 1 : i + 1 + r[i]].decode())
        i += 1 + r[i]
    return out, i + 1
_, flags, _, count, _, _ = struct.unpack(">6H", r[:12])
i, found = label(12)[1] + 4, []
for _ in range(count):
    i = label(i)[1]
    kind, _, _, size = struct.unpack(">HHIH", r[i : i + 10])
    if kind == 33:
        port = struct.unpack(">H", r[i + 14 : i + 16])[0]
        found.append("%s:%d" % (".".join(label(i + 16)[0]), port))
    i += 10 + size
print("rcode", flags & 15, " ".join(found))
"""
"""One DNS query over UDP for NAME's SRV records, the way clients ask (python3 is in
every Samba AD DC: samba-tool needs it). Prints ``rcode N target:port ...``."""


def _ad_credentials(options: dict[str, Any]) -> str:
    """Credentials for samba tools: the options' user/password, else the DC's machine account."""
    user = options.get("user")
    if not user:
        return "-P"
    secret = f"{user}%{options.get('password', '')}"
    return f"-U {shlex.quote(secret)}"


def _ad_links(text: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
    """From ``samba-tool drs showrepl --json``: the live inbound links, those of them with
    failures, and how many outbound (notification) links had failures."""
    try:
        report = json.loads(text[text.find("{") :])
    except ValueError as exc:
        raise NotYet(f"drs showrepl gave no JSON: {text[-300:]}") from exc
    inbound = [link for link in report.get("repsFrom") or [] if not link.get("is deleted")]
    failing = [link for link in inbound if int(link.get("consecutive failures") or 0)]
    outbound = [link for link in report.get("repsTo") or [] if link.get("consecutive failures")]
    return inbound, failing, len(outbound)


def _describe_links(links: list[dict[str, Any]]) -> str:
    return "; ".join(
        f"from {link.get('DSA', '?')} {link.get('NC dn', '?')}: "
        f"{link.get('consecutive failures')} failure(s), {link.get('last attempt message', '?')}"
        for link in links
    )[:600]


def _ad_replication(
    ctx: ProbeContext, *, server: str, creds: str, conf: str, own: str, base_dn: str
) -> str:
    """Inbound replication works now: the domain partition is pulled from every partner
    (and any link that had failed, e.g. a partner that booted after this DC), then
    ``showrepl`` must show no inbound failure. Counters alone would be stale: a partner
    that died since the last attempt shows none."""
    showrepl = f"samba-tool drs showrepl {server} --json {creds} -s {conf} 2>&1"
    code, out = _sh(ctx, showrepl)
    if code != 0:
        raise NotYet(f"drs showrepl: {out[-300:]}")
    inbound, failing, _ = _ad_links(out)
    if not re.fullmatch(r"[A-Za-z0-9-]{1,15}", own):
        raise ProbeFailed(f"no usable DC name recorded for samba-ad ({own!r})")
    pulls = {
        (str(link.get("DSA", "")).rpartition("\\")[2], str(link.get("NC dn", "")))
        for link in inbound
        if link in failing or str(link.get("NC dn", "")).lower() == base_dn.lower()
    }
    for partner, nc in sorted(pulls):
        pull = f"samba-tool drs replicate {own} {shlex.quote(partner)} {shlex.quote(nc)}"
        _sh(ctx, f"{pull} {creds} -s {conf} 2>&1")
    if pulls:
        code, out = _sh(ctx, showrepl)
        if code != 0:
            raise NotYet(f"drs showrepl: {out[-300:]}")
        inbound, failing, _ = _ad_links(out)
    if failing:
        raise NotYet(f"drs showrepl: {_describe_links(failing)}")
    partners = sorted({p for p, _nc in pulls})
    _, _, outbound = _ad_links(out)
    return (
        f"drs showrepl: no inbound failure after pulling {len(pulls)} link(s) now"
        f" (from {', '.join(partners) or 'no partner'})"
        + (f"; {outbound} outbound notification link(s) failed earlier" if outbound else "")
    )


def ad(ctx: ProbeContext, options: dict[str, Any]) -> str:
    meta = ctx.applications.get("samba-ad") or {}
    realm = str(meta.get("realm") or options.get("realm") or "")
    if not re.fullmatch(r"[A-Za-z0-9.-]+", realm):
        raise ProbeFailed(f"no usable realm recorded for samba-ad ({realm!r})")
    address = str(options.get("address") or ctx.address or "127.0.0.1")
    creds, conf = _ad_credentials(options), shlex.quote(str(meta.get("smb_conf") or SMB_CONF))
    server = shlex.quote(address)
    code, out = _sh(
        ctx,
        f"ldbsearch -H ldap://{server} {creds} --configfile={conf} -s base -b '' dnsHostName 2>&1",
    )
    if code != 0 or "dnsHostName:" not in out:
        raise NotYet(f"LDAP bind to {address}: {out[-300:]}")
    host = out.split("dnsHostName:", 1)[1].split()[0]
    who = f"as {options['user']}" if options.get("user") else "machine account"
    evidence = [f"LDAP bind to {address} ({who}): {host}"]
    name = f"_ldap._tcp.{realm.lower()}"
    code, out = _sh(ctx, f"python3 -c {shlex.quote(DNS_SRV_QUERY)} {name} {server} 2>&1")
    rcode, _, targets = out.removeprefix("rcode ").partition(" ")
    if code != 0 or rcode != "0" or not targets.strip():
        raise NotYet(f"DNS {name} SRV at {address}:53: {out[-300:] or 'no answer'}")
    evidence.append(f"DNS {name} SRV at {address}:53 -> {targets.strip()}")
    if options.get("replication", True) not in (False, "false", "no", 0):
        own, base_dn = str(meta.get("dc_name") or ""), str(meta.get("base_dn") or "")
        evidence.append(
            _ad_replication(ctx, server=server, creds=creds, conf=conf, own=own, base_dn=base_dn)
        )
    else:
        evidence.append("drs showrepl skipped (replication: false)")
    marker = meta.get("marker")
    if marker:
        token, dn = _token(marker), shlex.quote(str(marker.get("dn", "")))
        sam = shlex.quote(f"{meta.get('private_dir') or '/var/lib/samba/private'}/sam.ldb")
        code, out = _sh(ctx, f"ldbsearch -H {sam} -s base -b {dn} info 2>&1")
        if code != 0 and "No such" in out:
            raise ProbeFailed(f"marker {marker.get('dn')} missing: {out[-300:]}")
        if code != 0:
            raise NotYet(f"marker: {out[-300:]}")
        if f"info: {token}" not in out.splitlines():
            found = [line for line in out.splitlines() if line.startswith("info:")]
            raise ProbeFailed(f"marker {marker.get('dn')} holds {found or 'no info'}, not {token}")
        evidence.append(f"marker {token} present ({marker.get('dn')})")
    return "; ".join(evidence)


def _token(marker: dict[str, Any]) -> str:
    """The job token of a marker row: checked, so it can stand in SQL text."""
    token = str(marker.get("token", ""))
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", token):
        raise ProbeFailed(f"the restore point records a malformed marker token {token!r}")
    return token


def _mariadb_replica(ctx: ProbeContext) -> str:
    code, out = _sh(ctx, "mariadb -e 'SHOW SLAVE STATUS\\G'")
    fields = {
        k.strip(): v.strip() for k, _, v in (line.partition(":") for line in out.splitlines())
    }
    io, sql = fields.get("Slave_IO_Running"), fields.get("Slave_SQL_Running")
    if code == 0 and io == "Yes" and sql == "Yes":
        host, gtid = fields.get("Master_Host"), fields.get("Gtid_IO_Pos")
        return f"replica of {host}: IO and SQL threads running, Gtid_IO_Pos {gtid}"
    error = fields.get("Last_IO_Error") or fields.get("Last_SQL_Error") or out[-200:]
    raise NotYet(f"IO thread {io}, SQL thread {sql}: {error}")


def replication(ctx: ProbeContext, options: dict[str, Any]) -> str:
    app = options.get("app") or ("mariadb" if "mariadb" in ctx.applications else "postgresql")
    if app == "mariadb":
        return _mariadb_replica(ctx)
    port = int(_clusters(ctx)[0].get("port", 5432))
    sql = "select status, sender_host, flushed_lsn from pg_stat_wal_receiver"
    code, out = _sh(ctx, _psql(port, sql))
    if code == 0 and out.startswith("streaming|"):
        _status, host, lsn = out.split("|")
        return f"standby streaming from {host}, flushed up to {lsn}"
    raise NotYet(f"WAL receiver: {out or 'not running'}")


PROBE_KINDS: dict[str, Callable[[ProbeContext, dict[str, Any]], str]] = {
    "heartbeat": heartbeat,
    "ping": ping,
    "tcp": tcp,
    "postgresql": postgresql,
    "mariadb": mariadb,
    "replication": replication,
    "ad": ad,
    "script": script,
}
