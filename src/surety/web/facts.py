"""What the console shows, as JSON-ready dicts: the same facts and field names as the CLI's
``--json`` (``surety status``, ``surety jobs list|history|log``, ``surety points``).

Each function takes the loaded configuration and the catalog; the pages render these
dicts and the API returns them, so the two never disagree.
"""

from __future__ import annotations

import json
from contextlib import closing
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from surety.app.configured import open_configured_repository
from surety.app.facts import point_json, run_json
from surety.app.hypervisor import connect_host
from surety.app.status import gather_jobs, gather_status
from surety.catalog import Catalog
from surety.catalog.db import iso
from surety.config.model import Config
from surety.core.errors import SuretyError, UsageError
from surety.repo.immutable import locked_until
from surety.repo.manifest import Manifest
from surety.repo.repository import Repository
from surety.repo.verified import latest_summaries

__all__ = [
    "NotFound",
    "jobs",
    "overview",
    "point_json",
    "points_of_vm",
    "proof",
    "repositories",
    "run_json",
    "run_log",
    "runs",
    "status",
    "vms",
]


class NotFound(UsageError):
    """An id in a URL that names nothing (a 404 page, not an error of the console)."""


def now() -> datetime:
    return datetime.now(UTC)


def status(config: Config, catalog: Catalog) -> dict[str, Any]:
    """``surety status --json``'s VMs, plus the service line and the warnings."""
    with closing(connect_host(config.service.libvirt_uri)) as host:
        report = gather_status(config, host=host, catalog=catalog, now=now())
    return {
        "host": report.host,
        "service": asdict(report.heartbeat) if report.heartbeat else None,
        "attention": report.attention,
        "warnings": report.warnings,
        "vms": [s.to_json() for s in report.statuses],
    }


def vms(
    config: Config, catalog: Catalog, facts: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Each VM's status beside its policy's targets: the age of its last point and of its
    last *proven* point against the RPO, its measured recovery time (the lab's boot to
    application ready of the last passed verification) against the RTO; ``rpo_met`` and
    ``rto_met`` are None without a target, ``misses`` names each target missed."""
    facts = facts if facts is not None else status(config, catalog)
    proven = _proven(config, catalog)
    rows = []
    for vm in facts["vms"]:
        policy = config.policies.get(vm["policy"] or "")
        check = proven.get(vm["last_verified_point"] or "")
        rpo = policy.rpo.total_seconds() if policy and policy.rpo else None
        rto = policy.rto.total_seconds() if policy and policy.rto else None
        recovery = check["boot_seconds"] if check else None
        row = {
            **vm,
            "rpo_target_seconds": rpo,
            "rto_target_seconds": rto,
            "last_point_age_seconds": _age(vm["last_point_at"]),
            "proven_point_age_seconds": _age(check["point_at"]) if check else None,
            "recovery_seconds": recovery,
            "proven_rpo_met": None
            if rpo is None or check is None or check["point_at"] is None
            else (_age(check["point_at"]) or 0) <= rpo,
            "rto_met": None if rto is None else recovery is not None and recovery <= rto,
            "proven_at": check["at"] if check else None,
            "repository": policy.repository if policy else None,
            "verify_job": bool(policy and policy.verify),
        }
        row["misses"] = _misses(row)
        rows.append(row)
    return rows


def _misses(row: dict[str, Any]) -> list[str]:
    """The targets a VM misses, each in words (empty: within every target it has)."""
    misses = []
    if row["rpo_met"] is False:
        misses.append("RPO: the last point is older than the target")
    if row["rto_met"] is False:
        misses.append(
            "RTO: no passed verification measured its recovery time"
            if row["recovery_seconds"] is None
            else "RTO: the measured recovery time is above the target"
        )
    return misses


def jobs(config: Config, catalog: Catalog) -> list[dict[str, Any]]:
    """``surety jobs list --json``."""
    with closing(connect_host(config.service.libvirt_uri)) as host:
        return [row.to_json() for row in gather_jobs(config, host=host, catalog=catalog, now=now())]


def runs(
    catalog: Catalog, name: str | None = None, vm: str | None = None, limit: int = 20
) -> list[dict[str, Any]]:
    """``surety jobs history [NAME] [--vm VM] --limit N --json``."""
    job, policy = (name, None) if name and ":" in name else (None, name)
    return [run_json(r) for r in catalog.runs(job=job, policy=policy, vm=vm, limit=limit)]


def run_log(catalog: Catalog, run_id: int) -> dict[str, Any]:
    """``surety jobs log RUN --json``."""
    try:
        run = catalog.run(run_id)
    except UsageError as exc:
        raise NotFound(str(exc)) from exc
    return {**run_json(run), "log": catalog.run_log(run_id), "progress": catalog.progress(run_id)}


def open_named_repository(config: Config, name: str) -> Repository:
    if name not in config.repositories:
        raise NotFound(f"no repository {name!r} in the configuration")
    return open_configured_repository(config, name)  # its passphrase and S3 settings


def points_of_vm(config: Config, catalog: Catalog, vm: str) -> list[dict[str, Any]]:
    """The restore points named ``vm`` in every configured repository, oldest first."""
    found = []
    for name in sorted(config.repositories):
        repo = open_named_repository(config, name)
        points = repo.list_points(vm)
        checked = catalog.latest_verifications(repo.config.id, [p.id for p in points])
        summaries = latest_summaries(repo)
        for p in points:
            done = checked.get(p.id)
            locked = locked_until(repo, p.id) if repo.immutable else None
            doc = point_json(p, asdict(done) if done else None, summaries.get(p.id), locked)
            found.append({**doc, "repository": name})
    return found


def find_point(config: Config, point_id: str) -> tuple[str, Repository, Manifest]:
    """(repository name, repository, point) of a full point id (or a unique prefix)."""
    for name in sorted(config.repositories):
        repo = open_named_repository(config, name)
        matches = [p for p in repo.list_points() if p.id.startswith(point_id)]
        if len(matches) == 1 and len(point_id) >= 8:
            return name, repo, matches[0]
    raise NotFound(f"no restore point {point_id!r} in the configured repositories")


def proof(config: Config, catalog: Catalog, point_id: str) -> dict[str, Any]:
    """The latest verification of a point and its proof document (probes, evidence)."""
    name, repo, point = find_point(config, point_id)
    found = catalog.latest_verifications(repo.config.id, [point.id]).get(point.id)
    if found is None:
        raise NotFound(f"restore point {point.id[:12]} was never verified")
    document: dict[str, Any] | None = None
    problem = None
    try:
        document = json.loads(Path(found.proof).read_text())
    except (OSError, ValueError) as exc:
        problem = f"cannot read the proof {found.proof}: {getattr(exc, 'strerror', None) or exc}"
    return {
        "repository": name,
        "point": point.id,
        "vm": point.name,
        "verification": asdict(found),
        "proof": document,
        "proof_problem": problem,
    }


def repositories(config: Config, catalog: Catalog) -> list[dict[str, Any]]:
    """Per repository: usage history (logical vs stored), ratios, checks, verifications."""
    found = []
    for name in sorted(config.repositories):
        entry: dict[str, Any] = {"name": name, "location": config.repositories[name].location}
        try:
            repo = open_named_repository(config, name)
        except SuretyError as exc:
            found.append({**entry, "error": str(exc)})
            continue
        history = catalog.usage(repo.config.id)
        usage = [
            {"at": at, "logical": logical, "stored": stored} for at, logical, stored in history
        ]
        last = history[-1] if history else None
        entry.update(
            id=repo.config.id,
            error=None,
            usage=usage,
            ratio=round(last[1] / last[2], 2) if last and last[2] else None,
            checks=[asdict(c) for c in catalog.checks(repo.config.id)],
            verifications=[
                {"point": point, **asdict(v)}
                for point, v in sorted(catalog.latest_verifications(repo.config.id).items())
            ],
        )
        found.append(entry)
    return found


def overview(config: Config, catalog: Catalog) -> dict[str, Any]:
    """The morning page: run results, running jobs, VMs outside RPO, unprotected VMs,
    points not verified, storage used."""
    at = now()
    facts = status(config, catalog)
    rows = vms(config, catalog, facts)
    running = [
        {**run_json(r), "progress": catalog.progress(r.id)}
        for r in catalog.runs(states=("queued", "running"), limit=50)
    ]
    storage = []
    for repo in repositories(config, catalog):
        last = repo.get("usage", [])[-1:] or [None]
        storage.append({"name": repo["name"], "error": repo["error"], "usage": last[0]})
    statuses = facts["vms"]
    return {
        "host": facts["host"],
        "service": facts["service"],
        "warnings": facts["warnings"],
        "attention": facts["attention"],
        "runs_24h": catalog.run_counts(iso(at - timedelta(hours=24))),
        "runs_30d": catalog.run_counts(iso(at - timedelta(days=30))),
        "running": running,
        "outside_rpo": [s["vm"] for s in statuses if s["rpo_met"] is False],
        "outside_rto": [r["vm"] for r in rows if r["rto_met"] is False],
        "outside_target": [r["vm"] for r in rows if r["misses"]],
        "unprotected": [s["vm"] for s in statuses if s["state"] == "unprotected"],
        "not_verified": [
            s["vm"]
            for s in statuses
            if s["last_point"] and s["last_verified_point"] != s["last_point"]
        ],
        "protected": [s["vm"] for s in statuses if s["policy"]],
        "storage": storage,
    }


def _proven(config: Config, catalog: Catalog) -> dict[str, dict[str, Any]]:
    """Point id -> its latest passed verification (and ``point_at``, when the point
    finished), in every repository that opens."""
    proven: dict[str, dict[str, Any]] = {}
    for name in sorted(config.repositories):
        try:
            repo = open_named_repository(config, name)
        except SuretyError:
            continue
        verified = {
            point: v
            for point, v in catalog.latest_verifications(repo.config.id).items()
            if v.status == "verified"
        }
        if not verified:
            continue
        finished = {p.id: p.finished.isoformat() for p in repo.list_points() if p.id in verified}
        for point, v in verified.items():
            proven[point] = {**asdict(v), "point_at": finished.get(point)}
    return proven


def _age(at: str | None) -> float | None:
    if not at:
        return None
    return round((now() - datetime.fromisoformat(at)).total_seconds())
