"""Application-aware restore: restore mode, then each application's restore procedure.

A ``RestoreHook`` for ``restore_vm`` (see ``restore.vm.hooks``):

before first boot
    the restore point's ``applications`` say which writers held an app at the
    snapshot; each that has a restore procedure (``quiesce.procedure``) names
    the systemd units to hold, and ``hold`` holds them offline on the
    restored disk (restore mode).
after boot
    wait for the guest agent; check the apps really are held; ``configure``
    every procedure (app down); lift the hold; ``start`` every procedure, which
    starts its app, does the online steps and proves its success.

The evidence (what was held, how long the boot took, what each procedure did
and saw) is kept in ``evidence`` for the restore result. A failure raises
``RestoreProcedureFailed`` with the application's own words; the VM is left
running in restore mode so an operator can look (never silently "fixed" or
discarded).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from surety.core.errors import RestoreProcedureFailed, SourceError, UsageError
from surety.core.progress import Progress
from surety.hypervisor.guest_agent import AgentChannel
from surety.hypervisor.port import GuestAgentError, HypervisorDomain
from surety.quiesce.procedure import (
    ProcedureFactory,
    RestoreRequest,
    load_procedures,
    request_role,
)
from surety.quiesce.writer import WriterFailed
from surety.repo.manifest import Manifest
from surety.restore.mode.hold import FLAG, hold_units_offline, lift_script
from surety.restore.vm import RestoredVm

__all__ = ["AppRestoreOptions", "ApplicationRestore", "application_restore"]


@dataclass(frozen=True)
class AppRestoreOptions:
    naive: bool = False  # boot the image as it is
    role: str | None = None  # replica|standby|primary|source; default by --partner
    partner: str | None = None
    settings: Mapping[str, str] = field(default_factory=dict)  # "writer.option" -> value


def application_restore(
    point: Manifest,
    options: AppRestoreOptions,
    *,
    vm_name: str | None,
    start: bool,
    progress: Progress,
) -> ApplicationRestore | None:
    """The restore hook for the applications ``point`` recorded, or None (naive, or none)."""
    if options.naive:
        if options.role or options.partner or options.settings:
            raise UsageError(
                "--naive boots the image as it is: --role/--partner/--set belong to the "
                "application-aware restore"
            )
        return None
    if not load_procedures(point.applications):
        if options.role or options.partner:
            raise UsageError(
                f"restore point {point.id[:12]} holds no application with a restore "
                "procedure: --role/--partner do not apply"
            )
        return None
    if not start:
        raise UsageError(
            "the application-aware restore runs at first boot: add --start "
            "(or --naive to define the VM with the image as it is)"
        )
    role = request_role(options.role, options.partner)
    request = RestoreRequest(
        point.id, vm_name or point.name, role, options.partner, dict(options.settings), options.role
    )
    return ApplicationRestore(request, progress)


class ApplicationRestore:
    """Restore mode + application restore procedures, as one restore hook."""

    def __init__(self, request: RestoreRequest, progress: Progress, boot_timeout: float = 600):
        self.request, self.progress, self.boot_timeout = request, progress, boot_timeout
        self.factories: dict[str, ProcedureFactory] = {}
        self.units: list[str] = []
        self.evidence: dict[str, Any] = {"restore_mode": None, "procedures": {}}

    def before_first_boot(self, vm: RestoredVm, domain: HypervisorDomain) -> None:
        self.factories = load_procedures(vm.applications)
        if not self.factories:
            self.evidence["restore_mode"] = {
                "held": [],
                "note": "no application with a restore procedure was held at the snapshot",
            }
            return
        self.units = sorted({u for f in self.factories.values() for u in f.hold_units})
        self.progress.phase(f"restore mode: holding {', '.join(self.units)}")
        notes: list[str] = []
        where = hold_units_offline(vm.disks, self.units, vm.point, notes)
        for note in notes:
            self.progress.note(note)
        self.evidence["restore_mode"] = {"held": self.units, "on": where}

    def after_boot(self, vm: RestoredVm, domain: HypervisorDomain) -> None:
        if not self.factories:
            return
        try:
            self._run_procedures(vm, domain)
        except SourceError as exc:  # WriterFailed, agent errors
            self.evidence["failed"] = str(exc)
            raise RestoreProcedureFailed(
                f"VM {vm.name} is restored and running, but its application restore failed: "
                f"{exc} (the VM is left as it is for inspection; restore again when fixed)"
            ) from exc

    def _run_procedures(self, vm: RestoredVm, domain: HypervisorDomain) -> None:
        guest = AgentChannel(domain)
        self.progress.phase("restore mode: waiting for the guest agent")
        booted = self._wait_agent(guest)
        mode = self.evidence["restore_mode"]
        mode["agent_after_seconds"] = round(booted, 1)
        mode["held_at_boot"] = self._held(guest)
        procedures = {
            name: factory(guest, vm.applications[name], self.request)
            for name, factory in self.factories.items()
        }
        for name, procedure in procedures.items():
            self.progress.phase(f"{name}: restore procedure (application held)")
            procedure.configure()
        lifted = guest.run(["sh", "-c", lift_script(self.units)], timeout=120)
        if not lifted.ok:
            raise SourceError(f"restore mode: cannot lift the hold: {lifted.text()}")
        mode["lifted"] = True
        for name, procedure in procedures.items():
            self.progress.phase(f"{name}: starting and checking")
            self.evidence["procedures"][name] = procedure.start()

    def _wait_agent(self, guest: AgentChannel) -> float:
        start = time.monotonic()
        while True:
            try:
                guest.ping(timeout=5)
                return time.monotonic() - start
            except GuestAgentError:
                if time.monotonic() - start > self.boot_timeout:
                    raise
                time.sleep(1)

    def _held(self, guest: AgentChannel) -> bool:
        """The flag is there and no held unit (nor an instance of a held template) runs."""
        patterns = " ".join(u.replace("@.", "@*.") for u in self.units)
        probe = guest.run(
            [
                "sh",
                "-c",
                f"test -e /{FLAG} && echo flag; "
                f"systemctl list-units --state=active --no-legend --plain {patterns}",
            ],
            timeout=60,
        )
        lines = probe.stdout.decode(errors="replace").split("\n")
        active = [line.split()[0] for line in lines[1:] if line.strip()]
        if lines[0] != "flag" or active:
            raise WriterFailed(
                ", ".join(self.factories),
                "restore mode did not hold the application(s) at boot "
                f"(hold flag {'present' if lines[0] == 'flag' else 'missing'}; "
                f"active: {', '.join(active) or 'none'})",
            )
        return True
