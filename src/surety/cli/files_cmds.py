"""``surety files fs|ls|get``: file-level restore from a restore point."""

from __future__ import annotations

import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from rich.table import Table
from rich.text import Text

from surety.cli.context import open_repo, show_notes
from surety.cli.options import json_option
from surety.cli.render import emit_json, out_console, progress_for
from surety.core.units import format_size
from surety.restore.export import FileSystem
from surety.restore.files import (
    RUN_ROOT,
    Entry,
    FileSource,
    GetOptions,
    get_files,
    list_file_systems,
    list_files,
)

__all__ = ["COMMANDS"]

_disk_option = click.option(
    "--disk", help="Disk of the restore point (needed when it has several)."
)
_fs_option = click.option(
    "--fs",
    "fs_number",
    type=click.IntRange(min=0),
    help="File system: its partition number (0 = the whole disk); see `surety files fs`.",
)
_run_root_option = click.option(
    "--runtime-dir",
    "run_root",
    type=click.Path(path_type=Path, file_okay=False),
    envvar="SURETY_RUNTIME_DIR",
    default=str(RUN_ROOT),
    show_default=True,
    hidden=True,
    help="Where private run directories (mounts, sockets) live.",
)


@click.group()
def files() -> None:
    """List and extract files of a restore point without restoring its disk (root)."""


@files.command("fs")
@click.argument("point")
@_disk_option
@json_option
@_run_root_option
@click.pass_context
def files_fs(
    ctx: click.Context, point: str, disk: str | None, json_output: bool, run_root: Path
) -> None:
    """List the partitions and file systems of a disk of POINT."""
    repo = open_repo(ctx)
    with progress_for(json_output) as progress:
        result = list_file_systems(repo, FileSource(point, disk, run_root=run_root), progress)
    show_notes(repo)
    if json_output:
        emit_json(
            {
                "point": result.point.id,
                "disk": result.disk,
                "file_systems": [_fs_json(fs) for fs in result.file_systems],
            }
        )
        return
    table = Table(box=None)
    for column in ("fs", "type", "size", "label", "uuid", "mountable"):
        table.add_column(column)
    for fs in result.file_systems:
        table.add_row(
            str(fs.number),
            fs.type or "-",
            format_size(fs.size),
            Text(fs.label),
            fs.uuid,
            "yes" if fs.mountable else "no",
        )
    out_console.print(table)
    out_console.print(f"{len(result.file_systems)} file systems on disk {result.disk}")


@files.command("ls")
@click.argument("point")
@click.argument("path", default="/")
@_disk_option
@_fs_option
@json_option
@_run_root_option
@click.pass_context
def files_ls(
    ctx: click.Context,
    point: str,
    path: str,
    disk: str | None,
    fs_number: int | None,
    json_output: bool,
    run_root: Path,
) -> None:
    """List directory PATH (default /) in a file system of POINT."""
    repo = open_repo(ctx)
    source = FileSource(point, disk, fs_number, run_root)
    with progress_for(json_output) as progress:
        listing = list_files(repo, source, path, progress)
    show_notes(repo)
    if json_output:
        emit_json(
            {
                "point": listing.point.id,
                "disk": listing.disk,
                "fs": _fs_json(listing.fs),
                "path": listing.path,
                "entries": [_entry_json(entry) for entry in listing.entries],
            }
        )
        return
    table = Table(box=None)
    for column in ("mode", "uid", "gid", "size", "modified", "name"):
        table.add_column(column, justify="right" if column == "size" else "left")
    for entry in listing.entries:
        name = entry.path.rsplit("/", 1)[1] or "/"
        table.add_row(
            stat.filemode(entry.mode),
            str(entry.uid),
            str(entry.gid),
            str(entry.size),
            _mtime(entry).astimezone().strftime("%Y-%m-%d %H:%M"),
            Text(f"{name} -> {entry.target}" if entry.target is not None else name),
        )
    out_console.print(table)


@files.command("get")
@click.argument("point")
@click.argument("paths", nargs=-1, required=True)
@click.option(
    "--to",
    "target",
    required=True,
    type=click.Path(path_type=Path),
    help="Directory to extract into (made if missing); each PATH lands under its own name.",
)
@_disk_option
@_fs_option
@click.option("--overwrite", is_flag=True, help="Replace entries that exist in the target.")
@json_option
@_run_root_option
@click.pass_context
def files_get(
    ctx: click.Context,
    point: str,
    paths: tuple[str, ...],
    target: Path,
    disk: str | None,
    fs_number: int | None,
    overwrite: bool,
    json_output: bool,
    run_root: Path,
) -> None:
    """Extract PATHs (files or directories, owners, modes and times kept) from POINT."""
    repo = open_repo(ctx)
    source = FileSource(point, disk, fs_number, run_root)
    options = GetOptions(source, paths, target, overwrite)
    with progress_for(json_output) as progress:
        result = get_files(repo, options, progress)
    show_notes(repo)
    if json_output:
        emit_json(
            {
                "point": result.point.id,
                "disk": result.disk,
                "fs": _fs_json(result.fs),
                "target": str(result.target),
                "items": [{"path": guest, "to": str(dest)} for guest, dest in result.items],
                "counts": result.counts,
                "bytes": result.bytes,
                "xattrs_skipped": result.xattrs_skipped,
            }
        )
        return
    counts = ", ".join(f"{n} {kind}" for kind, n in sorted(result.counts.items()))
    out_console.print(
        Text(
            f"extracted {len(result.items)} paths of {result.disk} (file system "
            f"{result.fs.describe()}) of {result.point.id[:12]} to {result.target}: "
            f"{counts}; {format_size(result.bytes)} data, every chunk verified"
        )
    )
    if result.xattrs_skipped:
        out_console.print(
            f"note: {result.xattrs_skipped} extended attributes were not accepted by the target"
        )


def _fs_json(fs: FileSystem) -> dict[str, Any]:
    return {
        "number": fs.number,
        "type": fs.type,
        "size": fs.size,
        "label": fs.label,
        "uuid": fs.uuid,
        "mountable": fs.mountable,
    }


def _entry_json(entry: Entry) -> dict[str, Any]:
    return {
        "path": entry.path,
        "kind": entry.kind,
        "mode": f"{stat.S_IMODE(entry.mode):04o}",
        "uid": entry.uid,
        "gid": entry.gid,
        "size": entry.size,
        "mtime": _mtime(entry).isoformat(),
        "mtime_ns": entry.mtime_ns,
        "target": entry.target,
    }


def _mtime(entry: Entry) -> datetime:
    return datetime.fromtimestamp(entry.mtime_ns / 1e9, tz=UTC)


COMMANDS = [files]
