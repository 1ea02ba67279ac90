"""Read a point-in-time disk export over NBD (libnbd): the VM backup data path.

``NbdDisk`` is a ``DiskSource`` for the backup pipeline. Every thread gets its
own NBD connection (QEMU's NBD server serves several), so worker threads read
in parallel without sharing a handle lock. Extents come from block status:
``base:allocation`` for a full backup (holes and zero extents are not read),
``qemu:dirty-bitmap:<name>`` for an incremental (only dirty extents).

libnbd is imported here only; its Python bindings come from Debian
(python3-libnbd), which is why the project's venv sees system site-packages.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import suppress
from typing import Any

from surety.core.errors import SourceError

__all__ = ["NbdDisk"]

_STATE_HOLE = 1
_STATE_ZERO = 2
_DIRTY = 1
_STATUS_STEP = 1 << 30  # ask block status 1 GiB at a time (servers cap at < 4 GiB)


def _nbd() -> Any:
    try:
        import nbd  # noqa: PLC0415 - optional system binding, imported when used

        return nbd
    except ImportError as exc:  # pragma: no cover - depends on the host
        raise SourceError(
            "libnbd's Python bindings are missing (apt install python3-libnbd; "
            "run surety from a venv made with --system-site-packages)"
        ) from exc


class NbdDisk:
    """One exported disk, read through per-thread NBD connections."""

    def __init__(self, socket: str, export: str, name: str, dirty_bitmap: str | None = None):
        self.socket, self.export, self.name = socket, export, name
        self.dirty_bitmap = dirty_bitmap
        self._local = threading.local()
        self._handles: list[Any] = []
        self._lock = threading.Lock()
        self.size = int(self._handle().get_size())

    def _handle(self) -> Any:
        handle = getattr(self._local, "handle", None)
        if handle is None:
            nbd = _nbd()
            handle = nbd.NBD()
            handle.set_export_name(self.export)
            handle.add_meta_context("base:allocation")
            if self.dirty_bitmap:
                handle.add_meta_context(f"qemu:dirty-bitmap:{self.dirty_bitmap}")
            try:
                handle.connect_unix(self.socket)
            except nbd.Error as exc:
                raise SourceError(f"cannot connect to NBD export {self.export}: {exc}") from exc
            self._local.handle = handle
            with self._lock:
                self._handles.append(handle)
        return handle

    def read(self, offset: int, length: int) -> bytes:
        try:
            return bytes(self._handle().pread(length, offset))
        except _nbd().Error as exc:
            raise SourceError(f"NBD read of {self.name} at {offset}: {exc}") from exc

    def _extents(self, context: str) -> Iterator[tuple[int, int, int]]:
        """(offset, length, flags) of ``context`` over the whole disk."""
        handle = self._handle()
        if not handle.can_meta_context(context):
            raise SourceError(f"NBD export {self.export} does not offer {context}")
        found: list[tuple[int, int]] = []

        def collect(metacontext: str, _start: int, entries: list[int], _err: Any) -> int:
            if metacontext == context:
                found.extend(zip(entries[0::2], entries[1::2], strict=True))
            return 0

        offset = 0
        while offset < self.size:
            found.clear()
            handle.block_status(min(_STATUS_STEP, self.size - offset), offset, collect)
            if not found:
                raise SourceError(f"NBD server returned no {context} extents at {offset}")
            for extent_length, flags in found:
                length = min(extent_length, self.size - offset)
                yield offset, length, flags
                offset += length
                if offset >= self.size:
                    break

    def data_extents(self) -> Iterator[tuple[int, int]]:
        """Allocated, non-zero extents (holes and known-zero extents are skipped)."""
        for offset, length, flags in self._extents("base:allocation"):
            if not flags & (_STATE_HOLE | _STATE_ZERO):
                yield offset, length

    def dirty_extents(self) -> Iterator[tuple[int, int]]:
        """Extents the checkpoint's dirty bitmap marks as changed."""
        if not self.dirty_bitmap:
            raise SourceError("no dirty bitmap was requested for this export")
        for offset, length, flags in self._extents(f"qemu:dirty-bitmap:{self.dirty_bitmap}"):
            if flags & _DIRTY:
                yield offset, length

    def close(self) -> None:
        with self._lock:
            for handle in self._handles:
                with suppress(Exception):  # best effort on teardown
                    handle.shutdown()
            self._handles.clear()  # libnbd closes a handle when its last reference goes
