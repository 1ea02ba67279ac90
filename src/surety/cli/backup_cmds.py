"""``surety backup image``."""

from __future__ import annotations

from contextlib import closing
from pathlib import Path
from typing import Any

import click

from surety.app.hypervisor import connect_host
from surety.backup.image import ImageBackupOptions, backup_image
from surety.backup.vm import VmBackupOptions, backup_vm
from surety.cli.context import open_repo, show_notes
from surety.cli.options import connect_option, json_option, settings_option
from surety.cli.render import emit_json, out_console, progress_for
from surety.core.errors import SourceError
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
@json_option
@click.pass_context
def backup_image_command(
    ctx: click.Context, source: Path, name: str, disk: str | None, json_output: bool
) -> None:
    """Back up a raw disk image file or block device.

    SOURCE must be a non-empty regular file or a block device; a pipe or FIFO
    (e.g. /dev/stdin), a character device such as /dev/zero, or a directory is
    refused.
    """
    repo = open_repo(ctx)
    with progress_for(json_output) as progress:
        point = backup_image(repo, ImageBackupOptions(source, name, disk), progress)
    show_notes(repo)
    render_point_summary(point, json_output)


def render_point_summary(
    point: Manifest, json_output: bool, extra: dict[str, Any] | None = None
) -> None:
    seconds = max((point.finished - point.started).total_seconds(), 1e-6)
    stats = point.stats
    if json_output:
        emit_json(
            {
                "id": point.id,
                "name": point.name,
                "consistency": point.consistency,
                "consistency_reason": point.consistency_reason,
                "source": point.source,
                "seconds": round(seconds, 3),
                "applications": point.applications,
                **stats,
                **(extra or {}),
            }
        )
        return
    size = sum(d.size for d in point.disks)
    out_console.print(
        f"restore point {point.id[:12]} ({point.name}, {point.consistency}-consistent) committed\n"
        + (f"  {point.consistency_reason}\n" if point.kind == "vm" else "")
        + f"  {format_size(size)} disk, {format_size(stats.get('read_bytes', 0))} read, "
        f"{format_size(stats.get('new_bytes', 0))} new "
        f"-> {format_size(stats.get('stored_bytes', 0))} stored, "
        f"in {seconds:.1f} s ({format_size(size / seconds)}/s)",
        highlight=False,
    )
    for name, record in point.applications.items():
        for warning in record.get("warnings", []):
            out_console.print(f"  warning: {name}: {warning}", highlight=False)
    for name, outcome in (extra or {}).get("log_truncation", {}).items():
        out_console.print(f"  {name} log truncation: {outcome.get('detail', '')}", highlight=False)


@backup.command("vm")
@click.argument("domain")
@click.option(
    "--consistency",
    type=click.Choice(["crash", "filesystem", "application"]),
    default="filesystem",
    show_default=True,
    help="Consistency level wanted (the level reached is recorded).",
)
@click.option(
    "--on-quiesce-failure",
    type=click.Choice(["fail", "filesystem", "crash"]),
    default="fail",
    show_default=True,
    help="If a writer or the file-system freeze fails: fail the job, or accept this lower "
    "level (the fall-back is recorded in the restore point).",
)
@click.option(
    "--truncate-logs",
    type=click.Choice(["never", "after-commit", "after-verify"]),
    default="never",
    show_default=True,
    help="Let writers truncate application logs (WAL archive, binlogs) up to what the restore "
    "point covers, once it is committed (or verified).",
)
@click.option(
    "--writer",
    "writers",
    multiple=True,
    help="Application writer to use (repeatable) [default: every installed writer that applies].",
)
@click.option("--pre-freeze", metavar="CMD", help="Guest shell command run just before the freeze.")
@click.option("--post-thaw", metavar="CMD", help="Guest shell command run right after the thaw.")
@click.option(
    "--after-commit", metavar="CMD", help="Guest shell command run once the point is committed."
)
@click.option(
    "--script-failure",
    type=click.Choice(["fail", "ignore"]),
    default="fail",
    show_default=True,
    help="A failing --pre-freeze/--post-thaw/--after-commit command fails the job, or is "
    "recorded as a warning.",
)
@settings_option("Option of a writer, e.g. samba-ad.backup-dir=/srv/ad-backup")
@click.option("--full", is_flag=True, help="Read every allocated block (no incremental).")
@click.option(
    "--freeze-window",
    type=click.FloatRange(min=0.5, max=600),
    default=10.0,
    show_default=True,
    help="Longest time the guest may stay frozen (seconds).",
)
@connect_option
@json_option
@click.pass_context
def backup_vm_command(
    ctx: click.Context,
    domain: str,
    consistency: str,
    on_quiesce_failure: str,
    full: bool,
    freeze_window: float,
    uri: str,
    json_output: bool,
    truncate_logs: str,
    writers: tuple[str, ...],
    pre_freeze: str | None,
    post_thaw: str | None,
    after_commit: str | None,
    script_failure: str,
    settings: dict[str, str],
) -> None:
    """Back up a running libvirt VM: all its disks at one instant, with its configuration.

    With --consistency application, every installed writer that finds its
    application in the guest (PostgreSQL, MariaDB, your scripts) quiesces it.
    """
    repo = open_repo(ctx)
    options = VmBackupOptions(
        domain,
        consistency,
        on_quiesce_failure,
        full,
        freeze_window,
        truncate_logs=truncate_logs,
        writers=writers or None,
        pre_freeze=pre_freeze,
        post_thaw=post_thaw,
        after_commit=after_commit,
        script_failure=script_failure,
        settings=settings,
    )
    with progress_for(json_output) as progress, closing(connect_host(uri)) as host:
        result = backup_vm(repo, options, progress, host=host)
    show_notes(repo)
    render_point_summary(result.point, json_output, {"log_truncation": result.log_truncation})
    if result.after_commit_error:
        raise SourceError(
            f"restore point {result.point.id[:12]} is committed, but {result.after_commit_error}"
        )


COMMANDS = [backup]
