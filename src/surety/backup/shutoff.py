"""Backups of shut-off VMs: what their disks are worth, and holding QEMU paused.

A policy covers a VM whether it runs or not. A shut-off VM's disks are read
without the guest OS running: the VM is started *paused* (its QEMU opens the
disks and serves them, its CPUs never run a guest instruction), the same
libvirt pull-mode backup as for a running VM fixes a point in time with a new
checkpoint, the copy reads it over NBD, and the VM is powered off again
(``destroy``) as soon as the copy ends - before the commit.

Why paused QEMU and not ``qemu-nbd``/``qemu-storage-daemon`` on the qcow2 while
the domain stays off (measured on the test guest, docs/backup.md "Shut-off
VMs"): both read the same bytes, and the paused start costs well under a
second before the first byte under TCG; but only libvirt keeps the
checkpoint metadata and the qcow2 persistent bitmaps in step, so a chain
made while the VM runs continues while it is off and the other way round
with one code path (``backup.chain``), and libvirt refuses to start a VM
whose backup holds it ("domain is already active") instead of letting a
guest boot on disks that another process has open.

Invariants:

* the VM is never left running or paused after the backup: powered off in
  ``finally``, and by the guardian (``hypervisor.guardian``, told
  ``started-paused`` before the start) if the job dies - only while it still
  runs paused, so a VM someone resumed is not touched;
* the consistency recorded comes from libvirt's shut-off reason, never from
  the policy's wanted level (there is no guest to quiesce): ``shutdown`` ->
  ``filesystem``; anything else -> ``crash`` with the reason. Powering the VM
  off after the backup makes libvirt say ``destroyed`` afterwards, so a later
  backup of the still unchanged disks keeps the level of the point it equals.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass

from surety.core.errors import SuretyError
from surety.hypervisor.guardian import Guardian
from surety.hypervisor.port import HypervisorDomain

__all__ = ["CLEAN_SHUTDOWN", "Held", "consistency_when_off", "hold_paused"]

CLEAN_SHUTDOWN = (
    "shut off cleanly by the guest (libvirt: shutdown): file systems and applications were stopped"
)

_CRASH_REASONS = {
    "destroyed": "powered off from the host without a guest shutdown (libvirt: destroyed)",
    "crashed": "the guest crashed (libvirt: crashed)",
    "failed": "QEMU failed to start or ended with an error (libvirt: failed)",
    "unknown": (
        "libvirt does not know how it stopped (libvirt: unknown; libvirt keeps the "
        "reason in memory only, so it says unknown after libvirtd restarts or for a "
        "VM never started since it was defined)"
    ),
}


def consistency_when_off(reason: str | None) -> tuple[str, str]:
    """(level, why) of a shut-off VM's disks, from libvirt's shut-off reason."""
    if reason == "shutdown":
        return "filesystem", CLEAN_SHUTDOWN
    why = _CRASH_REASONS.get(
        str(reason), f"libvirt reports the shut-off reason {reason!r}: no clean shutdown is known"
    )
    return "crash", f"shut off, {why}"


@dataclass
class Held:
    """A shut-off VM started paused for its backup; ``release`` powers it off (once)."""

    domain: HypervisorDomain
    guardian: Guardian
    released: bool = False

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        try:
            if self.domain.is_running():
                self.domain.destroy()
        finally:
            self.guardian.released()


@contextmanager
def hold_paused(domain: HypervisorDomain, guardian: Guardian) -> Iterator[Held]:
    """Start the shut-off ``domain`` paused; powered off again when the block ends
    (or earlier, by ``Held.release``), whatever happened inside it."""
    guardian.started_paused()  # first: a job killed right after the start is covered
    domain.start(paused=True)
    held = Held(domain, guardian)
    try:
        yield held
    except BaseException:
        with suppress(SuretyError):  # the first error is the one to report
            held.release()
        raise
    held.release()
