"""One service per host: the second is refused with the holder's pid, exit 7."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from surety.service.lock import ServiceLock, ServiceRunning


def test_second_lock_is_refused_naming_the_holder(tmp_path: Path) -> None:
    first = ServiceLock(tmp_path / "service.lock")
    first.acquire()
    with pytest.raises(ServiceRunning, match=f"another surety service runs \\(pid {os.getpid()}"):
        ServiceLock(tmp_path / "service.lock").acquire()
    assert ServiceRunning.exit_code == 7
    first.release()
    again = ServiceLock(tmp_path / "service.lock")
    again.acquire()
    again.release()


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    path = tmp_path / "service.lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; from pathlib import Path; from surety.service.lock import ServiceLock;"
            f"ServiceLock(Path({str(path)!r})).acquire(); print('held', flush=True);"
            "time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ServiceRunning, match=f"pid {holder.pid}"):
            ServiceLock(path).acquire()
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
    lock = ServiceLock(path)
    lock.acquire()  # the kernel dropped the dead holder's flock
    assert path.read_text().strip() == str(os.getpid())
    lock.release()
