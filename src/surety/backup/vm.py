"""``surety backup vm``: back up a running libvirt VM at one instant.

Flow (DESIGN.md "Backup flow"): plan -> freeze (file-system level, bounded
window, guarded from outside the process) -> snapshot (libvirt pull-mode
backup with a new checkpoint) -> thaw (always) -> copy over NBD (allocated
extents for a full, the dirty bitmap for an incremental) -> commit. The
consistency level recorded is the one reached, with the reason.
"""

from __future__ import annotations

import base64
import os
import socket as socket_module
import time
from contextlib import suppress
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from surety.backup.chain import decide_chain
from surety.backup.pipeline import ChangedBlocks, DiskStats, backup_disk
from surety.core.errors import Interrupted, SourceError, UsageError
from surety.core.progress import Progress
from surety.hypervisor.domain import DomainInfo, parse_domain
from surety.hypervisor.guardian import Guardian
from surety.hypervisor.libvirt_host import GuestAgentError, LibvirtDomain, connect
from surety.hypervisor.nbd import NbdDisk
from surety.hypervisor.pullbackup import CHECKPOINT_PREFIX, PullBackup
from surety.repo.image import ImageIndex
from surety.repo.manifest import DiskRecord, Manifest
from surety.repo.repository import Repository
from surety.repo.writer import ChunkWriter

__all__ = ["VmBackupOptions", "backup_vm"]

DEFAULT_WORK_ROOT = Path(os.environ.get("SURETY_WORK_DIR", "/var/lib/surety/work"))


@dataclass(frozen=True)
class VmBackupOptions:
    domain: str
    uri: str = "qemu:///system"
    consistency: str = "filesystem"  # crash | filesystem | application
    on_quiesce_failure: str = "fail"  # fail | crash (fall back, recorded)
    full: bool = False
    freeze_window: float = 10.0
    work_root: Path = DEFAULT_WORK_ROOT
    threads: int | None = None


@dataclass
class Quiesce:
    level: str = "crash"
    reason: str = "no guest help requested"
    frozen_seconds: float | None = None
    filesystems: int = 0
    timings: dict[str, float] = field(default_factory=dict)


def backup_vm(repo: Repository, options: VmBackupOptions, progress: Progress) -> Manifest:
    if options.consistency == "application":
        raise UsageError(
            "--consistency application needs application writers, which this "
            "version does not have yet; use filesystem or crash"
        )
    if options.consistency not in ("crash", "filesystem"):
        raise UsageError(f"unknown consistency level {options.consistency!r}")
    host = connect(options.uri)
    try:
        domain = host.domain(options.domain)
        if not domain.is_running():
            raise SourceError(
                f"VM {options.domain!r} is not running (surety backs up running "
                "VMs through libvirt's backup API)"
            )
        with repo.lock(exclusive=False, operation=f"backup vm {options.domain}"):
            return _backup_locked(repo, host, domain, options, progress)
    finally:
        host.close()


@dataclass
class _Run:
    """One VM backup in progress: what every step needs, gathered once."""

    repo: Repository
    host: Any
    domain: LibvirtDomain
    options: VmBackupOptions
    progress: Progress
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    xml: str = ""

    def __post_init__(self) -> None:
        self.xml = self.domain.xml()
        self.info = parse_domain(self.xml)
        if not self.info.disks:
            raise SourceError(
                f"VM {self.info.name!r} has no disk surety can back up "
                f"({', '.join(self.info.skipped_disks) or 'none'})"
            )
        self.parent = next(
            (
                p
                for p in reversed(self.repo.points())
                if p.name == self.info.name and p.kind == "vm"
            ),
            None,
        )
        self.chain = decide_chain(self.parent, self.info, self.domain, force_full=self.options.full)
        # one checkpoint series per repository: jobs writing elsewhere keep their own chain
        self.checkpoint_prefix = f"{CHECKPOINT_PREFIX}{self.repo.config.id[:8]}-"
        self.checkpoint = f"{self.checkpoint_prefix}{self.started.strftime('%Y%m%dT%H%M%S%f')}"


def _backup_locked(
    repo: Repository, host: Any, domain: LibvirtDomain, options: VmBackupOptions, progress: Progress
) -> Manifest:
    run = _Run(repo, host, domain, options, progress)
    for note in run.chain.notes:
        progress.note(note)
    job = PullBackup(
        domain,
        [d.target for d in run.info.disks],
        list(run.info.all_targets),
        checkpoint=run.checkpoint,
        incremental=run.chain.incremental_from,
        work_root=options.work_root,
    )
    writer = ChunkWriter(repo)
    # The guardian outlives a killed job: it thaws the guest and ends the libvirt job.
    guardian = Guardian(domain.host.uri, domain.name, options.freeze_window)
    quiesce = Quiesce()
    committed = False
    try:
        exports = _snapshot(domain, job, guardian, options, progress, quiesce)
        images, stats = _copy(run, writer, exports)
        progress.phase("commit")
        writer.finish()
        manifest = _manifest(run, images, stats, quiesce)
        point_id = repo.commit(manifest)
        committed = True
    except KeyboardInterrupt:
        raise Interrupted("backup interrupted; nothing was committed") from None
    finally:
        if not committed:
            writer.abort()
        job.end()
        guardian.done()
        if not committed and job.started:
            _drop_checkpoint(domain, run.checkpoint)
    _prune_checkpoints(domain, prefix=run.checkpoint_prefix, keep=run.checkpoint)
    return replace(manifest, id=point_id)


def _snapshot(  # noqa: PLR0917 - the steps' collaborators, passed explicitly
    domain: LibvirtDomain,
    job: PullBackup,
    guardian: Guardian,
    options: VmBackupOptions,
    progress: Progress,
    quiesce: Quiesce,
) -> dict[str, Any]:
    """Freeze (if asked and possible), fix the point in time, thaw - always."""
    if options.consistency == "crash":
        progress.phase("snapshot")
        exports = job.begin()
        guardian.thawed()
        return exports
    progress.phase("freeze")
    try:
        domain.agent("guest-ping", timeout=5)
        frozen_at = time.monotonic()
        quiesce.filesystems = domain.fs_freeze(int(max(1, options.freeze_window)))
        freeze_done = time.monotonic()
    except GuestAgentError as exc:
        domain_thaw_quietly(domain)  # a partial freeze must not stay behind
        guardian.thawed()
        return _no_freeze(job, options, quiesce, f"guest agent: {exc}", progress)
    try:
        progress.phase("snapshot")
        exports = job.begin()
        snapshot_at = time.monotonic()
    finally:
        domain_thaw_quietly(domain)
        thawed_at = time.monotonic()
        guardian.thawed()
    quiesce.frozen_seconds = round(thawed_at - frozen_at, 3)
    quiesce.timings = {
        "freeze_call": round(freeze_done - frozen_at, 3),
        "snapshot": round(snapshot_at - freeze_done, 3),
        "thaw_call": round(thawed_at - snapshot_at, 3),
    }
    if snapshot_at - frozen_at > options.freeze_window:
        quiesce.level = "crash"
        quiesce.reason = (
            f"the snapshot came {snapshot_at - frozen_at:.1f} s after the freeze, beyond the "
            f"{options.freeze_window:g} s window (the guest was thawed on time)"
        )
    else:
        quiesce.level = "filesystem"
        quiesce.reason = (
            f"{quiesce.filesystems} guest file system(s) frozen through the "
            f"guest agent for {quiesce.frozen_seconds:.3f} s"
        )
    return exports


def _no_freeze(
    job: PullBackup, options: VmBackupOptions, quiesce: Quiesce, why: str, progress: Progress
) -> dict[str, Any]:
    if options.on_quiesce_failure != "crash":
        raise SourceError(
            f"cannot reach filesystem consistency: {why} "
            "(use --on-quiesce-failure crash to accept a crash-consistent point)"
        )
    progress.note(f"falling back to crash consistency: {why}")
    quiesce.level, quiesce.reason = "crash", f"fell back to crash consistency: {why}"
    progress.phase("snapshot")
    return job.begin()


def domain_thaw_quietly(domain: LibvirtDomain) -> None:
    # on failure the guardian retries; the level is decided from timings and its report
    with suppress(GuestAgentError):
        domain.fs_thaw()


def _copy(
    run: _Run, writer: ChunkWriter, exports: dict[str, Any]
) -> tuple[dict[str, ImageIndex], dict[str, DiskStats]]:
    images, stats = {}, {}
    for disk in run.info.disks:
        export = exports[disk.target]
        incremental = disk.target in run.chain.incremental_disks
        source = NbdDisk(
            export.socket, export.export, disk.target, export.bitmap if incremental else None
        )
        try:
            changed = _changed_blocks(run, source) if incremental else None
            images[disk.target], stats[disk.target] = backup_disk(
                run.repo,
                writer=writer,
                source=source,
                progress=run.progress,
                threads=run.options.threads,
                changed=changed,
            )
        finally:
            source.close()
    return images, stats


def _changed_blocks(run: _Run, source: NbdDisk) -> ChangedBlocks | None:
    record = run.parent.disk(source.name) if run.parent is not None else None
    if record is None:
        return None
    parent_image = run.repo.get_image(record.image)
    if parent_image.size != source.size:
        run.progress.note(f"{source.name} changed size since the last restore point: full read")
        return None
    return ChangedBlocks.from_extents(parent_image, source.dirty_extents())


def _manifest(
    run: _Run, images: dict[str, ImageIndex], stats: dict[str, DiskStats], quiesce: Quiesce
) -> Manifest:
    info = run.info
    disks = tuple(
        DiskRecord(
            d.target,
            images[d.target].size,
            run.repo.put_image(images[d.target]),
            d.source,
            dict(stats[d.target].__dict__),
        )
        for d in info.disks
    )
    config = {"domain.xml": run.xml}
    for network in info.networks:
        net_xml = run.host.network_xml(network)
        if net_xml:
            config[f"network/{network}.xml"] = net_xml
    config.update(_firmware_files(info))
    totals = {key: sum(s.__dict__[key] for s in stats.values()) for key in DiskStats().__dict__}
    return Manifest(
        name=info.name,
        kind="vm",
        started=run.started,
        finished=datetime.now(UTC),
        host=socket_module.gethostname(),
        disks=disks,
        consistency=quiesce.level,
        consistency_reason=quiesce.reason,
        config=config,
        parent=run.parent.id if run.parent else None,
        stats=totals,
        source={
            "hypervisor": "libvirt",
            "uuid": info.uuid,
            "checkpoint": run.checkpoint,
            "domain_type": info.domain_type,
            "skipped_disks": list(info.skipped_disks),
            "modes": run.chain.modes,
            "frozen_seconds": quiesce.frozen_seconds,
            "freeze_timings": quiesce.timings,
        },
    )


def _firmware_files(info: DomainInfo) -> dict[str, str]:
    files = {}
    if info.nvram and Path(info.nvram).is_file():
        files["nvram.b64"] = base64.b64encode(Path(info.nvram).read_bytes()).decode()
    tpm_dir = Path("/var/lib/libvirt/swtpm") / info.uuid
    if info.has_tpm and tpm_dir.is_dir():
        for path in sorted(tpm_dir.rglob("*")):
            if path.is_file():
                files[f"tpm/{path.relative_to(tpm_dir)}.b64"] = base64.b64encode(
                    path.read_bytes()
                ).decode()
    return files


def _drop_checkpoint(domain: LibvirtDomain, name: str) -> None:
    # a leftover checkpoint is harmless: the chain check ignores it
    with suppress(SourceError):
        domain.delete_checkpoint(name)


def _prune_checkpoints(domain: LibvirtDomain, prefix: str, keep: str) -> None:
    """Delete this repository's older checkpoints: only the newest committed one is needed."""
    for name in domain.checkpoint_names():
        if name.startswith(prefix) and name != keep:
            _drop_checkpoint(domain, name)
