"""Restore and instant recovery as runs: what a person asked from the web console.

``<policy>:restore`` restores ``spec.vm`` from ``spec.point`` of the policy's repository
(``restore.vm``, with the application restore of ``restore.mode`` as ``surety restore
vm`` does); ``<policy>:instant`` starts it from that point on local overlays over the
repository (``restore.instant``; ``surety instant finish|abort NAME`` follow as usual).
``spec.options`` (JSON) holds the request's choices: ``name`` (``--as``), ``start``,
and ``replace`` - the explicit confirmation that a VM in the way is replaced (the
CLI's ``--force``); without it the run refuses as the CLI does, before writing anything.
``storage`` (``--storage``; default beside each original disk) is not offered by the
web console: a path on the host is the host admin's choice.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from surety.catalog.runs import RunResult
from surety.core.errors import UsageError
from surety.core.progress import Progress
from surety.hypervisor.port import HypervisorHost
from surety.jobs.spec import JobSpec
from surety.repo.repository import Repository
from surety.restore.instant import InstantOptions, start_instant
from surety.restore.mode import AppRestoreOptions, application_restore
from surety.restore.vm import VmRestoreOptions, restore_vm

__all__ = ["run_instant", "run_restore", "spec_options"]

HINT = (
    "the same refusal as `surety {command}`: see the run's log; ask again from the VM's "
    "page with another point, name or the replace confirmation"
)


def spec_options(spec: JobSpec) -> dict[str, Any]:
    """The request's options, with its point; ``UsageError`` without one."""
    options: dict[str, Any] = json.loads(spec.options) if spec.options else {}
    if spec.point is None or spec.vm is None:
        raise UsageError(f"{spec.job} needs a VM and a restore point (ask it from the web console)")
    return options


def run_restore(
    spec: JobSpec, *, repo: Repository, host: HypervisorHost, progress: Progress
) -> RunResult:
    """Restore the VM from ``spec.point`` (in place, or as ``name``)."""
    try:
        return _restore(spec, repo=repo, host=host, progress=progress)
    except UsageError as exc:  # a refusal of the use case: say where to ask again
        return RunResult("failed", error=str(exc), hint=HINT.format(command="restore vm"))


def run_instant(
    spec: JobSpec, *, repo: Repository, host: HypervisorHost, progress: Progress
) -> RunResult:
    """Start the VM from ``spec.point`` on overlays over the repository (instant recovery)."""
    try:
        return _instant(spec, repo=repo, host=host, progress=progress)
    except UsageError as exc:
        return RunResult("failed", error=str(exc), hint=HINT.format(command="instant start"))


def _restore(
    spec: JobSpec, *, repo: Repository, host: HypervisorHost, progress: Progress
) -> RunResult:
    options = spec_options(spec)
    assert spec.point is not None
    name = options.get("name") or None
    start = bool(options.get("start"))
    point = repo.resolve(spec.point)
    progress.note(f"restore {point.name} from {point.id[:12]}" + (f" as {name}" if name else ""))
    aware = application_restore(
        point,
        AppRestoreOptions(False, None, None, {}),
        vm_name=name,
        start=start,
        progress=progress,
    )
    result = restore_vm(
        repo,
        VmRestoreOptions(
            point.id,
            name,
            storage=Path(options["storage"]) if options.get("storage") else None,
            start=start,
            force=bool(options.get("replace")),
        ),
        progress,
        [aware] if aware else [],
        host=host,
    )
    replaced = [d.name for d in result.replaced]
    note = f"restored {result.vm.name} from {point.id[:12]} in {result.seconds:.0f} s" + (
        f", replacing {', '.join(replaced)}" if replaced else ""
    )
    progress.note(note)
    return RunResult(
        "succeeded",
        point=point.id,
        details={
            "vm": result.vm.name,
            "identity": result.vm.identity,
            "started": result.started,
            "written": result.written,
            "replaced": replaced,
            "applications_restore": aware.evidence if aware else None,
        },
    )


def _instant(
    spec: JobSpec, *, repo: Repository, host: HypervisorHost, progress: Progress
) -> RunResult:
    options = spec_options(spec)
    assert spec.point is not None
    name = options.get("name") or None
    result = start_instant(repo, InstantOptions(spec.point, name), progress, host=host)
    note = (
        f"instant VM {result.vm.name} runs from {result.vm.point[:12]} "
        f"(started in {result.seconds_to_start:.1f} s): move it to production with "
        f"`surety instant finish {result.vm.name} --storage DIR`"
    )
    progress.note(note)
    return RunResult(
        "succeeded",
        point=result.vm.point,
        warnings=list(result.notes),
        details={
            "vm": result.vm.name,
            "identity": result.vm.identity,
            "seconds_to_start": round(result.seconds_to_start, 2),
            "seconds_to_ping": None
            if result.seconds_to_ping is None
            else round(result.seconds_to_ping, 2),
            "next": f"surety instant finish {result.vm.name} --storage DIR",
        },
    )
