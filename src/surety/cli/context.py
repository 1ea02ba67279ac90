"""Shared helpers for commands: open the repository, show its notes."""

from __future__ import annotations

import click
from rich.markup import escape

from surety.app.repository import open_repository
from surety.cli.options import GlobalOptions, read_passphrase
from surety.cli.render import err_console
from surety.repo.repository import Repository

__all__ = ["open_repo", "show_notes", "show_pending_notes"]


def open_repo(
    ctx: click.Context, default: str | None = None, maintenance: bool = False
) -> Repository:
    """The repository of ``--repo``/``SURETY_REPOSITORY``, else ``default`` (a location
    a record kept, e.g. an instant VM's); ``maintenance``: with the S3 maintenance
    identity when this process holds it (``forget``, ``prune``)."""
    options: GlobalOptions = ctx.obj
    repo = open_repository(options.repo or default, read_passphrase(options), maintenance)
    ctx.meta["surety.repository"] = repo
    return repo


def show_notes(repo: Repository) -> None:
    for note in repo.notes:
        err_console.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
    repo.notes.clear()


def show_pending_notes(ctx: click.Context) -> None:
    """Notes of the command's repository not shown yet (the command failed before)."""
    repo = ctx.meta.get("surety.repository")
    if isinstance(repo, Repository):
        show_notes(repo)
