"""A verification's summary, written into the repository (format 3, ``repo.verified``).

``verify`` records each verdict in the host's catalog and, through
``record_in_repository``, as a small sealed object beside the restore point, so
a host that has only the storage and the passphrase still knows which points
were proven (docs/dr.md). One summary per VM of the proof: verdict, when, which
host and lab, boot-to-ready seconds, each probe's name, result and one line of
evidence. Storage that refuses writes (read-only media, full) costs the summary,
never the verification: it is said in a note.
"""

from __future__ import annotations

import socket

from surety.core.errors import StorageError, StorageFull
from surety.core.progress import Progress
from surety.repo.repository import Repository
from surety.repo.verified import ProbeSummary, VerificationSummary, one_line, write_summary
from surety.verify.proof import Proof, VmProof

__all__ = ["record_in_repository", "summaries_of"]


def summaries_of(proof: Proof, host: str | None = None) -> list[VerificationSummary]:
    """One summary per VM of ``proof`` that has a restore point."""
    at = str(proof.document()["finished"])
    host = host or socket.gethostname()
    return [_summary(vm, proof, at, host) for vm in proof.vms if vm.point]


def record_in_repository(repo: Repository, proof: Proof, progress: Progress) -> list[str]:
    """Write the proof's summaries into ``repo``; returns the object names written."""
    written = []
    for summary in summaries_of(proof):
        try:
            written.append(write_summary(repo, summary))
        except (StorageError, StorageFull) as exc:
            progress.note(f"{summary.point[:12]}: verification summary not stored: {exc}")
    return written


def _summary(vm: VmProof, proof: Proof, at: str, host: str) -> VerificationSummary:
    return VerificationSummary(
        point=vm.point,
        verdict="passed" if vm.passed else "failed",
        verified=at,
        host=host,
        lab=proof.lab,
        group=proof.group,
        boot_seconds=vm.boot_seconds,
        reason=one_line(vm.reason),
        probes=tuple(ProbeSummary(p.probe, p.ok, one_line(p.evidence)) for p in vm.probes),
    )
