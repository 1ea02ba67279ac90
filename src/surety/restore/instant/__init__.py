"""Instant recovery: run a VM straight from a restore point, then move it to production.

* ``start`` - ``start_instant``: per disk a detached NBD server
  (``restore.export``) and a local qcow2 overlay over its export; the VM runs
  *transient* on the overlays, planned like a full VM restore
  (``restore.vm.plan``: identity, MACs, networks).
* ``finish`` - ``finish_instant``: per disk a block copy to ``--storage DIR``,
  pivot once the mirror is ready, then define the VM persistently, stop the
  servers and delete the overlays; ``abort_instant``; ``instant_status``.
* ``resume`` - ``resume_instant``: start a stopped instant VM again from its
  saved live XML (dead servers restarted on the same sockets).
* ``control`` - what finish, abort and resume open with: the VM's lock, its
  record re-read under it, its domain on the caller's host.
* ``state`` - the record ``<root>/NAME/state.json`` (atomic writes, the
  per-VM ``flock``); ``plan`` - the pure XML work (overlays, copies, finished
  and resumed domains, disk states).

Invariant (DESIGN.md, instant recovery): at every instant the guest's writes
are in the file QEMU uses - the overlay until the pivot of its disk, the
copy after it - and there is either the running instant VM or the finished
VM. Every step is recorded before the next, so a rerun after a kill goes on
from what the VM shows; finish, abort and resume need no passphrase (resume
only to restart a dead server).

Must not know: file-level restore, restore mode, the lab, the CLI.
"""

from surety.restore.instant.finish import (
    FinishOptions,
    FinishResult,
    InstantStatus,
    abort_instant,
    finish_instant,
    instant_status,
)
from surety.restore.instant.resume import ResumeOptions, resume_instant
from surety.restore.instant.start import DEFAULT_ROOT, InstantOptions, InstantResult, start_instant
from surety.restore.instant.state import InstantDisk, InstantVm

__all__ = [
    "DEFAULT_ROOT",
    "FinishOptions",
    "FinishResult",
    "InstantDisk",
    "InstantOptions",
    "InstantResult",
    "InstantStatus",
    "InstantVm",
    "ResumeOptions",
    "abort_instant",
    "finish_instant",
    "instant_status",
    "resume_instant",
    "start_instant",
]
