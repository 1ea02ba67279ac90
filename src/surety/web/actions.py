"""Actions: a run request in the catalog for the service to execute (as ``surety jobs run``
hands a job to a running service), with the CLI's refusals, and what came of a request."""

from __future__ import annotations

from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from surety.app.hypervisor import connect_host
from surety.app.status import this_host
from surety.catalog import Catalog
from surety.config.model import Config
from surety.core.errors import UsageError
from surety.jobs.status import live_heartbeat
from surety.web.facts import NotFound, find_point, run_json, status
from surety.web.guard import Busy

__all__ = ["RestoreAsk", "request_job", "request_restore", "request_state"]

RESTORE_KINDS = ("restore", "instant")


@dataclass(frozen=True)
class RestoreAsk:
    """A restore (``restore``) or instant recovery (``instant``) of ``vm`` from ``point``:
    ``name`` restores it as another VM (the CLI's ``--as``), ``start`` starts it, and
    ``replace`` confirms that a VM of that name on the host is replaced (``--force``)."""

    kind: str
    vm: str
    point: str
    name: str | None = None
    start: bool = False
    replace: bool = False


def request_job(
    config: Config, catalog: Catalog, policy_name: str, kind: str, vm: str | None, *, by: str
) -> dict[str, Any]:
    """Ask the service to run ``policy_name:kind`` now (for ``vm`` only, if given).

    Refused: an unknown policy, a kind the policy has no job for, a VM the policy does
    not cover (404); a VM a run already holds, the same job already asked for (409)."""
    policy = config.policies.get(policy_name)
    if policy is None:
        raise NotFound(f"no policy {policy_name!r} in the configuration")
    if kind not in ("backup", "verify", "check") or (
        kind != "backup" and getattr(policy, kind) is None
    ):
        raise NotFound(f"policy {policy_name} has no {kind} job")
    job = f"{policy_name}:{kind}"
    covered = [s["vm"] for s in status(config, catalog)["vms"] if s["policy"] == policy_name]
    if vm is not None and vm not in covered:
        raise NotFound(f"policy {policy_name} does not cover a VM {vm!r} on this host")
    _refuse_busy(catalog, [vm] if vm else covered, job)
    return _asked(catalog, job, vm, by, None)


def request_restore(
    config: Config, catalog: Catalog, ask: RestoreAsk, *, by: str
) -> dict[str, Any]:
    """Ask the service to restore (or instantly recover) ``ask.vm`` from ``ask.point``.

    Refused as the CLI refuses, before anything is asked: an unknown point, or one that is
    not of this VM (404); a VM a run holds, or the same restore already asked (409); a VM
    of the target name on the host without ``replace`` (restore), or at all (instant: give
    another name), 400."""
    if ask.kind not in RESTORE_KINDS:
        raise NotFound(f"no action {ask.kind!r} (restore or instant)")
    repository, _, point = find_point(config, ask.point)
    if point.name != ask.vm:
        raise NotFound(f"restore point {point.id[:12]} is of VM {point.name}, not {ask.vm}")
    policy = _policy_for(config, catalog, ask.vm, repository)
    job = f"{policy}:{ask.kind}"
    target = ask.name or ask.vm
    _refuse_busy(catalog, sorted({ask.vm, target}), job)
    with closing(connect_host(config.service.libvirt_uri)) as host:
        exists = host.find_domain(target) is not None
    if exists and ask.kind == "instant":
        raise UsageError(
            f"a VM {target} is on the host: an instant recovery needs a free name (give a new "
            "name), or restore it over the VM with a confirmed restore"
        )
    if exists and not ask.replace:
        raise UsageError(
            f"a VM {target} is on the host: restoring {point.id[:12]} replaces it (stopped if "
            "running) - confirm with replace, or give another name"
        )
    options = {
        "point": point.id,
        "name": ask.name,
        "start": ask.start,
        "replace": ask.replace and exists,
    }
    return {**_asked(catalog, job, ask.vm, by, options), "point": point.id, "target": target}


def _policy_for(config: Config, catalog: Catalog, vm: str, repository: str) -> str:
    """The policy whose job restores ``vm`` from ``repository``: the VM's own policy when
    it uses that repository, else the first that does (the VM may be gone from the host)."""
    mine = next((s["policy"] for s in status(config, catalog)["vms"] if s["vm"] == vm), None)
    using = sorted(p.name for p in config.policies.values() if p.repository == repository)
    if mine in using:
        return str(mine)
    if not using:
        raise NotFound(f"no policy uses repository {repository}: the service restores through one")
    return using[0]


def _refuse_busy(catalog: Catalog, vms: list[str], job: str) -> None:
    """409 when a run holds one of ``vms``, or ``job`` is already asked and not yet taken."""
    for held in vms:
        busy = catalog.runs(vm=held, states=("queued", "running"), limit=1)
        if busy:
            run = busy[0]
            raise Busy(
                f"{held} is held by run {run.id} ({run.job}, {run.state}): try again after it"
            )
    pending = catalog.pending_requests(job)
    if pending:
        raise Busy(
            f"{job} is already requested (request {pending[0]}), not yet taken by the service"
        )


def _asked(
    catalog: Catalog, job: str, vm: str | None, by: str, options: dict[str, Any] | None
) -> dict[str, Any]:
    request_id = catalog.request_run(job, vm, by=by, options=options)
    beat = live_heartbeat(catalog.heartbeats(), this_host(), datetime.now(UTC))
    return {
        "request": request_id,
        "job": job,
        "vm": vm,
        "service": None if beat is None else {"host": beat.host, "pid": beat.pid},
        "note": None if beat else "no service runs on this host: the request waits for it",
    }


def request_state(catalog: Catalog, request_id: int) -> dict[str, Any]:
    """A request and the runs it started, each with its live progress."""
    found = catalog.request(request_id)
    if found is None:
        raise NotFound(f"no run request {request_id}")
    run_ids = (
        catalog.run_ids_since(found["job"], found["vm"], found["at"]) if found["taken_by"] else []
    )
    runs = []
    for run_id in run_ids:
        run = catalog.run(run_id)
        runs.append({**run_json(run), "progress": catalog.progress(run_id)})
    done = bool(runs) and all(r["state"] not in ("queued", "running") for r in runs)
    beat = live_heartbeat(catalog.heartbeats(), this_host(), datetime.now(UTC))
    return {**found, "runs": runs, "done": done, "service_running": beat is not None}
