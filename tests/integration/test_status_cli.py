"""``surety status`` and ``surety jobs`` for real: a local repository made with ``surety
init`` + ``backup image``, libvirt's built-in test driver (``test:///default``: a real
libvirt driver with a fake host holding one running domain, "test") and a SQLite catalog.
No guest is needed."""

from __future__ import annotations

import json
import os
import socket
from datetime import UTC, datetime
from pathlib import Path

import pytest

from surety.catalog import Catalog, Heartbeat
from tests.cli import PASSPHRASE, Cli, cli_for
from tests.prerequisites import require_import

require_import("libvirt", "python3-libvirt (libvirt's test:///default driver)")

NEEDS_ATTENTION = 20


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Cli, Path, Catalog]:
    """A repository with one point of "test" (the test driver's VM) and a config covering it."""
    cli = cli_for(tmp_path / "repo", dict(os.environ))
    cli.run("init", "--chunk-size", "64K")
    image = tmp_path / "disk.img"
    image.write_bytes(os.urandom(1 << 20))
    cli.run("backup", "image", image, "--name", "test")
    (tmp_path / "pass").write_text(PASSPHRASE + "\n")
    config = _config(tmp_path, vms='["test", "ghost"]')
    del cli.env["SURETY_PASSPHRASE"]  # the configuration's passphrase_file is used
    return cli, config, Catalog(tmp_path / "catalog.sqlite")


def _config(tmp_path: Path, vms: str, passphrase_file: str = "pass") -> Path:
    path = tmp_path / "surety.toml"
    path.write_text(
        f"""
[service]
libvirt_uri = "test:///default"
catalog = "{tmp_path / "catalog.sqlite"}"

[repository.local]
location = "{tmp_path / "repo"}"
passphrase_file = "{tmp_path / passphrase_file}"

[policy.nightly]
repository = "local"
vms = {vms}
schedule = "daily"
rpo = "1d"
"""
    )
    return path


def _beat(catalog: Catalog) -> None:
    now = datetime.now(UTC).isoformat()
    catalog.beat(Heartbeat(socket.gethostname(), os.getpid(), now, now, "surety.toml", "test"))


def test_status_lists_the_vm_with_its_point_and_exits_20_without_a_service(
    setup: tuple[Cli, Path, Catalog],
) -> None:
    cli, config, _ = setup
    points = cli.run("points", "--json", env={**cli.env, "SURETY_PASSPHRASE": PASSPHRASE})
    point = json.loads(points.stdout)[0]
    cli.env.pop("SURETY_REPOSITORY")  # status reads the configuration's repositories
    proc = cli.run("status", "--json", "--config", config, check=False)
    assert proc.returncode == NEEDS_ATTENTION, proc.stderr
    (test,) = json.loads(proc.stdout)
    assert test["vm"] == "test"
    assert test["running"] is True
    assert test["policy"] == "nightly"
    assert test["last_point"] == point["id"]
    assert test["last_consistency"] == "crash"
    assert test["last_verified_point"] is None
    assert test["rpo_met"] is True
    assert test["next_run"]
    assert test["last_error"] is None
    assert "policy nightly: no VM named 'ghost' on this host" in proc.stderr
    assert "service: not running" in proc.stderr


def test_status_exits_0_when_the_service_beats_and_all_is_well(
    setup: tuple[Cli, Path, Catalog],
) -> None:
    cli, config, catalog = setup
    _beat(catalog)
    proc = cli.run("status", "--config", config)
    assert "test" in proc.stdout
    assert "nightly" in proc.stdout
    assert "service: running" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_an_unprotected_vm_needs_a_person(setup: tuple[Cli, Path, Catalog], tmp_path: Path) -> None:
    cli, _, catalog = setup
    _beat(catalog)
    config = _config(tmp_path, vms='["ghost"]')
    proc = cli.run("status", "--json", "--config", config, check=False)
    assert proc.returncode == NEEDS_ATTENTION
    (test,) = json.loads(proc.stdout)
    assert (test["state"], test["policy"], test["rpo_met"]) == ("unprotected", None, None)
    assert test["last_point"]  # its image point is still found


def test_a_repository_that_cannot_be_opened_is_an_error_of_its_vms(
    setup: tuple[Cli, Path, Catalog], tmp_path: Path
) -> None:
    cli, _, catalog = setup
    _beat(catalog)
    (tmp_path / "wrong").write_text("not the passphrase\n")
    config = _config(tmp_path, vms='["test"]', passphrase_file="wrong")
    proc = cli.run("status", "--json", "--config", config, check=False)
    assert proc.returncode == NEEDS_ATTENTION
    (test,) = json.loads(proc.stdout)
    assert test["state"] == "failed"
    assert test["last_error"].startswith("repository local: ")
    assert "Traceback" not in proc.stderr


def test_jobs_list_run_history_and_log(setup: tuple[Cli, Path, Catalog]) -> None:
    cli, config, catalog = setup
    (job,) = json.loads(cli.run("jobs", "list", "--json", "--config", config).stdout)
    assert (job["job"], job["vms"], job["schedule"], job["last_run_state"]) == (
        "nightly:backup",
        ["test"],
        "daily",
        None,
    )
    assert job["next_run"]

    # with a live service: handed to it as a request
    _beat(catalog)
    proc = cli.run("jobs", "run", "nightly", "--vm", "test", "--config", config)
    assert "handed to the service" in proc.stdout
    assert [(job, vm) for _, job, vm in catalog.take_requests("h")] == [("nightly:backup", "test")]

    # without one: in the foreground; the test driver has no backup API, so the run fails
    catalog.clear_heartbeat(socket.gethostname(), os.getpid())
    proc = cli.run("jobs", "run", "nightly:backup", "--config", config, check=False)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    (run,) = json.loads(cli.run("jobs", "history", "nightly", "--json", "--config", config).stdout)
    assert (run["job"], run["vm"], run["state"]) == ("nightly:backup", "test", "failed")
    assert run["result"]["error"]
    log = json.loads(cli.run("jobs", "log", str(run["id"]), "--json", "--config", config).stdout)
    assert log["state"] == "failed"
    assert any("foreground" in line for line in log["log"])
    status = json.loads(cli.run("status", "--json", "--config", config, check=False).stdout)
    assert (status[0]["state"], status[0]["last_error"]) == ("failed", run["result"]["error"])


def test_jobs_refuse_unknown_names_and_runs_with_one_line(
    setup: tuple[Cli, Path, Catalog],
) -> None:
    cli, config, _ = setup
    for args, message in (
        (("jobs", "run", "weekly"), "no policy 'weekly'"),
        (("jobs", "run", "nightly:verify"), "has no verify job"),
        (("jobs", "log", "99"), "no run 99"),
    ):
        proc = cli.run(*args, "--config", config, check=False)
        assert proc.returncode == 2, proc.stderr
        assert message in proc.stderr
        assert "Traceback" not in proc.stderr
