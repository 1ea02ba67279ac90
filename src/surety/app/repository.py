"""Open or create a repository from its location and a passphrase.

A location is a local path or ``s3://BUCKET[/PREFIX]``. An S3 location is
opened by ``repo.storage.s3.open_s3_storage``, the one composition of an S3
storage (an S3 client by the AWS conventions, the ``S3Storage`` backend, and
``RetryingStorage`` around it: transient errors are retried, never reported as
damage), which the nbdkit plugin's reopening of an export document uses too.
``init`` on S3 needs an existing bucket (surety does not create buckets:
region, versioning, object lock and policies are the administrator's choice).

``maintenance=True`` (``forget``/``prune``) opens an S3 repository with the
maintenance identity when this process holds it (``SURETY_S3_MAINT_*``); an
immutable repository refuses to forget or prune without it
(``require_maintenance``). ``init --immutable-days`` needs an S3 location.
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

__all__ = ["create_repository", "open_repository", "require_maintenance", "storage_for"]


def storage_for(location: str | None, create: bool = False, maintenance: bool = False) -> Storage:
    if not location:
        raise UsageError("no repository given: use --repo or set SURETY_REPOSITORY")
    if location.startswith("s3://"):
        return _s3_storage(location, create, maintenance)
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


def _s3_storage(location: str, create: bool, maintenance: bool) -> Storage:
    # imported here: boto3 takes a noticeable time to load, and local repositories never need it
    from surety.repo.storage.s3 import maintenance_configured, open_s3_storage  # noqa: PLC0415

    maintenance = maintenance and maintenance_configured()
    return open_s3_storage(location, create=create, maintenance=maintenance)


def open_repository(location: str | None, passphrase: str, maintenance: bool = False) -> Repository:
    """Open a repository; ``maintenance``: with the S3 maintenance identity if configured."""
    return Repository.open(storage_for(location, maintenance=maintenance), passphrase)


def require_maintenance(repo: Repository) -> None:
    """``UsageError`` unless an immutable repository was opened with the maintenance identity."""
    if repo.immutable and repo.object_lock is not None and not repo.object_lock.maintenance:
        from surety.repo.storage.s3 import MAINTENANCE_NEEDED  # noqa: PLC0415

        raise UsageError(f"{repo.storage.describe()} is immutable: {MAINTENANCE_NEEDED}")


def create_repository(
    location: str | None,
    passphrase: str,
    chunk_size: int = CHUNK_SIZE_DEFAULT,
    kdf: KdfParams | None = None,
    immutable_days: int = 0,
) -> Repository:
    """Create a repository; a directory made by this call is removed again if init fails."""
    local = location is not None and not location.startswith("s3://")
    if immutable_days and (local or not location):
        raise UsageError(
            "--immutable-days needs an S3 location (s3://BUCKET/PREFIX on a bucket with "
            "Object Lock); a local repository cannot be immutable"
        )
    path = Path(location).expanduser() if local and location else None
    made_here = path is not None and not os.path.lexists(path)
    storage = storage_for(location, create=True)
    try:
        return Repository.init(storage, passphrase, chunk_size, kdf, immutable_days)
    except BaseException:
        if made_here and path is not None:
            shutil.rmtree(path, ignore_errors=True)
        raise
