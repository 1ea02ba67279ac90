"""A thaw guardian started ahead (the service's spare worker does it): the next
``Guardian`` arms it instead of starting one; one that is gone is replaced by a fresh
start; one never armed exits when its starter's pipe closes. On libvirt's test driver
(``test:///default``, its running domain "test")."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import pytest

from surety.core.processes import process_state
from surety.hypervisor import guardian
from surety.hypervisor.guardian import Guardian, start_waiting
from tests.prerequisites import require_import

URI = "test:///default"


@pytest.fixture
def waiting() -> Iterator[int]:
    """A guardian started ahead; its pid. Whatever is left is killed afterwards."""
    require_import("libvirt", "python3-libvirt (the test:///default driver)")
    start_waiting()
    proc = guardian._waiting
    assert proc is not None
    yield proc.pid
    left = guardian._waiting
    guardian._waiting = None
    for candidate in (proc, left):
        if candidate is not None:
            guardian._discard(candidate)


def ended(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while process_state(pid) not in ("", "Z"):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_the_next_guardian_arms_the_one_started_ahead(waiting: int) -> None:
    held = Guardian(URI, "test", 10.0)
    assert held.proc.pid == waiting
    assert guardian._waiting is None  # taken: the next one starts afresh
    assert held.done() == []  # nothing to do: the job ended its work itself
    assert held.proc.returncode == 0


def test_a_guardian_gone_before_its_arm_is_replaced_by_a_fresh_one(waiting: int) -> None:
    proc = guardian._waiting
    assert proc is not None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    held = Guardian(URI, "test", 10.0)
    assert held.proc.pid != waiting
    assert held.done() == []


def test_a_guardian_never_armed_exits_when_its_starter_ends(waiting: int) -> None:
    proc = guardian._waiting
    assert proc is not None
    assert proc.stdin is not None
    time.sleep(0.5)  # waiting, not exited on its own
    assert proc.poll() is None
    proc.stdin.close()  # what the end of the process that started it does
    assert proc.wait(timeout=10) == 0
    assert ended(waiting)
