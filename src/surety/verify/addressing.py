"""Addresses in the lab: the clone's own, given back through the guest agent.

A lab VM keeps its production IP addresses - the lab is isolated, and the
applications' configuration (a standby's ``primary_conninfo``, a replica's
source host) names them. But every lab NIC has a new MAC, so a guest whose
network configuration matches its MAC (systemd-networkd ``[Match]
MACAddress=``, a DHCP reservation) comes up without its address. After boot:

1. the agent lists the guest's NICs; the lab NIC is found by its lab MAC;
2. the addresses it should have are those the restore point recorded for the
   production MAC at backup time (``source.guest_network``), else a lab
   address ``10.213.0.<n>/24``;
3. if they are missing, the guest is re-addressed: a runtime networkd file in
   ``/run/systemd/network`` (gone with the throwaway overlay) and a reload,
   or ``ip addr add`` where networkd does not run.

The prober in the lab's namespace then gets one free address in each subnet
(``labnet.add_probe_address``).
"""

from __future__ import annotations

import contextlib
import ipaddress
import time
from collections.abc import Iterable, Sequence
from typing import Any

from surety.core.errors import SuretyError
from surety.hypervisor.guest_agent import parse_interfaces
from surety.quiesce.channel import GuestChannel

__all__ = ["LAB_SUBNET", "LabAddress", "prober_address", "wanted_addresses"]

LAB_SUBNET = ipaddress.IPv4Network("10.213.0.0/24")
LabAddress = ipaddress.IPv4Interface


def wanted_addresses(
    recorded: Sequence[dict[str, Any]], production_mac: str | None, fallback_host: int
) -> tuple[LabAddress, ...]:
    """What the lab NIC standing for ``production_mac`` should carry."""
    for nic in recorded:
        if production_mac and nic.get("mac", "").lower() == production_mac.lower():
            found = tuple(ipaddress.IPv4Interface(a) for a in nic.get("ipv4", []))
            if found:
                return found
    return (ipaddress.IPv4Interface(f"{LAB_SUBNET[fallback_host]}/{LAB_SUBNET.prefixlen}"),)


def prober_address(
    network: ipaddress.IPv4Network, taken: Iterable[ipaddress.IPv4Address]
) -> LabAddress:
    """The highest host address of ``network`` no lab VM uses."""
    used = set(taken)
    for host in reversed(list(network.hosts())[-64:]):
        if host not in used:
            return ipaddress.IPv4Interface(f"{host}/{network.prefixlen}")
    raise ValueError(f"no free address for the prober in {network}")


def guest_interface(reply: Any, mac: str) -> dict[str, Any] | None:
    return next((n for n in parse_interfaces(reply) if n["mac"] == mac.lower()), None)


APPLY_SECONDS = 20.0
"""How long one application of the addresses may take before it is applied again."""

BOOT_SECONDS = 90
"""How long the addresses wait for the guest's boot to finish (systemd)."""


def readdress(
    channel: GuestChannel,
    agent: Any,
    mac: str,
    wanted: Sequence[LabAddress],
    timeout: float = 90.0,
) -> str:
    """Make the guest NIC with ``mac`` carry ``wanted``; returns how it went (evidence).

    ``agent`` is a callable ``(command) -> reply`` for guest-network-get-interfaces.
    The guest's agent answers before its boot has finished: the addresses are set
    once systemd says the boot is done (so systemd-networkd, if the guest runs it,
    is up and does not drop an address set beside it), and set again when they
    did not take within ``APPLY_SECONDS``, until ``timeout`` (from the call).
    """
    deadline = time.monotonic() + timeout
    nic = _wait_for_nic(agent, mac, deadline)
    if _has(nic, wanted):
        return f"{nic['name']} already has {', '.join(map(str, wanted))}"
    name = nic["name"]
    _wait_for_boot(channel, deadline)
    attempt = 0
    while True:
        attempt += 1
        how = _apply(channel, name, mac, wanted)
        settle = min(deadline, time.monotonic() + APPLY_SECONDS)
        while True:
            nic = _interface(agent, mac) or nic
            if _has(nic, wanted):
                again = f" (applied {attempt} times)" if attempt > 1 else ""
                return f"{name} re-addressed to {', '.join(map(str, wanted))} with {how}{again}"
            if time.monotonic() >= settle:
                break
            time.sleep(1)
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"{name} did not take {', '.join(map(str, wanted))} with {how} "
                f"(applied {attempt} times; has {nic['ipv4']})"
            )


def _has(nic: dict[str, Any], wanted: Sequence[LabAddress]) -> bool:
    return all(str(w) in nic["ipv4"] for w in wanted)


def _wait_for_boot(channel: GuestChannel, deadline: float) -> None:
    """Until systemd's boot is done (running or degraded), at most until ``deadline``."""
    left = min(BOOT_SECONDS, int(deadline - time.monotonic() - APPLY_SECONDS))
    if left < 5:
        return
    wait = f"timeout {left} systemctl is-system-running --wait"
    with contextlib.suppress(SuretyError):  # no systemd, or slow to answer: set them anyway
        channel.run(
            ["sh", "-c", f"command -v systemctl >/dev/null || exit 0; {wait}"], timeout=left + 10
        )


def _apply(channel: GuestChannel, name: str, mac: str, wanted: Sequence[LabAddress]) -> str:
    if channel.run(
        ["sh", "-c", "command -v networkctl && systemctl is-active -q systemd-networkd"]
    ).ok:
        unit = "[Match]\nMACAddress={}\n\n[Network]\nLinkLocalAddressing=no\n{}\n".format(
            mac, "\n".join(f"Address={w}" for w in wanted)
        )
        channel.run(["mkdir", "-p", "/run/systemd/network"])
        channel.write_file("/run/systemd/network/05-surety-lab.network", unit.encode())
        channel.run(["networkctl", "reload"])
        channel.run(["networkctl", "reconfigure", name])
        return "a runtime systemd-networkd file"
    for address in wanted:
        channel.run(["ip", "addr", "replace", str(address), "dev", name])
    channel.run(["ip", "link", "set", name, "up"])
    return "ip addr"


def _interface(agent: Any, mac: str) -> dict[str, Any] | None:
    """The guest's NIC with ``mac``; None while the agent does not answer in time."""
    try:
        return guest_interface(agent("guest-network-get-interfaces"), mac)
    except SuretyError:
        return None


def _wait_for_nic(agent: Any, mac: str, deadline: float) -> dict[str, Any]:
    while True:
        nic = _interface(agent, mac)
        if nic is not None or time.monotonic() > deadline:
            break
        time.sleep(1)
    if nic is None:
        raise TimeoutError(f"the guest shows no NIC with the lab MAC {mac}")
    return nic
