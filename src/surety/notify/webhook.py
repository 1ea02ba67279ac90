"""Deliver an ``Event`` as a JSON POST (``httpx``) to a webhook URL.

The body is ``event.payload`` (the contract in docs/notifications.md), sent
with the target's extra ``headers`` (e.g. an ``Authorization`` token) and a
10 s timeout. Any answer other than 2xx, and any connection problem, raises
``NotificationError`` naming the target and the URL (never its headers:
they may hold secrets).
"""

from __future__ import annotations

import httpx

from surety.config.model import NotificationTarget
from surety.notify.events import Event, NotificationError

__all__ = ["TIMEOUT", "send_webhook"]

TIMEOUT = 10.0


def send_webhook(target: NotificationTarget, event: Event) -> None:
    if not target.url:
        raise NotificationError(f"notification target {target.name}: no url")
    headers = {"User-Agent": "surety", **target.headers}
    try:
        response = httpx.post(target.url, json=event.payload, headers=headers, timeout=TIMEOUT)
        response.raise_for_status()
    except httpx.HTTPStatusError as exc:
        raise NotificationError(
            f"notification target {target.name}: {target.url} answered "
            f"{exc.response.status_code} {exc.response.reason_phrase}"
        ) from exc
    except httpx.HTTPError as exc:
        raise NotificationError(
            f"notification target {target.name}: POST to {target.url} failed: {exc}"
        ) from exc
