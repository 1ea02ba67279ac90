"""This host's network interfaces and their addresses (``ip -j addr show``).

Used before a libvirt network is recreated from a restore point, so that its
bridge name and subnets do not clash with what the host already has.
Interfaces are found even without iproute2 (no addresses then).
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import socket
import subprocess

__all__ = ["HostAddresses", "host_addresses"]

HostAddresses = dict[str, tuple[ipaddress.IPv4Interface | ipaddress.IPv6Interface, ...]]


def host_addresses() -> HostAddresses:
    """Interface name -> its IP addresses with their prefix length."""
    found: HostAddresses = {name: () for _index, name in socket.if_nameindex()}
    ip = shutil.which("ip")
    if ip is None:
        return found
    proc = subprocess.run([ip, "-j", "addr", "show"], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return found
    for link in json.loads(proc.stdout or "[]"):
        found[link["ifname"]] = tuple(
            ipaddress.ip_interface(f"{a['local']}/{a['prefixlen']}")
            for a in link.get("addr_info", [])
            if "local" in a
        )
    return found
