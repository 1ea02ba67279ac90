"""``surety init``, ``check``, ``forget``, ``prune``."""

from __future__ import annotations

from datetime import datetime, timedelta

import click
from click.core import ParameterSource
from rich.markup import escape

from surety.app.repository import create_repository, require_maintenance
from surety.cli.context import open_repo, show_notes
from surety.cli.options import GlobalOptions, read_passphrase
from surety.cli.render import emit_json, err_console, out_console, point_identity_json, progress_for
from surety.core.errors import IntegrityError, UsageError
from surety.core.units import format_duration, format_size, parse_duration, parse_size
from surety.repo.candidates import check_grace
from surety.repo.check import CheckReport, DataSubset, check_repository
from surety.repo.forget import PointRef, forget_by_policy, forget_points
from surety.repo.prune import PruneReport, prune_repository
from surety.repo.repository import Repository
from surety.repo.retention import RetentionPolicy

__all__ = ["COMMANDS"]


@click.command()
@click.option(
    "--chunk-size",
    default="256K",
    show_default=True,
    help="Fixed chunk size of disk images (power of two, 64K..16M).",
)
@click.option(
    "--immutable-days",
    type=click.IntRange(min=1),
    metavar="N",
    help="Lock every restore point for N days (S3 Object Lock, COMPLIANCE): the bucket "
    "must have Object Lock; only the maintenance identity forgets or prunes, and only "
    "what expired.",
)
@click.argument("location", required=False)
@click.pass_context
def init(
    ctx: click.Context, location: str | None, chunk_size: str, immutable_days: int | None
) -> None:
    """Create a new, empty, encrypted repository.

    LOCATION is a directory or s3://BUCKET/PREFIX; without it, --repo or
    SURETY_REPOSITORY names it.
    """
    options: GlobalOptions = ctx.obj
    location = _init_location(ctx, location)
    size = parse_size(chunk_size)
    passphrase = read_passphrase(options, confirm=True)
    repo = create_repository(location, passphrase, size, immutable_days=immutable_days or 0)
    locked = f", restore points locked {immutable_days} day(s)" if immutable_days else ""
    out_console.print(
        f"created repository {repo.config.id[:12]} at {repo.storage.describe()} "
        f"(chunk size {format_size(size)}{locked})",
        highlight=False,
    )
    out_console.print("keep the passphrase safe: without it the data cannot be read")
    if options.repo and options.repo != location:
        err_console.print(
            f"note: SURETY_REPOSITORY names {escape(options.repo)}: the next commands use "
            f"that one unless given --repo {escape(location or '')}",
            highlight=False,
            soft_wrap=True,
        )


def _init_location(ctx: click.Context, location: str | None) -> str | None:
    """``init``'s LOCATION, else --repo / SURETY_REPOSITORY; two different ones given on
    the command line are refused (which one was meant?)."""
    repo: str | None = ctx.obj.repo
    if location is None:
        if not repo:
            raise UsageError(
                "no repository given: surety init LOCATION (a directory or s3://BUCKET/PREFIX), "
                "or --repo / SURETY_REPOSITORY"
            )
        return repo
    parent = ctx.parent
    given = (
        parent is not None and parent.get_parameter_source("repo") is ParameterSource.COMMANDLINE
    )
    if given and repo != location:
        raise UsageError(f"two repository locations given: --repo {repo} and {location}")
    return location


@click.command()
@click.option("--read-data", is_flag=True, help="Also read and verify every stored chunk, once.")
@click.option(
    "--read-data-subset",
    "subset_text",
    metavar="n/m|x%|SIZE",
    help="Read only some packs (implies --read-data): part n of m (parts 1..m together "
    "cover every pack once), a random x%, or random packs up to SIZE (e.g. 500M).",
)
@click.option("--json", "json_output", is_flag=True, help="Machine-readable output.")
@click.pass_context
def check(ctx: click.Context, read_data: bool, subset_text: str | None, json_output: bool) -> None:
    """Check the repository's structure (and with --read-data, every stored byte)."""
    subset = _parse_subset(subset_text)
    repo = open_repo(ctx)
    with progress_for(json_output) as progress:
        report = check_repository(repo, read_data, progress, subset)
    show_notes(repo)
    if json_output:
        emit_json(
            {
                "ok": report.ok,
                "errors": report.errors,
                "warnings": report.warnings,
                "points": report.points,
                "chunks": report.chunks,
                "packs": report.packs,
                "subset": report.subset,
                "packs_read": report.packs_read,
                "chunks_read": report.chunks_read,
                "bytes_read": report.bytes_read,
                "candidates": report.candidates,
            }
        )
    else:
        _print_check(report)
    if not report.ok:
        raise IntegrityError(f"check found {len(report.errors)} error(s)")
    if not json_output:
        out_console.print("[green]no errors found[/]")


def _parse_subset(text: str | None) -> DataSubset | None:
    if text is None:
        return None
    try:
        return DataSubset.parse(text)
    except UsageError as exc:
        raise UsageError(f"--read-data-subset {exc}") from None


def _print_check(report: CheckReport) -> None:
    for warning in report.warnings:
        out_console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    for error in report.errors:
        out_console.print(f"[red]error:[/] {error}", highlight=False)
    line = f"{report.points} restore points, {report.chunks} chunks in {report.packs} packs"
    if report.subset is not None:
        line += (
            f"; read {report.subset}: {report.packs_read} packs, {report.chunks_read} chunks, "
            f"{format_size(report.bytes_read)}"
        )
    out_console.print(line, highlight=False)


def _keep_options(f: click.decorators.FC) -> click.decorators.FC:
    for period in ("yearly", "monthly", "weekly", "daily", "hourly", "last"):
        what = "newest restore points" if period == "last" else f"{period} restore points"
        f = click.option(
            f"--keep-{period}",
            type=click.IntRange(min=0),
            default=0,
            help=f"Keep this many {what} per name.",
        )(f)
    return click.option(
        "--keep-within",
        metavar="DURATION",
        callback=_duration,
        help="Keep every restore point younger than DURATION (e.g. 2d, 12h, 1w) measured "
        "from the newest point of its name.",
    )(f)


def _duration(_ctx: click.Context, _param: click.Parameter, value: str | None) -> timedelta | None:
    try:
        return None if value is None else parse_duration(value)
    except UsageError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command()
@click.argument("ids", nargs=-1, metavar="[ID]...")
@_keep_options
@click.option("--dry-run", "-n", is_flag=True, help="Show what would be forgotten.")
@click.option("--json", "json_output", is_flag=True, help="Machine-readable output.")
@click.pass_context
def forget(
    ctx: click.Context,
    ids: tuple[str, ...],
    keep_last: int,
    keep_hourly: int,
    keep_daily: int,
    keep_weekly: int,
    keep_monthly: int,
    keep_yearly: int,
    keep_within: timedelta | None,
    dry_run: bool,
    json_output: bool,
) -> None:
    """Forget restore points by id, or by a retention policy (then `surety prune` frees space).

    Each ID is a unique prefix (4+ hex digits) of a restore point id; a point
    whose manifest is damaged can be forgotten this way too.
    """
    keeps = (keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly, keep_yearly)
    if ids:
        if any(keeps) or keep_within is not None:
            raise UsageError("give restore point ids or --keep-* rules, not both")
        _forget_ids(ctx, ids, dry_run, json_output)
        return
    policy = RetentionPolicy(*keeps, within=keep_within)
    repo = _maintenance_repo(ctx, dry_run)
    decisions = forget_by_policy(repo, policy, dry_run)
    show_notes(repo)
    if json_output:
        emit_json(
            [
                {"id": d.point.id, "name": d.point.name, "keep": d.keep, "reasons": list(d.reasons)}
                for d in decisions
            ]
        )
        return
    verb = "would forget" if dry_run else "forgot"
    for d in decisions:
        when = d.point.finished.astimezone().strftime("%Y-%m-%d %H:%M:%S")
        state = f"keep ({', '.join(d.reasons)})" if d.keep else verb
        out_console.print(f"{d.point.id[:12]}  {d.point.name:<20} {when}  {state}", highlight=False)
    dropped = sum(not d.keep for d in decisions)
    out_console.print(f"{verb} {dropped} of {len(decisions)} restore points")


def _maintenance_repo(ctx: click.Context, dry_run: bool) -> Repository:
    """Forget and prune delete: on an immutable repository only with the maintenance identity."""
    repo = open_repo(ctx, maintenance=True)
    if not dry_run:
        require_maintenance(repo)
    return repo


def _forget_ids(ctx: click.Context, ids: tuple[str, ...], dry_run: bool, json_output: bool) -> None:
    repo = _maintenance_repo(ctx, dry_run)
    found = forget_points(repo, ids, dry_run)
    show_notes(repo)
    if json_output:
        emit_json([_forgotten_json(p) for p in found])
        return
    verb = "would forget" if dry_run else "forgot"
    for point in found:
        if point.manifest is None:
            what = f"{'damaged manifest':<20} {'':19}"
        else:
            when = point.manifest.finished.astimezone().strftime("%Y-%m-%d %H:%M:%S")
            what = f"{point.manifest.name:<20} {when}"
        out_console.print(f"{point.id[:12]}  {what}  {verb}", highlight=False)
    out_console.print(f"{verb} {len(found)} restore point(s)")


def _forgotten_json(point: PointRef) -> dict[str, object]:
    return {
        **point_identity_json(point.id, point.manifest),
        "problem": point.problem or None,
        "keep": False,
        "reasons": [],
    }


@click.command()
@click.option("--dry-run", "-n", is_flag=True, help="Show what would be deleted.")
@click.option(
    "--grace",
    "grace_text",
    metavar="DURATION",
    help="Delete an unreferenced pack or image index only this long after a prune marked "
    "it (two phases; default on S3: 60m; at least 30m, the stale-lock age). On a local "
    "repository it asks for two phases (a directory several hosts share).",
)
@click.option("--json", "json_output", is_flag=True, help="Machine-readable output.")
@click.pass_context
def prune(ctx: click.Context, dry_run: bool, grace_text: str | None, json_output: bool) -> None:
    """Delete data that no restore point references (takes the exclusive lock).

    On S3 in two phases: what no point references is marked, and deleted by a later
    prune at least the grace period later if still unreferenced. On an immutable
    repository: with the maintenance identity, and only what expired.
    """
    grace = check_grace(parse_duration(grace_text)) if grace_text is not None else None
    repo = _maintenance_repo(ctx, dry_run)
    with progress_for(json_output) as progress:
        report = prune_repository(repo, progress, dry_run=dry_run, grace=grace)
    show_notes(repo)
    if json_output:
        emit_json({"dry_run": dry_run, **report.__dict__})
        return
    for note in report.notes:
        err_console.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
    freed = report.freed_bytes
    out_console.print(
        f"{'would delete' if dry_run else 'deleted'} {report.deleted_packs} packs, "
        f"repacked {report.repacked_packs}, {report.deleted_images} image indexes"
        f"{f', kept {report.kept_locked} still locked' if report.kept_locked else ''}; "
        + (
            f"{'would free' if dry_run else 'freed'} {format_size(freed)}"
            if freed >= 0
            else f"{format_size(-freed)} more stored until the packs it replaced are deleted"
        ),
        highlight=False,
    )
    if report.two_phase:
        out_console.print(_two_phase_line(report, dry_run), highlight=False)


def _two_phase_line(report: PruneReport, dry_run: bool) -> str:
    grace = format_duration(timedelta(seconds=report.grace_seconds or 0))
    line = (
        f"{'would mark' if dry_run else 'marked'} {report.marked} unreferenced object(s) "
        f"({format_size(report.marked_bytes)}) for deletion"
    )
    if report.waiting and report.next_deletion is not None:
        when = datetime.fromisoformat(report.next_deletion).astimezone()
        line += (
            f"; {report.waiting} candidate(s) ({format_size(report.waiting_bytes)}) wait: a "
            f"prune from {when:%Y-%m-%d %H:%M:%S %Z} on deletes them (grace {grace})"
        )
    if report.referenced_again:
        line += f"; {report.referenced_again} referenced again, kept"
    return line


COMMANDS = [init, check, forget, prune]
