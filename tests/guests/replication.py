"""Replicated pairs of real test guests on an isolated libvirt network.

The scenario tests of application-aware restore need two guests that replicate
for real: PostgreSQL 15 streaming replication (primary + hot standby) or
MariaDB 10.11 GTID replication (source + replica). This module builds such a
pair, lets a test write, fail over, power off and boot members, and exposes
what the databases say about it (roles, timelines, GTID positions, slave
status, table checksums, server logs).

Shape of a pair::

    from tests.guests import replication as rep

    with rep.pg_pair(slot="standby_b") as pair:      # network + 2 VMs + replication
        rep.pg_write_rows(pair.a, "items", 100, "before")
        rep.pg_wait_caught_up(pair.a, pair.b)
        assert rep.pg_table_checksum(pair.a) == rep.pg_table_checksum(pair.b)
        rep.hard_power_off(pair.a)
        rep.pg_promote(pair.b)                        # timeline 1 -> 2
    # VMs and network are gone here, also after a failure

The network
    A libvirt network ``srep-<hex>`` with neither ``<forward>`` nor ``<ip>``:
    a bridge of the same name on which the host has no address (libvirt also
    disables IPv6 on it), no DHCP, no route anywhere. Each member has one
    virtio NIC on it with a fixed MAC, and a static address ``10.231.X.H/24``
    written *inside the guest* as a systemd-networkd ``.network`` file that
    matches that MAC (no gateway, no IPv6). The configuration is on the guest's
    disk (and synced), so an image backup of a member restores with the same
    address, provided the restored VM gets the same MAC on a network like this
    one (:func:`boot_restored_member`). ``net.ipv4.ip_nonlocal_bind=1`` is set
    persistently so the databases can bind their lab address even when they
    start before networkd configured it (``systemd-networkd-wait-online`` is
    masked in the test guest).

The members
    :class:`Member` is a :class:`tests.vm.conftest.Guest` (``name``, ``dom``,
    ``sh``) plus its network, MAC and address, so every helper of
    :mod:`tests.guests.apps` works on it. Member ``a`` is the primary/source,
    ``b`` the standby/replica. Never more than the two VMs of a pair run.

Timing
    Guests run under TCG on a 2-core machine shared with other tests: all
    waits are generous, run inside the guest where possible
    (:func:`tests.guests.apps.wait_in_guest`) and fail with an assertion that
    names the guest and what did not happen, with the evidence (replication
    state, slave status, server log tail).
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import libvirt

from tests.guests import agent, apps, testvm
from tests.vm.conftest import Guest

NETWORK_PREFIX = "srep-"
"""Name (and bridge name) prefix of the lab networks made here."""
SUBNET_BASE = "10.231"
"""Lab subnets are ``10.231.X.0/24`` (X random per network)."""
PREFIX_LEN = 24
MAC_OUI = "52:54:00"
NETWORKD_DIR = "/etc/systemd/network"
NETWORKD_PREFIX = "10-surety-lab-"
"""Guest ``.network`` files are ``NETWORKD_PREFIX<mac hex>.network`` (before 99-default)."""
SYSCTL_FILE = "/etc/sysctl.d/90-surety-lab.conf"
REPL_PASSWORD = "surety-repl"
"""Password of the replication users (a test guest on an isolated bridge)."""

# PostgreSQL 15, Debian cluster 15/main
PG_ETC = "/etc/postgresql/15/main"
PG_CONF = f"{PG_ETC}/conf.d/90-surety-replication.conf"
PG_HBA = f"{PG_ETC}/pg_hba.conf"
PG_DATA = "/var/lib/postgresql/15/main"
PG_LOG = "/var/log/postgresql/postgresql-15-main.log"
PG_PASSFILE = "/var/lib/postgresql/.pgpass"
PG_REPL_USER = "replicator"
PG_WAL_KEEP = "256MB"
PSQL = "runuser -u postgres -- psql -X -A -t -q -v ON_ERROR_STOP=1"
HBA_MARK = "# surety-replication-harness"

# MariaDB 10.11
MARIADB_CONF = apps.MARIADB_CONF
MARIADB_ERROR_LOG = "/var/log/mysql/error.log"
MARIADB_RELAY_LOG = "/var/lib/mysql/relay-bin"
MARIADB_DB = "repltest"
MARIADB_REPL_USER = "repl"
SOURCE_SERVER_ID = 11
REPLICA_SERVER_ID = 21

DEFAULT_TABLE = "items"
IDENT_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
BOOT_TIMEOUT = 900.0
"""Seconds a member may take to boot with its database (TCG, busy host)."""


def log(message: str) -> None:
    """Progress message on stderr (seen with ``pytest -s`` or on failure)."""
    print(f"replication: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# small building blocks


def _ident(name: str) -> str:
    """A table name, checked (it goes into SQL unquoted)."""
    if not IDENT_RE.match(name):
        raise ValueError(f"bad table name {name!r} (lower-case letters, digits, '_')")
    return name


def _sh(guest: Guest, script: str, what: str, timeout: float = 300) -> str:
    """Run ``script`` in the guest; its stdout. A failure names the guest and ``what``."""
    try:
        result = agent.guest_shell(guest.dom, script, timeout=timeout)
    except agent.AgentError as exc:
        raise agent.AgentError(f"{guest.name}: {what}: {exc}") from exc
    if not result.ok:
        output = (result.stdout + result.stderr).decode(errors="replace").strip()
        raise agent.AgentError(f"{guest.name}: {what} failed (exit {result.exitcode}):\n{output}")
    return result.stdout.decode(errors="replace")


def _wait(
    guest: Guest,
    condition: str,
    what: str,
    timeout: float,
    *,
    evidence: Callable[[], str] | None = None,
    interval: float = 1.0,
) -> float:
    """:func:`apps.wait_in_guest`, adding ``evidence()`` to the failure message."""
    try:
        return apps.wait_in_guest(guest, condition, what, timeout=timeout, interval=interval)
    except AssertionError as exc:
        if evidence is None:
            raise
        try:
            extra = evidence()
        except Exception as inner:  # noqa: BLE001 - evidence is best effort
            extra = f"(could not collect evidence: {inner})"
        raise AssertionError(f"{exc}\n--- evidence ---\n{extra}") from None


def _parallel(*calls: Callable[[], Any]) -> list[Any]:
    """Run calls in threads (one per call); their results. Raises the first failure.

    Every call runs to its end before anything is raised, so the caller's
    cleanup never races a half-done call.
    """
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures = [pool.submit(call) for call in calls]
    errors = [f.exception() for f in futures if f.exception() is not None]
    if errors:
        raise errors[0]  # type: ignore[misc]
    return [f.result() for f in futures]


def lsn_int(lsn: str) -> int:
    """A PostgreSQL LSN ``'16/B374D848'`` as an integer (byte position in the WAL)."""
    high, low = lsn.split("/")
    return (int(high, 16) << 32) | int(low, 16)


def file_tail(guest: Guest, path: str, lines: int = 50) -> str:
    """Last ``lines`` lines of a file in the guest ('' if it does not exist)."""
    quoted = shlex.quote(path)
    return _sh(guest, f"if [ -f {quoted} ]; then tail -n {int(lines)} {quoted}; fi", f"tail {path}")


@dataclass(frozen=True)
class TableChecksum:
    """What a table holds, comparable across members of a pair.

    ``content`` is the MD5 of the rows in id order; ``server`` is MariaDB's
    ``CHECKSUM TABLE`` (None for PostgreSQL).
    """

    rows: int
    content: str
    server: str | None = None


# --------------------------------------------------------------------------
# the isolated network


@dataclass(frozen=True)
class LabNetwork:
    """A libvirt network without forward and without host address (bridge = name)."""

    name: str
    subnet: str
    """The first three octets, e.g. ``10.231.57``."""

    @property
    def bridge(self) -> str:
        return self.name

    @property
    def cidr(self) -> str:
        return f"{self.subnet}.0/{PREFIX_LEN}"

    def address(self, host: int) -> str:
        """The address of host number ``host`` (1..254) on this network."""
        if not 1 <= host <= 254:
            raise ValueError(f"host number {host} outside 1..254")
        return f"{self.subnet}.{host}"


def network_xml(name: str) -> str:
    """An isolated libvirt network: a bridge, no ``<forward>``, no ``<ip>`` (so no DHCP)."""
    return (
        f"<network>\n  <name>{escape(name)}</name>\n"
        f"  <bridge name='{escape(name)}' stp='off' delay='0'/>\n</network>\n"
    )


def create_network(
    conn: libvirt.virConnect | None = None, name: str | None = None, subnet: str | None = None
) -> LabNetwork:
    """Define and start an isolated network; the caller must :func:`destroy_network` it.

    ``name`` defaults to ``srep-<6 hex>`` (also the bridge name: at most 15
    characters), ``subnet`` to ``10.231.X`` with a random X.
    """
    conn = conn or agent.connect(testvm.URI)
    name = name or f"{NETWORK_PREFIX}{secrets.token_hex(3)}"
    if len(name) > 15 or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ValueError(f"bad network name {name!r} (it is also the bridge name: <= 15 chars)")
    subnet = subnet or f"{SUBNET_BASE}.{secrets.randbelow(254) + 1}"
    net = conn.networkDefineXML(network_xml(name))
    try:
        net.create()
        xml = net.XMLDesc(0)
        assert "<forward" not in xml, f"network {name} forwards:\n{xml}"
        assert "<ip" not in xml, f"network {name} has a host address:\n{xml}"
        addresses = bridge_host_addresses(name)
        assert not addresses, f"the host has addresses on bridge {name}: {addresses}"
    except BaseException:
        with contextlib.suppress(libvirt.libvirtError):
            destroy_network(conn, name)
        raise
    log(f"network {name} ({subnet}.0/{PREFIX_LEN}, bridge {name}, isolated) created")
    return LabNetwork(name=name, subnet=subnet)


def destroy_network(conn: libvirt.virConnect | None, name: str) -> bool:
    """Destroy and undefine network ``name``; False if there was none (idempotent)."""
    conn = conn or agent.connect(testvm.URI)
    try:
        net = conn.networkLookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_NETWORK:
            return False
        raise
    if net.isActive():
        net.destroy()
    if net.isPersistent():
        with contextlib.suppress(libvirt.libvirtError):  # transient: gone after destroy
            net.undefine()
    log(f"network {name} removed")
    return True


def network_exists(conn: libvirt.virConnect | None, name: str) -> bool:
    """True if libvirt knows a network ``name`` (active or not)."""
    conn = conn or agent.connect(testvm.URI)
    return name in conn.listNetworks() + conn.listDefinedNetworks()


def bridge_host_addresses(bridge: str) -> list[str]:
    """The host's IP addresses on ``bridge`` (should stay empty for a lab network)."""
    out = subprocess.run(
        ["ip", "-j", "addr", "show", "dev", bridge], check=True, capture_output=True, text=True
    ).stdout
    return [
        f"{info['local']}/{info['prefixlen']}"
        for link in json.loads(out or "[]")
        for info in link.get("addr_info", [])
    ]


@contextlib.contextmanager
def lab_network(conn: libvirt.virConnect | None = None) -> Iterator[LabNetwork]:
    """:func:`create_network` for the duration of a ``with`` block, always removed."""
    net = create_network(conn)
    try:
        yield net
    finally:
        destroy_network(conn, net.name)


# --------------------------------------------------------------------------
# members: test VMs on the lab network with a static address


class Member(Guest):
    """A test VM of a pair: a Guest plus its lab network, MAC and host number."""

    def __init__(self, name: str, conn: object, network: LabNetwork, host: int, mac: str) -> None:
        super().__init__(name, conn)
        self.network = network
        self.host = host
        self.mac = mac

    @property
    def address(self) -> str:
        """The member's IPv4 address on the lab network."""
        return self.network.address(self.host)

    def __repr__(self) -> str:
        return f"Member({self.name!r}, {self.address}, mac={self.mac})"


def new_mac() -> str:
    """A random MAC in QEMU's 52:54:00 range."""
    return MAC_OUI + "".join(f":{b:02x}" for b in secrets.token_bytes(3))


def networkd_file(mac: str) -> str:
    """Path of the guest's ``.network`` file for the NIC with ``mac``."""
    return f"{NETWORKD_DIR}/{NETWORKD_PREFIX}{mac.replace(':', '').lower()}.network"


def networkd_config(mac: str, address_cidr: str) -> str:
    """A static address on the NIC with ``mac``: no gateway, no DHCP, no IPv6."""
    return (
        "# written by tests/guests/replication.py: the lab address of this member\n"
        "[Match]\n"
        f"MACAddress={mac.lower()}\n\n"
        "[Network]\n"
        f"Address={address_cidr}\n"
        "DHCP=no\n"
        "LinkLocalAddressing=no\n"
        "IPv6AcceptRA=no\n"
    )


def configure_address(guest: Guest, mac: str, address: str, timeout: float = 120) -> float:
    """Give the guest's NIC ``mac`` the static ``address``/24, persistently; seconds taken.

    Writes the ``.network`` file (and the non-local-bind sysctl), syncs,
    reloads networkd, reconfigures the link and waits until the address is up.
    """
    start = time.monotonic()
    cidr = f"{address}/{PREFIX_LEN}"
    script = (
        apps.heredoc(f"cat >{networkd_file(mac)}", networkd_config(mac, cidr).rstrip("\n"))
        + apps.heredoc(f"cat >{SYSCTL_FILE}", "net.ipv4.ip_nonlocal_bind = 1")
        + "sysctl -q -w net.ipv4.ip_nonlocal_bind=1\n"
        "sync\n"
        f"dev=$(grep -lix {shlex.quote(mac)} /sys/class/net/*/address | cut -d/ -f5)\n"
        f'[ -n "$dev" ] || {{ echo "no NIC with MAC {mac}" >&2; ip -br link >&2; exit 1; }}\n'
        "networkctl reload\n"
        'networkctl reconfigure "$dev"\n'
        'echo "$dev"\n'
    )
    dev = _sh(guest, script, f"configure {cidr} on the NIC {mac}").strip()
    wait_address(guest, address, timeout=timeout)
    log(f"{guest.name}: {cidr} on {dev} ({mac}) after {time.monotonic() - start:.1f}s")
    return time.monotonic() - start


def wait_address(guest: Guest, address: str, timeout: float = 120) -> float:
    """Wait until the guest has ``address`` configured (by networkd, from its disk)."""
    return _wait(
        guest,
        f"ip -4 -o addr show | grep -qF ' inet {address}/{PREFIX_LEN} ' || "
        "{ ip -br addr; networkctl --no-pager list; exit 1; }",
        f"lab address {address}/{PREFIX_LEN} to be configured",
        timeout,
    )


def wait_ping(guest: Guest, address: str, timeout: float = 120) -> float:
    """Wait until ``address`` answers a ping from the guest."""
    return _wait(
        guest,
        f"ping -n -c 1 -W 2 {address} || {{ ip -br addr; ip neigh; exit 1; }}",
        f"a ping reply from {address}",
        timeout,
    )


def ping_ok(guest: Guest, address: str, count: int = 3) -> bool:
    """True if ``address`` answers at least one of ``count`` pings from the guest."""
    result = agent.guest_exec(
        guest.dom, ["ping", "-n", "-q", "-c", str(count), "-W", "2", address], timeout=60
    )
    return result.ok


def guest_routes(guest: Guest) -> list[str]:
    """The guest's IPv4 routes (``ip -4 route``), one per line."""
    return _sh(guest, "ip -4 route", "list routes").strip().splitlines()


def up_member(
    network: LabNetwork,
    name: str,
    host: int,
    *,
    app: str = "none",
    mac: str | None = None,
    conn: Any = None,
    memory_mib: int = 1024,
    timeout: float = BOOT_TIMEOUT,
) -> Member:
    """Boot a test VM (``testvm.up``) with one NIC on ``network`` and address ``.host``.

    On failure the VM is left defined for inspection; ``testvm.down(name)``
    removes it (:func:`lab_pair` does).
    """
    mac = mac or new_mac()
    start = time.monotonic()
    testvm.up(
        name, app=app, memory_mib=memory_mib, timeout=timeout,
        nics=[testvm.Nic(network=network.name, mac=mac)],
    )  # fmt: skip
    member = Member(name, conn or agent.connect(testvm.URI), network, host, mac)
    configure_address(member, mac, member.address)
    log(f"{name}: up at {member.address} after {time.monotonic() - start:.1f}s")
    return member


def domain_macs(dom: libvirt.virDomain) -> list[str]:
    """MAC addresses of a domain's NICs, from its live (or inactive) XML."""
    return re.findall(r"<mac address='([0-9a-fA-F:]+)'", dom.XMLDesc(0))


def boot_restored_member(
    name: str,
    image: Path,
    network: LabNetwork,
    host: int,
    mac: str,
    *,
    app: str = "none",
    image_format: str = "raw",
    conn: Any = None,
    timeout: float = BOOT_TIMEOUT,
) -> Member:
    """Boot a new VM ``name`` from a restored disk image, on ``network`` with NIC ``mac``.

    Nothing is configured in the guest: its address (``.host``) must come from
    the restored disk (the ``.network`` file matches ``mac``, so give it the
    MAC of the member the image was taken from, and never run both at once).
    ``app`` only adds ``systemd.wants=`` so the database starts at boot, as
    from an enabled unit; this waits for the agent, the address and the app
    (``pg_isready`` / ``mariadb-admin ping``, which a standby also passes).
    The image is converted to qcow2 in the VM's directory. Remove the VM with
    ``testvm.down(name)``, also after a failure here.
    """
    testvm.validate_name(name)
    lv = agent.connect(testvm.URI)
    if testvm.lookup(lv, name) is not None:
        raise testvm.VmError(f"domain {name} already exists")
    guest_image = testvm.stage_image(testvm.build_guest())
    accel = testvm.choose_accel(guest_image, lv)
    vm_dir = testvm.VM_ROOT / name
    if vm_dir.exists():
        shutil.rmtree(vm_dir)
    testvm.make_public_dir(vm_dir)
    disk = vm_dir / "vda.qcow2"
    subprocess.run(
        ["qemu-img", "convert", "-q", "-f", image_format, "-O", "qcow2", str(image), str(disk)],
        check=True,
    )
    disk.chmod(0o644)
    testvm.make_qemu_dir(vm_dir / "backup")
    xml = testvm.domain_xml(
        name, guest_image, vm_dir=vm_dir, accel=accel, app=app, memory_mib=1024, vcpus=2,
        net=False, nics=[testvm.Nic(network=network.name, mac=mac)],
    )  # fmt: skip
    (vm_dir / "domain.xml").write_text(xml)
    dom = lv.defineXML(xml)
    start = time.monotonic()
    dom.create()
    member = Member(name, conn or lv, network, host, mac)
    _wait_booted(member, app, timeout, start)
    log(f"{name}: restored member up at {member.address} after {time.monotonic() - start:.1f}s")
    return member


def _wait_booted(member: Member | Guest, app: str, timeout: float, start: float) -> None:
    """Agent, lab address (for a Member) and app ready, within ``timeout`` of ``start``."""
    vm_dir = testvm.VM_ROOT / member.name
    try:
        agent.wait_for_agent(member.dom, timeout=timeout)
    except (agent.AgentError, libvirt.libvirtError) as exc:
        raise AssertionError(
            f"{member.name}: the guest agent did not answer within {timeout:.0f}s: {exc}\n"
            f"--- last lines of {vm_dir / 'console.log'} ---\n{testvm.console_tail(vm_dir)}"
        ) from exc
    remaining = max(30.0, timeout - (time.monotonic() - start))
    if isinstance(member, Member):
        wait_address(member, member.address, timeout=remaining)
    if app in testvm.APPS:
        ready = " ".join(shlex.quote(arg) for arg in testvm.APPS[app].ready)
        _wait(member, ready, f"{app} to accept connections after boot", remaining)


# --------------------------------------------------------------------------
# power


def _domain(guest: Guest | str) -> libvirt.virDomain:
    if isinstance(guest, Guest):
        return guest.dom
    dom = testvm.lookup(agent.connect(testvm.URI), guest)
    if dom is None:
        raise testvm.VmError(f"no domain {guest}")
    return dom


def hard_power_off(guest: Guest | str, timeout: float = 60) -> float:
    """Pull the plug: ``virDomainDestroy`` (no guest shutdown, page cache lost); seconds.

    The domain stays defined; :func:`start_again` boots it.
    """
    dom = _domain(guest)
    start = time.monotonic()
    with contextlib.suppress(libvirt.libvirtError):  # already off
        dom.destroy()
    while dom.isActive():
        assert time.monotonic() - start < timeout, (
            f"{dom.name()}: still running {timeout:.0f}s after destroy"
        )
        time.sleep(0.2)
    log(f"{dom.name()}: powered off hard")
    return time.monotonic() - start


def domain_app(dom: libvirt.virDomain) -> str:
    """The app recorded in a test VM's metadata by ``testvm.up`` ('none' if unknown)."""
    try:
        meta = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, testvm.METADATA_NS)
    except libvirt.libvirtError:
        return "none"
    match = re.search(r"<(?:testvm:)?app>([^<]*)<", meta)
    return match.group(1) if match else "none"


def start_again(
    guest: Guest | str, *, app: str | None = None, timeout: float = BOOT_TIMEOUT
) -> float:
    """Boot a defined, stopped test VM; wait for its agent, its lab address and its app.

    ``guest`` is a name, a Guest or a :class:`Member` (then its lab address
    must come back too). ``app`` defaults to the one in the domain metadata
    (the database starts by itself: ``systemd.wants=`` and an enabled unit).
    Returns the seconds until all of that was ready.
    """
    dom = _domain(guest)
    member = guest if isinstance(guest, Guest) else Guest(dom.name(), dom.connect())
    app = domain_app(dom) if app is None else app
    start = time.monotonic()
    dom.create()
    _wait_booted(member, app, timeout, start)
    seconds = time.monotonic() - start
    log(f"{dom.name()}: booted again ({app}) in {seconds:.1f}s")
    return seconds


# --------------------------------------------------------------------------
# a pair


@dataclass
class Pair:
    """Two members on one lab network: ``a`` the primary/source, ``b`` the standby/replica."""

    network: LabNetwork
    a: Member
    b: Member
    app: str
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds per setup step (``boot``, ``replication``, ...), for reports."""

    @property
    def members(self) -> tuple[Member, Member]:
        return self.a, self.b


@contextlib.contextmanager
def lab_pair(
    app: str = "none",
    *,
    conn: Any = None,
    prefix: str = "srep",
    memory_mib: int = 1024,
    timeout: float = BOOT_TIMEOUT,
) -> Iterator[Pair]:
    """A lab network and two members (``.1`` and ``.2``) that ping each other.

    Both VMs boot at once. On exit (also on failure or KeyboardInterrupt)
    both VMs are removed with ``testvm.down`` and the network destroyed and
    undefined.
    """
    conn = conn or agent.connect(testvm.URI)
    tag = secrets.token_hex(3)
    names = (f"{prefix}-{tag}-a", f"{prefix}-{tag}-b")
    start = time.monotonic()
    network = create_network(conn, name=f"{NETWORK_PREFIX}{tag}")
    try:
        a, b = _parallel(
            lambda: up_member(network, names[0], 1, app=app, conn=conn, memory_mib=memory_mib,
                              timeout=timeout),
            lambda: up_member(network, names[1], 2, app=app, conn=conn, memory_mib=memory_mib,
                              timeout=timeout),
        )  # fmt: skip
        boot = time.monotonic() - start
        _parallel(lambda: wait_ping(a, b.address), lambda: wait_ping(b, a.address))
        addresses = bridge_host_addresses(network.bridge)
        assert not addresses, f"the host got addresses on bridge {network.bridge}: {addresses}"
        for member in (a, b):
            routes = guest_routes(member)
            assert all(r.startswith(f"{network.cidr} ") for r in routes), (
                f"{member.name}: routes beyond the lab network {network.cidr}: {routes}"
            )
        pair = Pair(network=network, a=a, b=b, app=app)
        pair.timings["boot"] = round(boot, 1)
        pair.timings["ping"] = round(time.monotonic() - start - boot, 1)
        log(f"pair {names[0]} + {names[1]} on {network.name} ready in {boot:.1f}s")
        yield pair
    finally:
        for name in names:
            try:
                testvm.down(name)
            except Exception as exc:  # noqa: BLE001 - keep cleaning up
                log(f"could not remove {name}: {exc}")
        destroy_network(conn, network.name)


# --------------------------------------------------------------------------
# PostgreSQL 15 streaming replication


def pg_sql(guest: Guest, sql: str, timeout: float = 120) -> str:
    """:func:`apps.psql` (as postgres, database postgres, ``|`` between columns)."""
    try:
        return apps.psql(guest, sql, timeout=timeout)
    except agent.AgentError as exc:
        raise agent.AgentError(f"{guest.name}: psql failed: {exc}") from exc


def pg_configure_node(member: Member, *, archive: bool = False, restart: bool = True) -> None:
    """Replication settings for either role, in ``conf.d`` (never copied by a basebackup).

    listen on localhost and the lab address, ``wal_level=replica``,
    ``max_wal_senders``, ``hot_standby=on``, ``wal_keep_size``,
    ``wal_log_hints=on`` (so ``pg_rewind`` can be used); with ``archive``,
    WAL archiving to :data:`apps.WAL_ARCHIVE` as
    :func:`apps.enable_wal_archiving` does. pg_hba lets ``replicator`` in
    from the lab /24 (replication and normal connections); ``~postgres/.pgpass``
    holds its password, so a standby or ``pg_basebackup`` needs no password
    in its conninfo. Restarts the cluster unless ``restart`` is False.
    """
    settings = [
        f"listen_addresses = 'localhost,{member.address}'",
        "wal_level = replica",
        "max_wal_senders = 10",
        "max_replication_slots = 10",
        f"wal_keep_size = '{PG_WAL_KEEP}'",
        "hot_standby = on",
        "wal_log_hints = on",
    ]
    if archive:
        settings += [
            "archive_mode = on",
            f"archive_command = {apps.sql_literal(apps.ARCHIVE_COMMAND)}",
        ]
    hba = "\n".join(
        f"host    {db:<11} {PG_REPL_USER}  {member.network.cidr}  scram-sha-256  {HBA_MARK}"
        for db in ("replication", "all")
    )
    script = (
        apps.heredoc(f"cat >{PG_CONF}", "# surety replication harness\n" + "\n".join(settings))
        + f"chown postgres:postgres {PG_CONF}\n"
        + f"sed -i '/{HBA_MARK}$/d' {PG_HBA}\n"
        + apps.heredoc(f"cat >>{PG_HBA}", hba)
        + apps.heredoc(f"cat >{PG_PASSFILE}", f"*:*:*:{PG_REPL_USER}:{REPL_PASSWORD}")
        + f"chown postgres:postgres {PG_PASSFILE} && chmod 600 {PG_PASSFILE}\n"
        + f"mkdir -p {apps.WAL_ARCHIVE} && chown postgres:postgres {apps.WAL_ARCHIVE} "
        f"&& chmod 700 {apps.WAL_ARCHIVE}\n"
        "sync\n"
    )
    _sh(member, script, "write the PostgreSQL replication settings")
    if restart:
        pg_restart(member)
        got = pg_sql(
            member, "SELECT current_setting('wal_level'), current_setting('listen_addresses');"
        )
        assert got == f"replica|localhost,{member.address}", (
            f"{member.name}: settings not in effect: {got}"
        )


def pg_restart(guest: Guest, timeout: float = 300) -> float:
    """Restart cluster 15/main and wait until it accepts connections; seconds."""
    start = time.monotonic()
    _sh(guest, f"systemctl restart {apps.PG_UNIT}", "restart PostgreSQL", timeout=timeout)
    _wait(guest, "pg_isready -q", "PostgreSQL to accept connections after a restart", timeout,
          evidence=lambda: pg_log_tail(guest, 20))  # fmt: skip
    return time.monotonic() - start


def pg_create_replication_role(primary: Guest) -> None:
    """The ``replicator`` role (LOGIN REPLICATION, password, pg_monitor) on the primary."""
    pg_sql(
        primary,
        "DO $$ BEGIN\n"
        f"  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{PG_REPL_USER}') THEN\n"
        f"    CREATE ROLE {PG_REPL_USER} WITH LOGIN REPLICATION;\n"
        "  END IF;\n"
        "END $$;\n"
        f"ALTER ROLE {PG_REPL_USER} WITH LOGIN REPLICATION PASSWORD "
        f"{apps.sql_literal(REPL_PASSWORD)};\n"
        f"GRANT pg_monitor TO {PG_REPL_USER};",
    )


def pg_create_table(primary: Guest, table: str = DEFAULT_TABLE) -> None:
    """``table(id bigint primary key, tag text, payload text)`` on the primary."""
    pg_sql(
        primary,
        f"CREATE TABLE IF NOT EXISTS {_ident(table)} "
        "(id bigint PRIMARY KEY, tag text NOT NULL, payload text NOT NULL);",
    )


def pg_build_standby(
    standby: Member, primary: Member, *, slot: str | None = None, timeout: float = 900
) -> float:
    """Make ``standby`` a streaming standby of ``primary`` with ``pg_basebackup -R``; seconds.

    As the postgres OS user in the standby: stop 15/main, empty its data
    directory, ``pg_basebackup -R -X stream -c fast`` over the lab network
    (no SSL, ``application_name`` = the standby's VM name; with ``slot``, a
    physical replication slot created on the primary with ``-C -S``), start,
    and wait until the primary reports it ``streaming``. The standby's node
    settings (:func:`pg_configure_node`) must be in place already.
    """
    start = time.monotonic()
    conninfo = (
        f"host={primary.address} port=5432 user={PG_REPL_USER} sslmode=disable "
        f"application_name={standby.name}"
    )
    slot_args = f" -C -S {_ident(slot)}" if slot else ""
    script = (
        f"systemctl stop {apps.PG_UNIT}\n"
        f"find {PG_DATA} -mindepth 1 -delete\n"
        f"runuser -u postgres -- {apps.PG_BIN}/pg_basebackup -d {shlex.quote(conninfo)} "
        f"-D {PG_DATA} -R -X stream -c fast{slot_args} 2>&1\n"
        "sync\n"
        f"systemctl start {apps.PG_UNIT}\n"
    )
    if slot:  # a slot left from an earlier standby of this name would make -C fail
        pg_sql(
            primary,
            f"SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
            f"WHERE slot_name = {apps.sql_literal(slot)} AND NOT active;",
        )
    _sh(standby, script, f"pg_basebackup from {primary.name} ({primary.address})", timeout=timeout)
    _wait(standby, "pg_isready -q", "the standby to accept connections", timeout,
          evidence=lambda: pg_log_tail(standby, 20))  # fmt: skip
    pg_wait_streaming(primary, standby, timeout=timeout)
    seconds = time.monotonic() - start
    log(f"{standby.name}: standby of {primary.name} streaming after {seconds:.1f}s")
    return seconds


def pg_wait_streaming(primary: Member, standby: Member, timeout: float = 300) -> float:
    """Wait until ``primary`` lists ``standby``'s address as ``streaming``."""
    sql = (
        "SELECT count(*) FROM pg_stat_replication "
        f"WHERE client_addr = '{standby.address}' AND state = 'streaming'"
    )
    return _wait(
        primary,
        f'[ "$({PSQL} -c {shlex.quote(sql)})" -ge 1 ] || '
        f"{{ {PSQL} -c 'SELECT client_addr, state FROM pg_stat_replication'; exit 1; }}",
        f"standby {standby.name} ({standby.address}) to stream",
        timeout,
        evidence=lambda: f"{standby.name} log:\n{pg_log_tail(standby, 20)}",
    )


@contextlib.contextmanager
def pg_pair(
    *,
    archive: bool = False,
    slot: str | None = None,
    table: str = DEFAULT_TABLE,
    conn: Any = None,
    prefix: str = "srep",
    timeout: float = BOOT_TIMEOUT,
) -> Iterator[Pair]:
    """A lab pair with PostgreSQL 15: ``a`` primary, ``b`` its streaming hot standby.

    Both nodes get :func:`pg_configure_node` (so either can be primary later),
    ``a`` the ``replicator`` role and the empty ``table``, ``b`` is built
    with :func:`pg_build_standby` (``slot``: use a physical replication slot).
    Everything is removed on exit.
    """
    with lab_pair("postgresql", conn=conn, prefix=prefix, timeout=timeout) as pair:
        start = time.monotonic()
        a, b = pair.a, pair.b
        _parallel(
            lambda: pg_configure_node(a, archive=archive),
            lambda: pg_configure_node(b, archive=archive, restart=False),
        )
        pg_create_replication_role(a)
        pg_create_table(a, table)
        pg_build_standby(b, a, slot=slot)
        pair.timings["replication"] = round(time.monotonic() - start, 1)
        yield pair


def pg_role(guest: Guest) -> str:
    """``'standby'`` if the server is in recovery, else ``'primary'``."""
    return "standby" if pg_sql(guest, "SELECT pg_is_in_recovery();") == "t" else "primary"


PG_REPLICATION_COLUMNS = (
    "client_addr", "application_name", "state", "sent_lsn", "write_lsn", "flush_lsn",
    "replay_lsn", "sync_state",
)  # fmt: skip


def pg_replication_state(primary: Guest) -> list[dict[str, str]]:
    """Rows of ``pg_stat_replication`` (one per connected standby), by client address.

    Keys: :data:`PG_REPLICATION_COLUMNS` (``client_addr`` without ``/32``); NULL is ''.
    """
    cols = ", ".join(
        f"coalesce({'host(client_addr)' if c == 'client_addr' else c}::text, '')"
        for c in PG_REPLICATION_COLUMNS
    )
    out = pg_sql(primary, f"SELECT {cols} FROM pg_stat_replication ORDER BY client_addr;")
    return [
        dict(zip(PG_REPLICATION_COLUMNS, line.split("|"), strict=True)) for line in out.splitlines()
    ]


def pg_slots(guest: Guest) -> list[dict[str, str]]:
    """Replication slots: slot_name, slot_type, active (true|false), restart_lsn, wal_status."""
    keys = ("slot_name", "slot_type", "active", "restart_lsn", "wal_status")
    cols = ", ".join(f"coalesce({c}::text, '')" for c in keys)
    out = pg_sql(guest, f"SELECT {cols} FROM pg_replication_slots ORDER BY slot_name;")
    return [dict(zip(keys, line.split("|"), strict=True)) for line in out.splitlines()]


def pg_wal_receiver(standby: Guest) -> dict[str, str]:
    """``pg_stat_wal_receiver`` of a standby (status, received_tli, sender_host...); {} if none."""
    keys = ("status", "received_tli", "flushed_lsn", "sender_host", "slot_name")
    cols = ", ".join(f"coalesce({c}::text, '')" for c in keys)
    out = pg_sql(standby, f"SELECT {cols} FROM pg_stat_wal_receiver;")
    return dict(zip(keys, out.split("|"), strict=True)) if out else {}


def pg_current_lsn(primary: Guest) -> str:
    """``pg_current_wal_lsn()`` of a primary."""
    return pg_sql(primary, "SELECT pg_current_wal_lsn();")


def pg_wait_caught_up(primary: Member, standby: Member, timeout: float = 300) -> float:
    """Wait until the standby replayed everything the primary has written so far; seconds."""
    target = pg_current_lsn(primary)
    sql = f"SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn"
    return _wait(
        standby,
        f"{PSQL} -c {shlex.quote(sql)} | grep -qx t || "
        f"{{ {PSQL} -c 'SELECT pg_last_wal_replay_lsn(), pg_last_wal_receive_lsn()'; exit 1; }}",
        f"replay up to {primary.name}'s WAL position {target}",
        timeout,
        evidence=lambda: (
            f"{primary.name} pg_stat_replication: {pg_replication_state(primary)}\n"
            f"{standby.name} log:\n{pg_log_tail(standby, 20)}"
        ),
    )


def pg_promote(guest: Guest, timeout: float = 300) -> float:
    """Promote a standby (``pg_promote(wait => true)``) and check it is primary; seconds."""
    start = time.monotonic()
    done = pg_sql(guest, f"SELECT pg_promote(true, {int(timeout)});", timeout=timeout + 60)
    assert done == "t", (
        f"{guest.name}: pg_promote did not finish within {timeout:.0f}s ({done!r})\n"
        f"{pg_log_tail(guest, 20)}"
    )
    assert pg_role(guest) == "primary", f"{guest.name}: still in recovery after pg_promote"
    seconds = time.monotonic() - start
    log(f"{guest.name}: promoted in {seconds:.1f}s")
    return seconds


def pg_timeline(guest: Guest) -> int:
    """The server's timeline.

    A primary: the timeline of the WAL it writes (``pg_walfile_name(pg_current_wal_lsn())``,
    exact right after a promotion). A standby: the timeline it receives
    (``pg_stat_wal_receiver.received_tli``), else that of its last restartpoint
    (``pg_control_checkpoint()``).
    """
    out = pg_sql(
        guest,
        "SELECT CASE WHEN pg_is_in_recovery() THEN coalesce("
        "(SELECT received_tli FROM pg_stat_wal_receiver WHERE received_tli > 0), "
        "(SELECT timeline_id FROM pg_control_checkpoint())) "
        "ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END;",
    )
    return int(out)


def pg_checkpoint_timeline(guest: Guest) -> int:
    """``timeline_id`` of the last checkpoint (``pg_control_checkpoint()``)."""
    return int(pg_sql(guest, "SELECT timeline_id FROM pg_control_checkpoint();"))


def pg_write_rows(
    guest: Guest,
    table: str = DEFAULT_TABLE,
    n: int = 100,
    tag: str = "row",
    *,
    first_id: int = 1,
    upsert: bool = False,
) -> range:
    """Insert ids ``first_id .. first_id+n-1`` with ``tag`` in one transaction; the ids.

    ``payload`` is ``md5(tag || ':' || id)`` twice (64 chars; the MariaDB
    helper writes the same). With ``upsert`` existing ids are overwritten
    (``ON CONFLICT DO UPDATE``); without it an existing id is an error.
    """
    ids = range(first_id, first_id + n)
    conflict = (
        " ON CONFLICT (id) DO UPDATE SET tag = EXCLUDED.tag, payload = EXCLUDED.payload"
        if upsert
        else ""
    )
    tag_sql = apps.sql_literal(tag)
    pg_sql(
        guest,
        f"INSERT INTO {_ident(table)} (id, tag, payload) "
        f"SELECT g, {tag_sql}, repeat(md5({tag_sql} || ':' || g), 2) "
        f"FROM generate_series({ids.start}, {ids.stop - 1}) AS g{conflict};",
    )
    return ids


def pg_table_checksum(guest: Guest, table: str = DEFAULT_TABLE) -> TableChecksum:
    """Row count and MD5 of ``table``'s rows in id order (``string_agg(t::text)``)."""
    out = pg_sql(
        guest,
        f"SELECT count(*), md5(coalesce(string_agg(t::text, ',' ORDER BY t.id), '')) "
        f"FROM {_ident(table)} t;",
    )
    rows, content = out.split("|")
    return TableChecksum(rows=int(rows), content=content)


def pg_tags(guest: Guest, table: str = DEFAULT_TABLE) -> dict[str, int]:
    """How many rows carry each tag."""
    out = pg_sql(guest, f"SELECT tag, count(*) FROM {_ident(table)} GROUP BY tag ORDER BY tag;")
    return {tag: int(count) for tag, count in (line.split("|") for line in out.splitlines())}


def pg_log_tail(guest: Guest, lines: int = 50) -> str:
    """The last ``lines`` of the server log (``postgresql-15-main.log``)."""
    return file_tail(guest, PG_LOG, lines)


# --------------------------------------------------------------------------
# MariaDB 10.11 GTID replication


def mariadb_sql(guest: Guest, sql: str, timeout: float = 120) -> str:
    """:func:`apps.mariadb` (root, batch, tab-separated, stops at the first error)."""
    try:
        return apps.mariadb(guest, sql, timeout=timeout)
    except agent.AgentError as exc:
        raise agent.AgentError(f"{guest.name}: mariadb failed: {exc}") from exc


def mariadb_configure_node(
    member: Member, server_id: int, *, durable: bool = True, restart: bool = True
) -> None:
    """Binary log and identity for either role, in :data:`apps.MARIADB_CONF`.

    ``server_id``, ``log_bin`` (as :func:`apps.enable_binlog`),
    ``log_slave_updates=ON``, ``binlog_format=ROW``, ``gtid_domain_id=0``,
    bind on 127.0.0.1 and the lab address, ``skip_name_resolve`` (there is no
    DNS), a relay log name that does not depend on the host name, and the
    error log in :data:`MARIADB_ERROR_LOG` (on disk: survives a power-off and
    is part of an image). ``durable`` adds ``sync_binlog=1`` (with
    ``innodb_flush_log_at_trx_commit=1``): without it a hard power-off loses
    the unsynced tail of the binary log although InnoDB kept the rows
    (measured: the last GTID vanished). Restarts MariaDB unless ``restart``
    is False.
    """
    config = (
        "[mariadbd]\n"
        f"server_id={server_id}\n"
        f"log_bin={apps.MARIADB_BINLOG}\n"
        "log_slave_updates=ON\n"
        "binlog_format=ROW\n"
        "gtid_domain_id=0\n"
        f"bind_address=127.0.0.1,{member.address}\n"
        "skip_name_resolve=ON\n"
        f"relay_log={MARIADB_RELAY_LOG}\n"
        f"log_error={MARIADB_ERROR_LOG}\n"
    )
    if durable:
        config += "sync_binlog=1\ninnodb_flush_log_at_trx_commit=1\n"
    log_dir = MARIADB_ERROR_LOG.rsplit("/", 1)[0]
    _sh(
        member,
        f"mkdir -p {log_dir} && chown mysql:adm {log_dir} && chmod 2750 {log_dir}\n"
        + apps.heredoc(f"cat >{MARIADB_CONF}", config.rstrip("\n"))
        + "sync\n",
        "write the MariaDB replication settings",
    )
    if restart:
        mariadb_restart(member)
        got = mariadb_sql(
            member,
            "SELECT @@server_id, @@log_bin, @@log_slave_updates, @@binlog_format, @@sync_binlog;",
        )
        assert got.split() == [str(server_id), "1", "1", "ROW", str(int(durable))], (
            f"{member.name}: MariaDB settings not in effect: {got}"
        )


def mariadb_restart(guest: Guest, timeout: float = 300) -> float:
    """Restart MariaDB and wait until it answers; seconds."""
    start = time.monotonic()
    _sh(guest, "systemctl restart mariadb", "restart MariaDB", timeout=timeout)
    _wait(guest, "mariadb -e 'SELECT 1'", "MariaDB to answer after a restart", timeout,
          evidence=lambda: mariadb_error_log_tail(guest, 20))  # fmt: skip
    return time.monotonic() - start


def mariadb_create_repl_user(source: Member) -> None:
    """``repl``@lab /24 with REPLICATION SLAVE and SELECT (reaches replicas through the binlog)."""
    host = apps.sql_literal(f"{source.network.subnet}.%")
    user = f"'{MARIADB_REPL_USER}'@{host}"
    mariadb_sql(
        source,
        f"CREATE USER IF NOT EXISTS {user} IDENTIFIED BY {apps.sql_literal(REPL_PASSWORD)};\n"
        f"GRANT REPLICATION SLAVE, SELECT ON *.* TO {user};",
    )


def mariadb_create_table(source: Guest, table: str = DEFAULT_TABLE) -> None:
    """``repltest.<table>(id bigint primary key, tag, payload)`` (InnoDB) on the source."""
    mariadb_sql(
        source,
        f"CREATE DATABASE IF NOT EXISTS {MARIADB_DB};\n"
        f"CREATE TABLE IF NOT EXISTS {MARIADB_DB}.{_ident(table)} (id bigint PRIMARY KEY, "
        "tag varchar(64) NOT NULL, payload text NOT NULL) ENGINE=InnoDB;",
    )


def mariadb_start_replica(
    replica: Member,
    source: Member,
    *,
    fresh: bool = True,
    connect_retry: int = 5,
    timeout: float = 300,
) -> float:
    """Point ``replica`` at ``source`` with GTID (``MASTER_USE_GTID=slave_pos``); seconds.

    ``fresh`` first forgets the replica's own binary log and GTID position
    (``RESET MASTER``, ``gtid_slave_pos=''``): it then replays the source's
    binary log from its start. Without ``fresh`` it resumes from its
    ``gtid_slave_pos``. Waits until both replication threads run.
    """
    start = time.monotonic()
    reset = "RESET MASTER;\nSET GLOBAL gtid_slave_pos = '';\n" if fresh else ""
    mariadb_sql(
        replica,
        "STOP SLAVE;\nRESET SLAVE ALL;\n"
        + reset
        + f"CHANGE MASTER TO MASTER_HOST = '{source.address}', MASTER_PORT = 3306, "
        f"MASTER_USER = '{MARIADB_REPL_USER}', "
        f"MASTER_PASSWORD = {apps.sql_literal(REPL_PASSWORD)}, "
        f"MASTER_USE_GTID = slave_pos, MASTER_CONNECT_RETRY = {int(connect_retry)};\n"
        "START SLAVE;",
    )
    mariadb_wait_running(replica, timeout=timeout)
    seconds = time.monotonic() - start
    log(f"{replica.name}: replicating from {source.name} after {seconds:.1f}s")
    return seconds


SLAVE_STATUS_SHOW = (
    "mariadb -E -e 'SHOW SLAVE STATUS' | grep -E "
    "'Master_Host|_Running:|Last_(IO|SQL)_Err|Gtid_IO_Pos|Seconds_Behind'"
)


def mariadb_wait_running(replica: Guest, timeout: float = 300) -> float:
    """Wait until the replica's IO and SQL threads both run (``Yes``)."""
    return _wait(
        replica,
        "s=$(mariadb -E -e 'SHOW SLAVE STATUS'); "
        "echo \"$s\" | grep -q 'Slave_IO_Running: Yes' && "
        "echo \"$s\" | grep -q 'Slave_SQL_Running: Yes' || "
        f"{{ {SLAVE_STATUS_SHOW}; exit 1; }}",
        "both replication threads to run",
        timeout,
        evidence=lambda: mariadb_error_log_tail(replica, 20),
    )


def mariadb_promote(replica: Guest) -> None:
    """Fail over to a replica: ``STOP SLAVE; RESET SLAVE ALL`` (it then takes writes)."""
    mariadb_sql(replica, "STOP SLAVE;\nRESET SLAVE ALL;")
    log(f"{replica.name}: replication stopped and forgotten (now a source)")


@contextlib.contextmanager
def mariadb_pair(
    *,
    table: str = DEFAULT_TABLE,
    connect_retry: int = 5,
    durable: bool = True,
    conn: Any = None,
    prefix: str = "srep",
    timeout: float = BOOT_TIMEOUT,
) -> Iterator[Pair]:
    """A lab pair with MariaDB 10.11: ``a`` source (server_id 11), ``b`` GTID replica (21).

    ``a`` gets the ``repl`` user and the empty ``repltest.<table>``; ``b``
    replicates them from ``a``'s binary log and is caught up on return.
    ``durable`` (default): ``sync_binlog=1`` on both, see :func:`mariadb_configure_node`.
    Everything is removed on exit.
    """
    with lab_pair("mariadb", conn=conn, prefix=prefix, timeout=timeout) as pair:
        start = time.monotonic()
        a, b = pair.a, pair.b
        _parallel(
            lambda: mariadb_configure_node(a, SOURCE_SERVER_ID, durable=durable),
            lambda: mariadb_configure_node(b, REPLICA_SERVER_ID, durable=durable),
        )
        mariadb_create_repl_user(a)
        mariadb_create_table(a, table)
        mariadb_start_replica(b, a, connect_retry=connect_retry)
        mariadb_wait_caught_up(a, b)
        pair.timings["replication"] = round(time.monotonic() - start, 1)
        yield pair


def mariadb_slave_status(guest: Guest) -> dict[str, str]:
    """``SHOW SLAVE STATUS`` as a dict (Slave_IO_Running, Last_IO_Errno, Gtid_IO_Pos, ...).

    Empty when the server is no replica.
    """
    out = _sh(guest, "mariadb -E -e 'SHOW SLAVE STATUS'", "SHOW SLAVE STATUS")
    status: dict[str, str] = {}
    for line in out.splitlines():
        key, sep, value = line.strip().partition(":")
        if sep and not line.startswith("*"):
            status[key] = value.strip()
    return status


MARIADB_GTID_VARS = (
    "server_id", "gtid_domain_id", "gtid_binlog_pos", "gtid_slave_pos", "gtid_current_pos",
    "gtid_strict_mode", "read_only",
)  # fmt: skip


def mariadb_gtid(guest: Guest) -> dict[str, str]:
    """GTID state: :data:`MARIADB_GTID_VARS` (``gtid_binlog_pos`` etc., '' when empty)."""
    out = _sh(
        guest,
        "mariadb -N -B -e " + shlex.quote(
            "SELECT " + ", ".join(f"@@{v}" for v in MARIADB_GTID_VARS)
        ),
        "read the GTID state",
    ).rstrip("\n")  # fmt: skip
    return dict(zip(MARIADB_GTID_VARS, out.split("\t"), strict=True))


def mariadb_wait_caught_up(source: Guest, replica: Guest, timeout: float = 300) -> float:
    """Wait (``MASTER_GTID_WAIT``) until the replica applied the source's ``gtid_binlog_pos``.

    Note a replica that already has a GTID (e.g. re-used by a restored source)
    counts it as applied: compare checksums to see the difference.
    """
    target = mariadb_gtid(source)["gtid_binlog_pos"]
    if not target:
        return 0.0
    start = time.monotonic()
    out = mariadb_sql(
        replica, f"SELECT MASTER_GTID_WAIT('{target}', {int(timeout)});", timeout=timeout + 60
    )
    if out != "0":
        status = mariadb_slave_status(replica)
        shown = {k: v for k, v in status.items() if k.startswith(("Slave_", "Last_", "Gtid_"))}
        raise AssertionError(
            f"{replica.name}: did not apply {source.name}'s GTID position {target} within "
            f"{timeout:.0f}s (MASTER_GTID_WAIT={out}); slave status: {shown}\n"
            f"{mariadb_error_log_tail(replica, 20)}"
        )
    return time.monotonic() - start


def _mariadb_table(table: str) -> str:
    return f"{MARIADB_DB}.{_ident(table)}"


def mariadb_write_rows(
    guest: Guest,
    table: str = DEFAULT_TABLE,
    n: int = 100,
    tag: str = "row",
    *,
    first_id: int = 1,
    upsert: bool = False,
) -> range:
    """Insert ids ``first_id .. first_id+n-1`` with ``tag`` in one statement (one GTID); the ids.

    Same payload as :func:`pg_write_rows`. With ``upsert`` existing ids are
    overwritten (``ON DUPLICATE KEY UPDATE``); without it an existing id is an error.
    """
    ids = range(first_id, first_id + n)
    conflict = (
        " ON DUPLICATE KEY UPDATE tag = VALUES(tag), payload = VALUES(payload)" if upsert else ""
    )
    tag_sql = apps.sql_literal(tag)
    mariadb_sql(
        guest,
        f"INSERT INTO {_mariadb_table(table)} (id, tag, payload) "
        f"SELECT seq, {tag_sql}, REPEAT(MD5(CONCAT({tag_sql}, ':', seq)), 2) "
        f"FROM {MARIADB_DB}.seq_{ids.start}_to_{ids.stop - 1}{conflict};",
    )
    return ids


def mariadb_table_checksum(guest: Guest, table: str = DEFAULT_TABLE) -> TableChecksum:
    """Row count, MD5 of the rows in id order, and ``CHECKSUM TABLE``.

    The MD5 is over ``GROUP_CONCAT`` (limit raised to 1 GiB; the result must
    also fit ``max_allowed_packet``, 16 MiB here: fine for test tables).
    """
    name = _mariadb_table(table)
    out = mariadb_sql(
        guest,
        "SET SESSION group_concat_max_len = 1073741824;\n"
        "SELECT COUNT(*), MD5(COALESCE(GROUP_CONCAT(CONCAT_WS('|', id, tag, payload) "
        f"ORDER BY id SEPARATOR ','), '')) FROM {name};\n"
        f"CHECKSUM TABLE {name};",
    )
    first, second = out.splitlines()
    rows, content = first.split("\t")
    server = second.split("\t")[1]
    return TableChecksum(rows=int(rows), content=content, server=server)


def mariadb_tags(guest: Guest, table: str = DEFAULT_TABLE) -> dict[str, int]:
    """How many rows carry each tag."""
    out = mariadb_sql(
        guest, f"SELECT tag, COUNT(*) FROM {_mariadb_table(table)} GROUP BY tag ORDER BY tag;"
    )
    return {tag: int(count) for tag, count in (line.split("\t") for line in out.splitlines())}


def mariadb_error_log_tail(guest: Guest, lines: int = 50) -> str:
    """The last ``lines`` of MariaDB's error log (:data:`MARIADB_ERROR_LOG`)."""
    return file_tail(guest, MARIADB_ERROR_LOG, lines)


def log_size(guest: Guest, path: str) -> int:
    """Current size of a log file in the guest (0 if missing): a mark for :func:`log_since`."""
    out = _sh(guest, f"stat -c %s {shlex.quote(path)} 2>/dev/null || echo 0", f"size of {path}")
    return int(out.strip() or 0)


def log_since(guest: Guest, path: str, mark: int) -> str:
    """What was appended to a log file after :func:`log_size` returned ``mark``."""
    return _sh(
        guest,
        f"if [ -f {shlex.quote(path)} ]; then tail -c +{int(mark) + 1} {shlex.quote(path)}; fi",
        f"read {path}",
    )
