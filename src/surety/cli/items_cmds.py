"""``surety items postgresql|mariadb``: tables of a restore point, via the app's own tools."""

from __future__ import annotations

from contextlib import closing
from pathlib import Path
from typing import Any

import click

from surety.app.hypervisor import connect_host
from surety.cli.context import open_repo, show_notes
from surety.cli.options import connect_option, json_option, option_stack
from surety.cli.render import emit_json, out_console, progress_for
from surety.core.units import format_size, parse_size
from surety.verify.dumptools import DumpRequest
from surety.verify.items import ItemsOptions, ItemsResult, check_options, extract_items

__all__ = ["COMMANDS"]


_common = option_stack(  # every `surety items APP` command
    click.argument("point"),
    click.option("--db", "database", required=True, help="Database holding the tables."),
    click.option(
        "--table",
        "tables",
        required=True,
        multiple=True,
        metavar="TABLE",
        help="Table to extract (repeatable).",
    ),
    click.option(
        "--to",
        "target",
        required=True,
        type=click.Path(path_type=Path, dir_okay=False),
        help="File to write the dump to (never replaced without --force).",
    ),
    click.option("--force", is_flag=True, help="Replace --to FILE if it exists."),
    click.option(
        "--timeout",
        type=click.FloatRange(min=1),
        default=900,
        show_default=True,
        help="Seconds for the VM to boot and the application to accept connections.",
    ),
    click.option(
        "--dump-timeout",
        type=click.FloatRange(min=1),
        default=3600,
        show_default=True,
        help="Seconds for the dump tool.",
    ),
    click.option(
        "--max-size",
        default="2G",
        show_default=True,
        help="Refuse a dump larger than this (it is copied out through the guest agent).",
    ),
    connect_option,
    json_option,
    click.pass_context,
)


@click.group()
def items() -> None:
    """Item-level recovery: boot a restore point in the lab, dump tables with the app's tools.

    The VM boots from the repository in an isolated lab (no network out, a
    throwaway overlay); the dump is made inside it and copied out.
    """


@items.command("postgresql")
@_common
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["plain", "custom"]),
    default="plain",
    show_default=True,
    help="pg_dump format: plain SQL, or custom (for pg_restore).",
)
@click.option("--port", type=click.IntRange(1, 65535), help="Cluster port (default: the first).")
def items_postgresql(ctx: click.Context, fmt: str, port: int | None, **common: Any) -> None:
    """Dump --table(s) of database --db from POINT's PostgreSQL with pg_dump."""
    _run(ctx, "postgresql", fmt, port, **common)


@items.command("mariadb")
@_common
def items_mariadb(ctx: click.Context, **common: Any) -> None:
    """Dump --table(s) of database --db from POINT's MariaDB with mysqldump."""
    _run(ctx, "mariadb", "plain", None, **common)


def _run(
    ctx: click.Context,
    app: str,
    fmt: str,
    port: int | None,
    *,
    point: str,
    database: str,
    tables: tuple[str, ...],
    target: Path,
    force: bool,
    timeout: float,
    dump_timeout: float,
    max_size: str,
    uri: str,
    json_output: bool,
) -> None:
    request = DumpRequest(app, database, tables, fmt)
    options = ItemsOptions(
        point, request, target.absolute(), force, timeout, dump_timeout, parse_size(max_size),
        port,
    )  # fmt: skip
    check_options(options)  # before the passphrase is asked for
    repo = open_repo(ctx)
    with progress_for(json_output) as progress, closing(connect_host(uri)) as host:
        result = extract_items(repo, options, progress, host=host)
    show_notes(repo)
    if json_output:
        emit_json(result.document())
    else:
        _render(result)


def _render(result: ItemsResult) -> None:
    s = result.seconds
    out_console.print(
        f"wrote {result.path} ({format_size(result.size)}, {result.size} bytes, "
        f"sha256 {result.sha256[:16]}...)",
        highlight=False,
        soft_wrap=True,
    )
    out_console.print(
        f"{result.request.app} {result.request.database}: {', '.join(result.request.tables)} "
        f"from restore point {result.point.id[:12]} ({result.point.name})",
        highlight=False,
    )
    out_console.print(
        f"seconds: boot {s['boot']}, app ready {s['app_ready']}, dump {s['dump']}, "
        f"copy {s['copy']}, total {s['total']}",
        highlight=False,
    )


COMMANDS = [items]
