"""The snapshot provider port: what fixes a VM's point in time for the requester.

A provider's ``begin`` runs inside the freeze window, after every writer
froze its application and the guest file systems were frozen, and before
anything is thawed; it must take milliseconds, not copy data (libvirt
pull-mode backup with a new checkpoint: ``hypervisor.pullbackup``; QEMU
fleecing). It returns the handles the copy step reads from. A failure raises
(the requester thaws in ``finally`` either way). Knows nothing of libvirt.
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["SnapshotProvider"]


class SnapshotProvider(Protocol):
    """Fixes the point in time (milliseconds, not a copy); ``begin`` returns its handles."""

    def begin(self) -> Any: ...
