"""The ASGI app: settings, shared state, error pages, and the routers of ``api`` and ``pages``.

FastAPI gives routing with typed parameters and the OpenAPI description
(``/api/v1/openapi.json``, served to authenticated users only); pages are Jinja2
templates rendered on the server with one small script that polls a run's progress.
No single-page build: every page works without JavaScript, and is a plain URL
an admin can bookmark or paste into a ticket.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from surety.app.catalog import open_catalog
from surety.catalog import Catalog
from surety.config import load_config
from surety.config.model import Config
from surety.core.errors import SuretyError, TargetError, UsageError
from surety.restore.files import RUN_ROOT
from surety.web.api import router as api_router
from surety.web.facts import NotFound
from surety.web.files import MountCache
from surety.web.guard import Busy, Forbidden, LoginRequired
from surety.web.pages import router as pages_router
from surety.web.render import render

__all__ = ["WebSettings", "WebState", "create_app"]

HERE = Path(__file__).parent
SECURITY_HEADERS = {
    # only this site's own scripts, styles and forms; never framed (no clickjacking)
    "Content-Security-Policy": (
        "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",  # pages and API answers carry facts a proxy must not keep
}


@dataclass(frozen=True)
class WebSettings:
    config_path: Path
    secure_cookies: bool = False  # True under TLS: cookies are sent over HTTPS only
    idle_mount_seconds: float = 120.0
    run_root: Path = RUN_ROOT


@dataclass
class WebState:
    settings: WebSettings
    config: Config
    catalog: Catalog
    mounts: MountCache = field(repr=False)


def create_app(settings: WebSettings) -> FastAPI:
    """The console for the configuration at ``settings.config_path`` (validated now)."""
    config = load_config(settings.config_path)
    state = WebState(
        settings,
        config,
        open_catalog(config.service.catalog),
        MountCache(settings.idle_mount_seconds, settings.run_root),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        state.mounts.close_all()

    app = FastAPI(
        title="surety web console",
        version="1",
        openapi_url=None,  # served by api.openapi, behind authentication
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.web = state

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        return response

    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.include_router(api_router)
    app.include_router(pages_router)
    _errors(app)
    return app


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def _error(request: Request, status: int, title: str, message: str) -> Response:
    if _wants_json(request):
        return JSONResponse({"error": message}, status_code=status)
    return render(request, "error.html", {"title": title, "message": message}, status=status)


def _errors(app: FastAPI) -> None:
    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, exc: LoginRequired) -> Response:
        if _wants_json(request):
            return JSONResponse(
                {"error": "authentication required (a session or an API token)"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        return RedirectResponse(f"/login?next={request.url.path}", status_code=303)

    handlers: list[tuple[type[Exception], int, str]] = [
        (Forbidden, 403, "Not allowed"),
        (NotFound, 404, "Not found"),
        (Busy, 409, "Busy"),
        (UsageError, 400, "Cannot do that"),
        (TargetError, 503, "The catalog or a repository cannot be reached"),
        (SuretyError, 500, "Failed"),
    ]
    for kind, status, title in handlers:
        app.add_exception_handler(kind, _handler(status, title))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        return _error(request, exc.status_code, "Error", str(exc.detail))


def _handler(status: int, title: str) -> Any:
    async def handle(request: Request, exc: Exception) -> Response:
        message = str(exc)
        if status == 503:
            message += (
                " - the pages that need it cannot show anything until it is back;"
                " the service keeps running its jobs on its own"
            )
        return _error(request, status, title, message)

    return handle
