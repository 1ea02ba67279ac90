"""core.processes: a pid and its start time, read from /proc."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from surety.core.processes import process_start_time, process_state


def test_this_process_has_a_stable_start_time_and_runs() -> None:
    start = process_start_time(os.getpid())
    assert start.isdigit()
    assert process_start_time(os.getpid()) == start
    assert process_state(os.getpid()) == "R"


def test_a_command_name_with_parentheses_and_spaces(tmp_path: Path) -> None:
    sleep = shutil.which("sleep")
    assert sleep is not None
    odd = tmp_path / "x) (y z"  # the kernel shows it as the command name, in parentheses
    odd.symlink_to(sleep)
    proc = subprocess.Popen([str(odd), "30"])
    try:
        assert process_state(proc.pid) in {"R", "S", "D"}  # D: still exec-ing under heavy I/O
        assert int(process_start_time(proc.pid)) >= int(process_start_time(os.getpid()))
    finally:
        proc.kill()
        proc.wait()


def test_a_zombie_is_seen_and_a_reaped_process_is_gone() -> None:
    proc = subprocess.Popen(["true"])
    deadline = time.monotonic() + 10
    while process_state(proc.pid) != "Z" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert process_state(proc.pid) == "Z"
    assert process_start_time(proc.pid)  # a zombie keeps its start time
    proc.wait()
    assert process_state(proc.pid) == ""
    assert process_start_time(proc.pid) == ""
