"""``/api/v1``: the console's facts as JSON (the CLI's ``--json`` field names) and its actions.

Authentication: a session cookie (then state-changing calls need ``X-CSRF-Token``)
or ``Authorization: Bearer <API token>`` (``surety web token add``).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from surety.web import actions, facts
from surety.web.auth import Identity, add_user
from surety.web.guard import audit, require, web

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["api"])
Viewer = Annotated[Identity, Depends(require("viewer"))]


@router.get("/openapi.json", include_in_schema=False)
def openapi(request: Request, me: Viewer) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@router.get("/whoami")
def whoami(me: Viewer) -> dict[str, Any]:
    return {"user": me.user, "role": me.role, "via": me.via, "csrf": me.csrf}


@router.get("/overview")
def overview(request: Request, me: Viewer) -> dict[str, Any]:
    """Runs of the last 24 h and 30 days by state, running jobs, VMs outside RPO, unprotected
    VMs, VMs whose last point is not verified, storage used."""
    state = web(request)
    return facts.overview(state.config, state.catalog)


@router.get("/status")
def status(request: Request, me: Viewer) -> dict[str, Any]:
    """``surety status --json`` (as ``vms``) with the service line and warnings."""
    state = web(request)
    return facts.status(state.config, state.catalog)


@router.get("/vms")
def vms(request: Request, me: Viewer) -> list[dict[str, Any]]:
    """Each VM's status, its policy's RPO target and its proven recovery time."""
    state = web(request)
    return facts.vms(state.config, state.catalog)


@router.get("/vms/{vm}/points")
def points(request: Request, vm: str, me: Viewer) -> list[dict[str, Any]]:
    """``surety points --name VM --json`` over every configured repository."""
    state = web(request)
    return facts.points_of_vm(state.config, state.catalog, vm)


@router.get("/points/{point}/proof")
def proof(request: Request, point: str, me: Viewer) -> dict[str, Any]:
    """The latest verification of a restore point and its proof document."""
    state = web(request)
    return facts.proof(state.config, state.catalog, point)


@router.get("/jobs")
def jobs(request: Request, me: Viewer) -> list[dict[str, Any]]:
    """``surety jobs list --json``."""
    state = web(request)
    return facts.jobs(state.config, state.catalog)


@router.get("/runs")
def runs(
    request: Request,
    me: Viewer,
    name: str | None = None,
    vm: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
) -> list[dict[str, Any]]:
    """``surety jobs history [NAME] [--vm VM] [--limit N] --json``."""
    return facts.runs(web(request).catalog, name, vm, limit)


@router.get("/runs/{run_id}")
def run_log(request: Request, run_id: int, me: Viewer) -> dict[str, Any]:
    """``surety jobs log RUN --json``: the run, its log lines, its last progress."""
    return facts.run_log(web(request).catalog, run_id)


@router.get("/repositories")
def repositories(request: Request, me: Viewer) -> list[dict[str, Any]]:
    """Usage history (logical vs stored), ratio, integrity checks, verifications."""
    state = web(request)
    return facts.repositories(state.config, state.catalog)


@router.get("/requests/{request_id}")
def request_state(request: Request, request_id: int, me: Viewer) -> dict[str, Any]:
    """A run request and the runs it started, with their live progress."""
    return actions.request_state(web(request).catalog, request_id)


@router.post("/jobs/{policy}/{kind}/run", status_code=202)
def run_job(
    request: Request,
    policy: str,
    kind: str,
    me: Annotated[Identity, Depends(require("operator", change=True))],
    vm: str | None = None,
) -> dict[str, Any]:
    """Run POLICY:KIND now (for one VM with ``?vm=``): a request the service executes."""
    return act(request, me, policy, kind, vm)


@router.post("/vms/{vm}/verify", status_code=202)
def verify_vm(
    request: Request, vm: str, me: Annotated[Identity, Depends(require("operator", change=True))]
) -> dict[str, Any]:
    """Verify the VM's latest restore point now (its policy's verify job, for this VM)."""
    state = web(request)
    policy = next(
        (s["policy"] for s in facts.status(state.config, state.catalog)["vms"] if s["vm"] == vm),
        None,
    )
    if policy is None:
        raise facts.NotFound(f"no VM {vm!r} protected by a policy on this host")
    return act(request, me, policy, "verify", vm)


class RestoreBody(BaseModel):
    """What to restore: ``point`` (id or unique prefix, of this VM); ``name``: as another
    VM; ``start``: start it; ``replace``: confirm that a VM of that name is replaced."""

    point: str
    name: str | None = None
    start: bool = False
    replace: bool = False


@router.post("/vms/{vm}/restore", status_code=202)
def restore_vm(
    request: Request,
    vm: str,
    body: RestoreBody,
    me: Annotated[Identity, Depends(require("operator", change=True))],
) -> dict[str, Any]:
    """Restore VM from a point (``surety restore vm``): a request the service executes.
    A VM of that name on the host is replaced only with ``replace: true``."""
    ask = actions.RestoreAsk("restore", vm, body.point, body.name, body.start, body.replace)
    return act_restore(request, me, ask)


@router.post("/vms/{vm}/instant", status_code=202)
def instant_vm(
    request: Request,
    vm: str,
    body: RestoreBody,
    me: Annotated[Identity, Depends(require("operator", change=True))],
) -> dict[str, Any]:
    """Start an instant recovery of VM from a point (``surety instant start``), as ``name``
    when a VM of its own name is on the host: a request the service executes."""
    return act_restore(request, me, actions.RestoreAsk("instant", vm, body.point, body.name))


def act_restore(request: Request, me: Identity, ask: actions.RestoreAsk) -> dict[str, Any]:
    """A restore or instant recovery request, audited whether made or refused."""
    state = web(request)
    target = f"{ask.vm} from {ask.point[:12]}" + (f" as {ask.name}" if ask.name else "")
    try:
        done = actions.request_restore(state.config, state.catalog, ask, by=f"web ({me.user})")
    except Exception as exc:
        audit(request, me.user, ask.kind, target, f"refused: {exc}")
        raise
    audit(request, me.user, ask.kind, target, f"ok: request {done['request']}")
    return done


def act(request: Request, me: Identity, policy: str, kind: str, vm: str | None) -> dict[str, Any]:
    """A run request for ``policy:kind`` (``vm``), audited whether made or refused."""
    state = web(request)
    target = f"{policy}:{kind}" + (f" {vm}" if vm else "")
    try:
        done = actions.request_job(
            state.config, state.catalog, policy, kind, vm, by=f"web ({me.user})"
        )
    except Exception as exc:
        audit(request, me.user, "run", target, f"refused: {exc}")
        raise
    audit(request, me.user, "run", target, f"ok: request {done['request']}")
    return done


@router.get("/audit")
def audit_log(
    request: Request,
    me: Annotated[Identity, Depends(require("admin"))],
    limit: Annotated[int, Query(ge=1, le=5000)] = 200,
) -> list[dict[str, Any]]:
    """Every action of the console, newest first: who, what, when, result (admins)."""
    return [vars(row) for row in web(request).catalog.audit_rows(limit)]


@router.get("/users")
def users(
    request: Request, me: Annotated[Identity, Depends(require("admin"))]
) -> list[dict[str, Any]]:
    return [
        {"name": u.name, "role": u.role, "created": u.created} for u in web(request).catalog.users()
    ]


@router.post("/users", status_code=201)
def create_user(
    request: Request,
    body: dict[str, str],
    me: Annotated[Identity, Depends(require("admin", change=True))],
) -> dict[str, Any]:
    """Create a user (or set its role and password): ``{"name", "role", "password"}``."""
    name = body.get("name", "")
    try:
        add_user(web(request).catalog, name, body.get("role", ""), body.get("password", ""))
    except Exception as exc:
        audit(request, me.user, "user add", name, f"refused: {exc}")
        raise
    audit(request, me.user, "user add", name, f"ok: {body.get('role')}")
    return {"name": name, "role": body.get("role")}
