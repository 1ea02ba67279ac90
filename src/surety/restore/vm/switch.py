"""Switch-over of a VM restore: the only step that changes the target host.

Runs once every restored file is complete, fsynced and verified under a
temporary name. In order: recreate missing networks; stop (``force``) and
undefine the VM being replaced; move files that stand at the final names
aside and rename the restored ones into place; define the restored VM. Each
step records how to undo it: if a later one fails (or the job is
interrupted), the steps done so far are undone in reverse order, so the
replaced VM is defined again (and restarted if it ran) with its files as they
were. Only after the new definition is in place are the moved-aside files
deleted.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from surety.core.errors import Interrupted, SuretyError, TargetError
from surety.core.progress import Progress
from surety.hypervisor.port import HypervisorDomain, HypervisorHost
from surety.restore.vm.plan import ExistingDomain, VmRestorePlan

__all__ = ["Staged", "SwitchOutcome", "switch_over", "temporary_name"]


@dataclass(frozen=True)
class Staged:
    """A restored file (or directory) written under ``temporary``, to become ``final``."""

    temporary: Path
    final: Path


@dataclass(frozen=True)
class SwitchOutcome:
    domain: HypervisorDomain
    networks_created: tuple[str, ...]
    replaced: tuple[ExistingDomain, ...]


def temporary_name(final: Path) -> Path:
    return final.with_name(f".{final.name}.surety-partial")


class _Undo:
    def __init__(self) -> None:
        self.steps: list[tuple[str, Callable[[], object]]] = []

    def push(self, what: str, step: Callable[[], object]) -> None:
        self.steps.append((what, step))

    def run(self) -> list[str]:
        """Undo everything, newest first; what could not be undone."""
        failed = []
        for what, step in reversed(self.steps):
            try:
                step()
            except (SuretyError, OSError) as exc:
                failed.append(f"{what}: {exc}")
        return failed


def switch_over(
    host: HypervisorHost, plan: VmRestorePlan, staged: Sequence[Staged], progress: Progress
) -> SwitchOutcome:
    progress.phase("switch over")
    undo = _Undo()
    try:
        created = _create_networks(host, plan, undo, progress)
        _remove_replaced(host, plan, undo, progress)
        aside = _move_into_place(staged, undo)
        domain = host.define_domain(plan.xml)
    except BaseException as exc:
        for failure in undo.run():
            progress.note(f"could not undo {failure}")
        if isinstance(exc, KeyboardInterrupt):
            raise Interrupted("restore interrupted; the target was rolled back") from None
        if isinstance(exc, OSError):
            raise TargetError(f"restore rolled back: {exc}") from exc
        raise
    for path in aside:
        _remove(path)
    return SwitchOutcome(domain, created, plan.replace)


def _create_networks(
    host: HypervisorHost, plan: VmRestorePlan, undo: _Undo, progress: Progress
) -> tuple[str, ...]:
    created = []
    for name, xml in plan.create_networks:
        host.create_network(xml)
        undo.push(f"removing network {name}", partial(host.remove_network, name))
        progress.note(f"recreated network {name} from the restore point (not autostarted)")
        created.append(name)
    return tuple(created)


def _remove_replaced(
    host: HypervisorHost, plan: VmRestorePlan, undo: _Undo, progress: Progress
) -> None:
    for existing in plan.replace:
        domain = host.find_domain(uuid=existing.uuid)
        if domain is None:
            continue
        old_xml = domain.xml(inactive=True)
        if domain.is_running():
            domain.destroy()
            undo.push(f"restarting {existing.name}", partial(_restart, host, existing))
            progress.note(f"stopped VM {existing.name} (--force)")
        domain.undefine()
        undo.push(f"defining {existing.name} again", partial(host.define_domain, old_xml))
        progress.note(f"replacing VM {existing.name} (UUID {existing.uuid})")


def _restart(host: HypervisorHost, existing: ExistingDomain) -> None:
    domain = host.find_domain(uuid=existing.uuid)
    if domain is None:
        raise TargetError(f"{existing.name} is not defined")
    domain.start()


def _move_into_place(staged: Sequence[Staged], undo: _Undo) -> list[Path]:
    """Rename restored files to their final names; returns what was moved aside."""
    aside = []
    for item in staged:
        if item.final.exists() or item.final.is_symlink():
            old = item.final.with_name(f".{item.final.name}.surety-old")
            _remove(old)
            os.replace(item.final, old)
            undo.push(f"putting {item.final} back", partial(os.replace, old, item.final))
            aside.append(old)
        os.replace(item.temporary, item.final)
        undo.push(f"removing {item.final}", partial(_remove, item.final))
        _fsync_dir(item.final.parent)
    return aside


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _fsync_dir(directory: Path) -> None:
    with suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
