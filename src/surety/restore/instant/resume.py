"""``surety instant-recover resume NAME``: start an instant VM again after it stopped.

The instant VM is transient: a guest power-off, ``virsh destroy``, a crash of
QEMU or a host reboot ends it, and a host reboot ends its NBD servers too.
Its writes are still on disk - in the overlays, or in a copy ``finish`` made
ready or pivoted to (``InstantDisk.on_copy``) - so ``resume`` starts it again
from its saved live XML (same UUID, MACs and VM generation id): dead servers
are started again on the same sockets (this needs the repository: the caller's
``open_repo`` is given the location recorded at start, a path or
``s3://BUCKET/PREFIX``), disks on their copy are placed on the copy, the others
on their overlay over the export. Then ``finish`` or ``abort`` go on as before.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from surety.core.errors import UsageError
from surety.core.progress import Progress
from surety.hypervisor.port import HypervisorHost
from surety.hypervisor.qemu_user import qemu_ids
from surety.repo.repository import Repository
from surety.restore.export import server_alive, start_detached_server, stop_server
from surety.restore.instant.control import open_instant_vm
from surety.restore.instant.plan import resumed_domain_xml
from surety.restore.instant.start import (
    DEFAULT_ROOT,
    DOMAIN_FILE,
    InstantOptions,
    InstantResult,
    wait_for_guest,
)
from surety.restore.instant.state import InstantVm

__all__ = ["ResumeOptions", "resume_instant"]


@dataclass(frozen=True)
class ResumeOptions:
    name: str
    root: Path = DEFAULT_ROOT
    wait: bool = True
    ready_command: str | None = None
    timeout: float = 900.0


def resume_instant(
    options: ResumeOptions,
    open_repo: Callable[[str], Repository],
    progress: Progress,
    *,
    host: HypervisorHost,
) -> InstantResult:
    """Start the stopped instant VM ``options.name`` of ``host`` (the caller's, left open)
    again; nothing to do if it runs. ``open_repo(location)`` opens the repository
    recorded at start, called only when a server must be restarted."""
    began = time.monotonic()
    with open_instant_vm(options.root, options.name, host) as opened:
        record, domain = opened.record, opened.domain
        if opened.finished:
            raise UsageError(f"{record.name} is finished: start it like any VM (virsh start)")
        if domain is not None and domain.is_running():
            progress.note(f"{record.name} is running already")
        else:
            xml = _resume_xml(record)
            _restart_servers(record, open_repo, progress)
            progress.phase(f"start {record.name}")
            domain = host.create_transient(xml)
        started = time.monotonic() - began
        ping = ready = None
        if options.wait:
            waiting = InstantOptions(
                record.point, timeout=options.timeout, ready_command=options.ready_command
            )
            ping, ready = wait_for_guest(domain, waiting, began, progress)
        return InstantResult(record, started, ping, ready, ())


def _restart_servers(
    record: InstantVm, open_repo: Callable[[str], Repository], progress: Progress
) -> None:
    dead = [d for d in record.disks if not d.on_copy and not server_alive(d.pid_file)]
    if not dead:
        return
    repo = open_repo(record.repository)
    with repo.lock(
        exclusive=False, operation=f"instant-recover resume {record.name}", read_only=True
    ):
        for disk in dead:
            progress.phase(f"serve {disk.target}")
            stop_server(disk.pid_file)  # removes a stale socket and pid file
            start_detached_server(
                repo,
                record.point,
                disk.target,
                workdir=Path(disk.server_dir),
                client=qemu_ids(),
            )


def _resume_xml(record: InstantVm) -> str:
    try:
        saved = (Path(record.directory) / DOMAIN_FILE).read_text()
    except FileNotFoundError:
        raise UsageError(
            f"{record.name} never ran (its start was cut short): "
            f"`surety instant-recover abort {record.name}`, then start it again"
        ) from None
    return resumed_domain_xml(saved, record.name, record.disks)
