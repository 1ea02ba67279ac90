"""One ``[policy.NAME]`` table -> a ``Policy``, every problem recorded on the way.

The same rules as ``surety backup vm``'s options hold (on_quiesce_failure not above
consistency, the same choices); references to repositories and notification targets
must name tables of the file; retention needs at least one rule.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from typing import Any
from zoneinfo import ZoneInfo

from surety.config.model import (
    CheckRule,
    NotificationTarget,
    Policy,
    RepositoryConfig,
    Retention,
    RetryRule,
    Selection,
    VerifyRule,
)
from surety.config.reader import Reader, Table
from surety.core.errors import UsageError
from surety.quiesce.coordinator import LEVELS
from surety.schedule import Schedule, parse_schedule

__all__ = ["POLICY_KEYS", "read_policy", "read_retention"]

POLICY_KEYS = (
    "repository",
    "vms",
    "exclude",
    "tags",
    "schedule",
    "start_window",
    "consistency",
    "on_quiesce_failure",
    "truncate_logs",
    "freeze_window",
    "writers",
    "pre_freeze",
    "post_thaw",
    "after_commit",
    "script_failure",
    "retries",
    "timeout",
    "rpo",
    "rto",
    "notify",
    "retention",
    "verify",
    "check",
    "copy_to",
)
_KEEP_COUNTS = ("last", "hourly", "daily", "weekly", "monthly", "yearly")
_RETENTION_KEYS = (*(f"keep_{k}" for k in _KEEP_COUNTS), "keep_within", "prune")
_TRUNCATE = ("never", "after-commit", "after-verify")

Path_ = tuple[str, ...]


def read_policy(
    r: Reader,
    name: str,
    table: Table,
    *,
    tz: ZoneInfo,
    repositories: Mapping[str, RepositoryConfig],
    targets: Mapping[str, NotificationTarget],
) -> Policy | None:
    """The policy, or None when it cannot be built (its problems are recorded)."""
    path = ("policy", name)
    r.known(table, path, POLICY_KEYS)
    schedule = _schedule(r, table, path, tz)
    consistency, floor = _levels(r, table, path)
    verify = _verify(r, table, path, tz)
    retention, prune = read_retention(r, table, path)
    given: dict[str, Any] = {  # None: not given (or wrong): the model's default applies
        "consistency": consistency,
        "on_quiesce_failure": floor,
        "truncate_logs": _truncate(r, table, path, verify),
        "freeze_window": r.number(table, path, "freeze_window", 0.5, 600),
        "writers": r.names(table, path, "writers"),
        "pre_freeze": r.text(table, path, "pre_freeze"),
        "post_thaw": r.text(table, path, "post_thaw"),
        "after_commit": r.text(table, path, "after_commit"),
        "script_failure": r.choice(table, path, "script_failure", ("fail", "ignore")),
        "start_window": r.duration(table, path, "start_window"),
        "retries": _retries(r, table, path),
        "timeout": r.duration(table, path, "timeout"),
        "rpo": r.duration(table, path, "rpo"),
        "rto": r.duration(table, path, "rto"),
        "retention": retention,
        "prune": prune,
        "verify": verify,
        "check": _check(r, table, path, tz),
        "notify": _notify(r, table, path, targets),
    }
    repository = _repository(r, table, path, repositories)
    given["copy_to"] = _copy_to(r, table, path, repository, repositories)
    selection = _selection(r, table, path)
    if schedule is None:
        return None
    return Policy(
        name=name,
        repository=repository,
        selection=selection,
        schedule=schedule,
        **{key: value for key, value in given.items() if value is not None},
    )


def _schedule(r: Reader, table: Table, path: Path_, tz: ZoneInfo) -> Schedule | None:
    if "schedule" not in table:
        r.problem((*path, "schedule"), "required (e.g. 'daily', 'Mon..Fri 22:30', 'every 4h')")
        return None
    return r.parsed(table, path, "schedule", lambda text: parse_schedule(text, tz))


def _repository(
    r: Reader, table: Table, path: Path_, repositories: Mapping[str, RepositoryConfig]
) -> str:
    name = r.text(table, path, "repository")
    if name is None:
        if len(repositories) == 1 and "repository" not in table:
            return next(iter(repositories))  # the only one: no need to name it
        if "repository" not in table:
            r.problem((*path, "repository"), "required: the name of a [repository.NAME] table")
        return ""
    if name not in repositories:
        r.problem((*path, "repository"), _missing("repository", name, repositories))
    return name


def _copy_to(
    r: Reader,
    table: Table,
    path: Path_,
    repository: str,
    repositories: Mapping[str, RepositoryConfig],
) -> str | None:
    """The repository each new restore point of the policy is copied to (3-2-1)."""
    name = r.text(table, path, "copy_to")
    if name is None:
        return None
    if name not in repositories:
        r.problem((*path, "copy_to"), _missing("repository", name, repositories))
        return None
    if name == repository:
        r.problem(
            (*path, "copy_to"),
            f"{name!r} is the policy's own repository (a copy goes to another one)",
        )
        return None
    if repositories[name].location == repositories[repository].location:
        r.problem((*path, "copy_to"), f"{name!r} has the same location as {repository!r}")
        return None
    return name


def _missing(kind: str, name: str, known: Mapping[str, object]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"no [{kind}.{name}] in this file{hint}"


def _selection(r: Reader, table: Table, path: Path_) -> Selection:
    vms = r.names(table, path, "vms") or ()
    tags = r.names(table, path, "tags") or ()
    if not vms and not tags and "vms" not in table and "tags" not in table:
        r.problem(path, 'selects no VM: give vms (names, globs or "all") or tags')
    return Selection(vms=vms, exclude=r.names(table, path, "exclude") or (), tags=tags)


def _levels(r: Reader, table: Table, path: Path_) -> tuple[str, str]:
    consistency = r.choice(table, path, "consistency", LEVELS) or "filesystem"
    floor = r.choice(table, path, "on_quiesce_failure", ("fail", *LEVELS)) or "fail"
    if floor != "fail" and LEVELS.index(floor) > LEVELS.index(consistency):
        r.problem(
            (*path, "on_quiesce_failure"),
            f"{floor} is above consistency {consistency} (a fall-back must be lower)",
        )
    return consistency, floor


def _truncate(r: Reader, table: Table, path: Path_, verify: VerifyRule | None) -> str:
    truncate = r.choice(table, path, "truncate_logs", _TRUNCATE) or "never"
    if truncate == "after-verify" and verify is None and "verify" not in table:
        r.problem(
            (*path, "truncate_logs"),
            f"after-verify needs a [policy.{path[1]}.verify] table (nothing would verify)",
        )
    return truncate


def _retries(r: Reader, table: Table, path: Path_) -> RetryRule:
    value = table.get("retries")
    if isinstance(value, int) and not isinstance(value, bool):
        attempts = r.integer(table, path, "retries", low=1)
        return RetryRule(attempts=attempts or 1)
    rule = r.table(table, path, "retries")
    if rule is None:
        return RetryRule()
    where = (*path, "retries")
    r.known(rule, where, ("attempts", "backoff"))
    return RetryRule(
        attempts=r.integer(rule, where, "attempts", low=1) or RetryRule().attempts,
        backoff=r.duration(rule, where, "backoff") or RetryRule().backoff,
    )


def read_retention(r: Reader, table: Table, path: Path_) -> tuple[Retention | None, bool]:
    """``retention`` of a policy (or of a copy target's repository): rules and ``prune``."""
    rules = r.table(table, path, "retention")
    if rules is None:
        return None, False
    where = (*path, "retention")
    r.known(rules, where, _RETENTION_KEYS)
    counts = {k: r.integer(rules, where, f"keep_{k}") or 0 for k in _KEEP_COUNTS}
    within = r.duration(rules, where, "keep_within")
    prune = r.flag(rules, where, "prune")
    if not any(counts.values()) and within is None and "keep_within" not in rules:
        r.problem(
            where,
            "no keep_* rule (e.g. keep_daily = 7): a retention without rules would "
            "forget every restore point",
        )
        return None, False
    return Retention(**counts, within=within), True if prune is None else prune


def _verify(r: Reader, table: Table, path: Path_, tz: ZoneInfo) -> VerifyRule | None:
    rule = r.table(table, path, "verify")
    if rule is None:
        return None
    where = (*path, "verify")
    r.known(rule, where, ("schedule", "group"))
    schedule = _schedule(r, rule, where, tz)
    group = r.file(rule, where, "group")
    return VerifyRule(schedule, group) if schedule is not None else None


def _check(r: Reader, table: Table, path: Path_, tz: ZoneInfo) -> CheckRule | None:
    rule = r.table(table, path, "check")
    if rule is None:
        return None
    where = (*path, "check")
    r.known(rule, where, ("schedule", "read_data_subset"))
    schedule = _schedule(r, rule, where, tz)
    parts = r.parsed(rule, where, "read_data_subset", _parts) or 0
    return CheckRule(schedule, parts) if schedule is not None else None


def _parts(text: str) -> int:
    """``"1/30"`` -> 30: each check re-reads the next thirtieth of the data, in turn."""
    match = re.fullmatch(r"\s*1\s*/\s*(\d+)\s*", text)
    if match is None or int(match.group(1)) < 1:
        raise UsageError(
            f"{text!r} is not '1/M' (each check reads the next of M parts in turn, "
            "e.g. '1/30' re-reads all data once in 30 checks)"
        )
    return int(match.group(1))


def _notify(
    r: Reader, table: Table, path: Path_, targets: Mapping[str, NotificationTarget]
) -> tuple[str, ...]:
    names = r.names(table, path, "notify") or ()
    for name in names:
        if name not in targets:
            r.problem((*path, "notify"), _missing("notify", name, targets))
    return names
