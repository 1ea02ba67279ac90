"""A lock whose holder we cannot see is respected: its pid means nothing in our PID namespace.

A holder in another PID namespace (``unshare --pid``) writes a pid that does not
exist, or is another process, here. Such a lock is judged only by its refresh
age: ``prune`` must exit 7 and leave it, and only a lock not refreshed for 30
minutes is removed as stale.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from surety.core.processes import process_start_time, process_state
from tests.cli import PASSPHRASE
from tests.faults.conftest import (
    Cli,
    assert_failed_cleanly,
    dead_pid,
    lock_document,
    require_root,
)

_UNSHARE = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"]
_HOLDER = """
import sys, time
from surety.app.repository import open_repository
repo = open_repository(sys.argv[1], sys.argv[2])
with repo.lock(False, "backup image x"):
    print("locked", flush=True)
    time.sleep(600)
"""


@pytest.fixture
def holder_in_other_pid_namespace(initialized: Cli) -> Iterator[str]:
    """A live process in its own PID namespace holding a shared lock; yields the lock's name."""
    require_root("unshare")
    proc = subprocess.Popen(
        [*_UNSHARE, sys.executable, "-c", _HOLDER, str(initialized.repo), PASSPHRASE],
        env=initialized.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line == "locked\n", (line, proc.poll(), proc.stderr and proc.stderr.read())
        (lock,) = (initialized.repo / "locks").iterdir()
        yield f"locks/{lock.name}"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)


def _pid_ns() -> str:
    return str(os.stat("/proc/self/ns/pid").st_ino)


def test_lock_of_a_live_holder_in_another_pid_namespace_is_respected(
    initialized: Cli, holder_in_other_pid_namespace: str
) -> None:
    lock = initialized.repo / holder_in_other_pid_namespace
    doc = json.loads(lock.read_text())
    assert doc["pid_ns"] != _pid_ns(), "the holder did not run in its own PID namespace"
    pruned = initialized.run("prune", check=False)
    assert_failed_cleanly(pruned, {7}, "locked", "backup image x")
    assert "stale" not in pruned.stderr
    assert lock.exists()
    assert json.loads(lock.read_text())["pid"] == doc["pid"]


@pytest.mark.parametrize(
    ("age_minutes", "stale"),
    [pytest.param(0, False, id="fresh"), pytest.param(31, True, id="not-refreshed-31-min")],
)
def test_lock_from_another_pid_namespace_is_judged_by_its_age(
    initialized: Cli, age_minutes: int, stale: bool
) -> None:
    other_ns = str(int(_pid_ns()) + 7)
    lock = initialized.repo / "locks" / secrets.token_hex(16)
    lock.parent.mkdir(exist_ok=True)
    refreshed = time.time() - age_minutes * 60
    lock.write_bytes(lock_document(pid=dead_pid(), pid_ns=other_ns, refreshed=refreshed))
    pruned = initialized.run("prune", check=False)
    if stale:
        assert pruned.returncode == 0, pruned.stderr
        assert "removed stale" in pruned.stderr, pruned.stderr
        assert not lock.exists()
    else:
        assert_failed_cleanly(pruned, {7}, "locked", "backup image ghost")
        assert lock.exists()


def test_lock_of_a_dead_process_here_is_stale(initialized: Cli) -> None:
    """The control case: same host, boot and PID namespace, the process gone."""
    lock = initialized.repo / "locks" / secrets.token_hex(16)
    lock.parent.mkdir(exist_ok=True)
    lock.write_bytes(lock_document(pid=dead_pid()))
    pruned = initialized.run("prune", check=False)
    assert pruned.returncode == 0, pruned.stderr
    assert "removed stale" in pruned.stderr
    assert not lock.exists()


def test_lock_of_a_killed_holder_not_yet_reaped_is_stale(initialized: Cli) -> None:
    """A holder killed and not yet reaped (a zombie: its pid and start time are still in /proc,
    nothing of it runs) holds nothing. An instant VM's servers killed on a host whose init
    reaps late left locks that every later locker judged live."""
    holder = subprocess.Popen(["sleep", "600"])
    try:
        started = process_start_time(holder.pid)
        holder.kill()
        deadline = time.monotonic() + 10
        while process_state(holder.pid) != "Z":
            assert time.monotonic() < deadline, "the killed holder did not become a zombie"
            time.sleep(0.01)
        assert process_start_time(holder.pid) == started  # the start time alone cannot tell
        lock = initialized.repo / "locks" / secrets.token_hex(16)
        lock.parent.mkdir(exist_ok=True)
        lock.write_bytes(lock_document(pid=holder.pid, start_time=started))
        pruned = initialized.run("prune", check=False)
        assert pruned.returncode == 0, pruned.stderr
        assert "removed stale" in pruned.stderr
        assert not lock.exists()
    finally:
        holder.wait()
