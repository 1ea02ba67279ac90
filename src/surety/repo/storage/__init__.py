"""The storage port and its adapters.

The repository stores *objects* (immutable byte strings under names such as
``data/3fa2...``) through the small ``Storage`` port defined in ``base``.
Dedup, compression and encryption live above this port; a backend only moves
bytes. Adapters: ``local`` (a directory), ``memory`` (tests and fakes),
``s3`` (an S3-compatible bucket, through boto3; imported on its own, not
here, so that opening a local repository never loads boto3).
Wrappers subclass ``wrapper.StorageWrapper`` (every method passes through to
the wrapped storage) and override only what they change (``faulty``;
``retry``: transient failures retried with backoff, ``RetryingStorage``).
"""

from surety.repo.storage.base import Storage, validate_name
from surety.repo.storage.local import LocalStorage
from surety.repo.storage.memory import MemoryStorage
from surety.repo.storage.retry import RetryingStorage, StorageUnavailable, TransientStorageError

__all__ = [
    "LocalStorage",
    "MemoryStorage",
    "RetryingStorage",
    "Storage",
    "StorageUnavailable",
    "TransientStorageError",
    "validate_name",
]
