"""``surety service``: the long-running process that runs due jobs (foreground)."""

from __future__ import annotations

from pathlib import Path

import click

from surety.cli.options import config_option
from surety.service.main import run_service

__all__ = ["COMMANDS"]


@click.command("service")
@config_option
@click.option(
    "--once",
    is_flag=True,
    help="One scheduling pass: start what is due (and requested), wait for it, exit.",
)
@click.option(
    "--tick",
    type=click.FloatRange(min=0.1),
    default=None,
    metavar="SECONDS",
    help="Seconds between scheduling passes (default: service.tick of the configuration).",
)
@click.option(
    "--log-file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Also log to this file (the log always goes to stderr).",
)
def service(config: Path, once: bool, tick: float | None, log_file: Path | None) -> None:
    """Run due jobs of the configuration's policies until SIGTERM or Ctrl-C.

    SIGHUP reloads the configuration (an invalid one is refused, the old one kept).
    One service per host: a second one exits with code 7.
    """
    raise SystemExit(run_service(config, once=once, tick=tick, log_file=log_file))


COMMANDS = [service]
