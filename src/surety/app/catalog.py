"""The catalog a command records to and reads from (SQLite today; PostgreSQL for many hosts).

``open_catalog(path)`` opens the catalog at ``path``, or at the default
(``SURETY_CATALOG``, else the system path) when none is given. Use cases
receive it; none opens one itself.
"""

from __future__ import annotations

from pathlib import Path

from surety.catalog import Catalog, default_catalog_path

__all__ = ["open_catalog"]


def open_catalog(path: Path | None = None) -> Catalog:
    return Catalog(path or default_catalog_path())
