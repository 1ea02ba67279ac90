"""Repository usage after a run: logical bytes (what the points stand for) vs stored bytes.

``logical`` is the sum of every restore point's disk sizes (what restoring them
all would write); ``stored`` is the sum of every object the storage holds
(packs, indexes, manifests, keys). Their ratio is what deduplication and
compression save; the catalog keeps one record per run for the console's chart.
"""

from __future__ import annotations

from surety.repo.repository import Repository

__all__ = ["repository_usage"]


def repository_usage(repo: Repository) -> tuple[int, int]:
    """(logical, stored) bytes of ``repo`` now."""
    logical = sum(disk.size for point in repo.points() for disk in point.disks)
    stored = sum(size for _, size in repo.storage.list(""))
    return logical, stored
