"""Notifications reach real servers: SMTP on loopback (aiosmtpd) and a local HTTP server."""

from __future__ import annotations

import json
import socket
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from surety.catalog.runs import Run, RunResult
from surety.config.model import (
    Config,
    NotificationTarget,
    Policy,
    RepositoryConfig,
    Selection,
    ServiceSettings,
)
from surety.notify import NotificationError, Notifier
from surety.notify.email import send_email
from surety.notify.events import run_event
from surety.notify.webhook import send_webhook
from surety.schedule import Schedule

NOW = datetime(2024, 5, 17, 2, 10, tzinfo=UTC)
RESULT = RunResult(
    "failed",
    error="VM 'db1' is not running",
    hint="check that the VM runs (or is defined), libvirt answers and qemu-guest-agent runs",
)
RUN = Run(
    17,
    "nightly:backup",
    "backup",
    "nightly",
    "db1",
    "host1",
    3,
    "2024-05-17T02:00:00+00:00",
    "failed",
    "2024-05-17T02:00:01+00:00",
    "2024-05-17T02:00:09+00:00",
    4242,
    RESULT,
)


@dataclass
class Inbox:
    messages: list[Envelope] = field(default_factory=list)

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        self.messages.append(envelope)
        return "250 OK"


def _free_port() -> int:
    """A port free on loopback now (aiosmtpd's controller probes its port: 0 will not do)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def smtp() -> Iterator[tuple[Controller, Inbox]]:
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=_free_port())
    controller.start()
    try:
        yield controller, inbox
    finally:
        controller.stop()


def _authenticate(
    server: SMTPServer, session: Session, envelope: Envelope, mechanism: str, data: Any
) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"surety", b"s3cret")
    return AuthResult(success=ok, handled=False)  # aiosmtpd answers 535 on a failure


@pytest.fixture
def smtp_auth() -> Iterator[tuple[Controller, Inbox]]:
    inbox = Inbox()
    with warnings.catch_warnings():  # AUTH without TLS: fine on loopback, in a test
        warnings.simplefilter("ignore", UserWarning)
        controller = Controller(
            inbox,
            hostname="127.0.0.1",
            port=_free_port(),
            authenticator=_authenticate,
            auth_require_tls=False,
            auth_required=True,
        )
        controller.start()
    try:
        yield controller, inbox
    finally:
        controller.stop()


@dataclass
class Hook:
    url: str
    requests: list[tuple[dict[str, str], dict[str, Any]]]
    status: list[int]


@pytest.fixture
def webhook() -> Iterator[Hook]:
    hook = Hook("", [], [204])

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            hook.requests.append((dict(self.headers), json.loads(body)))
            self.send_response(hook.status[0])
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    hook.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/surety"
    try:
        yield hook
    finally:
        server.shutdown()
        server.server_close()


def _port(controller: Controller) -> int:
    return int(controller.port)


def _email_target(controller: Controller, **changes: Any) -> NotificationTarget:
    target = NotificationTarget(
        "admins",
        "email",
        smtp_host="127.0.0.1",
        smtp_port=_port(controller),
        sender="surety@host1.example.org",
        recipients=("ops@example.org", "oncall@example.org"),
    )
    return replace(target, **changes)


def _config(*targets: NotificationTarget) -> Config:
    policy_ = Policy(
        "nightly",
        "local",
        Selection(("db*",)),
        schedule=Schedule("daily", ZoneInfo("UTC")),
        rpo=timedelta(days=1),
        notify=tuple(t.name for t in targets),
    )
    return Config(
        Path("surety.toml"),
        ServiceSettings(),
        {"local": RepositoryConfig("local", "/srv/repo")},
        {"nightly": policy_},
        {t.name: t for t in targets},
    )


class NoMarks:
    def notified(self, target: str, key: str) -> str | None:
        return None

    def mark_notified(self, target: str, key: str, at: str) -> None:
        pass

    def runs(self, **_: Any) -> list[Run]:
        return [RUN]


def test_a_failed_run_reaches_the_inbox(smtp: tuple[Controller, Inbox]) -> None:
    controller, inbox = smtp
    notifier = Notifier(_config(_email_target(controller)), NoMarks(), clock=lambda: NOW)
    assert notifier.run_finished(RUN, RESULT, last_attempt=True) == ["admins"]
    (envelope,) = inbox.messages
    assert envelope.mail_from == "surety@host1.example.org"
    assert envelope.rcpt_tos == ["ops@example.org", "oncall@example.org"]
    message = message_from_bytes(envelope.original_content or b"", policy=policy.default)
    assert message["Subject"] == "surety: backup of db1 FAILED (nightly)"
    assert message["To"] == "ops@example.org, oncall@example.org"
    body = message.get_content()
    assert "VM db1" in body
    assert "VM 'db1' is not running" in body
    assert "What to do:  check that the VM runs" in body
    assert "surety jobs log 17" in body


# aiosmtpd warns on every connection that AUTH without TLS is unsafe: fine on loopback
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")
def test_login_with_the_password_file(smtp_auth: tuple[Controller, Inbox], tmp_path: Path) -> None:
    controller, inbox = smtp_auth
    secret = tmp_path / "smtp-password"
    secret.write_text("s3cret\n")
    target = _email_target(controller, username="surety", password_file=secret)
    send_email(target, run_event(RUN, RESULT, NOW))
    assert len(inbox.messages) == 1
    secret.write_text("wrong\n")
    with pytest.raises(NotificationError, match=r"admins: email via 127\.0\.0\.1:\d+ failed"):
        send_email(target, run_event(RUN, RESULT, NOW))
    assert len(inbox.messages) == 1


def test_an_smtp_server_that_is_not_there_is_a_notification_error() -> None:
    target = NotificationTarget(
        "admins", "email", smtp_host="127.0.0.1", smtp_port=_free_port(), recipients=("a@b.c",)
    )
    with pytest.raises(NotificationError, match=r"admins: email via 127\.0\.0\.1:\d+ failed"):
        send_email(target, run_event(RUN, RESULT, NOW))


def test_the_webhook_receives_the_json_contract(webhook: Hook) -> None:
    target = NotificationTarget(
        "hook", "webhook", url=webhook.url, headers={"Authorization": "Bearer t0ken"}
    )
    notifier = Notifier(_config(target), NoMarks(), clock=lambda: NOW)
    assert notifier.run_finished(RUN, RESULT, last_attempt=True) == ["hook"]
    ((headers, body),) = webhook.requests
    assert headers["Authorization"] == "Bearer t0ken"
    assert headers["Content-Type"] == "application/json"
    assert body == {
        "event": "failure",
        "policy": "nightly",
        "vm": "db1",
        "run_id": 17,
        "job": "nightly:backup",
        "kind": "backup",
        "attempt": 3,
        "host": "host1",
        "state": "failed",
        "error": "VM 'db1' is not running",
        "hint": RESULT.hint,
        "point": None,
        "consistency": None,
        "warnings": [],
        "at": "2024-05-17T02:00:09+00:00",
        "subject": "surety: backup of db1 FAILED (nightly)",
    }


def test_a_webhook_answering_an_error_is_a_notification_error(webhook: Hook) -> None:
    webhook.status[0] = 500
    target = NotificationTarget("hook", "webhook", url=webhook.url)
    with pytest.raises(NotificationError, match=r"hook: .* answered 500"):
        send_webhook(target, run_event(RUN, RESULT, NOW))


def test_rpo_and_summary_reach_both_kinds(smtp: tuple[Controller, Inbox], webhook: Hook) -> None:
    controller, inbox = smtp
    mail = _email_target(controller, events=frozenset({"rpo"}), daily_summary="04:00")
    hook = NotificationTarget("hook", "webhook", url=webhook.url, events=frozenset({"rpo"}))
    notifier = Notifier(_config(mail, hook), NoMarks(), clock=lambda: NOW)

    @dataclass(frozen=True)
    class Status:
        vm: str = "db1"
        policy: str | None = "nightly"
        rpo_met: bool | None = False
        last_point: str | None = "ab" * 32

    assert notifier.rpo_check([Status()]) == ["admins:db1", "hook:db1"]
    assert webhook.requests[0][1]["event"] == "rpo"
    assert webhook.requests[0][1]["vm"] == "db1"
    assert notifier.daily_summary(NOW + timedelta(hours=2)) == ["admins"]
    subjects = [
        message_from_bytes(e.original_content or b"", policy=policy.default)["Subject"]
        for e in inbox.messages
    ]
    assert subjects == [
        "surety: RPO of db1 VIOLATED (nightly)",
        "surety: daily summary 2024-05-17: 1 runs, 1 FAILED",
    ]
