"""``surety unlock`` and ``surety repair index|points``: the ways out of damage."""

from __future__ import annotations

from typing import Any

import click
from rich.markup import escape

from surety.cli.context import open_repo, show_notes
from surety.cli.options import json_option
from surety.cli.render import emit_json, err_console, out_console, point_identity_json, progress_for
from surety.core.errors import IntegrityError
from surety.core.units import format_size
from surety.repo.repair import (
    DamagedPoint,
    DiskLoss,
    IndexRepair,
    remove_locks,
    repair_index,
    repair_points,
)

__all__ = ["COMMANDS"]

_UNLOCK_ALL_WARNING = (
    "[bold yellow]warning:[/] removing every lock. Do this only when no other surety process "
    "uses this repository: removing a live lock lets prune delete data a running backup "
    "is writing"
)

_dry_run_option = click.option("--dry-run", "-n", is_flag=True, help="Show what would be done.")


@click.command()
@click.option(
    "--all",
    "everything",
    is_flag=True,
    help="Remove live locks too (only when no other surety process uses the repository).",
)
@json_option
@click.pass_context
def unlock(ctx: click.Context, everything: bool, json_output: bool) -> None:
    """Remove stale and unreadable locks (with --all, every lock)."""
    repo = open_repo(ctx)
    if everything:
        err_console.print(_UNLOCK_ALL_WARNING, highlight=False)
    result = remove_locks(repo.storage, everything)
    show_notes(repo)
    if json_output:
        emit_json(
            {
                "removed": [{"lock": i.name, "what": i.describe()} for i in result.removed],
                "live": [{"lock": i.name, "what": i.describe()} for i in result.live],
            }
        )
        return
    for info in result.removed:
        out_console.print(f"removed {escape(info.describe())}", highlight=False)
    for info in result.live:
        out_console.print(
            f"left live {escape(info.describe())} (`surety unlock --all` removes it)",
            highlight=False,
        )
    out_console.print(f"removed {len(result.removed)} lock(s), {len(result.live)} live left")


@click.group()
def repair() -> None:
    """Repair a damaged repository: rebuild the index, drop or salvage restore points."""


@repair.command("index")
@_dry_run_option
@json_option
@click.pass_context
def index_command(ctx: click.Context, dry_run: bool, json_output: bool) -> None:
    """Rebuild the index from the headers of the stored packs."""
    repo = open_repo(ctx)
    with progress_for(json_output) as progress:
        report = repair_index(repo, progress, dry_run)
    show_notes(repo)
    if json_output:
        emit_json(_index_json(report, dry_run))
    else:
        _print_index(report, dry_run)
    if report.lost:
        raise IntegrityError(
            f"{len(report.lost)} restore point(s) need chunks no pack holds intact: "
            "`surety repair points` drops them (--salvage keeps the rest of their data)"
        )


def _index_json(report: IndexRepair, dry_run: bool) -> dict[str, Any]:
    return {
        "dry_run": dry_run,
        "packs": report.packs,
        "chunks": report.chunks,
        "damaged_packs": report.damaged_packs,
        "kept_from_old_index": report.kept_from_old,
        "replaced_index_objects": report.replaced,
        "damaged_index_objects": report.damaged_indexes,
        "new_index": report.new_index,
        "lost_points": [_lost_json(p) for p in report.lost],
    }


def _print_index(report: IndexRepair, dry_run: bool) -> None:
    for pack_id, why in sorted(report.damaged_packs.items()):
        kept = report.kept_from_old.get(pack_id, 0)
        rescue = f"; {kept} chunk(s) kept from the old index" if kept else ""
        out_console.print(f"[red]damaged:[/] {escape(why)}{rescue}", highlight=False)
    for point in report.lost:
        _print_point(point, "needs chunks the new index lacks")
    verb = "would index" if dry_run else "indexed"
    out_console.print(
        f"{verb} {report.chunks} chunks in {report.packs} packs; "
        f"{len(report.damaged_packs)} damaged pack header(s); "
        f"{'would replace' if dry_run else 'replaced'} {report.replaced} old index object(s) "
        f"({report.damaged_indexes} damaged)",
        highlight=False,
    )


@repair.command("points")
@click.option(
    "--salvage",
    is_flag=True,
    help="Keep the points whose manifest and image indexes are readable: lost chunks become zeros.",
)
@_dry_run_option
@json_option
@click.pass_context
def points_command(ctx: click.Context, salvage: bool, dry_run: bool, json_output: bool) -> None:
    """Drop (or salvage) the restore points whose data is gone, saying what is lost."""
    repo = open_repo(ctx)
    with progress_for(json_output) as progress:
        found = repair_points(repo, progress, salvage=salvage, dry_run=dry_run)
    show_notes(repo)
    if json_output:
        emit_json(
            {"dry_run": dry_run, "salvage": salvage, "points": [_lost_json(p) for p in found]}
        )
        return
    done = {"drop": "would drop" if dry_run else "dropped"}
    done["salvage"] = "would salvage" if dry_run else "salvaged"
    for point in found:
        new = f" as {point.new_id[:12]}" if point.new_id else ""
        _print_point(point, f"{done[point.action]}{new}")
    dropped = sum(p.action == "drop" for p in found)
    out_console.print(
        f"{done['drop']} {dropped}, {done['salvage']} {len(found) - dropped} restore point(s)"
        + ("; `surety prune` then frees their data" if found and not dry_run else ""),
        highlight=False,
    )


def _describe_point(point_id: str, name: str | None, finished: str | None) -> str:
    """``id  name  time`` of a point, or ``id  damaged manifest``."""
    if name is None:
        return f"{point_id[:12]}  damaged manifest"
    return f"{point_id[:12]}  {name:<20} {finished}"


def _print_point(point: DamagedPoint, what: str) -> None:
    manifest = point.manifest
    when = manifest.finished.astimezone().strftime("%Y-%m-%d %H:%M:%S") if manifest else None
    line = _describe_point(point.id, manifest.name if manifest else None, when)
    out_console.print(f"{escape(line)}  {what}", highlight=False)
    for problem in point.problems:
        out_console.print(f"    {escape(problem)}", highlight=False)
    for loss in point.losses:
        out_console.print(f"    {escape(_loss_line(loss))}", highlight=False)


def _loss_line(loss: DiskLoss) -> str:
    shown = ", ".join(f"[{start}, {end})" for start, end in loss.ranges[:8])
    more = f" and {len(loss.ranges) - 8} more" if len(loss.ranges) > 8 else ""
    return (
        f"{loss.disk}: {loss.chunks} chunk(s), {format_size(loss.lost_bytes)} lost, "
        f"bytes {shown}{more}"
    )


def _lost_json(point: DamagedPoint) -> dict[str, Any]:
    return {
        **point_identity_json(point.id, point.manifest),
        "problems": point.problems,
        "action": point.action or None,
        "new_id": point.new_id,
        "lost": {
            loss.disk: {"chunks": loss.chunks, "bytes": loss.lost_bytes, "ranges": loss.ranges}
            for loss in point.losses
        },
    }


COMMANDS = [unlock, repair]
