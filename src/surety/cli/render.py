"""Rendering: progress bars (rich) on a terminal, JSON for scripts."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.progress import Progress as RichProgress

from surety.repo.manifest import Manifest

__all__ = [
    "RichProgressSink",
    "emit_json",
    "err_console",
    "out_console",
    "point_identity_json",
    "progress_for",
]

# Piped output is not wrapped at 80 columns: long lines stay whole for scripts and logs.
out_console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)


class RichProgressSink:
    """Implements ``surety.core.progress.Progress`` with rich bars on stderr."""

    def __init__(self, bars: RichProgress) -> None:
        self.bars = bars
        self.task: TaskID | None = None

    def phase(self, name: str, total: int | None = None) -> None:
        if self.task is not None:
            self.bars.remove_task(self.task)
        self.task = self.bars.add_task(name, total=total)

    def advance(self, amount: int) -> None:
        if self.task is not None:
            self.bars.advance(self.task, amount)

    def note(self, message: str) -> None:
        self.bars.console.print(f"[yellow]note:[/] {escape(message)}")


class QuietSink:
    def __init__(self, show_notes: bool) -> None:
        self.show_notes = show_notes

    def phase(self, name: str, total: int | None = None) -> None:
        pass

    def advance(self, amount: int) -> None:
        pass

    def note(self, message: str) -> None:
        if self.show_notes:
            err_console.print(f"note: {message}", highlight=False, markup=False)


@contextmanager
def progress_for(json_output: bool) -> Iterator[RichProgressSink | QuietSink]:
    """Bars on an interactive stderr; silence (notes only) otherwise."""
    if json_output or not err_console.is_terminal:
        yield QuietSink(show_notes=True)
        return
    bars = RichProgress(
        TextColumn("{task.description:<24}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
    )
    with bars:
        yield RichProgressSink(bars)


def emit_json(document: Any) -> None:
    sys.stdout.write(json.dumps(document, indent=2, default=str) + "\n")


def point_identity_json(point_id: str, manifest: Manifest | None) -> dict[str, Any]:
    """The JSON of a restore point named by id whose manifest may be damaged (``None``)."""
    return {
        "id": point_id,
        "name": manifest.name if manifest else None,
        "finished": manifest.finished.isoformat() if manifest else None,
        "damaged_manifest": manifest is None,
    }
