"""`surety service` as a real process: the lock, SIGTERM, SIGHUP, kill -9, retries, timeouts,
and its spare worker (a run starts on it; it dies with the service, however it stops).

The host is libvirt's built-in test driver (``test:///default``: a real client-side
driver holding a running domain "test"). Backing it up fails (the test driver has
no backup API), which is what the retry cases want. ``SURETY_WORKER_TEST_DELAY``
(the worker's documented test hook) holds a worker in flight long enough to stop
or kill its service.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from surety.catalog import Catalog
from surety.catalog.runs import Run
from surety.core.processes import process_state
from tests.cli import Cli
from tests.prerequisites import require_import

T = TypeVar("T")

CONFIG = """\
[service]
libvirt_uri = "test:///default"
catalog = "{catalog}"
max_jobs = 2

[repository.main]
location = "{repo}"
passphrase_file = "{passphrase}"

[policy.nightly]
repository = "main"
vms = ["test"]
schedule = "yearly"
timeout = "{timeout}"
retries = {{ attempts = {attempts}, backoff = "1s" }}
"""


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (zombies included)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # gone meanwhile
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def ready_spare(service: int, but: int | None = None) -> int:
    """The service's spare worker once it waits for its order (its stdout: /dev/null)."""

    def ready() -> int | None:
        for pid in children(service):
            with contextlib.suppress(OSError):
                if pid != but and os.readlink(f"/proc/{pid}/fd/1") == "/dev/null":
                    return pid
        return None

    return wait_for("a ready spare worker", ready, timeout=60)


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 30.0) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class Svc:
    """A config for the test driver and the services started on it."""

    def __init__(self, tmp: Path, cli: Cli) -> None:
        self.tmp = tmp
        self.cli = cli
        self.catalog_path = tmp / "catalog.sqlite"
        self.catalog = Catalog(self.catalog_path)
        self.config = tmp / "surety.toml"
        self.procs: list[subprocess.Popen[str]] = []
        (tmp / "passphrase").write_text(cli.env["SURETY_PASSPHRASE"] + "\n")
        self.write_config()

    def write_config(self, timeout: str = "1h", attempts: int = 2) -> None:
        self.config.write_text(
            CONFIG.format(
                catalog=self.catalog_path,
                repo=self.cli.repo,
                passphrase=self.tmp / "passphrase",
                timeout=timeout,
                attempts=attempts,
            )
        )

    def start(self, *args: str, delay: float | None = None) -> subprocess.Popen[str]:
        env = dict(self.cli.env)
        if delay is not None:
            env["SURETY_WORKER_TEST_DELAY"] = str(delay)
        argv = ["service", "--config", str(self.config), "--tick", "0.3", *args]
        with open(self.tmp / f"service-{len(self.procs)}.log", "w") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "surety", *argv],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=log,  # the child has its own copy
                text=True,
            )
        self.procs.append(proc)
        return proc

    def log(self, index: int = -1) -> str:
        return (
            self.tmp / f"service-{len(self.procs) + index if index < 0 else index}.log"
        ).read_text()

    def beating(self, pid: int) -> None:
        wait_for(
            f"the heartbeat of {pid}",
            lambda: [h for h in self.catalog.heartbeats() if h.pid == pid],
        )

    def runs(self) -> list[Run]:
        return sorted(self.catalog.runs(), key=lambda r: r.id)

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture
def svc(tmp_path: Path, initialized: Cli) -> Iterator[Svc]:
    require_import("libvirt", "python3-libvirt (the test:///default driver)")
    service = Svc(tmp_path, initialized)
    yield service
    service.stop_all()


def test_second_service_refused_and_sigterm_stops_cleanly(svc: Svc) -> None:
    first = svc.start()
    svc.beating(first.pid)
    second = subprocess.run(
        [sys.executable, "-m", "surety", "service", "--config", str(svc.config)],
        env=svc.cli.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert second.returncode == 7, second.stderr
    assert f"another surety service runs (pid {first.pid}" in second.stderr
    assert "Traceback" not in second.stderr
    started = time.monotonic()
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=30) == 0
    assert time.monotonic() - started < 10
    assert svc.catalog.heartbeats() == []


def test_sighup_with_a_broken_config_keeps_the_old_one(svc: Svc) -> None:
    proc = svc.start()
    svc.beating(proc.pid)
    svc.config.write_text("[policy.nightly]\nschedule = 'every blue moon'\n")
    proc.send_signal(signal.SIGHUP)
    wait_for("the refusal in the log", lambda: "refused, the old one stays in use" in svc.log())
    first_beat = svc.catalog.heartbeats()[0].beat
    wait_for("another beat", lambda: svc.catalog.heartbeats()[0].beat != first_beat, timeout=10)
    assert proc.poll() is None
    svc.catalog.request_run("nightly:backup", vm="test")  # the old policy still runs
    wait_for("the requested run", svc.runs)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0


def test_kill9_takes_the_worker_down_and_the_next_start_records_it_interrupted(svc: Svc) -> None:
    proc = svc.start(delay=60)
    svc.beating(proc.pid)
    svc.catalog.request_run("nightly:backup", vm="test")
    run = wait_for("a running worker", lambda: [r for r in svc.runs() if r.state == "running"])[0]
    assert run.pid is not None
    assert process_state(run.pid) not in ("", "Z")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    wait_for("the worker's death", lambda: process_state(run.pid or 0) in ("", "Z"), timeout=10)
    again = svc.start()
    svc.beating(again.pid)
    after = svc.catalog.run(run.id)
    assert after.state == "interrupted"
    assert after.result is not None
    assert "in flight" in (after.result.error or "")
    assert f"run {run.id} " in svc.log()
    again.send_signal(signal.SIGTERM)
    assert again.wait(timeout=30) == 0


def test_failed_backup_is_retried_then_given_up(svc: Svc) -> None:
    proc = svc.start()
    svc.beating(proc.pid)
    svc.catalog.request_run("nightly:backup", vm="test")

    def two_failed() -> list[Run] | None:
        runs = svc.runs()
        return runs if len(runs) == 2 and all(r.state == "failed" for r in runs) else None

    done = wait_for("two failed attempts", two_failed, timeout=90)
    assert [r.attempt for r in done] == [1, 2]
    assert all(r.result is not None and r.result.error for r in done)
    time.sleep(2)  # attempts = 2: no third one
    assert len(svc.runs()) == 2
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0


def test_timeout_fails_the_run_and_stops_its_worker(svc: Svc) -> None:
    # 15 s: the worker must have started and marked its run running before the timeout strikes
    # (its imports alone took over 2 s at load 14; the run was then never seen running)
    svc.write_config(timeout="15s", attempts=1)
    proc = svc.start(delay=60)
    svc.beating(proc.pid)
    svc.catalog.request_run("nightly:backup", vm="test")
    run = wait_for("a running worker", lambda: [r for r in svc.runs() if r.state == "running"])[0]

    def failed_run() -> Run | None:
        found = svc.catalog.run(run.id)
        return found if found.state == "failed" else None

    failed = wait_for("the timeout", failed_run)
    assert failed.result is not None
    assert failed.result.error == "timed out after 15s"
    wait_for("the worker's end", lambda: process_state(run.pid or 0) in ("", "Z"), timeout=10)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0


def test_sigterm_stops_a_running_worker_and_records_it_interrupted(svc: Svc) -> None:
    proc = svc.start(delay=60)
    svc.beating(proc.pid)
    svc.catalog.request_run("nightly:backup", vm="test")
    run = wait_for("a running worker", lambda: [r for r in svc.runs() if r.state == "running"])[0]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert svc.catalog.run(run.id).state == "interrupted"
    assert svc.catalog.heartbeats() == []


def test_once_runs_what_is_due_without_retries_and_exits(svc: Svc) -> None:
    svc.catalog.request_run("nightly:backup", vm="test")
    proc = svc.start("--once")
    assert proc.wait(timeout=60) == 0
    (run,) = svc.runs()
    assert (run.state, run.attempt) == ("failed", 1)  # --once queues no retry
    assert "run 1 ended: nightly:backup of test failed" in svc.log()
    assert svc.catalog.heartbeats() == []


def test_a_run_starts_on_the_spare_which_dies_with_its_service(svc: Svc) -> None:
    proc = svc.start()
    svc.beating(proc.pid)
    spare = ready_spare(proc.pid)
    svc.catalog.request_run("nightly:backup", vm="test")
    (run,) = wait_for("the run's end", lambda: [r for r in svc.runs() if r.result is not None])
    assert run.pid == spare  # the spare ran it, and recorded its result
    assert run.state == "failed"  # the test driver has no backup API
    assert "Traceback" not in svc.log()
    wait_for("its timings in the log", lambda: f"run {run.id} timings (s): order" in svc.log())
    following = ready_spare(proc.pid, but=spare)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert process_state(following) == ""  # killed and reaped: no worker left
    assert children(proc.pid) == []

    again = svc.start()
    svc.beating(again.pid)
    spare = ready_spare(again.pid)
    os.kill(again.pid, signal.SIGKILL)
    again.wait()
    wait_for("the spare's death", lambda: process_state(spare) in ("", "Z"), timeout=10)


def test_the_spare_reads_the_passphrase_again_at_its_order(svc: Svc) -> None:
    proc = svc.start()
    svc.beating(proc.pid)
    spare = ready_spare(proc.pid)  # its key derived from the passphrase then
    (svc.tmp / "passphrase").write_text("another passphrase\n")
    svc.catalog.request_run("nightly:backup", vm="test")
    (run,) = wait_for("the run's end", lambda: [r for r in svc.runs() if r.result is not None])
    assert run.pid == spare
    assert run.result is not None
    assert "wrong passphrase" in (run.result.error or "")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0


def test_the_environment_turns_the_spare_off(svc: Svc) -> None:
    svc.cli.env["SURETY_WORKER_SPARE"] = "0"
    proc = svc.start()
    svc.beating(proc.pid)
    time.sleep(3)
    assert children(proc.pid) == []
    svc.catalog.request_run("nightly:backup", vm="test")
    (run,) = wait_for("the run's end", lambda: [r for r in svc.runs() if r.result is not None])
    assert run.state == "failed"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
