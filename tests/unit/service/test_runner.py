"""ProcessRunner with a stand-in worker: the order on stdin, poll, stop with a grace,
its own process group, and death with the service (PR_SET_PDEATHSIG); the spare worker
(started ahead, handed the next order, never reported, killed with the runner, replaced
when it dies)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from surety.core.processes import process_state
from surety.jobs.spec import JobSpec
from surety.service import runner as runner_module
from surety.service.runner import ProcessRunner, RunHandle

SPEC = JobSpec("nightly:backup", "backup", "nightly", "a")

# echoes its order to a file, then sleeps; with "stubborn" it ignores SIGTERM
WORKER = """
import json, os, signal, sys, time
order = sys.stdin.read()
out = sys.argv[1]
seen = {"order": order, "pgid": os.getpgid(0), "pid": os.getpid()}
open(out + ".tmp", "w").write(json.dumps(seen))
os.rename(out + ".tmp", out)
if len(sys.argv) > 2 and sys.argv[2] == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
time.sleep(float(os.environ.get("NAP", "60")))
"""

# a worker that honours the spare's protocol: with SURETY_WORKER_PREPARE it says
# "ready" on stdout (and leaves a file saying so), then waits for its order
SPARE_WORKER = """
import json, os, sys, time
out = sys.argv[1]
config = os.environ.pop("SURETY_WORKER_PREPARE", None)
if config is not None:
    os.write(1, b"ready\\n")
    open(out + f".ready-{os.getpid()}", "w").write(config)
order = sys.stdin.read()
seen = {"order": order, "pid": os.getpid(), "prepared": config}
open(out + ".tmp", "w").write(json.dumps(seen))
os.rename(out + ".tmp", out)
time.sleep(float(os.environ.get("NAP", "60")))
"""


def runner(tmp_path: Path, *extra: str) -> tuple[ProcessRunner, Path]:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = tmp_path / "order.json"
    return ProcessRunner(
        tmp_path / "surety.toml",
        command=[sys.executable, str(script), str(out), *extra],
        spare=False,
    ), out


@pytest.fixture
def spared(tmp_path: Path) -> Iterator[tuple[ProcessRunner, Path]]:
    """A runner with a spare, its stand-in worker writing ``order.json``; killed at the end."""
    script = tmp_path / "spare_worker.py"
    script.write_text(SPARE_WORKER)
    out = tmp_path / "order.json"
    r = ProcessRunner(
        tmp_path / "surety.toml",
        env={**os.environ, "NAP": "0"},
        command=[sys.executable, str(script), str(out)],
        spare=True,
    )
    yield r, out
    r.kill_all()


def ready_spare(r: ProcessRunner, out: Path) -> int:
    """Poll until the runner has a spare that said ready; its pid."""
    deadline = time.monotonic() + 10
    while True:
        assert r.poll() == []  # the spare is never reported
        pid = r.spare_pid
        if pid is not None and Path(f"{out}.ready-{pid}").exists():
            return pid
        assert time.monotonic() < deadline, "no spare said ready"
        time.sleep(0.05)


def gone(pid: int) -> bool:
    """No such process (reaped), not even a zombie."""
    return process_state(pid) == ""


def wait_ended(r: ProcessRunner, timeout: float = 10) -> list[RunHandle]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ended = r.poll()
        if ended:
            return ended
        time.sleep(0.05)
    raise AssertionError("the worker did not end")


def wait_file(path: Path) -> dict[str, object]:
    deadline = time.monotonic() + 10
    while not path.exists():
        assert time.monotonic() < deadline, "the worker did not start"
        time.sleep(0.05)
    return json.loads(path.read_text())  # type: ignore[no-any-return]


def test_order_on_stdin_own_group_and_poll_once(tmp_path: Path) -> None:
    r, out = runner(tmp_path)
    r.env = {"NAP": "0"}
    handle = r.start(SPEC, 17)
    seen = wait_file(out)
    order = json.loads(str(seen["order"]))
    assert abs(order.pop("sent") - time.time()) < 30  # when it was handed over
    assert order == {"spec": SPEC.to_json(), "run_id": 17, "config": str(tmp_path / "surety.toml")}
    assert seen["pgid"] == seen["pid"] == handle.pid  # a process group of its own
    assert wait_ended(r) == [handle]
    assert handle.returncode == 0
    assert r.poll() == []


def test_stop_sends_sigterm_then_sigkill_after_the_grace(tmp_path: Path) -> None:
    r, out = runner(tmp_path)
    polite = r.start(SPEC, 1)
    wait_file(out)
    r.stop(polite, grace=30)
    assert wait_ended(r) == [polite]
    assert polite.returncode == -signal.SIGTERM

    (tmp_path / "b").mkdir()
    r2, out2 = runner(tmp_path / "b", "stubborn")
    stubborn = r2.start(SPEC, 2)
    wait_file(out2)
    r2.stop(stubborn, grace=0.3)
    time.sleep(0.2)
    assert r2.poll() == []  # SIGTERM ignored, the grace not over
    assert wait_ended(r2) == [stubborn]
    assert stubborn.returncode == -signal.SIGKILL


def test_a_killed_service_takes_its_workers_down(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = tmp_path / "order.json"
    service = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path;"
            "from surety.jobs.spec import JobSpec; from surety.service.runner import ProcessRunner;"
            f"w = [sys.executable, {str(script)!r}, {str(out)!r}];"
            "r = ProcessRunner(Path('x'), command=w, spare=False);"
            "h = r.start(JobSpec('p:backup', 'backup', 'p', 'a'), 1);"
            "print(h.pid, flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert service.stdout is not None
    worker = int(service.stdout.readline())
    service.stdout.close()
    wait_file(out)
    assert process_state(worker) not in ("", "Z")
    service.kill()
    service.wait()
    deadline = time.monotonic() + 10
    while process_state(worker) not in ("", "Z"):
        assert time.monotonic() < deadline, "the worker outlived its service"
        time.sleep(0.05)


def test_a_run_starts_on_the_ready_spare_and_the_next_spare_follows(
    spared: tuple[ProcessRunner, Path], tmp_path: Path
) -> None:
    r, out = spared
    spare = ready_spare(r, out)
    handle = r.start(SPEC, 5)
    assert handle.pid == spare
    seen = wait_file(out)
    assert seen["pid"] == spare
    assert seen["prepared"] == str(tmp_path / "surety.toml")  # the spare knew its configuration
    assert json.loads(str(seen["order"]))["run_id"] == 5
    assert wait_ended(r) == [handle]  # only the run: the next spare waits unreported
    assert handle.returncode == 0
    following = ready_spare(r, out)
    assert following != spare
    assert r.poll() == []


def test_a_spare_not_ready_yet_stays_and_the_run_gets_its_own_worker(
    spared: tuple[ProcessRunner, Path],
) -> None:
    r, out = spared
    r.poll()
    spare = r.spare_pid
    assert spare is not None
    handle = r.start(SPEC, 6)  # at once: the spare cannot have said ready yet
    assert handle.pid != spare
    assert r.spare_pid == spare
    assert wait_ended(r) == [handle]
    assert ready_spare(r, out) == spare


def test_no_spare_starts_beside_a_fresh_run_before_the_delay(
    spared: tuple[ProcessRunner, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner_module, "SPARE_DELAY", 1.0)
    r, out = spared
    r.env = {**os.environ, "NAP": "60"}
    ready_spare(r, out)
    r.start(SPEC, 9)  # on the spare
    started = time.monotonic()
    assert r.spare_pid is None
    while time.monotonic() - started < 0.8:
        r.poll()
        assert r.spare_pid is None  # the run just handed over has the CPU to itself
        time.sleep(0.05)
    ready_spare(r, out)  # the delay is over: the next spare starts beside the run


def test_kill_all_and_close_leave_no_worker(
    spared: tuple[ProcessRunner, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner_module, "SPARE_DELAY", 0.0)
    r, out = spared
    r.env = {**os.environ, "NAP": "60"}
    ready_spare(r, out)
    run = r.start(SPEC, 7)
    spare = ready_spare(r, out)
    r.kill_all()
    assert run.pid is not None
    assert gone(run.pid)
    assert gone(spare)
    assert r.spare_pid is None
    r.poll()
    assert r.spare_pid is None  # none after a kill_all
    (tmp := out.parent / "b").mkdir()
    closing = ProcessRunner(tmp / "surety.toml", command=r.command, spare=True)
    closing.poll()
    waiting = closing.spare_pid
    assert waiting is not None
    closing.close()
    assert gone(waiting)
    closing.poll()
    assert closing.spare_pid is None


def test_a_killed_spare_is_replaced_and_never_fails_a_run(
    spared: tuple[ProcessRunner, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner_module, "SPARE_RETRY", 0.0)
    r, out = spared
    spare = ready_spare(r, out)
    os.kill(spare, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while process_state(spare) not in ("", "Z"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    handle = r.start(SPEC, 8)  # the dead spare is not used: a fresh worker runs it
    assert handle.pid != spare
    assert json.loads(str(wait_file(out)["order"]))["run_id"] == 8
    assert wait_ended(r) == [handle]
    assert handle.returncode == 0
    assert gone(spare)  # reaped
    assert ready_spare(r, out) != spare


def test_the_environment_turns_the_spare_off(tmp_path: Path) -> None:
    off = ProcessRunner(tmp_path / "surety.toml", env={"SURETY_WORKER_SPARE": "0"})
    off.poll()
    assert off.spare_pid is None
    assert ProcessRunner(tmp_path / "surety.toml", env={}).spare_enabled
