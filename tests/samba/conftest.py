"""Fixtures of the two-DC Samba lab (lab.py): the provisioned pair, a fresh copy per test."""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.prerequisites import require_samba
from tests.samba.lab import Lab, golden_state, leftovers, pids_in


@pytest.fixture(scope="session")
def samba_golden(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    require_samba()
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    with golden_state(shared / "samba-lab") as golden:
        yield golden
    left = leftovers()
    assert not left, f"Samba lab processes left behind: {left}"


@pytest.fixture
def lab(samba_golden: Path, tmp_path: Path) -> Iterator[Lab]:
    """DC1 and DC2 running, each in its own namespaces, from a copy of the provisioned state."""
    with open(samba_golden.parent / "lab.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one lab at a time, whatever xdist worker runs it
        made = Lab(samba_golden, tmp_path / "lab")
        try:
            made.up()
            yield made
        finally:
            made.close()
            left = pids_in("net", made.net.ns) if made.net.ns else []
            assert not left, f"processes left in the lab's network namespace: {left}"
            shutil.rmtree(tmp_path / "lab", ignore_errors=True)
