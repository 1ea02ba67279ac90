"""Where the browser tests save their screenshots (``SURETY_WEB_SCREENSHOTS``, else a fresh
temporary folder), printed at the end of the run for CI to keep as artefacts."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

_FOLDER: list[Path] = []


def screenshot_folder() -> Path:
    if not _FOLDER:
        given = os.environ.get("SURETY_WEB_SCREENSHOTS")
        folder = Path(given) if given else Path(tempfile.mkdtemp(prefix="surety-web-shots-"))
        folder.mkdir(parents=True, exist_ok=True)
        _FOLDER.append(folder)
    return _FOLDER[0]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _FOLDER:
        shots = sorted(p.name for p in _FOLDER[0].glob("*.png"))
        terminalreporter.write_line(
            f"web console screenshots ({len(shots)}): {_FOLDER[0]}", bold=True
        )
