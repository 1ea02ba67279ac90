"""Templates: one Jinja2 environment (autoescaped), filters for times, sizes and durations."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from surety.core.units import format_size

__all__ = ["render"]

_ENV = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


def _when(iso: str | None) -> str:
    if not iso:
        return "-"
    return datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M %Z")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = float(seconds)
    if seconds < 120:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


# a serial console's escape sequences (colours, cursor moves, titles) and other control
# characters: shown as they are, they make the tail unreadable
_CONTROL = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-_]|[\x00-\x08\x0b-\x1f\x7f]"
)


def _console(text: str | None) -> str:
    """A console tail as plain text: escape sequences and control characters removed."""
    return _CONTROL.sub("", (text or "").replace("\r\n", "\n"))


_ENV.filters["when"] = _when
_ENV.filters["console"] = _console
_ENV.filters["size"] = lambda n: "-" if n is None else format_size(int(n))
_ENV.filters["duration"] = _duration
_ENV.filters["short"] = lambda s: (s or "-")[:12]


def render(
    request: Request, template: str, context: dict[str, Any], status: int = 200
) -> HTMLResponse:
    identity = getattr(request.state, "identity", None)
    page = _ENV.get_template(template).render(
        {"request": request, "me": identity, "page_path": request.url.path, **context}
    )
    return HTMLResponse(page, status_code=status)
