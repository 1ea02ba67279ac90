"""``surety points``: list restore points."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import click
from rich.table import Table

from surety.app.catalog import open_catalog
from surety.catalog import Verification, default_catalog_path
from surety.cli.context import open_repo, show_notes
from surety.cli.render import emit_json, out_console
from surety.core.units import format_size
from surety.repo.manifest import Manifest

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
    if json_output:
        emit_json(
            [
                {
                    "id": p.id,
                    "name": p.name,
                    "kind": p.kind,
                    "host": p.host,
                    "started": p.started.isoformat(),
                    "finished": p.finished.isoformat(),
                    "consistency": p.consistency,
                    "consistency_reason": p.consistency_reason,
                    "salvaged": p.salvaged or None,
                    "parent": p.parent,
                    "disks": [
                        {"name": d.name, "size": d.size, "image": d.image, "source": d.source}
                        for d in p.disks
                    ],
                    "stats": p.stats,
                    "source": p.source,
                    "config": sorted(p.config),
                    "applications": p.applications,
                    "verification": asdict(checked[p.id]) if p.id in checked else None,
                }
                for p in found
            ]
        )
        return
    table = Table(box=None)
    for column in ("id", "name", "time", "consistency", "disks", "size", "new", "verified"):
        table.add_column(column)
    for p in found:
        table.add_row(
            p.id[:12],
            p.name,
            p.finished.astimezone().strftime("%Y-%m-%d %H:%M:%S"),
            _consistency(p),
            ", ".join(d.name for d in p.disks),
            format_size(sum(d.size for d in p.disks)),
            format_size(p.stats.get("stored_bytes", 0)),
            _verified(checked.get(p.id)),
        )
    out_console.print(table)
    out_console.print(f"{len(found)} restore points")


def _consistency(point: Manifest) -> str:
    """The level, or that the point was salvaged and how many bytes are zeros now."""
    if not point.salvaged:
        return point.consistency
    lost = sum(end - start for ranges in point.salvaged.values() for start, end in ranges)
    return f"[red]salvaged[/] ({format_size(lost)} lost)"


def _verified(verification: Verification | None) -> str:
    if verification is None:
        return "-"
    style = "green" if verification.status == "verified" else "red"
    return f"[{style}]{verification.status}[/] {verification.at[:16].replace('T', ' ')}"


COMMANDS = [points]
