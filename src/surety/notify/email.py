"""Deliver an ``Event`` by email over SMTP (stdlib ``smtplib``).

One connection per message, 30 s timeout; ``starttls`` upgrades the connection
(certificate verified against the system's CAs) before any login; ``username``
logs in with the first line of ``password_file``. Every failure (refused,
timed out, rejected recipient, bad login, unreadable password file) raises
``NotificationError`` naming the target and the server.
"""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from surety.config.model import NotificationTarget
from surety.notify.events import Event, NotificationError

__all__ = ["TIMEOUT", "message_for", "send_email"]

TIMEOUT = 30.0


def message_for(target: NotificationTarget, event: Event) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = event.subject
    message["From"] = target.sender
    message["To"] = ", ".join(target.recipients)
    message["Date"] = formatdate(localtime=True)
    message["Message-ID"] = make_msgid(domain=target.sender.rpartition("@")[2] or None)
    message["X-Surety-Event"] = event.kind
    message.set_content(event.body)
    return message


def send_email(target: NotificationTarget, event: Event) -> None:
    where = f"{target.smtp_host}:{target.smtp_port}"
    if not target.recipients:
        raise NotificationError(f"notification target {target.name}: no recipients")
    try:
        with smtplib.SMTP(target.smtp_host, target.smtp_port, timeout=TIMEOUT) as smtp:
            if target.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if target.username:
                smtp.login(target.username, _password(target))
            smtp.send_message(message_for(target, event))
    except (smtplib.SMTPException, OSError) as exc:
        raise NotificationError(
            f"notification target {target.name}: email via {where} failed: {exc}"
        ) from exc


def _password(target: NotificationTarget) -> str:
    if target.password_file is None:
        raise NotificationError(
            f"notification target {target.name}: username given but no password_file"
        )
    try:
        lines = target.password_file.read_text().splitlines()
    except OSError as exc:
        raise NotificationError(
            f"notification target {target.name}: cannot read {target.password_file}: "
            f"{exc.strerror or exc}"
        ) from exc
    return lines[0] if lines else ""
