"""Copy by policy: after each backup the service copies the new point to the policy's
``copy_to`` repository (a second local one here), whose own retention then applies;
on the injected clock, with the fake hypervisor, real repositories and a real catalog.
The copy runs are in ``surety jobs history`` and ``surety jobs list``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from surety.app.configured import open_configured_repository
from surety.catalog import Catalog
from surety.config import load_config
from surety.config.model import Config
from surety.core.progress import NullProgress
from surety.jobs import backup as backup_job
from surety.jobs.execute import execute
from surety.jobs.spec import JobSpec
from surety.jobs.status import list_jobs
from surety.repo.repository import Repository
from surety.repo.storage import LocalStorage
from surety.service.daemon import Service
from surety.service.runner import RunHandle
from surety.testing.fake_hypervisor import FakeHypervisor
from tests.unit.conftest import CHEAP_KDF, PASSPHRASE
from tests.unit.jobs.test_execute import DOMAIN_XML, VM, FakeBackups
from tests.unit.service.fakes import T0, Clock, RecordingNotifier

CONFIG = f"""
[service]
catalog = "catalog.sqlite"
timezone = "UTC"

[repository.main]
location = "main"
passphrase_file = "passphrase"

[repository.offsite]
location = "offsite"
passphrase_file = "passphrase"
retention = {{ keep_last = 1 }}

[policy.nightly]
repository = "main"
vms = ["{VM}"]
schedule = "hourly"
copy_to = "offsite"
"""


class InProcessRunner:
    """The worker's wiring (``service.worker.run_one``) in this process, run at ``start``:
    the policy's repository and the copy target opened from the configuration."""

    def __init__(self, config: Config, catalog: Catalog, host: FakeHypervisor) -> None:
        self.config, self.catalog, self.host = config, catalog, host
        self.ended: list[RunHandle] = []

    def start(self, spec: JobSpec, run_id: int) -> RunHandle:
        self.catalog.mark_running(run_id, 4242)
        policy = self.config.policies[spec.policy]
        repo = open_configured_repository(self.config, policy.repository)
        result = execute(
            spec,
            self.config,
            repo=repo,
            host=self.host,
            catalog=self.catalog,
            progress=NullProgress(),
            open_repository=lambda name: open_configured_repository(self.config, name),
        )
        self.catalog.finish_run(run_id, result)
        handle = RunHandle(run_id, spec, None, 0.0, returncode=0)
        self.ended.append(handle)
        return handle

    def poll(self) -> list[RunHandle]:
        ended, self.ended = self.ended, []
        return ended

    def stop(self, handle: RunHandle, grace: float) -> None:
        handle.stopping = True

    def kill_all(self) -> None:
        pass


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Config]:
    monkeypatch.delenv("SURETY_PASSPHRASE", raising=False)
    monkeypatch.setattr(backup_job, "backup_vm", FakeBackups(tmp_path))
    (tmp_path / "passphrase").write_text(PASSPHRASE + "\n")
    for name in ("main", "offsite"):
        (tmp_path / name).mkdir()
        Repository.init(LocalStorage(tmp_path / name), PASSPHRASE, chunk_size=65536, kdf=CHEAP_KDF)
    path = tmp_path / "surety.toml"
    path.write_text(CONFIG)
    return path, load_config(path)


def _cli(path: Path, *args: str) -> Any:
    proc = subprocess.run(
        [sys.executable, "-m", "surety", "jobs", *args, "--config", str(path), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(proc.stdout)


def test_each_backup_is_followed_by_its_copy_and_the_targets_retention(
    setup: tuple[Path, Config], tmp_path: Path
) -> None:
    path, config = setup
    catalog = Catalog(tmp_path / "catalog.sqlite")
    host = FakeHypervisor()
    host.add_domain(DOMAIN_XML)
    clock = Clock()
    service = Service(
        config=config,
        catalog=catalog,
        host=host,
        runner=InProcessRunner(config, catalog, host),
        notifier_factory=lambda _cfg: RecordingNotifier(),
        config_loader=load_config,
        clock=clock,
        hostname="host1",
    )
    service.start()
    service.tick()  # first seen: the current slot does not count
    backups = []
    for _ in range(2):
        clock.advance(hours=1)
        service.tick()  # the backup starts and ends (in process)
        service.reap()  # its end queues the copy, which starts and ends
        service.reap()
        [backup] = catalog.runs(job="nightly:backup", limit=1)
        assert backup.result is not None
        backups.append(backup.result.point)
    copies = catalog.runs(job="nightly:copy")
    assert [(r.state, r.vm, r.kind) for r in copies] == [("succeeded", VM, "copy")] * 2
    newest = copies[0].result
    assert newest is not None
    assert newest.details["target"] == "offsite"
    assert newest.details["copied"] == 1
    assert newest.details["bytes_transferred"] > 0
    offsite = open_configured_repository(config, "offsite")
    [kept] = offsite.list_points()  # keep_last = 1: the older copy was forgotten there
    assert kept.source["copied_from"]["point"] == backups[-1]
    assert newest.details["target_forgotten"] != []
    main = open_configured_repository(config, "main")
    assert [p.id for p in main.list_points()] == backups  # the source keeps its own

    history = _cli(path, "history", "nightly:copy")
    assert [(r["job"], r["state"]) for r in history] == [("nightly:copy", "succeeded")] * 2
    assert history[0]["result"]["point"] == kept.id


def test_the_copy_job_is_listed_and_can_be_run_by_hand(
    setup: tuple[Path, Config], tmp_path: Path
) -> None:
    _, config = setup
    catalog = Catalog(tmp_path / "catalog.sqlite")
    host = FakeHypervisor()
    host.add_domain(DOMAIN_XML)
    spec = JobSpec("nightly:backup", "backup", "nightly", VM)
    main = open_configured_repository(config, "main")
    execute(spec, config, repo=main, host=host, catalog=catalog, progress=NullProgress())
    by_hand = JobSpec.for_job("nightly:copy", VM)
    result = execute(
        by_hand,
        config,
        repo=main,
        host=host,
        catalog=catalog,
        progress=NullProgress(),
        open_repository=lambda name: open_configured_repository(config, name),
    )
    assert (result.status, result.details["copied"]) == ("succeeded", 1), result.error
    again = execute(
        by_hand,
        config,
        repo=main,
        host=host,
        catalog=catalog,
        progress=NullProgress(),
        open_repository=lambda name: open_configured_repository(config, name),
    )
    assert (again.details["copied"], again.details["skipped"]) == (0, 1)
    rows = list_jobs(config, {VM: (True, ())}, {}, T0)
    assert [(r.job, r.schedule) for r in rows] == [
        ("nightly:backup", "hourly"),
        ("nightly:copy", "after each backup, to offsite"),
    ]
