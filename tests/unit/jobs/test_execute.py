"""execute(): errors become results with hints, backups get retention, prune and usage,
checks read a rolling part; on a real local repository and the fake hypervisor."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from surety.backup.image import ImageBackupOptions, backup_image
from surety.backup.vm import VmBackupOptions, VmBackupResult
from surety.catalog import Catalog
from surety.config.model import (
    CheckRule,
    Config,
    Policy,
    RepositoryConfig,
    Retention,
    Selection,
    ServiceSettings,
)
from surety.core.errors import (
    Interrupted,
    RepositoryLocked,
    SourceError,
    StorageFull,
    SuretyError,
    WrongPassphrase,
)
from surety.core.progress import NullProgress
from surety.hypervisor.port import HypervisorHost
from surety.jobs import backup as backup_job
from surety.jobs import verify as verify_job
from surety.jobs.execute import execute
from surety.jobs.spec import JobSpec
from surety.repo.repository import Repository
from surety.repo.storage import LocalStorage
from surety.schedule import Schedule
from surety.testing.fake_hypervisor import FakeHypervisor
from surety.verify.run import VerifyOptions, VerifyResult
from tests.unit.conftest import CHEAP_KDF, PASSPHRASE

DOMAIN_XML = (Path(__file__).parents[1] / "data" / "testvm-domain.xml").read_text()
VM = "rv-probe"  # the name in DOMAIN_XML
DAILY = Schedule("daily", ZoneInfo("UTC"))


def policy(**changes: Any) -> Policy:
    return replace(Policy("nightly", "local", Selection(("rv-*",)), DAILY), **changes)


def config(p: Policy) -> Config:
    return Config(
        Path("surety.toml"),
        ServiceSettings(),
        {"local": RepositoryConfig("local", "/unused")},
        {p.name: p},
        {},
    )


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    storage_dir = tmp_path / "repo"
    storage_dir.mkdir()
    return Repository.init(LocalStorage(storage_dir), PASSPHRASE, chunk_size=65536, kdf=CHEAP_KDF)


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    return Catalog(tmp_path / "catalog.sqlite")


@pytest.fixture
def host() -> FakeHypervisor:
    hypervisor = FakeHypervisor()
    hypervisor.add_domain(DOMAIN_XML)
    return hypervisor


def run(spec: JobSpec, p: Policy, repo: Repository, host: HypervisorHost, catalog: Catalog) -> Any:
    return execute(spec, config(p), repo=repo, host=host, catalog=catalog, progress=NullProgress())


BACKUP = JobSpec("nightly:backup", "backup", "nightly", VM)


class FakeBackups:
    """Stands in for backup_vm (the fake hypervisor serves no NBD disks): commits a real
    image point of the VM's name, or raises what it is told to."""

    def __init__(self, tmp_path: Path, raises: SuretyError | None = None) -> None:
        self.tmp_path, self.raises = tmp_path, raises
        self.asked: list[VmBackupOptions] = []
        self.consistency = "filesystem"
        self.truncation: dict[str, Any] = {}

    def __call__(
        self, repo: Repository, options: VmBackupOptions, progress: Any, *, host: Any
    ) -> VmBackupResult:
        self.asked.append(options)
        if self.raises is not None:
            raise self.raises
        disk = self.tmp_path / f"vda-{len(self.asked)}"
        disk.write_bytes(os.urandom(200_000))
        image = backup_image(repo, ImageBackupOptions(disk, options.domain, "vda"), progress)
        reason = "fs-freeze failed: the guest agent did not answer"
        point = replace(
            image, kind="vm", consistency=self.consistency, consistency_reason=reason, id=""
        )
        with repo.lock(exclusive=False, operation="test: the image point as a VM point"):
            point = replace(point, id=repo.commit(point))
            repo.forget(image.id)
        return VmBackupResult(point, self.truncation)


@pytest.fixture
def backups(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeBackups:
    fake = FakeBackups(tmp_path)
    monkeypatch.setattr(backup_job, "backup_vm", fake)
    return fake


@pytest.mark.parametrize(
    "case",
    [
        (WrongPassphrase("no key file opens with this passphrase"), "failed", "passphrase_file"),
        (RepositoryLocked("repository locked by prune (pid 9)"), "failed", "surety unlock"),
        (StorageFull("no space left on the repository"), "failed", "free space"),
        (SourceError("VM is not running"), "failed", "qemu-guest-agent"),
        (Interrupted("backup interrupted; nothing was committed"), "interrupted", "nothing"),
    ],
)
def test_errors_become_results_with_hints(
    case: tuple[SuretyError, str, str],
    backups: FakeBackups,
    repo: Repository,
    host: FakeHypervisor,
    catalog: Catalog,
) -> None:
    error, status, hint = case
    backups.raises = error
    result = run(BACKUP, policy(), repo, host, catalog)
    assert result.status == status
    assert result.error == str(error)
    assert hint in (result.hint or "")


def test_a_bug_propagates(
    monkeypatch: pytest.MonkeyPatch, repo: Repository, host: FakeHypervisor, catalog: Catalog
) -> None:
    monkeypatch.setattr(backup_job, "backup_vm", None)
    with pytest.raises(TypeError):
        run(BACKUP, policy(), repo, host, catalog)


def test_a_vm_gone_from_the_host_is_skipped(
    backups: FakeBackups, repo: Repository, catalog: Catalog
) -> None:
    result = run(BACKUP, policy(), repo, FakeHypervisor(), catalog)
    assert result.status == "skipped"
    assert "no longer on the host" in result.details["note"]
    assert backups.asked == []


def test_libvirt_failing_is_a_failed_run(
    backups: FakeBackups, repo: Repository, host: FakeHypervisor, catalog: Catalog
) -> None:
    host.inject("find_domain", SourceError("cannot connect to libvirt"))
    result = run(BACKUP, policy(), repo, host, catalog)
    assert (result.status, result.error) == ("failed", "cannot connect to libvirt")
    assert "libvirt answers" in (result.hint or "")


def test_an_unknown_policy_is_a_failed_run(
    repo: Repository, host: FakeHypervisor, catalog: Catalog
) -> None:
    spec = JobSpec("gone:backup", "backup", "gone", VM)
    result = run(spec, policy(), repo, host, catalog)
    assert result.status == "failed"
    assert "policy 'gone' is not in surety.toml" in (result.error or "")


def test_a_shut_off_vm_is_not_refused_here(
    backups: FakeBackups, repo: Repository, catalog: Catalog
) -> None:
    host = FakeHypervisor()
    host.add_domain(DOMAIN_XML, running=False, shutoff_reason="shutdown")
    assert run(BACKUP, policy(), repo, host, catalog).status == "succeeded"


def test_backup_takes_the_policy_options_and_records_usage(
    backups: FakeBackups, repo: Repository, host: FakeHypervisor, catalog: Catalog
) -> None:
    p = policy(consistency="application", on_quiesce_failure="filesystem", freeze_window=4.0)
    backups.consistency = "application"
    result = run(BACKUP, p, repo, host, catalog)
    assert result.status == "succeeded"
    assert result.warnings == []
    (options,) = backups.asked
    assert (options.domain, options.consistency, options.on_quiesce_failure) == (
        VM,
        "application",
        "filesystem",
    )
    assert options.freeze_window == 4.0
    (point,) = repo.points()
    assert (result.point, result.consistency) == (point.id, "application")
    assert result.bytes_read == point.stats["read_bytes"]
    assert result.bytes_stored == point.stats["stored_bytes"]
    ((_, logical, stored),) = catalog.usage(repo.config.id)
    assert logical == 200_000
    assert stored == sum(size for _, size in repo.storage.list(""))


def test_a_fall_back_is_a_warning(
    backups: FakeBackups, repo: Repository, host: FakeHypervisor, catalog: Catalog
) -> None:
    backups.consistency = "crash"
    result = run(BACKUP, policy(on_quiesce_failure="crash"), repo, host, catalog)
    assert result.status == "warning"
    assert result.warnings == [
        "crash-consistent, not filesystem: fs-freeze failed: the guest agent did not answer"
    ]
    assert "qemu-guest-agent" in (result.hint or "")


def test_failed_log_truncation_is_a_warning(
    backups: FakeBackups, repo: Repository, host: FakeHypervisor, catalog: Catalog
) -> None:
    backups.truncation = {"postgresql": {"done": False, "detail": "pg_archivecleanup failed"}}
    result = run(BACKUP, policy(truncate_logs="after-commit"), repo, host, catalog)
    assert result.status == "warning"
    assert result.warnings == ["log truncation (postgresql) failed: pg_archivecleanup failed"]
    assert result.details["log_truncation"] == backups.truncation


def test_retention_forgets_only_this_vms_points_then_prunes(
    backups: FakeBackups,
    repo: Repository,
    host: FakeHypervisor,
    catalog: Catalog,
    tmp_path: Path,
) -> None:
    other = tmp_path / "other"
    other.write_bytes(os.urandom(100_000))
    backup_image(repo, ImageBackupOptions(other, "web1", "vda"), NullProgress())
    p = policy(retention=Retention(last=2), prune=True)
    ids = [run(BACKUP, p, repo, host, catalog).point for _ in range(3)]
    names = sorted((pt.name, pt.id) for pt in repo.points())
    assert [n for n, _ in names] == [VM, VM, "web1"]
    assert {i for n, i in names if n == VM} == set(ids[1:])
    last = catalog.usage(repo.config.id)[-1]
    assert last[1] == 2 * 200_000 + 100_000  # logical: the points left


def test_retention_blocked_by_a_lock_is_a_warning_not_a_failure(
    backups: FakeBackups, repo: Repository, host: FakeHypervisor, catalog: Catalog
) -> None:
    p = policy(retention=Retention(last=1))
    with repo.lock(exclusive=False, operation="backup vm other"):  # another job's backup
        result = run(BACKUP, p, repo, host, catalog)
    assert result.status == "warning"
    assert result.point is not None
    assert result.warnings[0].startswith("retention/prune did not run:")


CHECK = JobSpec("nightly:check", "check", "nightly", None)


def test_check_reads_a_rolling_part(
    backups: FakeBackups, repo: Repository, host: FakeHypervisor, catalog: Catalog
) -> None:
    run(BACKUP, policy(), repo, host, catalog)
    p = policy(check=CheckRule(DAILY, read_data_parts=3))
    parts = []
    for _ in range(4):
        result = run(CHECK, p, repo, host, catalog)
        assert result.status == "succeeded"
        parts.append(result.details["part"])
    assert parts == ["1/3", "2/3", "3/3", "1/3"]
    assert [c.part for c in catalog.checks(repo.config.id)] == ["1/3", "3/3", "2/3", "1/3"]


def test_check_of_a_damaged_repository_fails_with_the_hint(
    backups: FakeBackups, repo: Repository, host: FakeHypervisor, catalog: Catalog
) -> None:
    run(BACKUP, policy(), repo, host, catalog)
    root = Path(repo.storage.describe())
    pack = next(path for path in root.rglob("*") if path.is_file() and "data" in path.parts)
    data = bytearray(pack.read_bytes())
    data[len(data) // 2] ^= 0xFF
    pack.write_bytes(bytes(data))
    result = run(CHECK, policy(check=CheckRule(DAILY, read_data_parts=1)), repo, host, catalog)
    assert result.status == "failed"
    assert (result.error or "").startswith("check found 3 error(s): pack ")
    assert "surety check --read-data" in (result.hint or "")
    assert catalog.checks(repo.config.id)[0].status == "damaged"


VERIFY = JobSpec("nightly:verify", "verify", "nightly", None)


def test_verify_without_points_is_skipped(
    repo: Repository, host: FakeHypervisor, catalog: Catalog
) -> None:
    result = run(VERIFY, policy(), repo, host, catalog)
    assert result.status == "skipped"
    assert "no VM restore point to verify" in result.warnings[0]


def test_verify_proves_each_vm_latest_point_and_fails_with_the_proof(
    backups: FakeBackups,
    repo: Repository,
    host: FakeHypervisor,
    catalog: Catalog,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tmp_path = backups.tmp_path
    point = run(BACKUP, policy(), repo, host, catalog).point
    asked: list[VerifyOptions] = []

    def lab(repo_: Repository, options: VerifyOptions, progress: Any, **_: Any) -> VerifyResult:
        asked.append(options)
        member = {"name": VM, "point": point, "result": "failed"}
        return VerifyResult(False, tmp_path / "proof-1", {"vms": [member]})

    monkeypatch.setattr(verify_job, "verify", lab)
    result = run(VERIFY, policy(), repo, host, catalog)
    ((member,),) = [o.group.members for o in asked]
    assert member.point == f"{VM}@latest"
    assert result.status == "failed"
    assert result.point == point
    assert result.details["proofs"][VM]["proof"] == str(tmp_path / "proof-1" / "proof.html")
    assert "proof" in (result.hint or "")
