"""An existing instant VM, taken for one command: what finish, abort and resume open with.

``open_instant_vm`` takes the VM's ``flock`` (``state.working_on``: one command
at a time, dropped by the kernel with a killed holder), re-reads the record
under it - as the previous command left it, not as it was before the lock -
and finds the VM's domain on the caller's host. ``OpenInstantVm.finished``
says whether the VM is a normal VM now: recorded as finished, or defined
persistently by a finish that was killed before it recorded that.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from surety.core.errors import UsageError
from surety.hypervisor.port import HypervisorDomain, HypervisorHost
from surety.restore.instant.plan import disk_states
from surety.restore.instant.state import FINISHED, InstantVm, load_instant_vm, working_on

__all__ = ["OpenInstantVm", "find_instant_domain", "load_record", "open_instant_vm"]


@dataclass(frozen=True)
class OpenInstantVm:
    record: InstantVm  # re-read under the lock
    domain: HypervisorDomain | None  # None: no such domain (the transient VM stopped)

    @property
    def finished(self) -> bool:
        """Defined persistently by a finish: only cleanup is left, and it is a normal VM."""
        if self.record.phase == FINISHED:
            return True
        return self.domain is not None and self.domain.is_persistent()


@contextmanager
def open_instant_vm(root: Path, name: str, host: HypervisorHost) -> Iterator[OpenInstantVm]:
    """The instant VM ``name`` on ``host`` for one command (see the module's docstring)."""
    with working_on(load_record(root, name)):
        record = load_record(root, name)  # as the previous command left it
        yield OpenInstantVm(record, find_instant_domain(host, record))


def load_record(root: Path, name: str) -> InstantVm:
    record = load_instant_vm(root, name)
    if record is None:
        raise UsageError(f"no instant VM named {name} (`surety instant-recover list`)")
    return record


def find_instant_domain(host: HypervisorHost, record: InstantVm) -> HypervisorDomain | None:
    """The instant VM's domain: its name, and its UUID once known."""
    domain = host.find_domain(name=record.name)
    if domain is None:
        return None
    if record.uuid and domain.uuid() != record.uuid:
        return None
    if not record.uuid:  # killed before the UUID was recorded: it must run on our overlays
        overlays = {d.overlay for d in record.disks}
        if not overlays & {s.source for s in disk_states(domain.xml()).values()}:
            return None
    return domain
