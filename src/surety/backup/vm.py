"""``surety backup vm``: back up a libvirt VM at one instant, running or shut off.

Flow (DESIGN.md "Backup flow"): plan -> freeze (file-system level, bounded
window, guarded from outside the process) -> snapshot (libvirt pull-mode
backup with a new checkpoint) -> thaw (always) -> copy over NBD (allocated
extents for a full, the dirty bitmap for an incremental) -> commit. The
consistency level recorded is the one reached, with the reason.

A shut-off VM (``backup.shutoff``) is started paused for the snapshot and the
copy - no guest code runs, nothing is quiesced - and powered off again as soon
as the copy ends; its level comes from libvirt's shut-off reason.
"""

from __future__ import annotations

import base64
import os
import socket as socket_module
import time
import uuid
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from surety.backup.chain import decide_chain, tracked_disks
from surety.backup.pipeline import ChangedBlocks, DiskStats, backup_disk
from surety.backup.shutoff import consistency_when_off, hold_paused
from surety.core.errors import Interrupted, SourceError, UsageError
from surety.core.progress import Progress
from surety.hypervisor.domain import DomainInfo, parse_domain
from surety.hypervisor.guardian import Guardian
from surety.hypervisor.guest_agent import AgentChannel, guest_network
from surety.hypervisor.nbd import NbdDisk
from surety.hypervisor.port import BackupSource, HypervisorDomain, HypervisorHost
from surety.hypervisor.pullbackup import CHECKPOINT_PREFIX, PullBackup
from surety.quiesce.coordinator import LEVELS, Quiesced, QuiescePolicy, Requester
from surety.quiesce.writer import APPLICATION, QuiesceJob, load_writers
from surety.repo.image import ImageIndex
from surety.repo.manifest import DiskRecord, Manifest
from surety.repo.repository import Repository
from surety.repo.writer import ChunkWriter

__all__ = ["VmBackupOptions", "VmBackupResult", "backup_vm"]

BASE_WRITERS = ["script", "fsfreeze"]  # always offered; app writers only for "application"
DEFAULT_WORK_ROOT = Path(os.environ.get("SURETY_WORK_DIR", "/var/lib/surety/work"))


@dataclass(frozen=True)
class VmBackupOptions:
    domain: str
    consistency: str = "filesystem"  # crash | filesystem | application
    on_quiesce_failure: str = "fail"  # fail | filesystem | crash: lowest level accepted
    full: bool = False
    freeze_window: float = 10.0
    work_root: Path = DEFAULT_WORK_ROOT
    threads: int | None = None
    truncate_logs: str = "never"  # never | after-commit | after-verify
    writers: tuple[str, ...] | None = None  # application writers to use (default: all)
    pre_freeze: str | None = None
    post_thaw: str | None = None
    after_commit: str | None = None
    script_failure: str = "fail"  # fail | ignore
    settings: Mapping[str, str] = field(default_factory=dict)  # "writer.option" -> value


@dataclass(frozen=True)
class VmBackupResult:
    point: Manifest
    log_truncation: dict[str, Any]  # per writer, what after-commit did
    after_commit_error: str | None = None  # a required after-commit script failed


def backup_vm(
    repo: Repository, options: VmBackupOptions, progress: Progress, *, host: HypervisorHost
) -> VmBackupResult:
    """Back up ``options.domain`` of ``host`` (the caller's, left open)."""
    _validate(options)
    domain = host.domain(options.domain)
    with repo.lock(exclusive=False, operation=f"backup vm {options.domain}"):
        if not domain.is_running():
            return _backup_shut_off(repo, host, domain, options, progress)
        return _backup_locked(repo, host, domain, options, progress)


def _validate(options: VmBackupOptions) -> None:
    if options.consistency not in LEVELS:
        raise UsageError(f"unknown consistency level {options.consistency!r}")
    if options.on_quiesce_failure not in ("fail", *LEVELS):
        raise UsageError(f"unknown --on-quiesce-failure {options.on_quiesce_failure!r}")
    floor = options.on_quiesce_failure
    if floor != "fail" and LEVELS.index(floor) > LEVELS.index(options.consistency):
        raise UsageError(
            f"--on-quiesce-failure {floor} is above --consistency {options.consistency}"
        )
    if options.truncate_logs not in ("never", "after-commit", "after-verify"):
        raise UsageError(f"unknown --truncate-logs {options.truncate_logs!r}")


@dataclass
class _Run:
    """One VM backup in progress: what every step needs, gathered once."""

    repo: Repository
    host: HypervisorHost
    domain: HypervisorDomain
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
        self.token = uuid.uuid4().hex  # this job's marker rows carry it


def _backup_locked(
    repo: Repository,
    host: HypervisorHost,
    domain: HypervisorDomain,
    options: VmBackupOptions,
    progress: Progress,
) -> VmBackupResult:
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
        tracked=tracked_disks(run.info),
    )
    writer = ChunkWriter(repo)
    requester = _requester(run, job)
    # The guardian outlives a killed job: it thaws the guest and ends the libvirt job.
    guardian = Guardian(host.uri, domain.name, options.freeze_window)
    committed = False
    try:
        quiesced = requester.snapshot(guardian)
        for warning in quiesced.warnings:
            progress.note(f"warning: {warning}")
        images, stats = _copy(run, writer, quiesced.snapshot)
        progress.phase("commit")
        writer.finish()
        manifest = _manifest(run, images, stats, quiesced, requester.records())
        point_id = repo.commit(manifest)
        committed = True
        # only now, with the restore point durable, may writers truncate logs
        truncation = _after_commit(run, requester, point_id)
    except KeyboardInterrupt:
        raise Interrupted("backup interrupted; nothing was committed") from None
    finally:
        if not committed:
            writer.abort()
        job.end()
        guardian.done()
        requester.cleanup()
        if not committed and job.started:
            _drop_checkpoint(domain, run.checkpoint)
    _prune_checkpoints(domain, prefix=run.checkpoint_prefix, keep=run.checkpoint)
    required = [
        str(t.get("detail")) for t in truncation.values() if t.get("required") and not t["done"]
    ]
    return VmBackupResult(replace(manifest, id=point_id), truncation, "; ".join(required) or None)


def _backup_shut_off(
    repo: Repository,
    host: HypervisorHost,
    domain: HypervisorDomain,
    options: VmBackupOptions,
    progress: Progress,
) -> VmBackupResult:
    """Back up a shut-off VM on its QEMU started paused; powered off after the copy."""
    reason = domain.shutoff_reason()
    level, why = consistency_when_off(reason)
    progress.note(f"{domain.name} is shut off: its disks are read with the guest not running")
    if options.consistency != level:
        progress.note(
            f"consistency {level}, not the {options.consistency} asked: no guest to quiesce ({why})"
        )
    writer = ChunkWriter(repo)
    guardian = Guardian(host.uri, domain.name, options.freeze_window)
    job: PullBackup | None = None
    committed = False
    try:
        with hold_paused(domain, guardian) as held:
            started = time.monotonic()
            run = _Run(repo, host, domain, options, progress)  # chain checked on the paused QEMU
            for note in run.chain.notes:
                progress.note(note)
            keep = run.chain.incremental_from or ""
            _prune_checkpoints(domain, prefix=run.checkpoint_prefix, keep=keep)
            job = PullBackup(
                domain,
                [d.target for d in run.info.disks],
                list(run.info.all_targets),
                checkpoint=run.checkpoint,
                incremental=run.chain.incremental_from,
                work_root=options.work_root,
                tracked=tracked_disks(run.info),
            )
            progress.phase("snapshot")
            exports = job.begin()
            images, stats = _copy(run, writer, exports)
            job.end()
            held.release()  # as soon as the copy ends: the admin may start the VM again
            held_seconds = round(time.monotonic() - started, 3)
        level, why = _unchanged_level(run, images, level, why)
        progress.phase("commit")
        writer.finish()
        extra = {
            "power": "shut off",
            "shutoff_reason": reason,
            "paused_seconds": held_seconds,
            # the guest's addresses when it last ran (for the lab), from the parent
            "guest_network": run.parent.source.get("guest_network", []) if run.parent else [],
        }
        manifest = _manifest(run, images, stats, Quiesced(level, why), {}, extra)
        point_id = repo.commit(manifest)
        committed = True
    except KeyboardInterrupt:
        raise Interrupted("backup interrupted; nothing was committed") from None
    finally:
        if not committed:
            writer.abort()
        if job is not None:
            with suppress(SourceError):
                job.end()
        guardian.done()
    return VmBackupResult(replace(manifest, id=point_id), {})


def _unchanged_level(
    run: _Run, images: dict[str, ImageIndex], level: str, why: str
) -> tuple[str, str]:
    """The parent's level when every disk is byte for byte the parent's and the
    parent was taken shut off too: surety's own power-off after that backup made
    libvirt say ``destroyed``, but the same bytes have the same consistency."""
    parent = run.parent
    if parent is None or parent.source.get("power") != "shut off":
        return level, why
    if LEVELS.index(parent.consistency) <= LEVELS.index(level):
        return level, why
    for target, image in images.items():
        record = parent.disk(target)
        if record is None or run.repo.get_image(record.image) != image:
            return level, why
    return parent.consistency, (
        f"disks unchanged since restore point {parent.id[:12]}, whose disks were "
        f"{parent.consistency_reason}"
    )


def _requester(run: _Run, job: PullBackup) -> Requester:
    options = run.options
    quiesce_job = QuiesceJob(
        token=run.token,
        window=options.freeze_window,
        pre_freeze=options.pre_freeze,
        post_thaw=options.post_thaw,
        after_commit=options.after_commit,
        script_failure=options.script_failure,
        settings=dict(options.settings),
    )
    guest = AgentChannel(run.domain)
    names: list[str] = []
    if options.consistency == APPLICATION:
        names = list(options.writers or [n for n in load_writers() if n not in BASE_WRITERS])
    names += BASE_WRITERS
    writers = [factory(guest, quiesce_job) for factory in load_writers(names).values()]
    policy = QuiescePolicy(options.consistency, options.on_quiesce_failure, options.freeze_window)
    return Requester(writers, job, policy, run.progress)


def _after_commit(run: _Run, requester: Requester, point_id: str) -> dict[str, Any]:
    mode = run.options.truncate_logs
    report = requester.after_commit(point_id, truncate_logs=mode == "after-commit")
    if mode == "after-verify":
        for name, record in requester.records().items():
            if record["state"] == "thawed" and name not in BASE_WRITERS:
                report[name] = {
                    "done": False,
                    "detail": "deferred until the restore point is verified (surety verify)",
                }
    return report


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


def _manifest(  # noqa: PLR0917 - internal, two callers
    run: _Run,
    images: dict[str, ImageIndex],
    stats: dict[str, DiskStats],
    quiesce: Quiesced,
    applications: dict[str, Any],
    extra_source: dict[str, Any] | None = None,
) -> Manifest:
    """The restore point; ``extra_source`` (shut-off VMs) replaces what the
    guest agent would have said."""
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
        applications=applications,
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
            "token": run.token,
            "truncate_logs": run.options.truncate_logs,
            **(extra_source or {"guest_network": guest_network(run.domain)}),
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


def _drop_checkpoint(domain: BackupSource, name: str) -> None:
    # a leftover checkpoint is harmless: the chain check ignores it
    with suppress(SourceError):
        domain.delete_checkpoint(name)


def _prune_checkpoints(domain: BackupSource, prefix: str, keep: str) -> None:
    """Delete this repository's older checkpoints: only the newest committed one is needed."""
    for name in domain.checkpoint_names():
        if name.startswith(prefix) and name != keep:
            _drop_checkpoint(domain, name)
