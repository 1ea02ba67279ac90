"""The export document: what an nbdkit server needs to open one disk of a restore point.

Both sides of the handshake between surety and its nbdkit plugin
(``nbdkit_plugin.py``) live here. The starting process writes the document
(``export_document``: storage location, master key material, repository
config, image id, cache size, report file; ``lock`` for a detached server)
into a pipe the server inherits - never onto a command line, never into the
server's environment. The plugin reads it once and calls ``open_export``
(and, for a detached server, ``hold_export_lock`` first).

The plugin imports this module inside nbdkit's embedded interpreter
(``/usr/bin/python3``, with surety's paths from ``syspath=``): what it needs
at import time must work there (the repository; libvirt and libnbd are never
imported on this path).
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from typing import Any

from surety.core.errors import UsageError
from surety.repo.crypto import MasterKeys
from surety.repo.lock import hold_lock
from surety.repo.reader import ImageReader
from surety.repo.repository import RepoConfig, Repository
from surety.repo.storage import LocalStorage, Storage

__all__ = ["export_document", "hold_export_lock", "open_export"]


def export_document(
    repo: Repository, image: str, cache_chunks: int, report: Path
) -> dict[str, Any]:
    """The starter's side: the document for image ``image`` of ``repo``."""
    return {
        "storage": _storage_spec(repo.storage),
        "keys": repo.keys.material.hex(),
        "config": asdict(repo.config),
        "image": image,
        "cache_chunks": cache_chunks,
        "report": str(report),
    }


def open_export(document: dict[str, Any]) -> ImageReader:
    """The plugin's side of the handshake: the reader the export document names."""
    repo = Repository(
        _storage_from_spec(document["storage"]),
        MasterKeys(bytes.fromhex(document["keys"])),
        RepoConfig(**document["config"]),
    )
    image = repo.get_image(document["image"])
    repo.index()  # loaded now: a damaged index fails the start, not a later read
    return ImageReader(repo, image, int(document["cache_chunks"]))


def hold_export_lock(document: dict[str, Any]) -> ExitStack:
    """The plugin's side of a detached server: a shared repository lock held by the
    server process itself until the returned stack is closed (nbdkit's unload)."""
    stack = ExitStack()
    if document.get("lock"):
        storage = _storage_from_spec(document["storage"])
        stack.enter_context(
            hold_lock(storage, exclusive=False, operation=document["lock"], read_only=True)
        )
    return stack


def _storage_spec(storage: Storage) -> dict[str, str]:
    if isinstance(storage, LocalStorage):
        return {"kind": "local", "root": str(storage.root.resolve())}
    raise UsageError(f"{storage.describe()}: only local repositories can be served yet")


def _storage_from_spec(spec: dict[str, str]) -> Storage:
    if spec.get("kind") == "local":
        return LocalStorage(Path(spec["root"]))
    raise UsageError(f"unknown storage in the export document: {spec.get('kind')!r}")
