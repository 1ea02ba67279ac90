"""Fixtures of the repository's unit tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The local index cache in this test's tmp dir (and not bypassed)."""
    where = tmp_path / "cache"
    monkeypatch.setenv("SURETY_CACHE_DIR", str(where))
    monkeypatch.delenv("SURETY_NO_CACHE", raising=False)
    return where
