"""The applications' own tools for item-level recovery: what to run in the guest.

Pure: names are checked here and every command is an argv list - names reach
the guest's tools as argv items, never through a shell string. A name is a
plain identifier (``[A-Za-z_][A-Za-z0-9_]*``, PostgreSQL tables optionally
``schema.table``), so it can be neither an option (``-x``), nor a pattern
(``*``, ``?``, quotes), nor a connection string (``host=...``). PostgreSQL
folds such names to lower case, as in SQL.

postgresql  ready: ``pg_isready``; dump: ``pg_dump --strict-names -t T ...``
            as the ``postgres`` user, plain SQL (default) or custom format
mariadb     ready: ``mariadb -e 'select 1'``; dump: ``mysqldump
            --single-transaction DB T ...`` as root (unix-socket authentication)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from surety.core.errors import UsageError

__all__ = [
    "APPS",
    "DUMP_TOOLS",
    "DumpRequest",
    "check_request",
    "cluster_port",
    "dump_argv",
    "one_line",
    "ready_argv",
    "tempdir_argv",
]

APPS = ("postgresql", "mariadb")
DUMP_TOOLS = {"postgresql": "pg_dump", "mariadb": "mysqldump"}
FORMATS = {"postgresql": ("plain", "custom"), "mariadb": ("plain",)}

_PG_NAME = r"[A-Za-z_][A-Za-z0-9_]{0,62}"
_NAMES = {
    "postgresql": (re.compile(_PG_NAME), re.compile(rf"(?:{_PG_NAME}\.)?{_PG_NAME}")),
    "mariadb": (re.compile(r"[A-Za-z_][A-Za-z0-9_$]{0,63}"),) * 2,
}


@dataclass(frozen=True)
class DumpRequest:
    """What to extract: one database, some of its tables, in which format."""

    app: str
    database: str
    tables: tuple[str, ...]
    format: str = "plain"


def check_request(request: DumpRequest) -> None:
    """``UsageError`` naming the first thing wrong with ``request``."""
    if request.app not in APPS:
        raise UsageError(f"unknown application {request.app!r} (known: {', '.join(APPS)})")
    if request.format not in FORMATS[request.app]:
        known = " or ".join(FORMATS[request.app])
        raise UsageError(f"{request.app} dumps have format {known}, not {request.format!r}")
    if not request.tables:
        raise UsageError("give at least one --table")
    database, table = _NAMES[request.app]
    if not database.fullmatch(request.database):
        raise UsageError(f"not a database name surety accepts: {request.database!r} {_HINT}")
    for name in request.tables:
        if not table.fullmatch(name):
            raise UsageError(f"not a table name surety accepts: {name!r} {_HINT}")
    if len(set(request.tables)) != len(request.tables):
        raise UsageError("a --table is given twice")


_HINT = "(letters, digits and _, not starting with a digit; PostgreSQL tables may be schema.table)"


def cluster_port(recorded: dict[str, Any], port: int | None = None) -> int:
    """The PostgreSQL port to dump from: ``port`` if the point recorded it, else the first."""
    ports = [int(c.get("port", 5432)) for c in recorded.get("clusters") or []] or [5432]
    if port is None:
        return ports[0]
    if port not in ports:
        raise UsageError(
            f"the restore point recorded no PostgreSQL cluster on port {port} "
            f"(clusters: {', '.join(map(str, ports))})"
        )
    return port


def _as_postgres(*argv: str) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv]


def ready_argv(app: str, port: int) -> list[str]:
    """Exits 0 once the application accepts connections."""
    if app == "postgresql":
        return _as_postgres("pg_isready", "-q", "-p", str(port))
    return ["mariadb", "-NBe", "select 1"]


def tempdir_argv(app: str) -> list[str]:
    """Makes a private directory in the guest's /tmp, owned by the user the tool runs as."""
    mktemp = ["mktemp", "-d", "/tmp/surety-items.XXXXXXXX"]  # noqa: S108 - mktemp -d: 0700, unique
    return _as_postgres(*mktemp) if app == "postgresql" else mktemp


def dump_argv(request: DumpRequest, port: int, path: str) -> list[str]:
    """The dump tool writing ``request``'s tables to ``path`` in the guest."""
    if request.app == "postgresql":
        tables = [arg for name in request.tables for arg in ("-t", name)]
        fmt = "p" if request.format == "plain" else "c"
        return _as_postgres(
            "pg_dump", "-p", str(port), "-d", request.database, "--strict-names",
            *tables, "-F", fmt, "-f", path,
        )  # fmt: skip
    return [
        "mysqldump",
        "--single-transaction",
        f"--result-file={path}",
        request.database,
        *request.tables,
    ]


def one_line(text: str, limit: int = 400) -> str:
    """A tool's stderr as one line: its non-empty lines joined, cut at ``limit``."""
    lines = [line.strip() for line in text.replace("\r", "").splitlines() if line.strip()]
    joined = " / ".join(lines) or "no message"
    return joined if len(joined) <= limit else joined[: limit - 3] + "..."
