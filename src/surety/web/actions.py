"""Actions: a run request in the catalog for the service to execute (as ``surety jobs run``
hands a job to a running service), with the CLI's refusals, and what came of a request."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from surety.app.status import this_host
from surety.catalog import Catalog
from surety.config.model import Config
from surety.jobs.status import live_heartbeat
from surety.web.facts import NotFound, run_json, status
from surety.web.guard import Busy

__all__ = ["request_job", "request_state"]


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
    for held in [vm] if vm else covered:
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
    request_id = catalog.request_run(job, vm, by=by)
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
