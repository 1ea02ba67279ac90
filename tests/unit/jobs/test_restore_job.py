"""``<policy>:restore`` runs (asked from the web console) through ``execute``: the CLI's
refusal without the confirmation, the restore with it, a clear failure without a point."""

from __future__ import annotations

import json
from pathlib import Path

from surety.catalog import Catalog
from surety.catalog.runs import RunResult
from surety.core.progress import NullProgress
from surety.jobs.execute import execute
from surety.jobs.spec import JobSpec
from surety.repo.repository import Repository
from surety.testing.fake_hypervisor import FakeHypervisor
from tests.unit.restore.vm.test_restore_vm_run import UUID, _host, _point
from tests.unit.service.fakes import config, policy


def spec(point: str | None, **options: object) -> JobSpec:
    return JobSpec.for_job(
        "nightly:restore", "rv-probe", point=point, options=json.dumps(options) if options else None
    )


def run(
    repo: Repository, tmp_path: Path, job: JobSpec, original_running: bool = True
) -> tuple[RunResult, FakeHypervisor]:
    host = _host(original_running=original_running)
    result = execute(
        job,
        config(tmp_path, policy(vms=("rv-probe",))),
        repo=repo,
        host=host,
        catalog=Catalog(tmp_path / "catalog.sqlite"),
        progress=NullProgress(),
    )
    return result, host


def test_without_the_confirmation_a_vm_in_the_way_is_not_replaced(
    repo: Repository, tmp_path: Path
) -> None:
    point, disks = _point(repo), tmp_path / "disks"
    disks.mkdir()
    result, host = run(repo, tmp_path, spec(point, storage=str(disks)))
    assert result.status == "failed"
    assert "rv-probe" in (result.error or "")
    assert host.events == []  # nothing changed on the host
    assert list(disks.iterdir()) == []


def test_with_the_confirmation_the_vm_is_restored_in_place(
    repo: Repository, tmp_path: Path
) -> None:
    point, disks = _point(repo), tmp_path / "disks"
    disks.mkdir()
    job = spec(point, storage=str(disks), replace=True)
    result, host = run(repo, tmp_path, job)
    assert result.status == "succeeded", result.error
    assert result.point == point
    assert result.details["replaced"] == ["rv-probe"]
    assert host.events == ["destroy rv-probe", "undefine rv-probe", "define rv-probe"]
    assert host.domain("rv-probe").uuid() == UUID
    (disk,) = disks.iterdir()  # the original's format (qcow2), beside nothing else
    assert (disk.name, disk.read_bytes()[:4]) == ("rv-probe-vda.qcow2", b"QFI\xfb")


def test_a_restore_run_without_a_point_fails_clearly(repo: Repository, tmp_path: Path) -> None:
    result, _ = run(repo, tmp_path, spec(None))
    assert result.status == "failed"
    assert "needs a VM and a restore point" in (result.error or "")
