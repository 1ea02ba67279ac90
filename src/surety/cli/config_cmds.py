"""``surety config check``: validate the configuration file before the service reads it.

Valid: exit 0 and a short summary (repositories, policies with their VM patterns and
the next run of each schedule in local time). Invalid: exit 2 and one line per problem
on stderr, ``FILE[:LINE]: key.path: why`` (and the same in ``--json`` on stdout).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from surety.cli.options import config_option, json_option
from surety.cli.render import emit_json, err_console, out_console
from surety.config import Config, Policy, check_config, load_config
from surety.config.errors import ConfigError
from surety.schedule import Schedule

__all__ = ["COMMANDS"]


@click.group("config")
def config_group() -> None:
    """The configuration file (policies, repositories, notifications)."""


@config_group.command("check")
@config_option
@json_option
@click.pass_context
def check(ctx: click.Context, config: Path, json_output: bool) -> None:
    """Check the configuration file: every problem with its line and key, or a summary."""
    problems = check_config(config)
    if problems:
        for problem in problems:
            err_console.print(str(problem), markup=False, highlight=False, soft_wrap=True)
        if json_output:
            emit_json(
                {"config": str(config), "valid": False, "problems": [p.as_json() for p in problems]}
            )
        ctx.exit(ConfigError.exit_code)
    loaded = load_config(config)
    now = datetime.now(UTC)
    if json_output:
        emit_json(_summary_json(loaded, now))
        return
    for line in _summary_lines(loaded, now):
        out_console.print(line, markup=False, highlight=False, soft_wrap=True)


def _next(schedule: Schedule, now: datetime) -> datetime:
    return schedule.next_after(now)


def _when(moment: datetime) -> str:
    return moment.strftime("%a %Y-%m-%d %H:%M %Z")


def _selection(policy: Policy) -> str:
    selection = policy.selection
    parts = [f"vms {', '.join(selection.vms)}"] if selection.vms else []
    if selection.tags:
        parts.append(f"tags {', '.join(selection.tags)}")
    if selection.exclude:
        parts.append(f"except {', '.join(selection.exclude)}")
    return "; ".join(parts)


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _summary_lines(config: Config, now: datetime) -> list[str]:
    counts = (
        _count(len(config.policies), "policy", "policies"),
        _count(len(config.repositories), "repository", "repositories"),
        _count(len(config.notifications), "notification target", "notification targets"),
    )
    lines = [f"{config.path}: valid — {', '.join(counts)}"]
    for name, policy in config.policies.items():
        lines.append(f"  policy {name}: {_selection(policy)} -> repository {policy.repository}")
        lines.append(
            f"    backup  {policy.schedule.describe()}; next {_when(_next(policy.schedule, now))}"
        )
        for kind, rule in (("verify", policy.verify), ("check", policy.check)):
            if rule is not None:
                lines.append(
                    f"    {kind:<7} {rule.schedule.describe()}; "
                    f"next {_when(_next(rule.schedule, now))}"
                )
    if not config.policies:
        lines.append("  no policy: the service would run nothing")
    return lines


def _summary_json(config: Config, now: datetime) -> dict[str, Any]:
    return {
        "config": str(config.path),
        "valid": True,
        "problems": [],
        "repositories": {n: r.location for n, r in config.repositories.items()},
        "notifications": {n: t.kind for n, t in config.notifications.items()},
        "policies": [
            {
                "name": name,
                "repository": policy.repository,
                "vms": list(policy.selection.vms),
                "exclude": list(policy.selection.exclude),
                "tags": list(policy.selection.tags),
                "schedule": policy.schedule.text,
                "timezone": policy.schedule.tz.key,
                "next_run": _next(policy.schedule, now).isoformat(),
            }
            for name, policy in config.policies.items()
        ],
    }


COMMANDS = [config_group]
