"""Open or create a repository from its location and a passphrase.

A location is a local path or ``s3://BUCKET[/PREFIX]``. An S3 location is
opened by ``repo.storage.s3.open_s3_storage``, the one composition of an S3
storage (an S3 client by the AWS conventions, the ``S3Storage`` backend, and
``RetryingStorage`` around it: transient errors are retried, never reported as
damage), which the nbdkit plugin's reopening of an export document uses too.
``init`` on S3 needs an existing bucket (surety does not create buckets:
region, versioning, object lock and policies are the administrator's choice).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from surety.core.errors import RepositoryNotFound, UsageError
from surety.repo.crypto import KdfParams
from surety.repo.format import CHUNK_SIZE_DEFAULT
from surety.repo.repository import Repository
from surety.repo.storage import LocalStorage, Storage

__all__ = ["create_repository", "open_repository", "storage_for"]


def storage_for(location: str | None, create: bool = False) -> Storage:
    if not location:
        raise UsageError("no repository given: use --repo or set SURETY_REPOSITORY")
    if location.startswith("s3://"):
        return _s3_storage(location, create)
    if "://" in location:
        raise UsageError(f"{location}: unsupported repository location (a path or s3://BUCKET)")
    path = Path(location).expanduser()
    try:
        if create:
            if path.exists() and not path.is_dir():
                raise UsageError(f"{path} exists and is not a directory")
            if not path.parent.is_dir():
                raise UsageError(f"{path.parent} does not exist")
            path.mkdir(exist_ok=True)
        elif not path.is_dir():
            raise RepositoryNotFound(f"{path}: no such repository (create one with `surety init`)")
    except OSError as exc:  # ENAMETOOLONG, EACCES, ELOOP ...: one line, never a traceback
        problem = UsageError if create else RepositoryNotFound
        raise problem(f"{path}: {exc.strerror or exc}") from exc
    return LocalStorage(path)


def _s3_storage(location: str, create: bool) -> Storage:
    # imported here: boto3 takes a noticeable time to load, and local repositories never need it
    from surety.repo.storage.s3 import open_s3_storage  # noqa: PLC0415

    return open_s3_storage(location, create=create)


def open_repository(location: str | None, passphrase: str) -> Repository:
    return Repository.open(storage_for(location), passphrase)


def create_repository(
    location: str | None,
    passphrase: str,
    chunk_size: int = CHUNK_SIZE_DEFAULT,
    kdf: KdfParams | None = None,
) -> Repository:
    """Create a repository; a directory made by this call is removed again if init fails."""
    local = location is not None and not location.startswith("s3://")
    path = Path(location).expanduser() if local and location else None
    made_here = path is not None and not os.path.lexists(path)
    storage = storage_for(location, create=True)
    try:
        return Repository.init(storage, passphrase, chunk_size, kdf)
    except BaseException:
        if made_here and path is not None:
            shutil.rmtree(path, ignore_errors=True)
        raise
