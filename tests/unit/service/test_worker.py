"""The worker's progress sink: the catalog gets progress at most once a second, and
phases and notes as log lines."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from surety.catalog import Catalog
from surety.service.worker import CatalogProgress


def test_progress_is_written_at_most_once_a_second(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    catalog = Catalog(tmp_path / "catalog.sqlite")
    run_id = catalog.create_run(job="p:backup", kind="backup", policy="p", vm="a", host="h")
    sink = CatalogProgress(catalog, run_id)
    sink.phase("copy vda", total=1000)
    sink.advance(100)
    sink.advance(100)
    progress = catalog.progress(run_id)
    assert progress is not None
    assert (progress["phase"], progress["done"], progress["total"]) == ("copy vda", 0, 1000)
    now[0] += 1.0
    sink.advance(100)
    progress = catalog.progress(run_id)
    assert progress is not None
    assert progress["done"] == 300
    sink.note("fell back to crash consistency")
    assert catalog.run_log(run_id) == ["phase copy vda (1000)", "fell back to crash consistency"]
