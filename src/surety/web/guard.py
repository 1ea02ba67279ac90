"""Request guards (FastAPI dependencies): who asks, may they, did they send the CSRF token;
and the audit row every action writes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from fastapi import Request

from surety.web.auth import SESSION_COOKIE, Identity, csrf_ok, has_role, identify

if TYPE_CHECKING:
    from surety.web.app import WebState

__all__ = ["Busy", "Forbidden", "LoginRequired", "address", "audit", "require", "web"]


class LoginRequired(Exception):
    """No valid session or API token: 401 for the API, the login page for pages."""


class Forbidden(Exception):
    """Authenticated, but the role (or a missing CSRF token) does not allow it: 403."""


class Busy(Exception):
    """A job already holds the VM (or the same job is already asked for): 409."""


def web(request: Request) -> WebState:
    state: WebState = request.app.state.web
    return state


def address(request: Request) -> str:
    return request.client.host if request.client else "-"


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def require(role: str, *, change: bool = False) -> Callable[[Request], Awaitable[Identity]]:
    """A dependency: the request's identity, at least ``role``; ``change``: a state-changing
    request, which must carry the session's CSRF token (header or form field ``csrf``)."""

    async def guard(request: Request) -> Identity:
        state = web(request)
        identity = identify(state.catalog, request.cookies.get(SESSION_COOKIE), _bearer(request))
        if identity is None:
            raise LoginRequired
        request.state.identity = identity
        if change:
            given = request.headers.get("x-csrf-token")
            if given is None and "form" in request.headers.get("content-type", ""):
                field: Any = (await request.form()).get("csrf")
                given = field if isinstance(field, str) else None
            if not csrf_ok(identity, given):
                audit(request, identity.user, request.url.path, None, "refused: no CSRF token")
                raise Forbidden("refused: the request carries no valid CSRF token")
        if not has_role(identity, role):
            audit(request, identity.user, request.url.path, None, f"refused: needs {role}")
            raise Forbidden(
                f"refused: this needs the {role} role ({identity.user} is {identity.role})"
            )
        return identity

    return guard


def audit(request: Request, who: str, action: str, target: str | None, result: str) -> None:
    web(request).catalog.audit(who, action, target, result, address(request))
