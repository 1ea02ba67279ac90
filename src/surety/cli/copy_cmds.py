"""``surety copy``: copy restore points into another repository (``surety.repo.copy``);
``--policy NAME`` takes both repositories from the configuration (``jobs.copy``)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from surety.app.catalog import open_catalog
from surety.app.configured import open_configured_repository, repository_passphrase
from surety.app.repository import storage_for
from surety.cli.context import open_repo, show_notes
from surety.cli.options import catalog_option, config_option, json_option
from surety.cli.render import emit_json, out_console, progress_for
from surety.config import load_config
from surety.config.model import Config, Policy
from surety.core.errors import UsageError, WrongPassphrase
from surety.core.units import format_size, parse_size
from surety.jobs.copy import apply_target_retention, policy_points
from surety.repo.copy import CopyReport, copy_points
from surety.repo.manifest import Manifest
from surety.repo.repository import Repository
from surety.repo.storage.base import Storage
from surety.repo.storage.ratelimit import RateLimitedStorage, parse_rate
from surety.repo.verified import latest_summaries

__all__ = ["COMMANDS"]


@click.command()
@click.argument("refs", metavar="POINT...", nargs=-1)
@click.option("--all", "all_points", is_flag=True, help="Every restore point of the source.")
@click.option("--to", "to", metavar="LOCATION", help="The target repository (path or s3://).")
@click.option(
    "--policy",
    "policy_name",
    metavar="NAME",
    help="Copy the policy's points from its repository to its copy_to (both from --config).",
)
@config_option
@click.option(
    "--to-passphrase-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="The target's passphrase from this file (else SURETY_TO_PASSPHRASE, else prompt).",
)
@click.option("--verified-only", is_flag=True, help="Only points whose latest verification passed.")
@click.option("--dry-run", is_flag=True, help="Say what would be copied; copy nothing.")
@click.option(
    "--limit-upload",
    metavar="RATE",
    help="At most RATE bytes per second to the target (e.g. 20M, 512K/s).",
)
@click.option(
    "--checkpoint-every",
    metavar="SIZE",
    default="256M",
    show_default=True,
    help="Index what was uploaded after this much: what a rerun after a kill may send again.",
)
@catalog_option
@json_option
@click.pass_context
def copy(
    ctx: click.Context,
    refs: tuple[str, ...],
    all_points: bool,
    to: str | None,
    policy_name: str | None,
    config: Path,
    to_passphrase_file: Path | None,
    verified_only: bool,
    dry_run: bool,
    limit_upload: str | None,
    checkpoint_every: str,
    catalog: Path,
    json_output: bool,
) -> None:
    """Copy restore points (ids, id prefixes, NAME@latest, or --all) into the repository
    at --to. Only chunks the target lacks are uploaded; every chunk is hash-checked on
    read and sealed under the target's keys; a rerun after an interruption copies only
    what is missing, and points already there are skipped. The target keeps its own
    retention: copy never forgets anything, except that with --policy the retention
    configured for the copy_to repository is applied to the copied VMs' points there.

    --policy NAME takes the source, the target and their passphrases and S3 settings
    from the configuration (--config); without POINT... it copies the points of the
    VMs the policy names."""
    if refs and all_points:
        raise UsageError("name restore points to copy, or use --all (not both)")
    rate = parse_rate(limit_upload) if limit_upload else None
    checkpoint = parse_size(checkpoint_every)
    if policy_name is not None:
        settings = _policy_settings(policy_name, to, config)
        source, target, policy = _open_by_policy(settings, policy_name, rate)
        if settings.service.catalog is not None and _default(ctx, "catalog"):
            catalog = settings.service.catalog
    else:
        if not refs and not all_points:
            raise UsageError("name restore points to copy, or use --all (or --policy NAME)")
        if to is None:
            raise UsageError("give the target with --to LOCATION (or use --policy NAME)")
        source_from = _given_by(ctx.obj.passphrase_file, "SURETY_PASSPHRASE")
        with _naming("source", ctx.obj.repo, source_from):
            source, policy = open_repo(ctx), None
        with _naming("target", to, _given_by(to_passphrase_file, "SURETY_TO_PASSPHRASE")):
            target = Repository.open(
                _limited(storage_for(to), rate), _target_passphrase(to_passphrase_file)
            )
    with source.lock(exclusive=False, operation="copy (source)", read_only=True):
        if refs or all_points:
            points = source.points() if all_points else [source.resolve(ref) for ref in refs]
        else:
            assert policy is not None
            points = policy_points(policy, source.points())
        refused = _unverified(catalog, source, points) if verified_only else {}
        with progress_for(json_output) as progress:
            report = copy_points(
                source,
                target,
                points,
                progress,
                dry_run=dry_run,
                refused=refused,
                checkpoint_bytes=checkpoint,
            )
    forgotten: list[str] = []
    if policy is not None and not dry_run:
        forgotten = _target_retention(policy, settings, target, points, json_output)
    show_notes(source)
    show_notes(target)
    _render(report, json_output, dry_run, forgotten)


def _default(ctx: click.Context, name: str) -> bool:
    return ctx.get_parameter_source(name) in (
        click.core.ParameterSource.DEFAULT,
        click.core.ParameterSource.DEFAULT_MAP,
    )


def _policy_settings(name: str, to: str | None, path: Path) -> Config:
    """The configuration, with a policy ``name`` that has a copy_to (the source is its
    repository, whatever --repo/SURETY_REPOSITORY say)."""
    if to is not None:
        raise UsageError("--policy takes the target from the policy's copy_to: leave out --to")
    settings = load_config(path)
    policy = settings.policies.get(name)
    if policy is None:
        known = ", ".join(sorted(settings.policies)) or "none"
        raise UsageError(f"no policy {name!r} in {path} (policies: {known})")
    if policy.copy_to is None:
        raise UsageError(f"policy {name} has no copy_to: name the target repository there")
    return settings


def _open_by_policy(
    settings: Config, name: str, rate: float | None
) -> tuple[Repository, Repository, Policy]:
    policy = settings.policies[name]
    assert policy.copy_to is not None
    with _naming("source", *_configured(settings, policy.repository)):
        source = open_configured_repository(settings, policy.repository)
    with _naming("target", *_configured(settings, policy.copy_to)):
        target = open_configured_repository(settings, policy.copy_to)
    if rate is not None:
        target = Repository.open(
            _limited(target.storage, rate), repository_passphrase(settings, policy.copy_to)
        )
    return source, target, policy


def _configured(settings: Config, name: str) -> tuple[str, str]:
    """``[repository.NAME]`` and where its passphrase comes from (``repository_passphrase``)."""
    repository = settings.repositories.get(name)
    passphrase_file = None if repository is None else repository.passphrase_file
    return f"[repository.{name}]", str(passphrase_file or "SURETY_PASSPHRASE")


def _given_by(path: Path | None, variable: str) -> str:
    """Where a passphrase was read: its file, else ``variable``, else the prompt (the order
    of ``read_passphrase`` and ``_target_passphrase``)."""
    if path is not None:
        return str(path)
    return variable if os.environ.get(variable) else "typed at the prompt"


@contextmanager
def _naming(role: str, location: str | None, given_by: str) -> Iterator[None]:
    """A wrong passphrase says which of the copy's two repositories refused it, and where
    that passphrase came from."""
    try:
        yield
    except WrongPassphrase as exc:
        raise WrongPassphrase(
            f"the copy's {role} {location}: {exc} (its passphrase: {given_by})"
        ) from exc


def _limited(storage: Storage, rate: float | None) -> Storage:
    return storage if rate is None else RateLimitedStorage(storage, rate)


def _target_retention(
    policy: Policy,
    settings: Config,
    target: Repository,
    points: list[Manifest],
    json_output: bool,
) -> list[str]:
    """The copy_to repository's own retention, for the VMs whose points were copied."""
    assert policy.copy_to is not None
    target_config = settings.repositories[policy.copy_to]
    if target_config.retention is None:
        return []
    with progress_for(json_output) as progress:
        return apply_target_retention(target_config, {p.name for p in points}, target, progress)


def _target_passphrase(path: Path | None) -> str:
    if path is not None:
        try:
            text = path.read_text().rstrip("\n")
        except OSError as exc:
            raise UsageError(f"cannot read the target's passphrase file: {exc.strerror}") from exc
        if not text:
            raise UsageError(f"{path} is empty")
        return text
    from_env = os.environ.get("SURETY_TO_PASSPHRASE")
    if from_env:
        return from_env
    if sys.stdin.isatty():
        return str(click.prompt("target repository passphrase", hide_input=True))
    raise UsageError(
        "no passphrase for the target: set SURETY_TO_PASSPHRASE or use --to-passphrase-file"
    )


def _unverified(catalog: Path, source: Repository, points: list[Manifest]) -> dict[str, str]:
    """Point id -> why it is not copied, for points whose latest verification did not pass."""
    latest = open_catalog(catalog).latest_verifications(source.config.id, [p.id for p in points])
    summaries = latest_summaries(source)  # the repository's own record (docs/dr.md)
    refused = {}
    for point in points:
        found = latest.get(point.id)
        summary = summaries.get(point.id)
        if found is not None:
            if found.status != "verified":
                refused[point.id] = f"latest verification: {found.status} ({found.at[:16]})"
        elif summary is None:
            refused[point.id] = "never verified"
        elif summary.verdict != "passed":
            refused[point.id] = f"latest verification: failed ({summary.verified[:16]})"
    return refused


def _render(report: CopyReport, json_output: bool, dry_run: bool, forgotten: list[str]) -> None:
    if json_output:
        document: dict[str, Any] = {
            "source": report.source,
            "target": report.target,
            "dry_run": dry_run,
            "copied": report.count("copied"),
            "skipped": report.count("skipped"),
            "not_verified": report.count("not verified"),
            "would_copy": report.count("would copy"),
            "chunks_transferred": report.chunks,
            "bytes_transferred": report.bytes,
            "target_forgotten": forgotten,
            "points": [
                {
                    "point": o.point,
                    "name": o.name,
                    "status": o.status,
                    "target_point": o.target_point,
                    "chunks": o.chunks,
                    "bytes": o.bytes,
                    "reason": o.reason,
                }
                for o in report.outcomes
            ],
        }
        emit_json(document)
        return
    for o in report.outcomes:
        where = f" -> {o.target_point[:12]}" if o.target_point else ""
        why = f" ({o.reason})" if o.reason else ""
        sent = f", {o.chunks} chunks, {format_size(o.bytes)}" if o.status == "copied" else ""
        out_console.print(f"{o.status}: {o.name} {o.point[:12]}{where}{sent}{why}", highlight=False)
    for point_id in forgotten:
        out_console.print(f"forgotten in the target (its retention): {point_id[:12]}")
    summary = (
        f"{report.count('would copy')} would be copied"
        if dry_run
        else f"{report.count('copied')} copied"
    )
    out_console.print(
        f"{summary}, {report.count('skipped')} skipped (already there), "
        f"{report.count('not verified')} not verified; "
        f"{format_size(report.bytes)} transferred ({report.chunks} new chunks)",
        highlight=False,
    )


COMMANDS = [copy]
