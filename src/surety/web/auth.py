"""Who is asking: passwords (argon2id), session cookies, API tokens, roles, CSRF, throttling.

Roles are ordered: ``viewer`` reads, ``operator`` also runs jobs and verifications,
``admin`` also manages users and reads the audit log. Sessions are random 256-bit
tokens in an HttpOnly, SameSite=Strict cookie (Secure under TLS); each carries a
CSRF token that every state-changing request must echo (form field ``csrf`` or
header ``X-CSRF-Token``). API tokens (``Authorization: Bearer``) need no CSRF
token: a browser never sends them by itself. After ``MAX_FAILURES`` failed logins
of one user from one address within ``THROTTLE_SECONDS``, logins of that pair are
refused until that much time has passed since the last failure.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import VerificationError, VerifyMismatchError

from surety.catalog import Catalog
from surety.catalog.db import iso
from surety.core.errors import UsageError

__all__ = [
    "MAX_FAILURES",
    "ROLES",
    "SESSION_COOKIE",
    "THROTTLE_SECONDS",
    "Identity",
    "add_api_token",
    "add_user",
    "check_login",
    "has_role",
    "new_session",
]

ROLES = ("viewer", "operator", "admin")
SESSION_COOKIE = "surety_session"
SESSION_HOURS = 12
MAX_FAILURES = 5
THROTTLE_SECONDS = 60
_HASHER = PasswordHasher()  # argon2id with the library's current recommended parameters


@dataclass(frozen=True)
class Identity:
    user: str
    role: str
    csrf: str | None  # None: an API token (no CSRF needed)
    via: str  # session | token


def has_role(identity: Identity, wanted: str) -> bool:
    return ROLES.index(identity.role) >= ROLES.index(wanted)


def add_user(catalog: Catalog, name: str, role: str, password: str) -> None:
    if role not in ROLES:
        raise UsageError(f"no role {role!r} (roles: {', '.join(ROLES)})")
    if not name or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise UsageError(f"user name {name!r}: letters, digits, '-', '_' and '.' only")
    if len(password) < 8:
        raise UsageError("the password is too short (8 characters at least)")
    catalog.put_user(name, role, _HASHER.hash(password))


def add_api_token(catalog: Catalog, user: str, label: str | None = None) -> str:
    """A new API token acting as ``user`` (shown once; only its hash is kept)."""
    if catalog.user(user) is None:
        raise UsageError(f"no web user {user!r} (add one with `surety web user add`)")
    token = "st_" + secrets.token_urlsafe(32)
    catalog.add_api_token(token, user, label)
    return token


class Throttled(Exception):
    def __init__(self, seconds: int) -> None:
        super().__init__(f"too many failed logins: try again in {seconds} s")
        self.seconds = seconds


def check_login(catalog: Catalog, name: str, password: str, address: str) -> str | None:
    """The user's role when ``password`` is right; None when wrong; ``Throttled`` when
    this user has failed too often from ``address`` lately (the password is not tried)."""
    now = datetime.now(UTC)
    failures = catalog.login_failures(name, address, iso(now - timedelta(seconds=THROTTLE_SECONDS)))
    if len(failures) >= MAX_FAILURES:
        last = datetime.fromisoformat(failures[-1])
        wait = THROTTLE_SECONDS - int((now - last).total_seconds())
        raise Throttled(max(wait, 1))
    user = catalog.user(name)
    try:
        if user is None:
            _HASHER.hash(password)  # the same work as for a real user: no timing oracle
            raise VerifyMismatchError
        _HASHER.verify(user.password_hash, password)
    except VerificationError:
        catalog.record_login_failure(name, address)
        return None
    catalog.clear_login_failures(name, address)
    return user.role


def new_session(catalog: Catalog, user: str, address: str | None) -> tuple[str, int]:
    """(cookie value, max age in seconds) of a new session of ``user``."""
    token = secrets.token_urlsafe(32)
    expires = datetime.now(UTC) + timedelta(hours=SESSION_HOURS)
    catalog.open_session(token, user, secrets.token_urlsafe(24), iso(expires), address)
    return token, SESSION_HOURS * 3600


def identify(catalog: Catalog, cookie: str | None, bearer: str | None) -> Identity | None:
    """The user behind a request's API token or session cookie, None if neither is valid."""
    if bearer:
        name = catalog.api_token_user(bearer)
        user = catalog.user(name) if name else None
        return Identity(user.name, user.role, None, "token") if user else None
    if cookie:
        session = catalog.session(cookie)
        user = catalog.user(session.user) if session else None
        if session and user:
            return Identity(user.name, user.role, session.csrf, "session")
    return None


def csrf_ok(identity: Identity, given: str | None) -> bool:
    if identity.csrf is None:
        return True
    return given is not None and secrets.compare_digest(given, identity.csrf)
