"""nbdkit plugin: one disk of a restore point, read-only (started by ``export.serve``).

nbdkit's embedded Python runs this file as a script, found by its path
(``export.serve.PLUGIN``: beside ``serve.py``); surety never imports it, and
it is the only module that imports ``nbdkit`` (import-linter holds that).
Parameters, after the script on nbdkit's command line:

* ``syspath=DIR:DIR...`` - put in front of ``sys.path`` so ``surety`` and its
  dependencies import (the project's ``src`` and the venv's site-packages).
* ``config_fd=N`` - an inherited pipe carrying the export document (storage,
  master key material, image id, cache size, report file) as JSON: secrets
  never appear on a command line.

The export document is opened by ``export.document``. One with ``lock`` is a
detached server's (``export.detached``: nbdkit forks into the background):
the export is opened in ``after_fork`` - threads do not survive a fork -
after this process took a shared repository lock, which ``cleanup`` releases
when nbdkit exits.

Every read goes through ``ImageReader`` (hash-checked chunks, zero chunks
without storage). A read that fails answers the client EIO - never other
bytes - and appends one JSON line to the report file, which the serving
process reads (``ServedDisk.read_failures``).
"""

from __future__ import annotations

import errno
import json
import os
import sys
from typing import Any

import nbdkit  # provided by nbdkit's embedded interpreter

API_VERSION = 2

_config_fd: list[int] = []
_state: dict[str, Any] = {}


def config(key: str, value: str) -> None:
    if key == "syspath":
        sys.path[:0] = [entry for entry in value.split(os.pathsep) if entry]
    elif key == "config_fd":
        _config_fd.append(int(value))
    else:
        raise ValueError(f"unknown parameter {key!r} (syspath=, config_fd=)")


def config_complete() -> None:
    if not _config_fd:
        raise ValueError("config_fd= is required")
    with os.fdopen(_config_fd[0]) as pipe:
        document = json.load(pipe)
    from surety.restore.export.document import open_export  # noqa: PLC0415 - needs syspath= first

    _state["report"] = document["report"]
    if document.get("lock"):
        _state["document"] = document  # opened after the fork
        return
    _state["reader"] = open_export(document)


def after_fork() -> None:
    document = _state.pop("document", None)
    if document is not None:
        from surety.restore.export.document import (  # noqa: PLC0415 - needs syspath= first
            hold_export_lock,
            open_export,
        )

        lock = hold_export_lock(document)
        try:
            _state["reader"] = open_export(document)
        except BaseException:
            lock.close()  # nbdkit exits without cleanup() when after_fork fails
            raise
        _state["lock"] = lock


def cleanup() -> None:
    lock = _state.pop("lock", None)
    if lock is not None:
        lock.close()


def thread_model() -> int:
    return int(nbdkit.THREAD_MODEL_PARALLEL)  # ImageReader is thread-safe


def open(readonly: bool) -> int:  # nbdkit looks every callback up by its name
    return 1


def get_size(handle: int) -> int:
    return int(_state["reader"].size)


def block_size(handle: int) -> tuple[int, int, int]:
    return 1, int(_state["reader"].image.chunk_size), 0xFFFFFFFF


def can_write(handle: int) -> bool:
    return False


def can_multi_conn(handle: int) -> bool:
    return True  # read-only: every connection sees the same bytes


def can_extents(handle: int) -> bool:
    return True


def is_rotational(handle: int) -> bool:
    return False


def pread(handle: int, buf: Any, offset: int, flags: int) -> None:
    try:
        _state["reader"].read_into(memoryview(buf), offset)
    except Exception as exc:  # any failure: EIO to the client, reported, never wrong data
        _report(exc, offset, len(buf))
        nbdkit.set_error(errno.EIO)
        raise


def extents(handle: int, count: int, offset: int, flags: int) -> list[tuple[int, int, int]]:
    found = []
    for start, length, zero in _state["reader"].extents(offset, count):
        kind = nbdkit.EXTENT_HOLE | nbdkit.EXTENT_ZERO if zero else 0
        found.append((start, length, kind))
        if flags & nbdkit.FLAG_REQ_ONE:
            break
    return found


def _report(exc: Exception, offset: int, length: int) -> None:
    line = json.dumps(
        {"kind": type(exc).__name__, "message": str(exc), "offset": offset, "length": length}
    )
    fd = os.open(_state["report"], os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)
