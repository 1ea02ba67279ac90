"""Where the browser tests save their screenshots (``SURETY_WEB_SCREENSHOTS``, else
``$TMPDIR/surety-web-screenshots-<test run>``, one folder for all xdist workers), printed at
the end of a run without xdist (under xdist this conftest is not the controller's: set the
variable to the folder CI keeps as artefacts)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

_FOLDER: list[Path] = []


def screenshot_folder() -> Path:
    if not _FOLDER:
        given = os.environ.get("SURETY_WEB_SCREENSHOTS")
        run = os.environ.get("PYTEST_XDIST_TESTRUNUID", str(os.getpid()))  # one per test run
        default = Path(tempfile.gettempdir()) / f"surety-web-screenshots-{run[:12]}"
        folder = Path(given) if given else default
        folder.mkdir(parents=True, exist_ok=True)
        _FOLDER.append(folder)
    return _FOLDER[0]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _FOLDER:
        shots = sorted(p.name for p in _FOLDER[0].glob("*.png"))
        terminalreporter.write_line(
            f"web console screenshots ({len(shots)}): {_FOLDER[0]}", bold=True
        )
