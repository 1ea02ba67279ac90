"""Full VM restore: a whole VM from a restore point, in place or as a clone.

* ``plan`` (pure) - identity (``in-place`` | ``clone``), disk placement,
  networks, the VMs in the way: everything that can refuse a restore, decided
  from the point and facts read beforehand. Instant recovery plans with it too.
* ``run`` - ``restore_vm``: plan and check, write every disk (``restore.image``)
  and the NVRAM/TPM state under temporary names, switch over, then the hooks.
* ``switch`` - the switch-over, the only step that changes the host; each step
  pushes its undo, a failure undoes in reverse order.
* ``hooks`` - the ``RestoreHook`` port: what a hook sees of the restored VM
  (``RestoredVm``) and when it runs (before first boot, after boot).

Invariants: nothing is written before the plan and the checks pass; a
failure before the switch-over leaves the host unchanged, one during it is
undone (the replaced VM defined again, its files back).

Must not know: restore mode or application restore procedures (they plug in
as hooks given by the caller: ``restore.mode``), the CLI.
"""

from surety.restore.vm.hooks import RestoredDisk, RestoredNic, RestoredVm, RestoreHook
from surety.restore.vm.plan import (
    CLONE,
    IN_PLACE,
    TargetFacts,
    VmRestoreOptions,
    VmRestorePlan,
    plan_vm_restore,
    resolve_identity,
)
from surety.restore.vm.run import VmRestoreResult, restore_vm

__all__ = [
    "CLONE",
    "IN_PLACE",
    "RestoreHook",
    "RestoredDisk",
    "RestoredNic",
    "RestoredVm",
    "TargetFacts",
    "VmRestoreOptions",
    "VmRestorePlan",
    "VmRestoreResult",
    "plan_vm_restore",
    "resolve_identity",
    "restore_vm",
]
