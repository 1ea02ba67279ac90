"""``surety restore image``."""

from __future__ import annotations

from pathlib import Path

import click

from surety.cli.context import open_repo, show_notes
from surety.cli.render import emit_json, out_console, progress_for
from surety.core.units import format_size
from surety.restore.image import ImageRestoreOptions, restore_image

__all__ = ["COMMANDS"]


@click.group()
def restore() -> None:
    """Restore from restore points."""


@restore.command("image")
@click.argument("point")
@click.option("--disk", help="Disk to restore (needed when the point has several).")
@click.option(
    "--to",
    "target",
    required=True,
    type=click.Path(path_type=Path),
    help="Target file (written sparse) or block device.",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing target file.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["raw", "qcow2"]),
    default="raw",
    show_default=True,
    help="Image format of a file target.",
)
@click.option("--json", "json_output", is_flag=True, help="Machine-readable output.")
@click.pass_context
def restore_image_command(
    ctx: click.Context,
    point: str,
    disk: str | None,
    target: Path,
    overwrite: bool,
    fmt: str,
    json_output: bool,
) -> None:
    """Restore one disk of POINT (id, id prefix or NAME@latest) to a file or device."""
    repo = open_repo(ctx)
    options = ImageRestoreOptions(point, target, disk, overwrite, format=fmt)
    with progress_for(json_output) as progress:
        result = restore_image(repo, options, progress)
    show_notes(repo)
    if json_output:
        emit_json(
            {
                "point": result.point.id,
                "disk": result.disk,
                "target": str(result.target),
                "size": result.size,
                "written": result.written,
            }
        )
        return
    out_console.print(
        f"restored {result.disk} of {result.point.id[:12]} to {result.target} "
        f"({format_size(result.size)}, {format_size(result.written)} data, "
        "every chunk verified)",
        highlight=False,
    )


COMMANDS = [restore]
