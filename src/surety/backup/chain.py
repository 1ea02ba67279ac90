"""Changed-block tracking that can't lie: decide full or incremental.

An incremental is allowed only when every link holds: the newest restore
point of this VM is in the repository, it was taken of the same VM (UUID),
the libvirt checkpoint it recorded still exists, QEMU still has that
checkpoint's dirty bitmap and it is not marked inconsistent (e.g. after a
crash), and every disk has the size the restore point recorded. Otherwise
the backup reads everything (dedup keeps what it stores small) and says why.

The links hold the same whether the VM runs or is shut off (its backup then
runs on a QEMU started paused, see ``backup.shutoff``): libvirt keeps the
checkpoint metadata of an inactive VM and QEMU stores the bitmaps in the
qcow2 when it stops, so a chain goes on across starts and shutdowns. If
libvirt lost the metadata (the VM was undefined and defined again, or its
checkpoint files were removed) the checkpoint check fails and the backup is
full, with that reason.

Only qcow2 disks carry persistent dirty bitmaps: a raw disk is read whole at
every backup (deduplicated against the repository), and the note says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from surety.core.errors import SourceError
from surety.hypervisor.domain import DomainInfo
from surety.repo.manifest import Manifest

__all__ = ["ChainDecision", "decide_chain", "tracked_disks"]


class CheckpointView(Protocol):
    def checkpoint_names(self) -> list[str]: ...

    def qmp(self, command: str, arguments: dict[str, Any] | None = None) -> Any: ...


@dataclass
class ChainDecision:
    incremental_from: str | None = None
    incremental_disks: set[str] = field(default_factory=set)
    modes: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def decide_chain(
    parent: Manifest | None, info: DomainInfo, domain: CheckpointView, force_full: bool
) -> ChainDecision:
    reason = _why_not_incremental(parent, info, domain, force_full)
    decision = ChainDecision()
    untracked = [d.target for d in info.disks if d.target not in tracked_disks(info)]
    if untracked and parent is not None and not force_full:
        decision.notes.append(
            f"{', '.join(untracked)}: raw disk, no changed-block tracking (no persistent "
            "dirty bitmap): read whole at every backup, deduplicated"
        )
    if reason is not None:
        decision.modes = {d.target: "full" for d in info.disks}
        if parent is not None and not force_full:
            decision.notes.append(f"full backup instead of incremental: {reason}")
        return decision
    assert parent is not None
    decision.incremental_from = str(parent.source["checkpoint"])
    decision.incremental_disks = set(tracked_disks(info))
    decision.modes = {
        d.target: "incremental" if d.target in decision.incremental_disks else "full"
        for d in info.disks
    }
    return decision


def tracked_disks(info: DomainInfo) -> list[str]:
    """Targets whose changes a checkpoint can track: qcow2 disks (persistent bitmaps)."""
    return [d.target for d in info.disks if d.driver == "qcow2"]


def _why_not_incremental(  # noqa: PLR0911 - one return per broken link, in chain order
    parent: Manifest | None, info: DomainInfo, domain: CheckpointView, force_full: bool
) -> str | None:
    if force_full:
        return "--full was asked"
    if parent is None:
        return "first backup of this VM"
    checkpoint = parent.source.get("checkpoint")
    if parent.source.get("uuid") != info.uuid:
        return "the newest restore point was taken of another VM with this name (UUID differs)"
    if not checkpoint:
        return "the newest restore point has no checkpoint"
    if not tracked_disks(info):
        return "no qcow2 disk: raw disks have no changed-block tracking"
    if checkpoint not in domain.checkpoint_names():
        return (
            f"libvirt checkpoint {checkpoint} no longer exists (its metadata is gone: "
            "the VM was redefined, or it was deleted)"
        )
    bitmap_problem = _bitmap_problem(domain, str(checkpoint), len(tracked_disks(info)))
    if bitmap_problem:
        return bitmap_problem
    for disk in info.disks:
        record = parent.disk(disk.target)
        if record is None:
            return f"disk {disk.target} is new since the last restore point"
    return None


def _bitmap_problem(domain: CheckpointView, checkpoint: str, disks: int) -> str | None:
    try:
        nodes = domain.qmp("query-named-block-nodes", {"flat": True})
    except SourceError as exc:
        return f"cannot inspect dirty bitmaps ({exc})"
    found = [
        bitmap
        for node in nodes or []
        for bitmap in node.get("dirty-bitmaps", [])
        if bitmap.get("name") == checkpoint
    ]
    if len(found) < disks:
        return f"the dirty bitmap of checkpoint {checkpoint} is missing (VM restarted?)"
    if any(b.get("inconsistent") for b in found):
        return f"the dirty bitmap of checkpoint {checkpoint} is inconsistent (unclean shutdown?)"
    return None
