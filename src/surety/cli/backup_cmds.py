"""``surety backup image``."""

from __future__ import annotations

from pathlib import Path

import click

from surety.backup.image import ImageBackupOptions, backup_image
from surety.cli.context import open_repo, show_notes
from surety.cli.render import emit_json, out_console, progress_for
from surety.core.units import format_size
from surety.repo.manifest import Manifest

__all__ = ["COMMANDS"]


@click.group()
def backup() -> None:
    """Create restore points."""


@backup.command("image")
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--name", required=True, help="Name of the restore point series (e.g. the VM).")
@click.option("--disk", help="Disk name inside the restore point [default: file name].")
@click.option("--json", "json_output", is_flag=True, help="Machine-readable output.")
@click.pass_context
def backup_image_command(
    ctx: click.Context, source: Path, name: str, disk: str | None, json_output: bool
) -> None:
    """Back up a raw disk image file or block device."""
    repo = open_repo(ctx)
    with progress_for(json_output) as progress:
        point = backup_image(repo, ImageBackupOptions(source, name, disk), progress)
    show_notes(repo)
    render_point_summary(point, json_output)


def render_point_summary(point: Manifest, json_output: bool) -> None:
    seconds = max((point.finished - point.started).total_seconds(), 1e-6)
    stats = point.stats
    if json_output:
        emit_json(
            {
                "id": point.id,
                "name": point.name,
                "consistency": point.consistency,
                "seconds": round(seconds, 3),
                **stats,
            }
        )
        return
    size = sum(d.size for d in point.disks)
    out_console.print(
        f"restore point {point.id[:12]} ({point.name}, {point.consistency}-consistent) committed\n"
        f"  {format_size(size)} disk, {format_size(stats.get('read_bytes', 0))} read, "
        f"{format_size(stats.get('new_bytes', 0))} new "
        f"-> {format_size(stats.get('stored_bytes', 0))} stored, "
        f"in {seconds:.1f} s ({format_size(size / seconds)}/s)",
        highlight=False,
    )


COMMANDS = [backup]
