"""``surety points``: list restore points."""

from __future__ import annotations

import click
from rich.table import Table

from surety.cli.context import open_repo, show_notes
from surety.cli.render import emit_json, out_console
from surety.core.units import format_size

__all__ = ["COMMANDS"]


@click.command()
@click.option("--name", help="Only restore points of this name.")
@click.option("--json", "json_output", is_flag=True, help="Machine-readable output.")
@click.pass_context
def points(ctx: click.Context, name: str | None, json_output: bool) -> None:
    """List restore points, oldest first."""
    repo = open_repo(ctx)
    with repo.lock(exclusive=False, operation="points"):
        found = [p for p in repo.points() if name is None or p.name == name]
    show_notes(repo)
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
                    "parent": p.parent,
                    "disks": [
                        {"name": d.name, "size": d.size, "image": d.image, "source": d.source}
                        for d in p.disks
                    ],
                    "stats": p.stats,
                    "source": p.source,
                    "config": sorted(p.config),
                    "applications": p.applications,
                }
                for p in found
            ]
        )
        return
    table = Table(box=None)
    for column in ("id", "name", "time", "consistency", "disks", "size", "new"):
        table.add_column(column)
    for p in found:
        table.add_row(
            p.id[:12],
            p.name,
            p.finished.astimezone().strftime("%Y-%m-%d %H:%M:%S"),
            p.consistency,
            ", ".join(d.name for d in p.disks),
            format_size(sum(d.size for d in p.disks)),
            format_size(p.stats.get("stored_bytes", 0)),
        )
    out_console.print(table)
    out_console.print(f"{len(found)} restore points")


COMMANDS = [points]
