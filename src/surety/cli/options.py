"""Global options, resolved once into a frozen value passed to commands."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from surety.core.errors import UsageError

__all__ = [
    "GlobalOptions",
    "catalog_option",
    "config_option",
    "connect_option",
    "json_option",
    "network_map_option",
    "option_stack",
    "read_new_passphrase",
    "read_passphrase",
]


Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def option_stack(*decorators: Decorator) -> Decorator:
    """One decorator for options several commands declare alike, listed top first as stacked."""

    def apply(command: Callable[..., Any]) -> Callable[..., Any]:
        for decorator in reversed(decorators):
            command = decorator(command)
        return command

    return apply


@dataclass(frozen=True)
class GlobalOptions:
    repo: str | None
    passphrase_file: Path | None


def read_passphrase(options: GlobalOptions, confirm: bool = False) -> str:
    """From --passphrase-file, SURETY_PASSPHRASE, or a prompt on a terminal."""
    if options.passphrase_file is not None:
        return _read_secret(options.passphrase_file, "passphrase file")
    from_env = os.environ.get("SURETY_PASSPHRASE")
    if from_env:
        return from_env
    if sys.stdin.isatty():
        return str(
            click.prompt("repository passphrase", hide_input=True, confirmation_prompt=confirm)
        )
    raise UsageError("no passphrase: set SURETY_PASSPHRASE or use --passphrase-file")


def read_new_passphrase(path: Path | None) -> str:
    """A new key's passphrase: from ``path``, SURETY_NEW_PASSPHRASE, or asked twice."""
    if path is not None:
        return _read_secret(path, "new passphrase file")
    from_env = os.environ.get("SURETY_NEW_PASSPHRASE")
    if from_env:
        return from_env
    if sys.stdin.isatty():
        return str(click.prompt("new passphrase", hide_input=True, confirmation_prompt=True))
    raise UsageError("no new passphrase: set SURETY_NEW_PASSPHRASE or use --new-passphrase-file")


connect_option = click.option(
    "--connect",
    "-c",
    "uri",
    default="qemu:///system",
    show_default=True,
    envvar="LIBVIRT_DEFAULT_URI",
    help="libvirt connection URI.",
)
"""``--connect/-c URI`` of every command that talks to libvirt."""


json_option = click.option("--json", "json_output", is_flag=True, help="Machine-readable output.")
"""``--json`` of every command that prints results: one JSON document on stdout."""


# Imported when a command with --catalog or --config runs: every command imports this
# module, and surety.config loads the whole configuration model.
def _default_catalog_path() -> Path:
    from surety.catalog import default_catalog_path  # noqa: PLC0415

    return default_catalog_path()


def _default_config_path() -> Path:
    from surety.config import default_config_path  # noqa: PLC0415

    return default_config_path()


catalog_option = click.option(
    "--catalog",
    type=click.Path(path_type=Path, dir_okay=False),
    default=_default_catalog_path,
    help="Catalog file [env SURETY_CATALOG; default /var/lib/surety/catalog.sqlite].",
)
"""``--catalog FILE`` of every command that reads or records verifications."""


config_option = click.option(
    "--config",
    type=click.Path(path_type=Path, dir_okay=False),
    default=_default_config_path,
    help="Configuration file [env SURETY_CONFIG; default /etc/surety/surety.toml].",
)
"""``--config FILE`` of every command that reads the configuration (``config check``,
``service``)."""


def _network_map(
    _ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]
) -> tuple[tuple[str, str], ...]:
    pairs = []
    for value in values:
        old, sep, new = value.partition("=")
        if not sep or not old or not new:
            raise click.BadParameter(f"{value!r} is not OLD=NEW")
        pairs.append((old, new))
    return tuple(pairs)


network_map_option = click.option(
    "--network-map",
    "network_map",
    multiple=True,
    metavar="OLD=NEW",
    callback=_network_map,
    help="Attach NICs of network OLD to the existing network NEW (repeatable).",
)
"""``--network-map OLD=NEW`` (repeatable) of every command that places a VM on networks."""


def _read_secret(path: Path, what: str) -> str:
    """A passphrase file's text without its trailing newlines; an empty one is refused."""
    try:
        text = path.read_text().rstrip("\n")
    except OSError as exc:
        raise UsageError(f"cannot read {what}: {exc.strerror}") from exc
    if not text:
        raise UsageError(f"{path} is empty")
    return text


def writer_settings(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> dict[str, str]:
    """``--set WRITER.OPTION=VALUE`` (repeatable) -> {"writer.option": value}; an option
    ending in ``_file`` is read from that file (a secret never on the command line)."""
    found: dict[str, str] = {}
    for value in values:
        key, sep, setting = value.partition("=")
        if not sep or "." not in key:
            raise click.BadParameter(f"{value!r} is not WRITER.OPTION=VALUE")
        if key.endswith("_file"):
            try:
                setting = Path(setting).read_text().strip()
            except OSError as exc:
                raise click.BadParameter(f"{key}: {exc.strerror}: {setting}") from None
            key = key.removesuffix("_file")
        found[key] = setting
    return found


def settings_option(help_text: str) -> Decorator:
    """``--set WRITER.OPTION=VALUE`` (repeatable), parsed by ``writer_settings`` into the
    command's ``settings`` argument."""
    return click.option(
        "--set",
        "settings",
        multiple=True,
        metavar="WRITER.OPTION=VALUE",
        callback=writer_settings,
        help=f"{help_text} (an option ending in _file is read from that file).",
    )
