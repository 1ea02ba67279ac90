"""Reading ``surety.toml``: validated up front and completely, or not at all.

``load_config(path)`` returns a ``Config`` or raises ``ConfigError`` with *every*
problem found (unknown keys with a suggestion, wrong types, bad durations and
schedules, references to repositories or notification targets that do not exist,
option combinations ``backup vm`` would refuse, files that cannot be read); each names
the file, the line (``surety.config.lines``) and the key path. ``check_config(path)``
returns the problems instead. Nothing else in surety reads TOML.

Paths in the file (passphrase_file, credentials_file, ca_bundle, password_file, group,
catalog) are relative to the
file's folder. Schedules are in ``service.timezone``, else the host's time zone.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import tzlocal

from surety.config.errors import ConfigError, Problem
from surety.config.lines import key_lines
from surety.config.model import (
    Config,
    Policy,
    ServiceSettings,
)
from surety.config.policy import read_policy
from surety.config.reader import Reader, Table
from surety.config.repository import read_repository
from surety.config.targets import read_target
from surety.config.web import read_web

__all__ = ["DEFAULT_CONFIG", "check_config", "default_config_path", "host_timezone", "load_config"]

DEFAULT_CONFIG = Path("/etc/surety/surety.toml")

_TOP_KEYS = ("service", "repository", "policy", "notify", "web")
_SERVICE_KEYS = ("libvirt_uri", "catalog", "max_jobs", "timezone", "tick")


def default_config_path() -> Path:
    """``SURETY_CONFIG``, else ``/etc/surety/surety.toml`` (``--config`` wins over both)."""
    return Path(os.environ.get("SURETY_CONFIG") or DEFAULT_CONFIG)


def load_config(path: Path) -> Config:
    """The configuration in ``path``; ``ConfigError`` (exit 2) listing every problem."""
    config, problems = _read(path)
    if problems or config is None:
        raise ConfigError(problems)
    return config


def check_config(path: Path) -> list[Problem]:
    """Every problem of the configuration in ``path`` (empty: it is valid)."""
    return _read(path)[1]


def host_timezone() -> ZoneInfo:
    """The host's time zone (``/etc/localtime``, ``TZ``), UTC when it cannot be told."""
    try:
        zone = tzlocal.get_localzone()
    except (LookupError, ValueError, OSError):
        return ZoneInfo("UTC")
    return zone if isinstance(zone, ZoneInfo) else ZoneInfo("UTC")


def _read(path: Path) -> tuple[Config | None, list[Problem]]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        why = "no such configuration file (give --config FILE or set SURETY_CONFIG)"
        return None, [Problem(path, None, "", why)]
    except (OSError, UnicodeDecodeError) as exc:
        why = f"cannot read: {getattr(exc, 'strerror', None) or exc}"
        return None, [Problem(path, None, "", why)]
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return None, [_syntax_problem(path, str(exc))]
    reader = Reader(path, key_lines(text))
    config = _config(reader, path, data)
    return config, sorted(reader.problems, key=lambda p: p.line or 0)  # in file order


def _syntax_problem(path: Path, message: str) -> Problem:
    where = re.search(r"\s*\(at line (\d+), column \d+\)", message)
    if where is None:
        return Problem(path, None, "", f"not valid TOML: {message}")
    return Problem(path, int(where.group(1)), "", f"not valid TOML: {message[: where.start()]}")


def _config(r: Reader, path: Path, data: Table) -> Config:
    r.known(data, (), _TOP_KEYS)
    service = _service(r, r.table(data, (), "service") or {})
    tz = _timezone(r, service)
    repositories = {
        name: read_repository(r, name, table)
        for name, table in _named_tables(r, data, "repository").items()
    }
    notifications = {
        name: read_target(r, name, table)
        for name, table in _named_tables(r, data, "notify").items()
    }
    policies: dict[str, Policy] = {}
    for name, table in _named_tables(r, data, "policy").items():
        policy = read_policy(
            r, name, table, tz=tz, repositories=repositories, targets=notifications
        )
        if policy is not None:
            policies[name] = policy
    web = read_web(r, r.table(data, (), "web"))
    return Config(path, service, repositories, policies, notifications, web)


def _named_tables(r: Reader, data: Table, kind: str) -> dict[str, Table]:
    """``[kind.NAME]`` tables: name -> table (a non-table is a problem and left out)."""
    tables = r.table(data, (), kind) or {}
    named = {}
    for name, table in tables.items():
        if isinstance(table, dict):
            named[name] = table
        else:
            r.problem((kind, name), f"expected a table [{kind}.{name}] with its settings")
    return named


def _service(r: Reader, table: Table) -> ServiceSettings:
    path = ("service",)
    r.known(table, path, _SERVICE_KEYS)
    defaults = ServiceSettings()
    catalog = r.text(table, path, "catalog")
    return ServiceSettings(
        libvirt_uri=r.text(table, path, "libvirt_uri") or defaults.libvirt_uri,
        catalog=(r.source.parent / catalog).absolute() if catalog else None,
        max_jobs=r.integer(table, path, "max_jobs", low=1) or defaults.max_jobs,
        timezone=r.text(table, path, "timezone"),
        tick=r.number(table, path, "tick", 0.1, 3600) or defaults.tick,
    )


def _timezone(r: Reader, service: ServiceSettings) -> ZoneInfo:
    if service.timezone is None:
        return host_timezone()
    try:
        return ZoneInfo(service.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        r.problem(
            ("service", "timezone"),
            f"unknown time zone {service.timezone!r} (an IANA name such as Europe/Berlin)",
        )
        return ZoneInfo("UTC")
