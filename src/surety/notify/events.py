"""What a notification says: ``Event`` built from a finished run, an RPO violation or a
day's runs. Pure (no I/O): the senders (``email``, ``webhook``) only deliver it.

Every event names what happened, on which VM (and policy), and what to do, e.g.
subject "surety: backup of db1 FAILED (nightly)". ``payload`` is the webhook's
JSON body (docs/notifications.md "Webhook JSON"): its keys are a contract.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from surety.catalog.runs import Run, RunResult
from surety.core.errors import SuretyError

__all__ = [
    "EVENT_KINDS",
    "Event",
    "NotificationError",
    "event_kind",
    "rpo_event",
    "run_event",
    "summary_event",
]

EVENT_KINDS = ("failure", "warning", "success", "rpo", "summary")

_KIND_OF_STATE = {
    "failed": "failure",
    "interrupted": "failure",
    "warning": "warning",
    "skipped": "warning",
    "missed": "warning",
    "succeeded": "success",
}
_WORD = {
    "failed": "FAILED",
    "interrupted": "was INTERRUPTED",
    "warning": "succeeded with a warning",
    "skipped": "was skipped",
    "missed": "was MISSED",
    "succeeded": "succeeded",
}


class NotificationError(SuretyError):
    """A notification could not be delivered (the service logs it; the run is unaffected)."""


@dataclass(frozen=True)
class Event:
    kind: str  # failure | warning | success | rpo | summary
    policy: str | None
    vm: str | None
    run_id: int | None
    subject: str
    body: str
    what_to_do: str | None
    payload: dict[str, Any] = field(default_factory=dict)  # the webhook's JSON body


def event_kind(state: str) -> str | None:
    """The event a run ending in ``state`` is (None: queued/running, nothing to say)."""
    return _KIND_OF_STATE.get(state)


def run_event(run: Run, result: RunResult, at: datetime) -> Event:
    """The event of ``run`` finished with ``result`` (``at``: when it ended, if unknown)."""
    state = result.status
    kind = event_kind(state) or "failure"
    what = f"{run.kind} of {run.vm}" if run.vm else run.kind
    subject = f"surety: {what} {_WORD.get(state, state)} ({run.policy})"
    what_to_do = result.hint or _default_hint(state)
    ended = run.ended or at.isoformat(timespec="seconds")
    lines = [
        subject,
        "",
        f"What:        {run.kind} of "
        + (f"VM {run.vm}" if run.vm else "the policy's repository/VMs")
        + f", policy {run.policy} (job {run.job}), attempt {run.attempt}",
        f"Host:        {run.host}",
        f"Run:         {run.id}, started {run.started or '-'}, ended {ended}",
        f"Result:      {state}",
    ]
    if result.error:
        lines.append(f"Error:       {result.error}")
    if what_to_do:
        lines.append(f"What to do:  {what_to_do}")
    if result.point:
        lines.append(f"Point:       {result.point} ({result.consistency or '?'}-consistent)")
    if result.warnings:
        lines += ["Warnings:", *(f"  - {w}" for w in result.warnings)]
    for key, value in sorted(result.details.items()):
        lines.append(f"{key}: {value}")
    lines += ["", f"The run's log: surety jobs log {run.id}"]
    payload = {
        "event": kind,
        "policy": run.policy,
        "vm": run.vm,
        "run_id": run.id,
        "job": run.job,
        "kind": run.kind,
        "attempt": run.attempt,
        "host": run.host,
        "state": state,
        "error": result.error,
        "hint": what_to_do,
        "point": result.point,
        "consistency": result.consistency,
        "warnings": list(result.warnings),
        "at": ended,
        "subject": subject,
    }
    return Event(
        kind, run.policy, run.vm, run.id, subject, "\n".join(lines) + "\n", what_to_do, payload
    )


def _default_hint(state: str) -> str | None:
    if state == "interrupted":
        return "the run was stopped before it ended; nothing was committed or truncated for it"
    if state == "missed":
        return "the host or the service was down at the scheduled time: check `surety status`"
    return None


def rpo_event(
    vm: str,
    policy: str,
    rpo: timedelta | None,
    *,
    last_point: str | None,
    last_point_at: str | None,
    now: datetime,
) -> Event:
    """A VM's newest restore point is older than its policy's RPO (or it has none)."""
    subject = f"surety: RPO of {vm} VIOLATED ({policy})"
    newest = (
        f"its newest restore point {last_point[:12]} is from {last_point_at or '?'}"
        if last_point
        else "it has no restore point yet"
    )
    target = f"of {_span(rpo)}" if rpo else "set in the policy"
    what_to_do = (
        f"look at the last runs of {policy}:backup (`surety jobs history {policy}:backup "
        f"--vm {vm}`), fix their error, then `surety jobs run {policy}:backup --vm {vm}`"
    )
    body = (
        f"{subject}\n\nVM {vm} (policy {policy}) is not protected as required: {newest}, "
        f"beyond the RPO {target}.\nWhat to do:  {what_to_do}\n"
    )
    payload = {
        "event": "rpo",
        "policy": policy,
        "vm": vm,
        "run_id": None,
        "state": "rpo-violated",
        "error": f"{newest}, beyond the RPO {target}",
        "hint": what_to_do,
        "point": last_point,
        "consistency": None,
        "at": now.isoformat(timespec="seconds"),
        "subject": subject,
    }
    return Event("rpo", policy, vm, None, subject, body, what_to_do, payload)


def _span(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def summary_event(target: str, day: str, runs: Sequence[Run], now: datetime) -> Event:
    """The daily summary for ``target``: ``runs`` of the last 24 hours by state, failures listed."""
    counts = Counter(run.state for run in runs)
    failed = [r for r in runs if event_kind(r.state) == "failure"]
    word = "all well" if not failed else f"{len(failed)} FAILED"
    subject = f"surety: daily summary {day}: {len(runs)} runs, {word}"
    lines = [subject, "", "Runs of the last 24 hours by state:"]
    lines += [f"  {state:<12} {count}" for state, count in sorted(counts.items())] or ["  none"]
    if failed:
        lines += ["", "Failed:"]
        for run in failed:
            what = f"{run.kind} of {run.vm}" if run.vm else run.kind
            error = run.result.error if run.result and run.result.error else run.state
            hint = run.result.hint if run.result else None
            lines.append(f"  - run {run.id}: {what} ({run.policy}), {run.started}: {error}")
            if hint:
                lines.append(f"    what to do: {hint}")
    what_to_do = "see the failed runs above and `surety status`" if failed else None
    payload = {
        "event": "summary",
        "policy": None,
        "vm": None,
        "run_id": None,
        "state": "failed" if failed else "ok",
        "error": None,
        "hint": what_to_do,
        "point": None,
        "consistency": None,
        "at": now.isoformat(timespec="seconds"),
        "subject": subject,
        "day": day,
        "target": target,
        "counts": dict(counts),
        "failed": [
            {
                "run_id": r.id,
                "job": r.job,
                "vm": r.vm,
                "error": r.result.error if r.result else None,
            }
            for r in failed
        ],
    }
    return Event("summary", None, None, None, subject, "\n".join(lines) + "\n", what_to_do, payload)
