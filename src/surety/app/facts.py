"""Restore points and runs as JSON: one shape for ``surety points|jobs --json`` and the web API.

The CLI and the web console (``surety.web``, which may not import the CLI) both
print these; keeping one serialiser keeps their ``--json`` parity by construction.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any

from surety.catalog import Run
from surety.repo.manifest import Manifest
from surety.repo.verified import VerificationSummary

__all__ = ["point_json", "run_json", "summary_json"]


def run_json(run: Run) -> dict[str, Any]:
    """One run as ``surety jobs history --json`` prints it."""
    return {
        "id": run.id,
        "job": run.job,
        "kind": run.kind,
        "policy": run.policy,
        "vm": run.vm,
        "host": run.host,
        "attempt": run.attempt,
        "scheduled_for": run.scheduled_for,
        "state": run.state,
        "started": run.started,
        "ended": run.ended,
        "pid": run.pid,
        "result": None if run.result is None else asdict(run.result),
    }


def point_json(
    point: Manifest,
    verification: dict[str, Any] | None,
    summary: VerificationSummary | None = None,
    locked: datetime | None = None,
) -> dict[str, Any]:
    """One restore point as ``surety points --json`` prints it: ``verification`` from this
    host's catalog, ``verified`` from the repository's summary, ``locked_until`` (immutable)."""
    return {
        "id": point.id,
        "name": point.name,
        "kind": point.kind,
        "host": point.host,
        "started": point.started.isoformat(),
        "finished": point.finished.isoformat(),
        "consistency": point.consistency,
        "consistency_reason": point.consistency_reason,
        "salvaged": point.salvaged or None,
        "parent": point.parent,
        "disks": [
            {"name": d.name, "size": d.size, "image": d.image, "source": d.source}
            for d in point.disks
        ],
        "stats": point.stats,
        "source": point.source,
        "config": sorted(point.config),
        "applications": point.applications,
        "verification": verification,
        "verified": summary_json(summary),
        "locked_until": locked.isoformat() if locked is not None else None,
    }


def summary_json(summary: VerificationSummary | None) -> dict[str, Any] | None:
    """The latest verification summary stored in the repository (format 3), or None."""
    if summary is None:
        return None
    return {
        "verdict": summary.verdict,
        "when": summary.verified,
        "host": summary.host,
        "boot_seconds": summary.boot_seconds,
        "reason": summary.reason,
        "probes": [{"probe": p.probe, "ok": p.ok, "evidence": p.evidence} for p in summary.probes],
    }
