"""The HTML pages: server-rendered from the same facts as the API; forms post with the
session's CSRF token; the run and request pages poll the API for live progress."""

from __future__ import annotations

import mimetypes
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse

from surety.web import actions, facts, files
from surety.web.api import act, act_restore
from surety.web.auth import (
    ROLES,
    SESSION_COOKIE,
    Identity,
    Throttled,
    add_user,
    check_login,
    new_session,
)
from surety.web.chart import usage_chart
from surety.web.guard import address, audit, require, web
from surety.web.render import render

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
Viewer = Annotated[Identity, Depends(require("viewer"))]
Operator = Annotated[Identity, Depends(require("operator", change=True))]
Admin = Annotated[Identity, Depends(require("admin"))]


@router.get("/login")
def login_page(request: Request, next: str = "/") -> HTMLResponse:
    return render(request, "login.html", {"next": _local(next), "error": None})


@router.post("/login")
def login(
    request: Request,
    user: Annotated[str, Form()],
    password: Annotated[str, Form()],
    next: Annotated[str, Form()] = "/",
) -> Response:
    state, where = web(request), address(request)
    try:
        role = check_login(state.catalog, user, password, where)
    except Throttled as exc:
        audit(request, user, "login", None, "refused: throttled")
        return render(request, "login.html", {"next": next, "error": str(exc)}, status=429)
    if role is None:
        audit(request, user, "login", None, "refused: wrong user or password")
        error = "wrong user name or password"
        return render(request, "login.html", {"next": next, "error": error}, status=401)
    token, max_age = new_session(state.catalog, user, where)
    audit(request, user, "login", None, "ok")
    response = RedirectResponse(_local(next), status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=max_age,
        httponly=True,
        samesite="strict",
        secure=state.settings.secure_cookies,
    )
    return response


@router.post("/logout")
def logout(
    request: Request, me: Annotated[Identity, Depends(require("viewer", change=True))]
) -> Response:
    web(request).catalog.close_session(request.cookies.get(SESSION_COOKIE, ""))
    audit(request, me.user, "logout", None, "ok")
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response


@router.get("/")
def overview(request: Request, me: Viewer) -> HTMLResponse:
    state = web(request)
    return render(request, "overview.html", {"o": facts.overview(state.config, state.catalog)})


@router.get("/vms")
def vms(request: Request, me: Viewer) -> HTMLResponse:
    state = web(request)
    return render(request, "vms.html", {"vms": facts.vms(state.config, state.catalog)})


@router.get("/vms/{vm}")
def vm_points(request: Request, vm: str, me: Viewer) -> HTMLResponse:
    state = web(request)
    row = next((v for v in facts.vms(state.config, state.catalog) if v["vm"] == vm), None)
    points = facts.points_of_vm(state.config, state.catalog, vm)
    if row is None and not points:
        raise facts.NotFound(f"no VM {vm!r} on this host and no restore points of it")
    return render(
        request,
        "points.html",
        {"vm": vm, "row": row, "points": list(reversed(points)), "files": files.root_problem()},
    )


@router.get("/points/{point}/proof")
def proof(request: Request, point: str, me: Viewer) -> HTMLResponse:
    state = web(request)
    return render(request, "proof.html", {"p": facts.proof(state.config, state.catalog, point)})


@router.get("/jobs")
def jobs(request: Request, me: Viewer) -> HTMLResponse:
    state = web(request)
    return render(
        request,
        "jobs.html",
        {
            "jobs": facts.jobs(state.config, state.catalog),
            "runs": facts.runs(state.catalog, limit=50),
        },
    )


@router.get("/runs/{run_id}")
def run(request: Request, run_id: int, me: Viewer) -> HTMLResponse:
    return render(request, "run.html", {"r": facts.run_log(web(request).catalog, run_id)})


@router.get("/requests/{request_id}")
def request_page(request: Request, request_id: int, me: Viewer) -> HTMLResponse:
    found = actions.request_state(web(request).catalog, request_id)
    return render(request, "request.html", {"q": found})


@router.get("/repository")
def repository(request: Request, me: Viewer) -> HTMLResponse:
    state = web(request)
    repos = facts.repositories(state.config, state.catalog)
    charts = {r["name"]: usage_chart(r.get("usage") or []) for r in repos}
    return render(request, "repository.html", {"repos": repos, "charts": charts})


@router.post("/actions/run")
def run_action(
    request: Request,
    me: Operator,
    policy: Annotated[str, Form()],
    kind: Annotated[str, Form()] = "backup",
    vm: Annotated[str, Form()] = "",
) -> Response:
    done = act(request, me, policy, kind, vm or None)
    return RedirectResponse(f"/requests/{done['request']}", status_code=303)


@router.post("/actions/restore")
def restore_action(  # one form field a parameter, as FastAPI reads them
    request: Request,
    *,
    me: Operator,
    vm: Annotated[str, Form()],
    point: Annotated[str, Form()],
    kind: Annotated[str, Form()] = "restore",
    name: Annotated[str, Form()] = "",
    start: Annotated[str, Form()] = "",
    replace: Annotated[str, Form()] = "",
) -> Response:
    """The restore form of a point: restore it, or start an instant recovery of it."""
    ask = actions.RestoreAsk(kind, vm, point, name.strip() or None, bool(start), bool(replace))
    done = act_restore(request, me, ask)
    return RedirectResponse(f"/requests/{done['request']}", status_code=303)


@router.get("/files/{point}")
def browse(request: Request, point: str, me: Viewer, path: str = "/") -> HTMLResponse:
    state = web(request)
    _, repo, found = facts.find_point(state.config, point)
    problem = files.root_problem()
    if problem is not None:
        return render(request, "files.html", {"point": found, "problem": problem}, status=503)
    root = state.mounts.open(repo, found.id)
    guest, entries = files.list_dir(root, path)
    parent = guest.rsplit("/", 1)[0] or "/"
    return render(
        request,
        "files.html",
        {"point": found, "problem": None, "path": guest, "parent": parent, "entries": entries},
    )


@router.get("/files/{point}/download")
def download(request: Request, point: str, me: Viewer, path: str) -> Response:
    state = web(request)
    _, repo, found = facts.find_point(state.config, point)
    problem = files.root_problem()
    if problem is not None:
        raise facts.NotFound(problem)
    root = state.mounts.open(repo, found.id)
    guest, host = files.guest_path(root, path)
    name = guest.rsplit("/", 1)[-1] or found.name
    audit(request, me.user, "download", f"{found.id[:12]}:{guest}", "ok")
    state.mounts.hold(found.id)

    def held(stream: Any) -> Any:
        try:
            yield from stream
        finally:
            state.mounts.release(found.id)

    if host.is_dir() and not host.is_symlink():
        body = held(iter(files.TarStream(host, name)))
        media, filename = "application/x-tar", f"{name}.tar"
    elif host.is_file() and not host.is_symlink():
        body = held(files.read_file(host))
        media = mimetypes.guess_type(name)[0] or "application/octet-stream"
        filename = name
    else:
        state.mounts.release(found.id)
        raise facts.NotFound(f"{guest} is not a regular file or directory")
    disposition = f"attachment; filename*=UTF-8''{quote(filename)}"
    return StreamingResponse(body, media_type=media, headers={"Content-Disposition": disposition})


@router.get("/audit")
def audit_page(request: Request, me: Admin) -> HTMLResponse:
    return render(request, "audit.html", {"rows": web(request).catalog.audit_rows(500)})


@router.get("/users")
def users_page(request: Request, me: Admin) -> HTMLResponse:
    return render(
        request,
        "users.html",
        {"users": web(request).catalog.users(), "roles": ROLES, "error": None},
    )


@router.post("/users")
def users_add(
    request: Request,
    me: Annotated[Identity, Depends(require("admin", change=True))],
    name: Annotated[str, Form()],
    role: Annotated[str, Form()],
    password: Annotated[str, Form()],
) -> Response:
    try:
        add_user(web(request).catalog, name, role, password)
    except Exception as exc:
        audit(request, me.user, "user add", name, f"refused: {exc}")
        raise
    audit(request, me.user, "user add", name, f"ok: {role}")
    return RedirectResponse("/users", status_code=303)


def _local(target: str) -> str:
    """Only a path of this site after login (no open redirect)."""
    local = target.startswith("/") and not target.startswith(("//", "/\\"))
    return target if local and "\n" not in target and "\r" not in target else "/"
