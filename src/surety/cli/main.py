"""Entry point: the ``surety`` command group and its error boundary."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any

import click
from rich.markup import escape

from surety import __version__
from surety.cli import (
    backup_cmds,
    cache_cmds,
    config_cmds,
    copy_cmds,
    files_cmds,
    instant_cmds,
    items_cmds,
    key_cmds,
    points_cmds,
    repair_cmds,
    repo_cmds,
    restore_cmds,
    s3_cmds,
    service_cmds,
    status_cmds,
    verify_cmds,
    web_cmds,
)
from surety.cli.context import show_pending_notes
from surety.cli.options import GlobalOptions
from surety.cli.render import err_console
from surety.core import interrupts
from surety.core.errors import Interrupted, SuretyError

__all__ = ["cli", "main"]


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SuretyError as exc:
            show_pending_notes(ctx)  # e.g. the damaged objects that were skipped on the way
            err_console.print(
                f"[bold red]surety: error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True
            )
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            err_console.print("[bold red]surety: interrupted[/]")
            ctx.exit(Interrupted.exit_code)


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


for module in (
    repo_cmds,
    repair_cmds,
    cache_cmds,
    key_cmds,
    backup_cmds,
    restore_cmds,
    instant_cmds,
    files_cmds,
    points_cmds,
    copy_cmds,
    s3_cmds,
    verify_cmds,
    items_cmds,
    status_cmds,
    config_cmds,
    service_cmds,
    web_cmds,
):
    for command in module.COMMANDS:
        cli.add_command(command)


def _request_stop(signum: int, frame: FrameType | None) -> None:
    """SIGINT and SIGTERM stop the command, except inside a deferred section."""
    interrupts.request_stop()


def main() -> None:
    signal.signal(signal.SIGINT, _request_stop)
    signal.signal(signal.SIGTERM, _request_stop)
    sys.exit(cli.main(prog_name="surety", standalone_mode=True))
