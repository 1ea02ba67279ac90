"""Restore hooks: where restore mode and application restore procedures plug in.

``restore_vm`` defines the restored VM, then calls every hook's
``before_first_boot`` in order; with ``start`` it starts the VM and calls every
hook's ``after_boot`` in order. A hook sees what the restore made
(``RestoredVm``: name, UUID, MACs, disk paths, the point's ``applications``
metadata) and the VM (``hypervisor.port.HypervisorDomain``). A hook that
raises stops the sequence; the VM stays defined as restored (the restore
itself succeeded) and the error reaches the caller.

Hooks are given by the caller; none is built in. They must not know the CLI.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from surety.hypervisor.port import HypervisorDomain

__all__ = ["RestoreHook", "RestoredDisk", "RestoredNic", "RestoredVm"]


@dataclass(frozen=True)
class RestoredDisk:
    target: str  # vda
    path: str
    format: str  # qcow2 | raw
    size: int  # virtual size in bytes


@dataclass(frozen=True)
class RestoredNic:
    type: str  # network | bridge | user | direct ...
    mac: str
    original_mac: str | None
    network: str | None  # libvirt network it attaches to (after --network-map)


@dataclass(frozen=True)
class RestoredVm:
    """The VM as restored: what a restore procedure needs to find and drive it."""

    name: str
    uuid: str
    identity: str  # in-place | clone
    original_name: str
    original_uuid: str
    point: str  # restore point id
    consistency: str
    disks: tuple[RestoredDisk, ...]
    nics: tuple[RestoredNic, ...]
    genid: str | None = None  # VM generation id as defined (None: the VM has none)
    nvram: str | None = None
    tpm_state: str | None = None
    applications: dict[str, Any] = field(default_factory=dict)  # the point's writer metadata


class RestoreHook(Protocol):
    def before_first_boot(self, vm: RestoredVm, domain: HypervisorDomain) -> None:
        """The VM is defined and has never run from the restored disks."""

    def after_boot(self, vm: RestoredVm, domain: HypervisorDomain) -> None:
        """The VM was started (only when the restore starts it)."""
