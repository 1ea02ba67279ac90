"""``surety points``: list restore points with their verified state.

The verified column is the catalog's latest verification of the point, else the
latest verification summary stored in the repository itself (format 3,
``repo.verified``): a host with an empty catalog (after a disaster) still sees
which points were proven. ``--json`` gives both: ``verification`` (this host's
catalog) and ``verified`` (the repository's summary).
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import click
from rich.table import Table

from surety.app.catalog import open_catalog
from surety.app.facts import point_json
from surety.catalog import Verification, default_catalog_path
from surety.cli.context import open_repo, show_notes
from surety.cli.render import emit_json, out_console
from surety.core.units import format_size
from surety.repo.immutable import locked_until
from surety.repo.manifest import Manifest
from surety.repo.verified import VerificationSummary, latest_summaries

__all__ = ["COMMANDS"]


@click.command()
@click.option("--name", help="Only restore points of this name.")
@click.option(
    "--catalog",
    type=click.Path(path_type=Path, dir_okay=False),
    default=default_catalog_path,
    help="Catalog with verification results [env SURETY_CATALOG].",
)
@click.option("--json", "json_output", is_flag=True, help="Machine-readable output.")
@click.pass_context
def points(ctx: click.Context, name: str | None, catalog: Path, json_output: bool) -> None:
    """List restore points, oldest first, with their latest verification."""
    repo = open_repo(ctx)
    found = repo.list_points(name)
    show_notes(repo)
    checked = open_catalog(catalog).latest_verifications(repo.config.id, [p.id for p in found])
    summaries = latest_summaries(repo)
    show_notes(repo)  # damaged summaries: named, the points still listed
    locks = {p.id: locked_until(repo, p.id) for p in found} if repo.immutable else {}
    if json_output:
        emit_json(
            [
                point_json(
                    p,
                    asdict(checked[p.id]) if p.id in checked else None,
                    summaries.get(p.id),
                    locks.get(p.id),
                )
                for p in found
            ]
        )
        return
    table = Table(box=None)
    for column in ("id", "name", "time", "consistency", "disks", "size", "new", "verified"):
        table.add_column(column)
    if repo.immutable:
        table.add_column("locked until")
    for p in found:
        lock = [_local(locks.get(p.id))] if repo.immutable else []
        table.add_row(
            p.id[:12],
            p.name,
            p.finished.astimezone().strftime("%Y-%m-%d %H:%M:%S"),
            _consistency(p),
            ", ".join(d.name for d in p.disks),
            format_size(sum(d.size for d in p.disks)),
            format_size(p.stats.get("stored_bytes", 0)),
            _verified(checked.get(p.id), summaries.get(p.id)),
            *lock,
        )
    out_console.print(table)
    out_console.print(f"{len(found)} restore points")


def _iso(when: datetime | None) -> str | None:
    return when.isoformat() if when is not None else None


def _local(when: datetime | None) -> str:
    """A locked-until date in local time; an expired one dimmed (forget may drop it)."""
    if when is None:
        return "-"
    text = when.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    return text if when > datetime.now(UTC) else f"[dim]{text} (expired)[/]"


def _consistency(point: Manifest) -> str:
    """The level, or that the point was salvaged and how many bytes are zeros now."""
    if not point.salvaged:
        return point.consistency
    lost = sum(end - start for ranges in point.salvaged.values() for start, end in ranges)
    return f"[red]salvaged[/] ({format_size(lost)} lost)"


def _verified(verification: Verification | None, summary: VerificationSummary | None) -> str:
    """The catalog's verdict; without one, the repository's summary (a host after a disaster)."""
    if verification is not None:
        status, at = verification.status, verification.at
    elif summary is not None:
        status = "verified" if summary.verdict == "passed" else "failed"
        at = summary.verified
    else:
        return "-"
    style = "green" if status == "verified" else "red"
    return f"[{style}]{status}[/] {at[:16].replace('T', ' ')}"


COMMANDS = [points]
