"""Detached NBD servers: a restore point's disk served by a server that outlives its starter.

Instant recovery needs a server that keeps running after the command that
starts it: the same plugin, export document and pipe as ``serve.serve_disk``,
but no ``--exit-with-parent``; nbdkit forks into the background itself
(``--pidfile``, ``--log=stderr`` into the server's log: its main process sets
a parent-death signal even without ``--exit-with-parent``, so a
``--foreground`` server would die with its starter) and runs in its own
session. The plugin opens the export after that fork.

* The shared repository lock is held by the server process itself (the
  plugin takes it before it opens the export and drops it when nbdkit unloads
  it), so it lasts exactly as long as the server; a server killed with -9
  leaves a lock that the next locker finds stale.
* ``server.pid`` holds the server's pid and process start time
  (``core.processes``): ``server_alive`` and ``stop_server`` never mistake,
  nor signal, a reused pid.
"""

from __future__ import annotations

import json
import os
import signal
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from surety.core.errors import ExposeError, SourceError
from surety.core.processes import process_start_time, process_state
from surety.hypervisor.nbd import NbdDisk
from surety.repo.repository import Repository
from surety.restore.export.document import export_document
from surety.restore.export.serve import (
    CACHE_CHUNKS,
    ServedDisk,
    hand_to,
    log_tail,
    nbdkit_binary,
    plugin_arguments,
    resolve_disk,
    server_env,
)

__all__ = ["DetachedServer", "server_alive", "start_detached_server", "stop_server"]


@dataclass(frozen=True)
class DetachedServer:
    """A server that outlives its starter; ``pid_file`` is what ``stop_server`` needs."""

    disk: str
    size: int
    socket: Path
    pid: int
    pid_file: Path
    log: Path
    report: Path

    @property
    def uri(self) -> str:
        return f"nbd+unix:///?socket={self.socket}"


class _Spawned:
    """nbdkit's first process, started with ``posix_spawn``: it forks the server
    and exits; we only wait for that."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            with suppress(ChildProcessError):
                pid, status = os.waitpid(self.pid, os.WNOHANG)
                if pid == self.pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


def start_detached_server(
    repo: Repository,
    point: str,
    disk: str | None = None,
    *,
    workdir: Path,
    client: tuple[int, int] | None = None,
    cache_chunks: int = CACHE_CHUNKS,
    timeout: float = 60.0,
) -> DetachedServer:
    """Serve ``disk`` of ``point`` from a server that keeps running after we exit.

    ``workdir`` (created 0700 if missing) holds the socket, pid file, log and
    read-failure report. The caller holds no lock afterwards: the server holds
    its own shared repository lock. Stop it with ``stop_server(pid_file)``.

    nbdkit forks into the background itself (its main process sets a
    parent-death signal, so a ``--foreground`` server would die with us); the
    plugin opens the export after that fork.
    """
    nbdkit = nbdkit_binary()
    with repo.lock(exclusive=False, operation=f"serve {point}", read_only=True):
        manifest, name, record, image = resolve_disk(repo, point, disk)
        workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
        served = ServedDisk(manifest, name, image.size, workdir / "nbd.sock", workdir / "failures")
        served.report.touch(mode=0o600)
        document = export_document(repo, record.image, cache_chunks, served.report)
        document["lock"] = f"serve {manifest.id[:12]} {name} (detached, {workdir})"
        log, pid_file = workdir / "nbdkit.log", workdir / "server.pid"
        starter = _spawn_detached(nbdkit, served.socket, document, log, workdir / "nbdkit.pid")
        try:
            pid = _wait_detached(
                starter,
                served,
                log,
                nbdkit_pid=workdir / "nbdkit.pid",
                pid_file=pid_file,
                timeout=timeout,
            )
            if client is not None:
                hand_to(client, workdir, served.socket)
        except BaseException:
            stop_server(pid_file)
            raise
    return DetachedServer(name, image.size, served.socket, pid, pid_file, log, served.report)


def _spawn_detached(
    nbdkit: str, socket: Path, document: dict[str, Any], log: Path, nbdkit_pid: Path
) -> _Spawned:
    read_end, write_end = os.pipe()
    try:
        with open(write_end, "w") as pipe:
            json.dump(document, pipe)
        os.set_inheritable(read_end, True)
        argv = [nbdkit, "--readonly", "--log=stderr", "--pidfile", str(nbdkit_pid)]
        argv += ["--unix", str(socket), *plugin_arguments(read_end)]
        actions = [
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, str(log), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600),
            (os.POSIX_SPAWN_DUP2, 1, 2),
        ]
        pid = os.posix_spawn(argv[0], argv, server_env(), file_actions=actions, setsid=True)
    finally:
        os.close(read_end)
    return _Spawned(pid)


def _wait_detached(
    starter: _Spawned,
    served: ServedDisk,
    log: Path,
    *,
    nbdkit_pid: Path,
    pid_file: Path,
    timeout: float,
) -> int:
    """The server's pid, once it forked into the background and answers a handshake."""
    deadline = time.monotonic() + timeout
    while starter.poll() is None:
        if time.monotonic() > deadline:
            with suppress(ProcessLookupError):
                os.kill(starter.pid, signal.SIGKILL)
            raise ExposeError(f"nbdkit did not start within {timeout:.0f} s: {log_tail(log)}")
        time.sleep(0.02)
    if starter.returncode != 0:
        raise ExposeError(f"nbdkit could not serve {served.disk}: {log_tail(log)}")
    while True:
        with suppress(OSError, ValueError):
            pid = int(nbdkit_pid.read_text().split()[0])
            pid_file.write_text(f"{pid} {process_start_time(pid)}\n")
            break
        if time.monotonic() > deadline:
            raise ExposeError(f"nbdkit wrote no pid file within {timeout:.0f} s: {log_tail(log)}")
        time.sleep(0.02)
    while True:
        if not server_alive(pid_file):
            raise ExposeError(f"nbdkit could not serve {served.disk}: {log_tail(log)}")
        with suppress(SourceError):
            NbdDisk(str(served.socket), "", served.disk).close()
            return pid
        if time.monotonic() > deadline:
            raise ExposeError(f"nbdkit did not answer within {timeout:.0f} s: {log_tail(log)}")
        time.sleep(0.05)


def _read_pid_file(pid_file: Path) -> tuple[int, str] | None:
    try:
        pid, start = pid_file.read_text().split()
        return int(pid), start
    except (OSError, ValueError):
        return None


def server_alive(pid_file: Path) -> bool:
    """Is the server of this pid file still running (the same process, not a reused pid)?"""
    found = _read_pid_file(pid_file)
    if found is None:
        return False
    pid, start = found
    return process_state(pid) not in ("", "Z") and process_start_time(pid) == start


def stop_server(pid_file: Path, timeout: float = 10.0) -> None:
    """Stop a detached server (SIGTERM, then SIGKILL after ``timeout``); idempotent.

    nbdkit unloads the plugin on SIGTERM, which releases the server's lock.
    """
    found = _read_pid_file(pid_file)
    if found is not None and server_alive(pid_file):
        pid = found[0]
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while server_alive(pid_file) and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.05)
        if server_alive(pid_file):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            while server_alive(pid_file):
                _reap(pid)
                time.sleep(0.05)
        _reap(pid)
    for leftover in ("nbd.sock", "nbdkit.pid"):
        (pid_file.parent / leftover).unlink(missing_ok=True)


def _reap(pid: int) -> None:
    """Collect the exit status if the server is our own child (started by this process)."""
    with suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
