"""Entry point: the ``surety`` command group and its error boundary."""

from __future__ import annotations

import importlib
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any

import click
from rich.markup import escape

from surety import __version__
from surety.cli.options import GlobalOptions
from surety.cli.render import err_console
from surety.core import interrupts
from surety.core.errors import Interrupted, SuretyError

__all__ = ["COMMANDS", "cli", "main"]


# Every command: name -> (module of surety.cli, attribute, short help). A command's module
# is imported only when that command runs (or shows its own help): importing all of them
# costs more CPU than a short command's own work. The short help is the first sentence of
# the command's help, as click shows it; tests/unit/cli/test_lazy_commands.py holds this
# table to the commands of the *_cmds modules.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "backup": ("backup_cmds", "backup", "Create restore points."),
    "cache": (
        "cache_cmds",
        "cache",
        "The local cache of the chunk index (rebuildable; never trusted over the repository).",
    ),
    "check": (
        "repo_cmds",
        "check",
        "Check the repository's structure (and with --read-data, every stored byte).",
    ),
    "config": (
        "config_cmds",
        "config_group",
        "The configuration file (policies, repositories, notifications).",
    ),
    "copy": (
        "copy_cmds",
        "copy",
        "Copy restore points (ids, id prefixes, NAME@latest, or --all)"
        " into the repository at --to.",
    ),
    "files": (
        "files_cmds",
        "files",
        "List and extract files of a restore point without restoring its disk (root).",
    ),
    "forget": (
        "repo_cmds",
        "forget",
        "Forget restore points by id, or by a retention policy (then `surety prune` frees space).",
    ),
    "init": ("repo_cmds", "init", "Create a new, empty, encrypted repository."),
    "instant-recover": (
        "instant_cmds",
        "instant",
        "Run a VM straight from a restore point (POINT), then finish or abort it.",
    ),
    "items": (
        "items_cmds",
        "items",
        "Item-level recovery: boot a restore point in the lab, extract items with the app's tools.",
    ),
    "jobs": (
        "status_cmds",
        "jobs_group",
        "Jobs of the policies: what runs when, what happened, start one now.",
    ),
    "key": (
        "key_cmds",
        "key",
        "Key slots: each one is a passphrase that opens the repository.",
    ),
    "points": (
        "points_cmds",
        "points",
        "List restore points, oldest first, with their latest verification.",
    ),
    "prune": (
        "repo_cmds",
        "prune",
        "Delete data that no restore point references (takes the exclusive lock).",
    ),
    "repair": (
        "repair_cmds",
        "repair",
        "Repair a damaged repository: rebuild the index, drop or salvage restore points.",
    ),
    "restore": ("restore_cmds", "restore", "Restore from restore points."),
    "s3": ("s3_cmds", "s3", "S3 bucket administration for repositories on object storage."),
    "service": (
        "service_cmds",
        "service",
        "Run due jobs of the configuration's policies until SIGTERM or Ctrl-C.",
    ),
    "status": (
        "status_cmds",
        "status_cmd",
        "Every VM of this host: policy (or unprotected), last and last verified restore point,"
        " RPO, next run, last error; and whether the service runs.",
    ),
    "unlock": (
        "repair_cmds",
        "unlock",
        "Remove stale and unreadable locks (with --all, every lock).",
    ),
    "verify": (
        "verify_cmds",
        "verify_cmd",
        "Boot POINTS (in this order) or a --group in an isolated lab and probe them.",
    ),
    "web": (
        "web_cmds",
        "web_group",
        "Serve the web console and REST API (127.0.0.1:8470 by default; TLS with a certificate).",
    ),
}


class _Group(click.Group):
    """The command group: commands load on first use (``COMMANDS``); the error boundary."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        module_name, attribute, _short_help = entry
        command = getattr(importlib.import_module(f"surety.cli.{module_name}"), attribute)
        assert isinstance(command, click.Command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The list of ``--help`` from the table, as click writes it, importing no command."""
        limit = formatter.width - 6 - max(len(name) for name in COMMANDS)
        rows = [  # a stand-in command shortens the help as the real one would
            (name, click.Command(name, help=short_help).get_short_help_str(limit))
            for name, (_module, _attribute, short_help) in sorted(COMMANDS.items())
        ]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SuretyError as exc:
            _show_pending_notes(ctx)  # e.g. the damaged objects that were skipped on the way
            err_console.print(
                f"[bold red]surety: error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True
            )
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            err_console.print("[bold red]surety: interrupted[/]")
            ctx.exit(Interrupted.exit_code)


def _show_pending_notes(ctx: click.Context) -> None:
    """The command repository's notes not shown yet; none when it opened no repository."""
    if "surety.repository" in ctx.meta:
        from surety.cli.context import show_pending_notes as show  # noqa: PLC0415

        show(ctx)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="surety")
@click.option(
    "--repo",
    "-r",
    envvar="SURETY_REPOSITORY",
    metavar="PATH",
    help="Repository location [env SURETY_REPOSITORY].",
)
@click.option(
    "--passphrase-file",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar="SURETY_PASSPHRASE_FILE",
    help="Read the passphrase from this file (else SURETY_PASSPHRASE, else prompt).",
)
@click.pass_context
def cli(ctx: click.Context, repo: str | None, passphrase_file: Path | None) -> None:
    """surety: application-aware backup and proven recovery for KVM/QEMU VMs."""
    ctx.obj = GlobalOptions(repo=repo, passphrase_file=passphrase_file)


def _request_stop(signum: int, frame: FrameType | None) -> None:
    """SIGINT and SIGTERM stop the command, except inside a deferred section."""
    interrupts.request_stop()


def main() -> None:
    signal.signal(signal.SIGINT, _request_stop)
    signal.signal(signal.SIGTERM, _request_stop)
    sys.exit(cli.main(prog_name="surety", standalone_mode=True))
