"""Gathering what ``surety status`` and ``surety jobs list`` show (the CLI and the web
console share it): the host's VMs and their tags, each configured repository's
restore points, and the catalog's runs, verifications and heartbeats; then
``jobs.status`` computes.

A repository that cannot be opened (missing, wrong passphrase, no passphrase
file) becomes an error of its VMs, not a failure of the whole status. Its
passphrase comes from the repository's ``passphrase_file``, else
``SURETY_PASSPHRASE``.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from surety.app.configured import aws_environment, environment_changes
from surety.app.repository import open_repository
from surety.catalog import Catalog, Heartbeat, Run, Verification
from surety.config.model import Config, RepositoryConfig
from surety.core.errors import SuretyError, UsageError
from surety.hypervisor.port import HypervisorHost
from surety.jobs.status import (
    CatalogView,
    JobRow,
    VmStatus,
    compute_status,
    list_jobs,
    live_heartbeat,
    needs_attention,
    policy_warnings,
)
from surety.repo.manifest import Manifest

__all__ = ["StatusReport", "gather_jobs", "gather_status", "read_domains", "this_host"]

RUNS_PER_POLICY = 1000
"""Backup runs of a policy read to find each VM's last verdict (newest first)."""


@dataclass(frozen=True)
class StatusReport:
    host: str
    statuses: list[VmStatus]
    warnings: list[str]  # policy names matching no VM, notes of the repositories
    heartbeat: Heartbeat | None  # the live service's, None: no service runs
    attention: bool  # a person is needed (``jobs.status.needs_attention``)


def this_host() -> str:
    """The host name runs and heartbeats are recorded under (as the service records them)."""
    return socket.gethostname()


def read_domains(host: HypervisorHost) -> dict[str, tuple[bool, tuple[str, ...]]]:
    """Every VM of the host: name -> (running, tags)."""
    domains = {}
    for name in host.domain_names():
        domain = host.domain(name)
        domains[name] = (domain.is_running(), tuple(domain.tags()))
    return domains


def gather_status(
    config: Config, *, host: HypervisorHost, catalog: Catalog, now: datetime
) -> StatusReport:
    domains = read_domains(host)
    points, ids, errors, notes = _read_repositories(config.repositories)
    verifications: dict[str, Mapping[str, Verification]] = {
        name: catalog.latest_verifications(repo_id) for name, repo_id in ids.items()
    }
    runs: list[Run] = []
    for policy in sorted(config.policies):
        runs += catalog.runs(job=f"{policy}:backup", limit=RUNS_PER_POLICY)
    runs.sort(key=lambda r: r.id, reverse=True)
    statuses = compute_status(
        config, domains, points, CatalogView(runs, verifications), now, repo_errors=errors
    )
    hostname = this_host()
    heartbeat = live_heartbeat(catalog.heartbeats(), hostname, now)
    return StatusReport(
        hostname,
        statuses,
        policy_warnings(config, domains) + notes,
        heartbeat,
        needs_attention(statuses, heartbeat is not None),
    )


def gather_jobs(
    config: Config, *, host: HypervisorHost, catalog: Catalog, now: datetime
) -> list[JobRow]:
    last_runs = {}
    for policy in config.policies.values():
        for kind in ("backup", "verify", "check", "copy"):
            found = catalog.runs(job=f"{policy.name}:{kind}", limit=1)
            if found:
                last_runs[found[0].job] = found[0]
    return list_jobs(config, read_domains(host), last_runs, now)


def _read_repositories(
    repositories: Mapping[str, RepositoryConfig],
) -> tuple[dict[str, Sequence[Manifest]], dict[str, str], dict[str, str], list[str]]:
    """(points, repository id, error, notes) per repository name."""
    points: dict[str, Sequence[Manifest]] = {}
    ids: dict[str, str] = {}
    errors: dict[str, str] = {}
    notes: list[str] = []
    for name, repository in sorted(repositories.items()):
        try:
            with aws_environment(environment_changes(repository)):  # its own S3 settings
                repo = open_repository(repository.location, _passphrase(repository))
            points[name] = repo.list_points()
        except SuretyError as exc:
            errors[name] = str(exc)
            continue
        ids[name] = repo.config.id
        notes += [f"repository {name}: {note}" for note in repo.notes]
    return points, ids, errors, notes


def _passphrase(repository: RepositoryConfig) -> str:
    if repository.passphrase_file is not None:
        try:
            text = repository.passphrase_file.read_text().rstrip("\n")
        except OSError as exc:
            raise UsageError(f"cannot read {repository.passphrase_file}: {exc.strerror}") from exc
        if text:
            return text
        raise UsageError(f"{repository.passphrase_file} is empty")
    from_env = os.environ.get("SURETY_PASSPHRASE")
    if from_env:
        return from_env
    raise UsageError("no passphrase_file in its configuration (and SURETY_PASSPHRASE unset)")
