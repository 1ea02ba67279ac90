"""The lab's network: a private network namespace with a bridge and no way out.

One lab = one namespace ``surety-lab-<id>`` holding:

* ``br0``: the bridge every lab NIC is a port of. No address, IPv6 off,
  ``arp_ignore=8`` (never answer ARP), no forwarding anywhere in the namespace;
* ``probe``: one end of a veth pair whose other end (``probe-br``) is a bridge
  port. It carries the only addresses in the lab - the prober's, one per guest
  subnet - from which ping and TCP probes leave. It answers ARP for its own
  addresses only (``arp_ignore=1``); there is no default route;
* the VMs' taps. A tap is made in the host namespace (``sl<id>n<k>``, so
  libvirt can open it), the VM is started *paused*, and only then is the tap
  moved into the namespace and onto the bridge: a guest never runs while its
  NIC is outside the lab. The tap keeps working for QEMU across the move.

Measured when the lab was designed: without this hardening the namespace's
own stack answered ARP for its other addresses. Deleting the namespace
destroys the bridge, the veths and the taps in it; taps not yet moved are
deleted by name. Nothing here routes, NATs or forwards.
"""

from __future__ import annotations

import ipaddress
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from surety.core.errors import LabError

__all__ = [
    "NETNS_PREFIX",
    "add_probe_address",
    "create_lab_network",
    "delete_lab_network",
    "host_tap_lab_ids",
    "host_taps",
    "lab_namespaces",
    "make_tap",
    "move_tap_into_lab",
    "namespace_of",
    "run_in_lab",
    "tap_name",
]

NETNS_PREFIX = "surety-lab-"
BRIDGE = "br0"
PROBE = "probe"
_ID = re.compile(r"^[0-9a-f]{8}$")


def namespace_of(lab_id: str) -> str:
    if not _ID.match(lab_id):
        raise ValueError(f"bad lab id {lab_id!r}")
    return NETNS_PREFIX + lab_id


def tap_name(lab_id: str, number: int) -> str:
    """``sl<id>n<k>`` - at most 15 characters, unique per lab and NIC."""
    return f"sl{lab_id}n{number}"


def _ip(*argv: str, netns: str | None = None, check: bool = True) -> str:
    ip = shutil.which("ip")
    if ip is None:
        raise LabError("the lab needs iproute2 (apt install iproute2)")
    full = [ip, *(["-n", netns] if netns else []), *argv]
    proc = subprocess.run(full, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(full[1:])}: {proc.stderr.strip() or 'failed'}")
    return proc.stdout


def _sysctl(netns: str, key: str, value: str) -> None:
    """Set ``key`` inside the namespace (``/proc/sys`` as seen from there)."""
    path = "/proc/sys/" + key.replace(".", "/")
    run_in_lab(netns, ["sh", "-c", f"echo {value} > {path}"], check=True)


def create_lab_network(lab_id: str) -> str:
    """Make the namespace, its bridge and the prober; returns the namespace name."""
    netns = namespace_of(lab_id)
    _ip("netns", "add", netns)
    for key, value in (
        ("net.ipv4.ip_forward", "0"),
        ("net.ipv6.conf.all.disable_ipv6", "1"),
        ("net.ipv6.conf.default.disable_ipv6", "1"),
        ("net.ipv4.conf.all.arp_ignore", "1"),
        ("net.ipv4.conf.default.arp_ignore", "8"),  # every later port (taps) answers no ARP
        ("net.ipv4.conf.all.forwarding", "0"),
    ):
        _sysctl(netns, key, value)
    _ip("link", "add", BRIDGE, "type", "bridge", netns=netns)
    _ip("link", "add", PROBE, "type", "veth", "peer", "name", f"{PROBE}-br", netns=netns)
    _sysctl(netns, f"net.ipv4.conf.{PROBE}.arp_ignore", "1")
    _ip("link", "set", f"{PROBE}-br", "master", BRIDGE, netns=netns)
    for link in ("lo", BRIDGE, f"{PROBE}-br", PROBE):
        _ip("link", "set", link, "up", netns=netns)
    return netns


def make_tap(name: str) -> None:
    """A persistent tap in the host namespace for libvirt to open (``managed='no'``)."""
    _ip("tuntap", "add", "dev", name, "mode", "tap")


def move_tap_into_lab(name: str, netns: str) -> None:
    """Move an opened tap into the lab and make it a silent bridge port."""
    _ip("link", "set", name, "netns", netns)
    _sysctl(netns, f"net.ipv4.conf.{name}.arp_ignore", "8")
    _ip("link", "set", name, "master", BRIDGE, netns=netns)
    _ip("link", "set", name, "up", netns=netns)


def add_probe_address(netns: str, address: ipaddress.IPv4Interface) -> None:
    """Give the prober an address (idempotent): the lab's only addresses."""
    found = _ip("-4", "-o", "addr", "show", "dev", PROBE, netns=netns)
    if f" {address.with_prefixlen} " not in found:
        _ip("addr", "add", address.with_prefixlen, "dev", PROBE, netns=netns)


def run_in_lab(
    netns: str, argv: Sequence[str], *, timeout: float = 30.0, check: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run a host program inside the lab's namespace (ping, a TCP connect)."""
    ip = shutil.which("ip") or "ip"
    if shutil.which(argv[0]) is None:
        raise LabError(f"{argv[0]} is needed on this host for the lab's probes")
    try:
        proc = subprocess.run(
            [ip, "netns", "exec", netns, *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"{argv[0]} in the lab did not end within {timeout:.0f} s") from exc
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(argv)} in the lab: {proc.stderr.strip() or 'failed'}")
    return proc


def lab_namespaces() -> list[str]:
    """Lab ids of every lab namespace on this host (live or left by a killed run)."""
    root = Path("/run/netns")
    names = [p.name for p in root.iterdir()] if root.is_dir() else []
    return sorted(n[len(NETNS_PREFIX) :] for n in names if n.startswith(NETNS_PREFIX))


def delete_lab_network(lab_id: str, taps: Sequence[str] = ()) -> None:
    """Remove the namespace (and all in it) and taps never moved in; idempotent."""
    netns = namespace_of(lab_id)
    if (Path("/run/netns") / netns).exists():
        _ip("netns", "delete", netns, check=False)
    for tap in taps:
        if Path(f"/sys/class/net/{tap}").exists():
            _ip("link", "delete", tap, check=False)


def host_taps(lab_id: str) -> list[str]:
    """Taps of this lab still in the host namespace."""
    prefix = f"sl{lab_id}n"
    return sorted(p.name for p in Path("/sys/class/net").iterdir() if p.name.startswith(prefix))


def host_tap_lab_ids() -> set[str]:
    """Lab ids of every lab tap still in the host namespace."""
    found = (re.match(r"^sl([0-9a-f]{8})n\d+$", p.name) for p in Path("/sys/class/net").iterdir())
    return {m.group(1) for m in found if m}
