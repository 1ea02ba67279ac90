"""The web console: a REST API under ``/api/v1`` and server-rendered pages over the catalog,
the configured repositories and the host, for people and scripts (``surety web``).

* ``app``     - the ASGI app factory (FastAPI), error pages, ``WebSettings``
* ``auth``    - users (argon2id), sessions, API tokens, roles, CSRF, login throttling, audit
* ``facts``   - what the pages and the API show, as JSON-ready dicts (the CLI's ``--json`` facts)
* ``api``     - ``/api/v1`` routes; ``pages`` - the HTML routes; ``files`` - the file browser

Invariants: every page and API call needs an authenticated user; every state-changing
request carries the session's CSRF token (or is made with an API token); every action
writes an audit row. The web process needs no root: actions are run requests in the
catalog that the service executes (the file browser mounts only when run as root).

Must not know: the CLI (it starts the web, never the reverse), job execution.
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from surety.web.app import WebSettings, create_app

__all__ = ["WebSettings", "create_app"]


def __getattr__(name: str) -> object:
    # FastAPI is imported when the app is asked for, not by every ``surety`` command
    # that imports ``surety.web.auth`` (``surety web user add``) or the CLI module
    if name in ("WebSettings", "create_app"):
        from surety.web import app  # noqa: PLC0415

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
