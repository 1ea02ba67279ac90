"""One ``[notify.NAME]`` table -> a ``NotificationTarget`` (email or webhook).

Always returns a target, even with problems recorded, so that policies naming it are
not told it does not exist as well. An email target needs recipients, a webhook a URL;
keys of the other kind are refused rather than silently ignored.
"""

from __future__ import annotations

import dataclasses
import re

from surety.config.model import EVENTS, NotificationTarget
from surety.config.reader import Reader, Table
from surety.core.errors import UsageError

__all__ = ["read_target"]

_COMMON = ("type", "events", "only_last_retry", "daily_summary")
_EMAIL = ("smtp", "starttls", "username", "password_file", "from", "to")
_WEBHOOK = ("url", "headers")
_KINDS = ("email", "webhook")
_DEFAULT_EVENTS = frozenset({"failure", "rpo"})  # NotificationTarget's default


def read_target(r: Reader, name: str, table: Table) -> NotificationTarget:
    path = ("notify", name)
    kind = r.choice(table, path, "type", _KINDS)
    if kind is None and "type" not in table:
        r.problem((*path, "type"), 'required: "email" or "webhook"')
    own = _EMAIL if kind == "email" else _WEBHOOK if kind == "webhook" else _EMAIL + _WEBHOOK
    other = _WEBHOOK if kind == "email" else _EMAIL if kind == "webhook" else ()
    for key in other:
        if key in table:
            r.problem((*path, key), f"not used by a {kind} target (only by {_other(kind)} ones)")
    r.known({k: v for k, v in table.items() if k not in other}, path, _COMMON + own)
    target = NotificationTarget(
        name=name,
        kind=kind or "",
        events=_events(r, table, path),
        only_last_retry=_flag(r, table, path, "only_last_retry", default=True),
        daily_summary=r.parsed(table, path, "daily_summary", _clock),
    )
    if kind == "email":
        return _email(r, table, path, target)
    if kind == "webhook":
        return _webhook(r, table, path, target)
    return target


def _other(kind: str | None) -> str:
    return "webhook" if kind == "email" else "email"


def _flag(r: Reader, table: Table, path: tuple[str, ...], key: str, default: bool) -> bool:
    value = r.flag(table, path, key)
    return default if value is None else value


def _events(r: Reader, table: Table, path: tuple[str, ...]) -> frozenset[str]:
    names = r.names(table, path, "events")
    if names is None:
        return _DEFAULT_EVENTS if "events" not in table else frozenset()
    unknown = [n for n in names if n not in EVENTS]
    for event in unknown:
        r.problem((*path, "events"), f"unknown event {event!r} (events: {', '.join(EVENTS)})")
    return frozenset(n for n in names if n in EVENTS)


def _clock(text: str) -> str:
    match = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)", text.strip())
    if match is None:
        raise UsageError(f"{text!r} is not a local time HH:MM (e.g. '08:00')")
    return f"{int(match.group(1)):02d}:{match.group(2)}"


def _email(
    r: Reader, table: Table, path: tuple[str, ...], target: NotificationTarget
) -> NotificationTarget:
    host, port = r.parsed(table, path, "smtp", _smtp) or (target.smtp_host, target.smtp_port)
    recipients = r.names(table, path, "to") or ()
    if not recipients and "to" not in table:
        r.problem((*path, "to"), 'required: who receives the mail (e.g. to = ["ops@example.org"])')
    username = r.text(table, path, "username")
    password_file = r.file(table, path, "password_file")
    if username is not None and password_file is None and "password_file" not in table:
        r.problem((*path, "password_file"), "required with username (the SMTP password)")
    return dataclasses.replace(
        target,
        smtp_host=host,
        smtp_port=port,
        starttls=_flag(r, table, path, "starttls", default=False),
        username=username,
        password_file=password_file,
        sender=r.text(table, path, "from") or target.sender,
        recipients=recipients,
    )


def _smtp(text: str) -> tuple[str, int]:
    host, sep, port = text.strip().rpartition(":")
    if not sep:
        return text.strip(), 25
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"{text!r} is not HOST[:PORT] (e.g. 'mail.example.org:587')")
    return host, int(port)


def _webhook(
    r: Reader, table: Table, path: tuple[str, ...], target: NotificationTarget
) -> NotificationTarget:
    url = r.text(table, path, "url")
    if url is None and "url" not in table:
        r.problem((*path, "url"), "required: where to POST (http:// or https://)")
    elif url is not None and not re.match(r"https?://[^/\s]+", url):
        r.problem((*path, "url"), f"{url!r} is not an http:// or https:// URL")
    return dataclasses.replace(target, url=url, headers=r.strings(table, path, "headers") or {})
