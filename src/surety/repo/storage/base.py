"""The storage port: a flat namespace of immutable objects.

Guarantees every backend gives (checked by ``surety.testing.storage_conformance``):

* **Names** are ``<kind>/<id>`` or a bare ``<id>``: ASCII letters, digits,
  ``-``, ``_``, ``.``; one optional ``/``; no leading dot. ``validate_name``
  enforces it.
* ``put(name, data)`` is **atomic and durable**: when it returns, the whole
  object is stored and survives a crash of this host; a crash during ``put``
  leaves either no object or the previous one, never a torn one. Putting an
  existing name replaces it atomically (the repository only does that for
  locks and the config).
* ``create(name, data)`` is ``put`` that succeeds only if no object has the
  name: exactly one of several concurrent creators wins, the others get
  ``ObjectExists`` (local: ``link(2)``; S3: a conditional write,
  ``If-None-Match: *``). The repository uses it for the ``config`` (one
  ``init`` wins) and nowhere else.
* ``get(name, offset, length)`` returns exactly the requested bytes, or raises
  ``ObjectNotFound`` (never retryable). A range past the end is an error
  (``StorageError``): objects are immutable, so a short read means damage.
* ``delete(name)`` removes the object; deleting a missing object raises
  ``ObjectNotFound``.
* ``list(prefix)`` yields ``(name, size)`` of every complete object whose name
  starts with ``prefix``, in no particular order; never temporary files.
* Any other failure raises ``StorageError`` (possibly transient),
  ``StorageFull`` (out of space) or ``StorageReadOnly`` (writes refused:
  read-only media, permissions). No other exception escapes a backend.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Protocol

from surety.core.errors import UsageError

__all__ = ["Storage", "validate_name"]

_NAME = re.compile(r"^(?:[A-Za-z0-9_-][A-Za-z0-9_.-]*/)?[A-Za-z0-9_-][A-Za-z0-9_.-]*$")


def validate_name(name: str) -> str:
    if not _NAME.match(name):
        raise UsageError(f"invalid object name: {name!r}")
    return name


class Storage(Protocol):
    """Where repository objects live. See the module docstring for guarantees."""

    def describe(self) -> str:
        """A short human description (path or URL) for messages."""

    def put(self, name: str, data: bytes | bytearray | memoryview) -> None: ...

    def create(self, name: str, data: bytes | bytearray | memoryview) -> None:
        """``put`` only if ``name`` is free; ``ObjectExists`` if it is taken."""

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes: ...

    def delete(self, name: str) -> None: ...

    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]: ...

    def size(self, name: str) -> int:
        """Size in bytes of an object; ``ObjectNotFound`` if missing."""

    def exists(self, name: str) -> bool: ...
