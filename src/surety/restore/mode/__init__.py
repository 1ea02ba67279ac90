"""Restore mode: the first boot of a restored VM with its applications held back, so
each application's restore procedure runs before the application serves.

The Linux counterpart of booting a domain controller into Directory Services
Restore Mode. Plugged into a full VM restore as a ``restore.vm`` hook
(``ApplicationRestore``, made by ``application_restore`` unless ``--naive``):

* ``hold`` - offline, before the first boot: the restored disk is opened
  writable (qemu-storage-daemon, a loop device), and the held applications'
  systemd units get a drop-in that skips them while a flag file exists.
* ``procedures`` - the hook: which writers' restore procedures apply (the
  point's ``applications``, ``quiesce.procedure``), the hold before first
  boot; after boot, check the hold, ``configure`` each procedure, lift the
  hold, ``start`` each and keep its evidence.

Invariants: the held applications never start before their procedure ran;
nothing is written through a symlink of the guest's file system; a failure
is ``RestoreProcedureFailed`` and leaves the VM running for inspection.

Must not know: how the VM was restored (it sees ``RestoredVm`` only),
instant recovery, the CLI. Procedures act on the guest only through the
``GuestChannel``.
"""

from surety.restore.mode.procedures import (
    ApplicationRestore,
    AppRestoreOptions,
    application_restore,
)

__all__ = ["AppRestoreOptions", "ApplicationRestore", "application_restore"]
