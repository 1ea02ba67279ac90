"""What the web console keeps in the catalog: users, sessions, API tokens, the audit log,
failed logins (for throttling), and the questions its pages ask of runs and requests.

Invariants:
- Secrets are never stored: passwords as argon2id hashes (made by the web layer),
  session and API tokens as their SHA-256 (they are 256-bit random, so a fast hash
  is enough); a stolen catalog opens no session.
- Every action of the console writes one ``audit`` row (who, what, when, result);
  rows are only ever appended.
- Knows nothing of HTTP, cookies or roles' meaning: the web layer decides.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from surety.catalog.db import Store

__all__ = ["AuditRow", "Session", "User", "WebStore", "token_hash"]


@dataclass(frozen=True)
class User:
    name: str
    role: str  # viewer | operator | admin
    password_hash: str
    created: str


@dataclass(frozen=True)
class Session:
    user: str
    csrf: str
    created: str
    expires: str


@dataclass(frozen=True)
class AuditRow:
    id: int
    at: str
    who: str
    action: str
    target: str | None
    result: str
    address: str | None


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class WebStore(Store):
    def put_user(self, name: str, role: str, password_hash: str) -> None:
        """Create user ``name`` or replace its role and password."""
        self.write(
            "INSERT INTO users VALUES (?, ?, ?, ?) ON CONFLICT (name) DO UPDATE"
            " SET role = excluded.role, password_hash = excluded.password_hash",
            (name, role, password_hash, self.now()),
        )

    def user(self, name: str) -> User | None:
        rows = self.query(
            "SELECT name, role, password_hash, created FROM users WHERE name = ?", (name,)
        )
        return User(*rows[0]) if rows else None

    def users(self) -> list[User]:
        rows = self.query("SELECT name, role, password_hash, created FROM users ORDER BY name")
        return [User(*row) for row in rows]

    def open_session(
        self, token: str, user: str, csrf: str, expires: str, address: str | None
    ) -> None:
        self.write(
            "INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?)",
            (token_hash(token), user, csrf, self.now(), expires, address),
        )

    def session(self, token: str) -> Session | None:
        """The session of ``token`` if it has not expired."""
        rows = self.query(
            "SELECT user, csrf, created, expires FROM sessions"
            " WHERE token_hash = ? AND expires > ?",
            (token_hash(token), self.now()),
        )
        return Session(*rows[0]) if rows else None

    def close_session(self, token: str) -> None:
        self.write("DELETE FROM sessions WHERE token_hash = ?", (token_hash(token),))

    def add_api_token(self, token: str, user: str, label: str | None) -> None:
        self.write(
            "INSERT INTO api_tokens VALUES (?, ?, ?, ?, NULL)",
            (token_hash(token), user, label, self.now()),
        )

    def api_token_user(self, token: str) -> str | None:
        """The user an API token acts for (and note its use), None if unknown."""
        digest = token_hash(token)
        with self.transaction() as conn:
            row = conn.execute(
                "SELECT user FROM api_tokens WHERE token_hash = ?", (digest,)
            ).fetchone()
            if row is not None:
                conn.execute(
                    "UPDATE api_tokens SET last_used = ? WHERE token_hash = ?",
                    (self.now(), digest),
                )
        return str(row[0]) if row else None

    def audit(
        self, who: str, action: str, target: str | None, result: str, address: str | None
    ) -> None:
        self.write(
            "INSERT INTO audit (at, who, action, target, result, address)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (self.now(), who, action, target, result, address),
        )

    def audit_rows(self, limit: int = 200) -> list[AuditRow]:
        """The latest audit rows, newest first."""
        rows = self.query(
            "SELECT id, at, who, action, target, result, address FROM audit"
            " ORDER BY id DESC LIMIT ?",
            (limit,),
        )
        return [AuditRow(*row) for row in rows]

    def record_login_failure(self, user: str, address: str) -> None:
        self.write("INSERT INTO login_failures VALUES (?, ?, ?)", (user, address, self.now()))

    def login_failures(self, user: str, address: str, since: str) -> list[str]:
        """When ``user`` failed to log in from ``address`` since ``since`` (ISO), oldest first."""
        rows = self.query(
            "SELECT at FROM login_failures WHERE user = ? AND address = ? AND at >= ? ORDER BY at",
            (user, address, since),
        )
        return [str(row[0]) for row in rows]

    def clear_login_failures(self, user: str, address: str) -> None:
        self.write("DELETE FROM login_failures WHERE user = ? AND address = ?", (user, address))

    def run_counts(self, since: str) -> dict[str, int]:
        """Runs that ended since ``since`` (ISO UTC), counted by state."""
        rows = self.query(
            "SELECT state, count(*) FROM runs WHERE ended >= ? GROUP BY state", (since,)
        )
        return {str(row[0]): int(row[1]) for row in rows}

    def request(self, request_id: int) -> dict[str, Any] | None:
        """A run request: its job, VM, who asked, when, and who took it."""
        rows = self.query(
            "SELECT id, job, vm, by, at, taken_by, taken_at, options FROM requests WHERE id = ?",
            (request_id,),
        )
        if not rows:
            return None
        keys = ("id", "job", "vm", "by", "at", "taken_by", "taken_at", "options")
        found = dict(zip(keys, rows[0], strict=True))
        found["options"] = json.loads(found["options"]) if found["options"] else None
        return found

    def pending_requests(self, job: str) -> list[int]:
        """Requests of ``job`` no service has taken yet."""
        rows = self.query(
            "SELECT id FROM requests WHERE job = ? AND taken_by IS NULL ORDER BY id", (job,)
        )
        return [int(row[0]) for row in rows]

    def run_ids_since(self, job: str, vm: str | None, since: str) -> list[int]:
        """Runs of ``job`` (for ``vm``, if given) created at or after ``since``, oldest first."""
        rows = self.query(
            "SELECT id FROM runs WHERE job = ? AND (? IS NULL OR vm = ?) AND created >= ?"
            " ORDER BY id",
            (job, vm, vm, since),
        )
        return [int(row[0]) for row in rows]
