"""``surety key list|add|remove|passwd``: the repository's key slots."""

from __future__ import annotations

from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from surety.cli.context import open_repo, show_notes
from surety.cli.options import json_option, read_new_passphrase
from surety.cli.render import emit_json, out_console
from surety.repo.keyring import KeySlot, add_key, list_keys, passwd, remove_key

__all__ = ["COMMANDS"]

_new_passphrase_file = click.option(
    "--new-passphrase-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Read the new passphrase from this file (else SURETY_NEW_PASSPHRASE, else prompt).",
)


@click.group()
def key() -> None:
    """Key slots: each one is a passphrase that opens the repository."""


@key.command("list")
@json_option
@click.pass_context
def list_command(ctx: click.Context, json_output: bool) -> None:
    """List the key files; * marks the one this passphrase opened."""
    repo = open_repo(ctx)
    slots = list_keys(repo.storage, current=repo.key_name)
    show_notes(repo)
    if json_output:
        emit_json([_slot_json(slot) for slot in slots])
        return
    table = Table(box=None)
    for column in ("", "id", "host", "created", "version", "state"):
        table.add_column(column)
    for slot in slots:
        table.add_row(
            "*" if slot.current else "",
            slot.id,
            escape(slot.host),
            escape(slot.created),
            str(slot.version or ""),
            f"[red]{escape(slot.problem)}[/]" if slot.damaged else "ok",
        )
    out_console.print(table)
    damaged = sum(slot.damaged for slot in slots)
    out_console.print(f"{len(slots)} keys" + (f", {damaged} damaged" if damaged else ""))


def _slot_json(slot: KeySlot) -> dict[str, object]:
    return {
        "id": slot.id,
        "host": slot.host,
        "created": slot.created,
        "version": slot.version,
        "current": slot.current,
        "damaged": slot.damaged,
        "problem": slot.problem or None,
    }


@key.command("add")
@_new_passphrase_file
@click.pass_context
def add_command(ctx: click.Context, new_passphrase_file: Path | None) -> None:
    """Add a key slot: another passphrase for the same repository."""
    repo = open_repo(ctx)
    new_passphrase = read_new_passphrase(new_passphrase_file)
    name = add_key(repo, new_passphrase)
    show_notes(repo)
    out_console.print(f"added key {name.removeprefix('keys/')}", highlight=False)


@key.command("remove")
@click.argument("key_id")
@click.pass_context
def remove_command(ctx: click.Context, key_id: str) -> None:
    """Remove the key slot KEY_ID (a unique prefix of 4+ hex digits)."""
    repo = open_repo(ctx)
    name = remove_key(repo, key_id)
    show_notes(repo)
    out_console.print(f"removed key {name.removeprefix('keys/')}", highlight=False)


@key.command("passwd")
@_new_passphrase_file
@click.pass_context
def passwd_command(ctx: click.Context, new_passphrase_file: Path | None) -> None:
    """Change the passphrase of the key slot this passphrase opens."""
    repo = open_repo(ctx)
    old = repo.key_name or ""
    new_passphrase = read_new_passphrase(new_passphrase_file)
    name = passwd(repo, new_passphrase)
    show_notes(repo)
    out_console.print(
        f"replaced key {old.removeprefix('keys/')} by {name.removeprefix('keys/')}",
        highlight=False,
    )


COMMANDS = [key]
