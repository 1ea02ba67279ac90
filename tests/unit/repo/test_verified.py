"""Verification summaries in the repository (format 3): written by verify, read without a
catalog, damage named but never fatal, dropped by prune with their restore point."""

from __future__ import annotations

import time

from surety.core.progress import NullProgress
from surety.repo.check import check_repository
from surety.repo.prune import prune_repository
from surety.repo.repository import Repository
from surety.repo.storage import MemoryStorage
from surety.repo.verified import PREFIX, latest_summaries
from surety.verify.probes import ProbeResult
from surety.verify.proof import Proof, VmProof
from surety.verify.summary import record_in_repository, summaries_of
from tests.unit.repo.test_check import CHUNK, back_up


def proof_of(point: str, passed: bool, finished: float) -> Proof:
    """A proof as ``verify`` builds it (the lab itself needs guests)."""
    proof = Proof("lab-1", "web01", finished - 30)
    vm = VmProof("web01", point, "web01", "filesystem", "2024-05-17T12:00:00+00:00")
    vm.result, vm.boot_seconds = ("passed" if passed else "failed"), 12.5
    vm.probes.append(ProbeResult("agent", True, "guest-ping answered\nafter 1 try", 0.1, finished))
    vm.probes.append(ProbeResult("tcp:22", passed, "x" * 500, 0.2, finished))
    proof.vms.append(vm)
    proof.finished = finished
    return proof


def test_the_latest_summary_wins_and_evidence_is_one_short_line(repo: Repository) -> None:
    point = back_up(repo, {"vda": b"a" * CHUNK}, "web01", 1)
    now = time.time()
    record_in_repository(repo, proof_of(point, False, now - 3600), NullProgress())
    record_in_repository(repo, proof_of(point, True, now), NullProgress())
    record_in_repository(repo, proof_of(point, True, now), NullProgress())  # same: no new object
    assert len(list(repo.storage.list(PREFIX))) == 2
    latest = latest_summaries(repo)[point]
    assert (latest.verdict, latest.boot_seconds, latest.lab) == ("passed", 12.5, "lab-1")
    assert [(p.probe, p.ok) for p in latest.probes] == [("agent", True), ("tcp:22", True)]
    assert latest.probes[0].evidence == "guest-ping answered after 1 try"
    assert len(latest.probes[1].evidence) == 200


def test_a_damaged_summary_is_named_and_the_points_stay(
    repo: Repository, storage: MemoryStorage
) -> None:
    point = back_up(repo, {"vda": b"b" * CHUNK}, "web01", 1)
    [name] = record_in_repository(repo, proof_of(point, True, time.time()), NullProgress())
    data = bytearray(storage.get(name))
    data[-1] ^= 1
    storage.put(name, bytes(data))
    assert latest_summaries(repo) == {}
    assert any("verification summary" in note for note in repo.notes)
    report = check_repository(repo, read_data=True, progress=NullProgress())
    assert report.ok, report.errors
    assert any("verification summary" in w for w in report.warnings)
    assert [p.id for p in repo.list_points()] == [point]


def test_prune_drops_the_summaries_of_forgotten_points(repo: Repository) -> None:
    kept = back_up(repo, {"vda": b"c" * CHUNK}, "web01", 1)
    gone = back_up(repo, {"vda": b"d" * CHUNK}, "web01", 2)
    for point in (kept, gone):
        record_in_repository(repo, proof_of(point, True, time.time()), NullProgress())
    repo.forget(gone)
    report = check_repository(repo, read_data=False, progress=NullProgress())
    assert any("forgotten restore points" in w for w in report.warnings)
    assert prune_repository(repo, NullProgress()).deleted_summaries == 1
    assert set(latest_summaries(repo)) == {kept}


def test_one_summary_per_vm_of_the_proof() -> None:
    proof = proof_of("ab" * 32, True, time.time())
    proof.vms.append(VmProof("db", "", "db", "crash", ""))  # never resolved: no point
    [summary] = summaries_of(proof, host="backup1")
    assert (summary.point, summary.host, summary.group) == ("ab" * 32, "backup1", "web01")
