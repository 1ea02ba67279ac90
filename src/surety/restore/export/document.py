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

Storage specs: ``{"kind": "local", "root"}`` or ``{"kind": "s3", "bucket",
"prefix", "endpoint", "region", "ca_bundle"}``. A document never carries
storage credentials: the plugin process inherits surety's environment (all of
it but ``SURETY_PASS*``: ``AWS_*``, ``AWS_PROFILE``,
``AWS_SHARED_CREDENTIALS_FILE``, ``HOME``) and reopens S3 through
``repo.storage.s3.open_s3_storage``, the same composition as the CLI
(``RetryingStorage(S3Storage)``), with the same hash checks above it.
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
from surety.repo.storage.wrapper import StorageWrapper

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


def _storage_spec(storage: Storage) -> dict[str, Any]:
    """Where ``storage`` is, never its credentials: a local root, or S3's bucket,
    prefix, endpoint, region and CA bundle (``S3Storage.spec``). Wrappers
    (retries) are looked through: the plugin composes its own."""
    while isinstance(storage, StorageWrapper):
        storage = storage.inner
    if isinstance(storage, LocalStorage):
        return {"kind": "local", "root": str(storage.root.resolve())}
    spec = getattr(storage, "spec", None)  # S3Storage; not imported here (boto3 loads slowly)
    if callable(spec):
        found = spec()
        if isinstance(found, dict) and found.get("kind") == "s3":
            return found
    raise UsageError(f"{storage.describe()}: this kind of repository cannot be served")


def _storage_from_spec(spec: dict[str, Any]) -> Storage:
    """The storage the spec names, composed as the CLI composes it; S3 credentials come
    from this process's environment (``AWS_*``, ``AWS_PROFILE``, the credential files)."""
    kind = spec.get("kind")
    if kind == "local":
        return LocalStorage(Path(spec["root"]))
    if kind == "s3":
        from surety.repo.storage.s3 import s3_storage_from_spec  # noqa: PLC0415 - boto3: only for S3

        return s3_storage_from_spec(spec)
    raise UsageError(f"unknown storage in the export document: {kind!r}")
