"""The lab: restore points booted straight from the repository, isolated.

``open_lab`` yields a ``Lab`` and tears it down in ``finally`` - also on a
timeout, a failed probe or Ctrl-C. ``Lab.boot`` starts one restore point as a
transient libvirt VM:

* every disk is served read-only by nbdkit (``restore.export``) and the VM
  writes to a throwaway qcow2 overlay in the lab's run directory;
* the VM is a *clone*: a new UUID, a new VM generation id, a new random MAC
  per NIC (the restored production MACs stay outside), its own console log;
* every NIC is a tap that is moved into the lab's namespace
  (``hypervisor.labnet``) while the VM is still paused.

Everything of one lab is named by its id: the run directory
``/run/surety/lab/<pid>.<start>.<random>/`` (holding ``lab-id``), the
namespace ``surety-lab-<id>``, the VMs ``surety-lab-<id>-<name>``, the taps
``sl<id>n<k>``. Every lab first reaps what dead labs left (``kill -9``): the
run directories of dead processes (their nbdkit servers with them), then any
lab VM, namespace or tap whose id belongs to no live lab. Labs never share
anything, so several may run at once.
"""

from __future__ import annotations

import base64
import os
import secrets
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from surety.core.errors import LabError, SuretyError
from surety.core.progress import Progress
from surety.hypervisor import labnet
from surety.hypervisor.guest_agent import AgentChannel
from surety.hypervisor.images import create_overlay
from surety.hypervisor.port import HypervisorDomain, HypervisorHost
from surety.hypervisor.qemu_user import qemu_ids
from surety.hypervisor.restore_xml import (
    DiskPlacement,
    DomainRewrite,
    chardev_files,
    domain_interfaces,
    new_mac,
    onto_taps,
    rewrite_domain,
    writable_disks,
)
from surety.repo.manifest import Manifest
from surety.repo.repository import Repository
from surety.restore.export import ServedDisk, reap_dead_runs, run_directory, serve_disk

__all__ = ["LAB_ROOT", "Lab", "LabVm", "open_lab", "reap_dead_labs"]

LAB_ROOT = Path("/run/surety/lab")
DOMAIN_PREFIX = "surety-lab-"


@dataclass
class LabVm:
    """One restore point running in the lab."""

    name: str  # the name in the group (the VM's own name by default)
    point: Manifest
    domain: HypervisorDomain
    channel: AgentChannel
    macs: tuple[str, ...]  # lab MACs, in the order of the point's NICs
    production_macs: tuple[str | None, ...]
    console: Path
    served: tuple[ServedDisk, ...]
    started: float  # time.monotonic() when the CPUs started
    events: list[tuple[float, str]] = field(default_factory=list)

    def event(self, what: str) -> None:
        self.events.append((time.time(), what))

    def console_tail(self, lines: int = 40) -> str:
        with suppress(OSError):
            text = self.console.read_text(errors="replace")
            return "\n".join(text.replace("\r", "").splitlines()[-lines:])
        return ""


class Lab:
    def __init__(
        self, host: HypervisorHost, repo: Repository, run_dir: Path, lab_id: str, progress: Progress
    ) -> None:
        self.host, self.repo, self.run_dir, self.id = host, repo, run_dir, lab_id
        self.progress = progress
        self.netns = labnet.namespace_of(lab_id)
        self.vms: list[LabVm] = []
        self._stack = ExitStack()
        self._taps = 0

    def boot(self, point: Manifest, name: str | None = None) -> LabVm:
        """Start ``point`` in the lab (returns once its CPUs run)."""
        name = name or point.name
        if any(vm.name == name for vm in self.vms):
            raise LabError(f"{name}: already in this lab (name the members apart)")
        xml = point.config.get("domain.xml")
        if point.kind != "vm" or not xml:
            raise LabError(f"restore point {point.id[:12]} is a disk image, not a VM")
        vm_dir = self.run_dir / name
        vm_dir.mkdir(mode=0o700)
        os.chown(vm_dir, *qemu_ids())
        served = tuple(self._serve(point, disk.name, vm_dir) for disk in point.disks)
        xml = self._lab_xml(point, name, vm_dir, served)
        taps = [labnet.tap_name(self.id, self._next_tap()) for _ in domain_interfaces(xml)]
        for tap in taps:
            labnet.make_tap(tap)
        xml = onto_taps(xml, taps)
        self.progress.note(f"{name}: booting restore point {point.id[:12]} in lab {self.id}")
        domain = self.host.create_transient(xml, paused=True)
        self._stack.callback(_destroy, domain)
        for tap in taps:
            labnet.move_tap_into_lab(tap, self.netns)
        domain.resume()
        vm = LabVm(
            name,
            point,
            domain,
            AgentChannel(domain),
            tuple(i.mac or "" for i in domain_interfaces(xml)),
            tuple(i.mac for i in domain_interfaces(point.config["domain.xml"])),
            vm_dir / "console.log",
            served,
            time.monotonic(),
        )
        vm.event("started (CPUs running, NICs in the lab)")
        self.vms.append(vm)
        return vm

    def _next_tap(self) -> int:
        self._taps += 1
        return self._taps - 1

    def _serve(self, point: Manifest, disk: str, vm_dir: Path) -> ServedDisk:
        workdir = vm_dir / f"{disk}.nbd"
        workdir.mkdir(mode=0o700)
        served = self._stack.enter_context(
            serve_disk(self.repo, point.id, disk, workdir=workdir, client=qemu_ids())
        )
        overlay = vm_dir / f"{disk}.qcow2"
        create_overlay(overlay, served.uri, served.size)
        os.chown(overlay, *qemu_ids())
        return served

    def _lab_xml(
        self, point: Manifest, name: str, vm_dir: Path, served: tuple[ServedDisk, ...]
    ) -> str:
        xml = point.config["domain.xml"]
        held = {s.disk for s in served}
        placements = tuple(
            DiskPlacement(s.disk, str(vm_dir / f"{s.disk}.qcow2"), "qcow2", str(s.socket))
            for s in served
        )
        logs = {old: str(vm_dir / "console.log") for old in chardev_files(xml)[:1]}
        logs.update(
            {old: str(vm_dir / f"chardev{n}.log") for n, old in enumerate(chardev_files(xml)[1:])}
        )
        nvram = None
        if "nvram.b64" in point.config:
            nvram = vm_dir / "VARS.fd"
            nvram.write_bytes(base64.b64decode(point.config["nvram.b64"]))
            os.chown(nvram, *qemu_ids())
        return rewrite_domain(
            xml,
            DomainRewrite(
                name=f"{DOMAIN_PREFIX}{self.id}-{name}",
                uuid=str(uuid.uuid4()),
                macs=tuple(new_mac() for _ in domain_interfaces(xml)),
                new_genid=True,
                disks=placements,
                drop_disks=tuple(d for d in writable_disks(xml) if d not in held),
                chardev_files=logs,
                nvram=str(nvram) if nvram else None,
            ),
        )

    def close(self) -> list[str]:
        """Stop every VM, then every server; the namespace goes last."""
        notes: list[str] = []
        try:
            self._stack.close()
        except SuretyError as exc:
            notes.append(f"lab teardown: {exc}")
        labnet.delete_lab_network(self.id, labnet.host_taps(self.id))
        return notes


def _destroy(domain: HypervisorDomain) -> None:
    with suppress(SuretyError):
        domain.destroy()


@contextmanager
def open_lab(
    host: HypervisorHost, repo: Repository, progress: Progress, root: Path = LAB_ROOT
) -> Iterator[Lab]:
    """A new, empty lab; everything in it is gone when the block ends."""
    notes: list[str] = []
    with run_directory(notes, root, "verification") as run_dir:
        for note in notes + reap_dead_labs(host, root):
            progress.note(note)
        for path in (root.parent, root, run_dir):
            path.chmod(path.stat().st_mode & 0o7777 | 0o111)  # QEMU's user reaches the overlays
        lab_id = secrets.token_hex(4)
        (run_dir / "lab-id").write_text(lab_id)
        lab = Lab(host, repo, run_dir, lab_id, progress)
        try:
            labnet.create_lab_network(lab_id)
            yield lab
        finally:
            for note in lab.close():
                progress.note(note)


def reap_dead_labs(host: HypervisorHost, root: Path = LAB_ROOT) -> list[str]:
    """Remove the VMs, namespaces and taps of labs whose process is gone.

    Candidates are listed *before* the live labs are read: a lab writes its id
    before it makes anything, so whatever a live lab made is known as live.
    """
    notes = reap_dead_runs(root, "verification")
    domains = [n for n in host.domain_names() if n.startswith(DOMAIN_PREFIX)]
    candidates = {n[len(DOMAIN_PREFIX) :].partition("-")[0] for n in domains}
    candidates |= set(labnet.lab_namespaces()) | labnet.host_tap_lab_ids()
    live = {_lab_id(p) for p in root.glob("*.*.*")} if root.is_dir() else set()
    dead = candidates - live
    for name in domains:
        if name[len(DOMAIN_PREFIX) :].partition("-")[0] in dead:
            with suppress(SuretyError):
                host.domain(name).destroy()
    for lab_id in sorted(dead):
        with suppress(ValueError):
            labnet.delete_lab_network(lab_id, labnet.host_taps(lab_id))
    if dead:
        notes.append(f"cleaned up after interrupted lab(s): {', '.join(sorted(dead))}")
    return notes


def _lab_id(run_dir: Path) -> str:
    with suppress(OSError):
        return (run_dir / "lab-id").read_text().strip()
    return ""
