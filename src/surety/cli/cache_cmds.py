"""``surety cache rebuild|info``: the local chunk-index cache of a repository (``repo.cache``).

The cache is this host's rebuildable copy of the repository's index objects;
``SURETY_NO_CACHE=1`` makes every command read the index from storage instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from surety.app.repository import open_repository
from surety.cli.context import show_notes
from surety.cli.options import GlobalOptions, read_passphrase
from surety.cli.render import emit_json, out_console
from surety.core.errors import UsageError
from surety.core.units import format_size
from surety.repo.cache import CacheDamaged, ChunkTable, cache_key
from surety.repo.repository import Repository

__all__ = ["COMMANDS"]


@click.group()
def cache() -> None:
    """The local cache of the chunk index (rebuildable; never trusted over the repository)."""


def _open(ctx: click.Context, location: str | None) -> tuple[Repository, Path]:
    options: GlobalOptions = ctx.obj
    repo = open_repository(location or options.repo, read_passphrase(options), False)
    ctx.meta["surety.repository"] = repo
    cache_dir = repo.cache_dir()
    if cache_dir is None:
        raise UsageError("the local index cache is off (SURETY_NO_CACHE is set)")
    return repo, cache_dir


def _describe(repo: Repository, cache_dir: Path) -> dict[str, Any]:
    doc: dict[str, Any] = {"repository": repo.config.id, "path": str(cache_dir)}
    try:
        table = ChunkTable(cache_dir / "table", cache_key(repo.keys.object_id))
    except FileNotFoundError:
        return {**doc, "state": "absent"}
    except (CacheDamaged, OSError) as exc:
        return {**doc, "state": "damaged", "reason": str(exc)}
    try:
        listing = dict(repo.storage.list("index/"))
        current = table.index_names == {n: listing.get(n) for n in table.index_names}
        behind = sum(1 for n in listing if n not in table.index_names)
        return {
            **doc,
            "state": "current" if current and not behind else "stale",
            "size": table.size,
            "entries": table.records,
            "chunks": table.chunks,
            "packs": table.pack_count,
            "index_objects_merged": len(table.index_names),
            "index_objects_not_merged": behind,
        }
    finally:
        table.close()


def _show(doc: dict[str, Any], json_output: bool) -> None:
    if json_output:
        emit_json(doc)
        return
    lines = [f"cache of repository {doc['repository']}: {doc['state']}", f"  path: {doc['path']}"]
    if "size" in doc:
        lines += [
            f"  size: {format_size(doc['size'])}",
            f"  entries: {doc['entries']} ({doc['chunks']} chunks in {doc['packs']} packs)",
            f"  index objects merged: {doc['index_objects_merged']}"
            + (
                f" ({doc['index_objects_not_merged']} not yet)"
                if doc["index_objects_not_merged"]
                else ""
            ),
        ]
    if "reason" in doc:
        lines.append(f"  reason: {doc['reason']}")
    for line in lines:
        out_console.print(line, highlight=False, soft_wrap=True)


@cache.command()
@click.argument("repository", required=False, metavar="[REPO]")
@click.option("--json", "json_output", is_flag=True, help="Machine-readable output.")
@click.pass_context
def info(ctx: click.Context, repository: str | None, json_output: bool) -> None:
    """Where the cache of REPO (else --repo) is, its size and entries, whether it is current."""
    repo, cache_dir = _open(ctx, repository)
    doc = _describe(repo, cache_dir)
    show_notes(repo)
    _show(doc, json_output)


@cache.command()
@click.argument("repository", required=False, metavar="[REPO]")
@click.option("--json", "json_output", is_flag=True, help="Machine-readable output.")
@click.pass_context
def rebuild(ctx: click.Context, repository: str | None, json_output: bool) -> None:
    """Build the cache of REPO (else --repo) afresh from the repository's index objects."""
    repo, cache_dir = _open(ctx, repository)
    loaded = repo.rebuild_cache()
    if loaded.table is not None:
        loaded.table.close()
    doc = _describe(repo, cache_dir)
    show_notes(repo)
    if loaded.table is None:
        raise UsageError(f"{cache_dir}: the cache could not be written (see the note above)")
    _show(doc, json_output)


COMMANDS = [cache]
