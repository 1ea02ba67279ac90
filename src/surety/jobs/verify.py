"""A policy's verification: boot the latest point of each of its VMs in the lab.

Without a group file each VM's latest point is verified on its own (one VM's
failure does not keep the others from being proven); with the policy's
``verify.group`` the application group runs as ``surety verify --group`` does.
VMs of the policy are those the selection covers on the host now, plus those it
covers among the repository's points (a VM gone from the host still has points
worth proving). Proofs go to ``SURETY_PROOFS`` (default /var/lib/surety/proofs),
as the CLI's; verdicts are recorded in the catalog by the verify use case.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from surety.catalog import Catalog
from surety.catalog.runs import RunResult
from surety.config import select_vms
from surety.config.model import Policy
from surety.core.errors import SuretyError, VerificationFailed
from surety.core.progress import Progress
from surety.hypervisor.port import HypervisorHost
from surety.jobs.hints import hint_for
from surety.repo.repository import Repository
from surety.verify.application_group import ApplicationGroup, Member, load_group
from surety.verify.run import VerifyOptions, verify

__all__ = ["policy_vms", "proofs_dir", "run_verify"]

VERIFY_TIMEOUT = 1800.0


def proofs_dir() -> Path:
    return Path(os.environ.get("SURETY_PROOFS", "/var/lib/surety/proofs"))


def policy_vms(policy: Policy, host: HypervisorHost, repo: Repository) -> list[str]:
    """The VMs ``policy`` covers that have a VM restore point in ``repo``."""
    with_points = {p.name for p in repo.points() if p.kind == "vm"}
    domains: dict[str, tuple[str, ...]] = dict.fromkeys(with_points, ())
    for name in host.domain_names():
        domains[name] = host.domain(name).tags()
    return [vm for vm in select_vms(policy.selection, domains) if vm in with_points]


def run_verify(
    policy: Policy,
    vm: str | None,
    *,
    repo: Repository,
    host: HypervisorHost,
    catalog: Catalog,
    progress: Progress,
) -> RunResult:
    if policy.verify is not None and policy.verify.group is not None and vm is None:
        groups = [load_group(policy.verify.group)]
    else:
        vms = [vm] if vm else policy_vms(policy, host, repo)
        groups = [
            ApplicationGroup(
                (Member(f"{name}@latest", name),), f"{policy.name}:{name}", VERIFY_TIMEOUT
            )
            for name in vms
        ]
    if not groups:
        return RunResult(
            "skipped",
            warnings=[f"policy {policy.name} has no VM restore point to verify yet"],
            details={"note": "nothing to verify"},
        )
    proofs: dict[str, Any] = {}
    failures: list[tuple[str, SuretyError]] = []
    for group in groups:
        try:
            result = verify(
                repo, VerifyOptions(group, proofs_dir()), progress, host=host, catalog=catalog
            )
        except SuretyError as exc:
            failures.append((group.name, exc))
            proofs[group.name] = {"verdict": "failed", "error": str(exc)}
            continue
        members = result.proof.get("vms")
        for member in members if isinstance(members, list) else []:
            proofs[member["name"]] = {
                "point": member["point"],
                "verdict": member["result"],
                "proof": str(result.proof_dir / "proof.html"),
            }
        if not result.passed:
            failures.append(
                (group.name, VerificationFailed(f"see {result.proof_dir / 'proof.html'}"))
            )
    return _result(proofs, failures)


def _result(proofs: dict[str, Any], failures: list[tuple[str, SuretyError]]) -> RunResult:
    points = {p.get("point") for p in proofs.values() if p.get("point")}
    result = RunResult(
        "succeeded",
        point=points.pop() if len(points) == 1 else None,
        details={"proofs": proofs},
    )
    if failures:
        result.status = "failed"
        result.error = "; ".join(f"verification of {name} failed: {exc}" for name, exc in failures)
        result.hint = hint_for(failures[0][1])
    return result
