"""What one job run is asked to do: ``JobSpec`` (JSON on a worker's stdin).

Job names are ``<policy>:<kind>``: ``nightly:backup`` runs once per VM of the
policy (``vm`` set), ``nightly:verify`` and ``nightly:check`` once per policy
(``vm`` None, or one VM when a person asks for it); ``nightly:copy`` copies
``point`` (the restore point a backup run just committed; the service queues it
after that backup) or, by hand, the policy's points of ``vm`` into the policy's
``copy_to`` repository. ``nightly:restore`` and ``nightly:instant`` restore ``vm`` (or
start an instant recovery of it) from ``point`` of the policy's repository, as a person
asked from the web console (``options``: a JSON object of that request's choices).
The spec carries names only; the worker resolves them against the configuration it
loaded.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from surety.core.errors import UsageError

__all__ = ["KINDS", "JobSpec", "job_name", "split_job_name"]

KINDS = ("backup", "verify", "check", "copy", "restore", "instant")


def job_name(policy: str, kind: str) -> str:
    return f"{policy}:{kind}"


def split_job_name(job: str) -> tuple[str, str]:
    """``"nightly:backup"`` -> ``("nightly", "backup")``; ``UsageError`` for anything else."""
    policy, sep, kind = job.rpartition(":")
    if not sep or not policy or kind not in KINDS:
        raise UsageError(
            f"{job!r} is not a job name (POLICY:KIND, KIND one of {', '.join(KINDS)}; "
            "`surety jobs list` shows them)"
        )
    return policy, kind


@dataclass(frozen=True)
class JobSpec:
    job: str  # "<policy>:<kind>"
    kind: str  # backup | verify | check | copy
    policy: str
    vm: str | None
    attempt: int = 1
    scheduled_for: str | None = None  # ISO UTC of the slot; None when started by hand
    point: str | None = None  # copy: the source restore point (None: the policy's points)
    options: str | None = None  # restore, instant: the request's options (JSON object)

    @classmethod
    def for_job(cls, job: str, vm: str | None = None, **extra: object) -> JobSpec:
        policy, kind = split_job_name(job)
        return cls(job, kind, policy, vm, **extra)  # type: ignore[arg-type]

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> JobSpec:
        """The spec ``to_json`` wrote; ``UsageError`` for anything else."""
        try:
            doc = json.loads(text)
            spec = cls(
                job=str(doc["job"]),
                kind=str(doc["kind"]),
                policy=str(doc["policy"]),
                vm=None if doc.get("vm") is None else str(doc["vm"]),
                attempt=int(doc.get("attempt", 1)),
                scheduled_for=doc.get("scheduled_for"),
                point=None if doc.get("point") is None else str(doc["point"]),
                options=None if doc.get("options") is None else str(doc["options"]),
            )
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise UsageError(f"not a job spec: {exc}") from None
        if spec.kind not in KINDS:
            raise UsageError(f"not a job spec: unknown kind {spec.kind!r}")
        return spec
