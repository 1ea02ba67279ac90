"""Local-directory storage: temp file + fsync + rename, then fsync the directory.

Layout: ``<root>/<kind>/<id>``; the ``data`` kind fans out into 256
subdirectories (``data/3f/3fa2...``) so no directory grows past a few
thousand entries. Temporary files are ``.tmp-*`` beside their target; they are
never listed and a crash leaves at most such a file behind. ``clean_temporary``
removes only those older than a grace period: a younger one may belong to a
writer that is still running (prune never judges that from a lock alone).
``create`` writes a temporary file and ``link(2)``s it to the name, which
fails if the name exists: exactly one concurrent creator wins.
"""

from __future__ import annotations

import errno
import os
import secrets
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

from surety.core.errors import (
    ObjectExists,
    ObjectNotFound,
    StorageError,
    StorageFull,
    StorageReadOnly,
)
from surety.repo.storage.base import validate_name

__all__ = ["LocalStorage"]

_FANOUT_KINDS = frozenset({"data"})


_READ_ONLY = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})


def _os_error(name: str, exc: OSError) -> StorageError | StorageFull:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFull(f"no space left on the repository device while writing {name}")
    if exc.errno in _READ_ONLY:
        return StorageReadOnly(f"{name}: the repository cannot be written ({exc.strerror})")
    if exc.errno == errno.ENAMETOOLONG:
        return StorageError(f"{name}: the repository path is too long for this file system")
    return StorageError(f"{name}: {exc.strerror or exc}")


class LocalStorage:
    def __init__(self, root: Path) -> None:
        self.root = root

    def describe(self) -> str:
        return str(self.root)

    def _path(self, name: str) -> Path:
        validate_name(name)
        kind, sep, ident = name.partition("/")
        if sep and kind in _FANOUT_KINDS:
            return self.root / kind / ident[:2] / ident
        return self.root / name

    def put(self, name: str, data: bytes | bytearray | memoryview) -> None:
        path = self._path(name)
        tmp = path.with_name(f".tmp-{secrets.token_hex(8)}")
        try:
            _write_durable(tmp, data)
            os.replace(tmp, path)
            _fsync_dir(path.parent)
        except OSError as exc:
            _discard(tmp)
            raise _os_error(name, exc) from exc

    def create(self, name: str, data: bytes | bytearray | memoryview) -> None:
        path = self._path(name)
        tmp = path.with_name(f".tmp-{secrets.token_hex(8)}")
        try:
            _write_durable(tmp, data)
            os.link(tmp, path)
            _fsync_dir(path.parent)
        except FileExistsError as exc:
            raise ObjectExists(f"{name}: already exists") from exc
        except OSError as exc:
            raise _os_error(name, exc) from exc
        finally:
            _discard(tmp)

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        path = self._path(name)
        try:
            with open(path, "rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                end = size if length is None else offset + length
                if offset < 0 or end > size:
                    raise StorageError(f"{name}: range {offset}+{length} beyond size {size}")
                handle.seek(offset)
                data = handle.read(end - offset)
        except FileNotFoundError as exc:
            raise ObjectNotFound(f"{name}: no such object") from exc
        except OSError as exc:
            raise _os_error(name, exc) from exc
        if len(data) != end - offset:
            raise StorageError(f"{name}: short read")
        return data

    def delete(self, name: str) -> None:
        path = self._path(name)
        try:
            path.unlink()
        except FileNotFoundError as exc:
            raise ObjectNotFound(f"{name}: no such object") from exc
        except OSError as exc:
            raise _os_error(name, exc) from exc

    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        kind, sep, _ = prefix.partition("/")
        top = self.root / kind if sep or kind else self.root
        try:
            for dirpath, _dirs, files in os.walk(top):
                for file in files:
                    if file.startswith("."):
                        continue
                    full = Path(dirpath) / file
                    name = self._name_of(full)
                    if name is None or not name.startswith(prefix):
                        continue
                    try:
                        yield name, full.stat().st_size
                    except FileNotFoundError:
                        continue
        except OSError as exc:
            raise _os_error(prefix or "/", exc) from exc

    def _name_of(self, full: Path) -> str | None:
        parts = full.relative_to(self.root).parts
        if len(parts) == 1:
            return parts[0]
        if len(parts) == 2:
            return f"{parts[0]}/{parts[1]}"
        if len(parts) == 3 and parts[0] in _FANOUT_KINDS:
            return f"{parts[0]}/{parts[2]}"
        return None

    def size(self, name: str) -> int:
        try:
            return self._path(name).stat().st_size
        except FileNotFoundError as exc:
            raise ObjectNotFound(f"{name}: no such object") from exc
        except OSError as exc:
            raise _os_error(name, exc) from exc

    def exists(self, name: str) -> bool:
        try:
            return self._path(name).exists()
        except OSError as exc:
            raise _os_error(name, exc) from exc

    def clean_temporary(self, older_than: float) -> int:
        """Remove temp files not modified for ``older_than`` seconds; returns how many."""
        removed, cutoff = 0, time.time() - older_than
        for dirpath, _dirs, files in os.walk(self.root):
            for file in files:
                path = Path(dirpath) / file
                try:
                    if file.startswith(".tmp-") and path.stat().st_mtime < cutoff:
                        path.unlink()
                        removed += 1
                except FileNotFoundError:
                    continue
        return removed


def _discard(path: Path) -> None:
    """Remove a temporary file if it is there (on read-only media it never was)."""
    with suppress(OSError):
        path.unlink()


def _write_durable(path: Path, data: bytes | bytearray | memoryview) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
