"""ProcessRunner with a stand-in worker: the order on stdin, poll, stop with a grace,
its own process group, and death with the service (PR_SET_PDEATHSIG)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from surety.core.processes import process_state
from surety.jobs.spec import JobSpec
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


def runner(tmp_path: Path, *extra: str) -> tuple[ProcessRunner, Path]:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = tmp_path / "order.json"
    return ProcessRunner(
        tmp_path / "surety.toml", command=[sys.executable, str(script), str(out), *extra]
    ), out


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
            "r = ProcessRunner(Path('x'), command=w);"
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
