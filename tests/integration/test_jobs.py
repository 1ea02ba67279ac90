"""execute() wired as the service's worker wires it: libvirt's test driver as the host
(``test:///default``: a real libvirt driver with a running domain "test" and no guest
agent), a repository made by the ``surety`` command, the SQLite catalog."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from surety.app.hypervisor import connect_host
from surety.app.repository import open_repository
from surety.catalog import Catalog
from surety.catalog.runs import RunResult
from surety.config.model import (
    CheckRule,
    Config,
    Policy,
    RepositoryConfig,
    Selection,
    ServiceSettings,
)
from surety.core.progress import NullProgress
from surety.hypervisor.port import HypervisorHost
from surety.jobs.execute import execute
from surety.jobs.spec import JobSpec
from surety.schedule import Schedule
from tests.cli import PASSPHRASE, Cli
from tests.integration.conftest import write_image
from tests.prerequisites import require_import

require_import("libvirt", "python3-libvirt (libvirt's test:///default driver)")

DAILY = Schedule("daily", ZoneInfo("UTC"))
POLICY = Policy(
    "nightly",
    "local",
    Selection(("all",)),
    DAILY,
    check=CheckRule(DAILY, read_data_parts=2),
)


@pytest.fixture
def host() -> Iterator[HypervisorHost]:
    with closing(connect_host("test:///default")) as opened:
        yield opened


def _run(spec: JobSpec, cli: Cli, host: HypervisorHost, catalog: Catalog) -> RunResult:
    config = Config(
        Path("surety.toml"),
        ServiceSettings(libvirt_uri="test:///default"),
        {"local": RepositoryConfig("local", str(cli.repo))},
        {"nightly": POLICY},
        {},
    )
    repo = open_repository(str(cli.repo), PASSPHRASE)
    return execute(spec, config, repo=repo, host=host, catalog=catalog, progress=NullProgress())


def test_backup_without_a_guest_agent_fails_with_what_to_do(
    initialized: Cli, host: HypervisorHost, tmp_path: Path
) -> None:
    catalog = Catalog(tmp_path / "catalog.sqlite")
    result = _run(
        JobSpec("nightly:backup", "backup", "nightly", "test"), initialized, host, catalog
    )
    assert result.status == "failed"
    assert "guest agent" in (result.error or "")
    assert "qemu-guest-agent" in (result.hint or "")
    assert initialized.json("points") == []  # nothing committed


def test_backup_of_a_vm_not_on_the_host_is_skipped(
    initialized: Cli, host: HypervisorHost, tmp_path: Path
) -> None:
    catalog = Catalog(tmp_path / "catalog.sqlite")
    result = _run(JobSpec("nightly:backup", "backup", "nightly", "db9"), initialized, host, catalog)
    assert result.status == "skipped"
    assert "'db9' is no longer on the host (test:///default)" in result.details["note"]


def test_check_reads_the_next_part_each_run(
    initialized: Cli, host: HypervisorHost, tmp_path: Path
) -> None:
    image = tmp_path / "disk.img"
    write_image(image, 3 << 20)
    initialized.run("backup", "image", image, "--name", "web1")
    catalog = Catalog(tmp_path / "catalog.sqlite")
    check = JobSpec("nightly:check", "check", "nightly", None)
    results = [_run(check, initialized, host, catalog) for _ in range(3)]
    assert [r.status for r in results] == ["succeeded"] * 3
    assert [r.details["part"] for r in results] == ["1/2", "2/2", "1/2"]
    assert sum(r.bytes_read or 0 for r in results[:2]) > 0  # parts 1 and 2 read every pack
    repo_id = open_repository(str(initialized.repo), PASSPHRASE).config.id
    assert [c.status for c in catalog.checks(repo_id)] == ["ok"] * 3
