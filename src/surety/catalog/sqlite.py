"""The SQLite catalog: one ``Catalog`` object over the parts that share its file.

    db             connections, schema version 4 and its migrations (``user_version``)
    run_store      runs: create, running, finish, interrupt; logs; live progress
    service_store  the service's slots, first-seen times, heartbeats, run requests
    records        verifications, checks, repository usage, notifications sent
    web_store      the web console's users, sessions, API tokens, audit log, throttling

Several processes write at once (the service, its workers, ``surety verify``,
``surety jobs run``): each write is one short transaction, serialised by SQLite's
locking with a busy timeout; see ``db``.
"""

from __future__ import annotations

import os
from pathlib import Path

from surety.catalog.records import CheckRecord, RecordStore, Verification
from surety.catalog.run_store import RunStore
from surety.catalog.service_store import ServiceStore
from surety.catalog.web_store import WebStore

__all__ = ["Catalog", "CheckRecord", "Verification", "default_catalog_path"]


def default_catalog_path() -> Path:
    return Path(os.environ.get("SURETY_CATALOG", "/var/lib/surety/catalog.sqlite"))


class Catalog(RunStore, ServiceStore, RecordStore, WebStore):
    """The catalog at ``path`` (created at the first write; ``clock`` is injectable for tests).

    Methods: ``create_run``, ``mark_running``, ``finish_run``, ``append_log``,
    ``run_log``, ``set_progress``, ``progress``, ``interrupt_runs``, ``runs``,
    ``run``; ``last_slot``, ``record_slot``, ``first_seen``, ``beat``,
    ``heartbeats``, ``clear_heartbeat``, ``request_run``, ``take_requests``;
    ``record_verification``, ``latest_verifications``, ``record_usage``,
    ``usage``, ``record_check``, ``checks``, ``count_checks``, ``notified``,
    ``mark_notified``; the web console's ``put_user``, ``user``, ``users``,
    ``open_session``, ``session``, ``close_session``, ``add_api_token``,
    ``api_token_user``, ``audit``, ``audit_rows``, login failures, ``run_counts``,
    ``request``, ``pending_requests``, ``run_ids_since``.
    """
