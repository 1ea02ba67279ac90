"""``surety items postgresql|mariadb|samba-ad``: items of a restore point, by the app's tools."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any, Protocol, TypeVar

import click

from surety.app.hypervisor import connect_host
from surety.cli.context import open_repo, show_notes
from surety.cli.options import Decorator, connect_option, json_option, option_stack
from surety.cli.render import emit_json, out_console, progress_for
from surety.core.units import format_size, parse_size
from surety.verify.dumptools import DumpRequest
from surety.verify.items import ItemsOptions, ItemsResult, check_options, extract_items
from surety.verify.samba_items import (
    AdItemsOptions,
    AdItemsResult,
    check_ad_options,
    extract_ad_items,
)

__all__ = ["COMMANDS"]


def _point_and_file(what: str, wait: str) -> Decorator:
    """POINT, --to FILE, --force and --timeout of every `surety items APP` command."""
    return option_stack(
        click.argument("point"),
        click.option(
            "--to",
            "target",
            required=True,
            type=click.Path(path_type=Path, dir_okay=False),
            help=f"File to write {what} to (never replaced without --force).",
        ),
        click.option("--force", is_flag=True, help="Replace --to FILE if it exists."),
        click.option(
            "--timeout",
            type=click.FloatRange(min=1),
            default=900,
            show_default=True,
            help=f"Seconds for the VM to boot{wait}.",
        ),
    )


_common = option_stack(  # `surety items postgresql|mariadb`
    _point_and_file("the dump", " and the application to accept connections"),
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
    """Item-level recovery: boot a restore point in the lab, extract items with the app's tools.

    The VM boots from the repository in an isolated lab (no network out, a
    throwaway overlay); tables are dumped inside it and copied out, directory
    objects are read from the point's own database.
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
    _extract(ctx, extract_items, options, uri, json_output, _render)


class _Result(Protocol):
    def document(self) -> dict[str, Any]: ...


_R = TypeVar("_R", bound=_Result)


def _extract(
    ctx: click.Context,
    extract: Callable[..., _R],
    options: object,
    uri: str,
    json_output: bool,
    render: Callable[[_R], None],
) -> None:
    """Open the repository and the host, run ``extract(repo, options, ...)``, show the result."""
    repo = open_repo(ctx)
    with progress_for(json_output) as progress, closing(connect_host(uri)) as host:
        result = extract(repo, options, progress, host=host)
    show_notes(repo)
    if json_output:
        emit_json(result.document())
    else:
        render(result)


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


@items.command("samba-ad")
@_point_and_file("the LDIF", " and its guest agent to answer")
@click.option(
    "--dn",
    "dns",
    required=True,
    multiple=True,
    metavar="DN",
    help="Object to bring back, e.g. CN=jdoe,CN=Users,DC=lab,DC=test (repeatable).",
)
@click.option("--subtree", is_flag=True, help="Each --dn and every object below it (an OU).")
@click.option(
    "--apply-to",
    metavar="VM",
    help="Add the objects on this running DC (libvirt name) through its guest agent.",
)
@connect_option
@json_option
@click.pass_context
def items_samba_ad(
    ctx: click.Context,
    point: str,
    target: Path,
    force: bool,
    timeout: float,
    dns: tuple[str, ...],
    subtree: bool,
    apply_to: str | None,
    uri: str,
    json_output: bool,
) -> None:
    """Bring back deleted users, groups or OUs: LDIF that re-creates --dn(s) from POINT.

    The objects are read from POINT's own directory (sam.ldb) in the lab and
    written to --to FILE as LDIF that adds them and their group memberships.
    What cannot come back: the SID (a new one is issued: ACLs that named the
    old SID must be redone) and the password (a user is created disabled).
    With --apply-to VM the LDIF is added on that live DC in one transaction,
    refused if an object exists there; without it, the command to apply it
    is printed.
    """
    options = AdItemsOptions(
        point, dns, target.absolute(), subtree, force, timeout, apply_to
    )  # fmt: skip
    check_ad_options(options)  # before the passphrase is asked for
    _extract(ctx, extract_ad_items, options, uri, json_output, _render_ad)


def _render_ad(result: AdItemsResult) -> None:
    objects = result.plan.objects
    _say(
        f"wrote {result.path} ({len(objects)} object(s), {len(result.plan.memberships)} "
        f"membership(s), {format_size(result.size)}) from restore point "
        f"{result.point.id[:12]} ({result.point.name})"
    )
    for made in objects:
        kind = made.classes[-1] if made.classes else "object"
        sid = f", SID at the point {made.old_sid}" if made.old_sid else ""
        new = result.new_sids.get(made.dn)
        _say(f"  {kind} {made.dn}{sid}" + (f" -> new SID {new}" if new else ""))
    _say("what cannot come back:")
    for note in dict.fromkeys(n for made in objects for n in made.notes):
        _say(f"  - {note}")
    seconds = ", ".join(f"{step} {took}" for step, took in result.seconds.items())
    _say(f"seconds: {seconds}")
    if result.applied_to:
        _say(f"added on {result.applied_to} (one transaction)")
    else:
        _say("to apply: copy the file to a DC of the domain and run there as root:")
        _say(f"  {result.apply_commands['on_dc']}")
        _say(f"or from a host with ldb-tools: {result.apply_commands['over_ldap']}")


def _say(text: str) -> None:
    out_console.print(text, highlight=False, soft_wrap=True)


COMMANDS = [items]
