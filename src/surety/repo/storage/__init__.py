"""The storage port and its adapters.

The repository stores *objects* (immutable byte strings under names such as
``data/3fa2...``) through the small ``Storage`` port defined in ``base``.
Dedup, compression and encryption live above this port; a backend only moves
bytes. Adapters: ``local`` (a directory), ``memory`` (tests and fakes).
Wrappers subclass ``wrapper.StorageWrapper`` (every method passes through to
the wrapped storage) and override only what they change (``faulty``).
"""

from surety.repo.storage.base import Storage, validate_name
from surety.repo.storage.local import LocalStorage
from surety.repo.storage.memory import MemoryStorage

__all__ = ["LocalStorage", "MemoryStorage", "Storage", "validate_name"]
