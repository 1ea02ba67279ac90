"""libvirt pull-mode backup: fix a point in time, export it over NBD.

``backupBegin`` with ``mode='pull'`` makes QEMU fleece every disk (copy-before-
write into a scratch overlay) and serve the point-in-time view over an NBD
UNIX socket; a checkpoint created in the same call starts a new dirty bitmap
per disk. An incremental names the previous checkpoint: the export then also
carries ``qemu:dirty-bitmap:backup-<disk>`` with the blocks changed since.
Taking the point in time costs milliseconds; reading happens afterwards while
the guest runs on. ``end()`` (always, in ``finally``) stops the job, which
drops the exports and scratch files.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from surety.hypervisor.port import BackupSource

__all__ = ["Export", "PullBackup", "backup_xml", "checkpoint_xml"]

CHECKPOINT_PREFIX = "surety-"


@dataclass(frozen=True)
class Export:
    target: str
    socket: str
    export: str
    bitmap: str | None


def checkpoint_xml(name: str, targets: list[str], all_targets: list[str]) -> str:
    """A new checkpoint with a bitmap on ``targets`` (qcow2 disks only: a raw disk
    cannot hold one) and none on the other disks of ``all_targets``."""
    root = ET.Element("domaincheckpoint")
    ET.SubElement(root, "name").text = name
    ET.SubElement(root, "description").text = "surety: changed-block tracking since this backup"
    disks = ET.SubElement(root, "disks")
    for target in all_targets:
        ET.SubElement(
            disks, "disk", name=target, checkpoint="bitmap" if target in targets else "no"
        )
    return ET.tostring(root, encoding="unicode")


def backup_xml(
    socket: str,
    targets: list[str],
    all_targets: list[str],
    incremental: str | None,
    scratch_dir: str,
    *,
    full_targets: tuple[str, ...] = (),
) -> str:
    """The pull-mode job; with ``incremental``, the disks in ``full_targets`` (raw
    disks, untracked) are still exported whole (``backupmode='full'``)."""
    root = ET.Element("domainbackup", mode="pull")
    if incremental:
        ET.SubElement(root, "incremental").text = incremental
    ET.SubElement(root, "server", transport="unix", socket=socket)
    disks = ET.SubElement(root, "disks")
    for target in all_targets:
        if target not in targets:
            ET.SubElement(disks, "disk", name=target, backup="no")
            continue
        disk = ET.SubElement(
            disks, "disk", name=target, backup="yes", type="file", exportname=target
        )
        if incremental and target in full_targets:
            disk.set("backupmode", "full")
        elif incremental:
            disk.set("exportbitmap", f"backup-{target}")
        ET.SubElement(disk, "scratch", file=f"{scratch_dir}/{target}.scratch.qcow2")
    return ET.tostring(root, encoding="unicode")


class PullBackup:
    """One libvirt backup job; ``begin`` is the point in time, ``end`` always follows."""

    def __init__(
        self,
        domain: BackupSource,
        targets: list[str],
        all_targets: list[str],
        *,
        checkpoint: str,
        incremental: str | None,
        work_root: Path,
        tracked: list[str] | None = None,
    ) -> None:
        self.domain, self.targets, self.all_targets = domain, targets, all_targets
        self.tracked = targets if tracked is None else tracked  # disks with bitmaps
        self.checkpoint, self.incremental = checkpoint, incremental
        work_root.mkdir(parents=True, exist_ok=True)
        # QEMU (often running as libvirt-qemu) must create the socket and scratch files here.
        self.workdir = Path(tempfile.mkdtemp(prefix="job-", dir=work_root))
        os.chmod(self.workdir, 0o777)  # noqa: S103 - private per-job dir; QEMU's uid must write
        self.socket = str(self.workdir / "nbd.sock")
        self.started = False

    def begin(self) -> dict[str, Export]:
        self.domain.backup_begin(
            backup_xml(
                self.socket,
                self.targets,
                self.all_targets,
                self.incremental,
                str(self.workdir),
                full_targets=tuple(t for t in self.targets if t not in self.tracked),
            ),
            checkpoint_xml(self.checkpoint, self.tracked, self.all_targets),
        )
        self.started = True
        return {
            t: Export(
                t,
                self.socket,
                t,
                f"backup-{t}" if self.incremental and t in self.tracked else None,
            )
            for t in self.targets
        }

    def end(self) -> None:
        try:
            if self.started and self.domain.has_job():
                self.domain.abort_job()
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)
