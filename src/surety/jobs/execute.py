"""Execute one job run: ``execute(spec, config, *, repo, host, catalog, progress) -> RunResult``.

The service's worker (and ``surety jobs run`` without a service) calls it with
the wiring done (``surety.app``: the policy's repository opened, the hypervisor
host, the catalog). It dispatches on ``spec.kind`` (``jobs.backup``,
``jobs.verify``, ``jobs.check``, ``jobs.copy``; ``jobs.restore`` for a restore or an
instant recovery a person asked for) and turns what can go wrong into a result:

* a ``SuretyError`` -> ``failed`` with its one-line message and a hint
  (``jobs.hints.hint_for``); ``Interrupted`` -> ``interrupted`` (nothing was
  committed, nothing truncated);
* a VM no longer on the host -> ``skipped`` with a note;
* anything else propagates: it is a bug, and the worker records it with its
  traceback.

A shut-off VM is not refused here: ``backup_vm`` backs it up.
"""

from __future__ import annotations

from collections.abc import Callable

from surety.catalog import Catalog
from surety.catalog.runs import RunResult
from surety.config.model import Config, Policy
from surety.core.errors import Interrupted, SuretyError, UsageError
from surety.core.progress import Progress
from surety.hypervisor.port import HypervisorHost
from surety.jobs.backup import run_backup
from surety.jobs.check import run_check
from surety.jobs.copy import run_copy
from surety.jobs.hints import hint_for
from surety.jobs.restore import run_instant, run_restore
from surety.jobs.spec import JobSpec
from surety.jobs.verify import run_verify
from surety.repo.repository import Repository

__all__ = ["execute", "failed"]


def failed(exc: SuretyError) -> RunResult:
    """The result of a run that ``exc`` stopped."""
    if isinstance(exc, Interrupted):
        return RunResult("interrupted", error=str(exc), hint=hint_for(exc))
    return RunResult("failed", error=str(exc), hint=hint_for(exc))


def execute(  # noqa: PLR0911 - one return per kind of job
    spec: JobSpec,
    config: Config,
    *,
    repo: Repository,
    host: HypervisorHost,
    catalog: Catalog,
    progress: Progress,
    open_repository: Callable[[str], Repository] | None = None,
) -> RunResult:
    """Run ``spec``; ``open_repository(name)`` opens another configured repository (copy)."""
    try:
        policy = _policy(spec, config)
        if spec.vm is not None and host.find_domain(spec.vm) is None and spec.kind == "backup":
            note = f"VM {spec.vm!r} is no longer on the host ({host.uri}): nothing to back up"
            progress.note(note)
            return RunResult("skipped", warnings=[note], details={"note": note})
        if spec.kind == "backup":
            if spec.vm is None:
                raise UsageError(f"job {spec.job}: a backup run needs a VM")
            return run_backup(
                policy, spec.vm, repo=repo, host=host, catalog=catalog, progress=progress
            )
        if spec.kind == "verify":
            return run_verify(
                policy, spec.vm, repo=repo, host=host, catalog=catalog, progress=progress
            )
        if spec.kind == "check":
            return run_check(policy, repo=repo, catalog=catalog, progress=progress)
        if spec.kind == "copy":
            return _copy(
                spec,
                config,
                policy,
                repo=repo,
                progress=progress,
                open_repository=open_repository,
            )
        if spec.kind == "restore":
            return run_restore(spec, repo=repo, host=host, progress=progress)
        if spec.kind == "instant":
            return run_instant(spec, repo=repo, host=host, progress=progress)
        raise UsageError(f"job {spec.job}: unknown kind {spec.kind!r}")
    except SuretyError as exc:
        return failed(exc)
    except KeyboardInterrupt:
        return failed(Interrupted(f"{spec.job} stopped before it completed; nothing was committed"))


def _copy(
    spec: JobSpec,
    config: Config,
    policy: Policy,
    *,
    repo: Repository,
    progress: Progress,
    open_repository: Callable[[str], Repository] | None,
) -> RunResult:
    if policy.copy_to is None or policy.copy_to not in config.repositories:
        raise UsageError(f"job {spec.job}: policy {policy.name} has no copy_to repository")
    if open_repository is None:
        raise UsageError(f"job {spec.job}: no way to open repository {policy.copy_to!r} here")
    target = open_repository(policy.copy_to)
    return run_copy(
        policy,
        spec.point,
        spec.vm,
        repo=repo,
        target=target,
        target_config=config.repositories[policy.copy_to],
        progress=progress,
    )


def _policy(spec: JobSpec, config: Config) -> Policy:
    policy = config.policies.get(spec.policy)
    if policy is None:
        raise UsageError(
            f"job {spec.job}: policy {spec.policy!r} is not in {config.path} "
            "(removed since the run was queued?)"
        )
    return policy
