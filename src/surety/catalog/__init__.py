"""The catalog: what this host knows about jobs and restore points beyond the repository.

It records the service's jobs and runs (state, per-VM result, log, live
progress), the service's heartbeat and run requests from front ends,
verifications (``surety verify``, with boot-to-ready times), integrity checks,
repository usage after each run, which notifications were sent, and the web
console's users, sessions, API tokens and audit log. It is a
SQLite file (``/var/lib/surety/catalog.sqlite``, or ``SURETY_CATALOG``) with a
versioned schema (``catalog.db``); the repository stays the source of truth for
the points themselves, the catalog never holds anything a restore needs.
Knows nothing of VMs' disks, the lab or the CLI.
"""

from surety.catalog.records import CheckRecord
from surety.catalog.runs import RUN_STATES, Heartbeat, Run, RunResult
from surety.catalog.sqlite import Catalog, Verification, default_catalog_path
from surety.catalog.web_store import AuditRow, Session, User

__all__ = [
    "RUN_STATES",
    "AuditRow",
    "Catalog",
    "CheckRecord",
    "Heartbeat",
    "Run",
    "RunResult",
    "Session",
    "User",
    "Verification",
    "default_catalog_path",
]
