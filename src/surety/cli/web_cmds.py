"""``surety web``: serve the web console (uvicorn), and manage its users and API tokens."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click
from click.core import ParameterSource

from surety.app.catalog import open_catalog
from surety.catalog import Catalog
from surety.cli.options import config_option, json_option
from surety.cli.render import emit_json, out_console
from surety.config import load_config
from surety.config.web import parse_listen
from surety.core.errors import UsageError
from surety.restore.files import RUN_ROOT
from surety.service.web_child import PARENT_ENV
from surety.web.auth import ROLES, add_api_token, add_user

__all__ = ["COMMANDS"]


def _listen(value: str) -> tuple[str, int]:
    parsed = parse_listen(value)
    if parsed is None:
        raise UsageError(f"--listen {value!r}: expected HOST:PORT, e.g. 127.0.0.1:8470")
    return parsed


def _exit_with_parent() -> None:
    """Started by ``surety service`` (``[web]``): end when the service ends, even killed."""
    parent = os.environ.get(PARENT_ENV, "")
    if not parent.isdigit():
        return
    import ctypes  # noqa: PLC0415 - only for a console the service started
    import signal  # noqa: PLC0415

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != int(parent):  # the service died before prctl took effect
        raise SystemExit(0)


@click.group("web", invoke_without_command=True)
@config_option
@click.option("--listen", default="127.0.0.1:8470", show_default=True, help="HOST:PORT.")
@click.option("--tls-cert", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--tls-key", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option(
    "--idle-mounts",
    type=click.FloatRange(min=1),
    default=120,
    show_default=True,
    help="Seconds after which an unused file-browser mount is closed.",
)
@click.option(
    "--runtime-dir",
    "run_root",
    type=click.Path(path_type=Path, file_okay=False),
    envvar="SURETY_RUNTIME_DIR",
    default=str(RUN_ROOT),
    show_default=True,
    hidden=True,
    help="Where the file browser's private run directories (mounts, sockets) live.",
)
@click.pass_context
def web_group(
    ctx: click.Context,
    config: Path,
    listen: str,
    tls_cert: Path | None,
    tls_key: Path | None,
    idle_mounts: float,
    run_root: Path,
) -> None:
    """Serve the web console and REST API (127.0.0.1:8470 by default; TLS with a certificate).

    Options not given are taken from the configuration's [web] table, when written."""
    ctx.meta["surety.web.config"] = config  # for the user and token commands
    source = ctx.get_parameter_source("config")
    ctx.meta["surety.web.config_given"] = source is ParameterSource.COMMANDLINE or bool(
        os.environ.get("SURETY_CONFIG")
    )
    if ctx.invoked_subcommand is not None:
        return
    if (tls_cert is None) != (tls_key is None):
        raise UsageError("give both --tls-cert and --tls-key, or neither")
    web = load_config(config).web  # [web]: what an option not given defaults to
    if ctx.get_parameter_source("listen") is ParameterSource.DEFAULT:
        listen = f"[{web.host}]:{web.port}" if ":" in web.host else f"{web.host}:{web.port}"
    if tls_cert is None:
        tls_cert, tls_key = web.tls_cert, web.tls_key
    if ctx.get_parameter_source("idle_mounts") is ParameterSource.DEFAULT:
        idle_mounts = web.idle_mounts
    host, port = _listen(listen)
    _exit_with_parent()
    # uvicorn and the app are imported only to serve, not for `surety web user ...`
    import uvicorn  # noqa: PLC0415

    from surety.web import WebSettings, create_app  # noqa: PLC0415

    settings = WebSettings(
        config,
        secure_cookies=tls_cert is not None,
        idle_mount_seconds=idle_mounts,
        run_root=run_root,
    )
    app = create_app(settings)
    scheme = "https" if tls_cert else "http"
    click.echo(f"surety web: serving on {scheme}://{listen} (Ctrl-C stops)", err=True)
    uvicorn.run(
        app,
        host=host,
        port=port,
        ssl_certfile=str(tls_cert) if tls_cert else None,
        ssl_keyfile=str(tls_key) if tls_key else None,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=10,  # a stalled download does not hold a stop forever
    )


def _catalog_of(ctx: click.Context) -> Catalog:
    """The configuration's catalog; without a configuration file (none given, the default
    one absent) the catalog of ``SURETY_CATALOG``, else the system's."""
    config_path: Path = ctx.meta["surety.web.config"]
    if not ctx.meta["surety.web.config_given"] and not config_path.exists():
        return open_catalog(None)
    return open_catalog(load_config(config_path).service.catalog)


@web_group.group("user")
def user_group() -> None:
    """Users of the web console."""


@user_group.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), required=True)
@click.option(
    "--password-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Read the password from this file (else a prompt).",
)
@click.pass_context
def user_add(ctx: click.Context, name: str, role: str, password_file: Path | None) -> None:
    """Add user NAME (or set its role and password); the password is stored argon2id-hashed."""
    if password_file is not None:
        try:
            password = password_file.read_text().rstrip("\n")
        except OSError as exc:
            raise UsageError(f"cannot read {password_file}: {exc.strerror}") from exc
    elif sys.stdin.isatty():
        password = str(click.prompt("password", hide_input=True, confirmation_prompt=True))
    else:
        raise UsageError("no terminal to ask the password on: give --password-file")
    add_user(_catalog_of(ctx), name, role, password)
    out_console.print(f"web user {name} ({role}) saved", highlight=False)


@user_group.command("list")
@json_option
@click.pass_context
def user_list(ctx: click.Context, json_output: bool) -> None:
    """Users of the web console and their roles."""
    users = _catalog_of(ctx).users()
    if json_output:
        emit_json([{"name": u.name, "role": u.role, "created": u.created} for u in users])
        return
    for u in users:
        out_console.print(f"{u.name}\t{u.role}\t{u.created}", highlight=False)


@web_group.group("token")
def token_group() -> None:
    """API tokens for scripts (sent as "Authorization: Bearer TOKEN")."""


@token_group.command("add")
@click.argument("name")
@click.option("--label", help="What the token is for (shown in the catalog).")
@click.pass_context
def token_add(ctx: click.Context, name: str, label: str | None) -> None:
    """A new API token acting as web user NAME (printed once; only its hash is stored)."""
    token = add_api_token(_catalog_of(ctx), name, label)
    click.echo(token)


COMMANDS = [web_group]
