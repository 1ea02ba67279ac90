"""Serve one disk of a restore point over NBD, read-only, straight from the repository.

``serve_disk`` is the port that file-level restore, instant recovery and the
verification lab share: it starts ``nbdkit`` with surety's Python plugin
(``nbdkit_plugin.py`` beside this module: nbdkit loads it by its path,
``PLUGIN``) on a unix socket in a private directory, waits until the server
answers an NBD handshake, yields a ``ServedDisk`` (socket, ``nbd+unix://``
URI, size) and always stops the server.

* Reads go through ``repo.reader.ImageReader``: every chunk authenticated and
  re-hashed, zero chunks answered without storage, a bounded LRU of decoded
  chunks. A damaged chunk answers the client EIO, never other bytes, and is
  recorded in a report file that ``ServedDisk.read_failures`` returns.
* Secrets never reach a command line (``ps`` shows those) nor the server's
  environment: the plugin gets the export document (storage location, master
  key material, image id) through an inherited pipe, read once at start.
* The server dies with us: ``--exit-with-parent``, and its own session, so a
  Ctrl-C reaches surety only and teardown runs in order. Start it from the
  thread that stops it (the parent-death signal follows the forking thread).
* While serving, a shared repository lock is held: prune cannot remove packs
  being read.

``start_detached_server`` is the variant for instant recovery, whose server
must outlive the command that starts it: the same plugin, export document and
pipe, but no ``--exit-with-parent``; the server runs in its own session, its
pid and start time (``core.processes``) go to a pid file that ``stop_server``
reads (a reused pid is never signalled). The shared repository lock is then held by the server
process itself (the plugin takes it before it opens the export and drops it
when nbdkit unloads it), so it lasts exactly as long as the server; a server
killed with -9 leaves a lock that the next locker finds stale.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import surety
from surety.core.errors import ExposeError, SourceError, UsageError
from surety.core.processes import process_start_time, process_state
from surety.hypervisor.nbd import NbdDisk
from surety.repo.crypto import MasterKeys
from surety.repo.image import ImageIndex
from surety.repo.lock import hold_lock
from surety.repo.manifest import DiskRecord, Manifest
from surety.repo.reader import ImageReader
from surety.repo.repository import RepoConfig, Repository
from surety.repo.storage import LocalStorage, Storage
from surety.restore.image import pick_disk

__all__ = [
    "DetachedServer",
    "ReadFailure",
    "ServedDisk",
    "hold_export_lock",
    "open_export",
    "serve_disk",
    "server_alive",
    "start_detached_server",
    "stop_server",
]

PLUGIN = Path(__file__).with_name("nbdkit_plugin.py")
CACHE_CHUNKS = 64  # decoded chunks kept per served disk (16 MiB at the default chunk size)


@dataclass(frozen=True)
class ReadFailure:
    """One client read the server refused (``kind`` is the error class name)."""

    kind: str
    message: str
    offset: int
    length: int


@dataclass(frozen=True)
class ServedDisk:
    point: Manifest
    disk: str
    size: int
    socket: Path
    report: Path

    @property
    def uri(self) -> str:
        return f"nbd+unix:///?socket={self.socket}"

    def read_failures(self) -> list[ReadFailure]:
        """Reads answered with EIO so far (one per failed request, in order)."""
        try:
            lines = self.report.read_text().splitlines()
        except FileNotFoundError:
            return []
        return [ReadFailure(**json.loads(line)) for line in lines if line.strip()]


@contextmanager
def serve_disk(
    repo: Repository,
    point: str,
    disk: str | None = None,
    *,
    workdir: Path | None = None,
    cache_chunks: int = CACHE_CHUNKS,
    timeout: float = 60.0,
    client: tuple[int, int] | None = None,
) -> Iterator[ServedDisk]:
    """Serve ``disk`` of restore point ``point`` until the block ends.

    ``workdir`` is a private (0700) directory of the caller's to hold the
    socket, log and report; without it one is made and removed afterwards.
    ``client`` (uid, gid) is the one user besides root that may connect (QEMU
    opening the export as an overlay's base): the directory and the socket
    become that user's, mode 0700/0600.
    """
    nbdkit = _nbdkit_binary()
    with repo.lock(exclusive=False, operation=f"serve {point}", read_only=True):
        manifest, name, record, image = _resolve_disk(repo, point, disk)
        with _private_dir(workdir) as directory:
            served = ServedDisk(
                manifest, name, image.size, directory / "nbd.sock", directory / "failures"
            )
            served.report.touch(mode=0o600)
            document = _export_document(repo, record.image, cache_chunks, served.report)
            with _nbdkit(nbdkit, served, document, directory / "nbdkit.log", timeout):
                if client is not None:
                    _hand_to(client, directory, served.socket)
                yield served


def _export_document(
    repo: Repository, image: str, cache_chunks: int, report: Path
) -> dict[str, Any]:
    return {
        "storage": _storage_spec(repo.storage),
        "keys": repo.keys.material.hex(),
        "config": asdict(repo.config),
        "image": image,
        "cache_chunks": cache_chunks,
        "report": str(report),
    }


def _hand_to(client: tuple[int, int], directory: Path, socket: Path) -> None:
    for path, mode in ((directory, 0o700), (socket, 0o600)):
        os.chown(path, *client)
        os.chmod(path, mode)


def _nbdkit_binary() -> str:
    nbdkit = shutil.which("nbdkit")
    if nbdkit is None:
        raise ExposeError("nbdkit is needed (apt install nbdkit nbdkit-plugin-python)")
    return nbdkit


def _resolve_disk(
    repo: Repository, point: str, disk: str | None
) -> tuple[Manifest, str, DiskRecord, ImageIndex]:
    """The restore point, the disk's name, its record and its image index."""
    manifest = repo.resolve(point)
    name = pick_disk(manifest, disk)
    record = manifest.disk(name)
    assert record is not None
    return manifest, name, record, repo.get_image(record.image)


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


def _storage_spec(storage: Storage) -> dict[str, str]:
    if isinstance(storage, LocalStorage):
        return {"kind": "local", "root": str(storage.root.resolve())}
    raise UsageError(f"{storage.describe()}: only local repositories can be served yet")


def _storage_from_spec(spec: dict[str, str]) -> Storage:
    if spec.get("kind") == "local":
        return LocalStorage(Path(spec["root"]))
    raise UsageError(f"unknown storage in the export document: {spec.get('kind')!r}")


@contextmanager
def _private_dir(workdir: Path | None) -> Iterator[Path]:
    if workdir is not None:
        yield workdir
        return
    made = Path(tempfile.mkdtemp(prefix="surety-serve-"))  # 0700
    try:
        yield made
    finally:
        shutil.rmtree(made, ignore_errors=True)


def _python_path() -> str:
    """Where the plugin finds surety and its dependencies (nbdkit embeds /usr/bin/python3)."""
    entries = [str(Path(surety.__file__).resolve().parent.parent)]
    entries += [p for p in sys.path if p and Path(p).is_dir() and p not in entries]
    return os.pathsep.join(entries)


@contextmanager
def _nbdkit(
    nbdkit: str, served: ServedDisk, document: dict[str, Any], log: Path, timeout: float
) -> Iterator[None]:
    read_end, write_end = os.pipe()
    try:
        with open(write_end, "w") as pipe:  # a few hundred bytes: fits the pipe buffer
            json.dump(document, pipe)
        argv = _nbdkit_argv(nbdkit, served.socket, read_end)
        with open(log, "wb") as log_file:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                pass_fds=(read_end,),
                start_new_session=True,
                env=_server_env(),
            )
    finally:
        os.close(read_end)
    try:
        _wait_until_serving(proc, served, log, timeout)
        yield
    finally:
        _stop(proc)
        served.socket.unlink(missing_ok=True)


def _nbdkit_argv(nbdkit: str, socket: Path, config_fd: int) -> list[str]:
    argv = [nbdkit, "--foreground", "--readonly", "--exit-with-parent"]
    argv += ["--unix", str(socket), "python", str(PLUGIN)]
    return [*argv, f"syspath={_python_path()}", f"config_fd={config_fd}"]


def _server_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SURETY_PASS")}


def _wait_until_serving(
    proc: subprocess.Popen[bytes], served: ServedDisk, log: Path, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise ExposeError(f"nbdkit could not serve {served.disk}: {_tail(log)}")
        if served.socket.exists():
            with suppress(SourceError):
                NbdDisk(str(served.socket), "", served.disk).close()
                return
        if time.monotonic() > deadline:
            raise ExposeError(f"nbdkit did not answer within {timeout:.0f} s: {_tail(log)}")
        time.sleep(0.05)


def _tail(log: Path) -> str:
    with suppress(OSError):
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
        if lines:
            return " / ".join(lines[-3:])
    return "no message"


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- detached servers (instant recovery) ---------------------------------------------


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
    nbdkit = _nbdkit_binary()
    with repo.lock(exclusive=False, operation=f"serve {point}", read_only=True):
        manifest, name, record, image = _resolve_disk(repo, point, disk)
        workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
        served = ServedDisk(manifest, name, image.size, workdir / "nbd.sock", workdir / "failures")
        served.report.touch(mode=0o600)
        document = _export_document(repo, record.image, cache_chunks, served.report)
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
                _hand_to(client, workdir, served.socket)
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
        argv += ["--unix", str(socket), "python", str(PLUGIN)]
        argv += [f"syspath={_python_path()}", f"config_fd={read_end}"]
        actions = [
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, str(log), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600),
            (os.POSIX_SPAWN_DUP2, 1, 2),
        ]
        pid = os.posix_spawn(argv[0], argv, _server_env(), file_actions=actions, setsid=True)
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
            raise ExposeError(f"nbdkit did not start within {timeout:.0f} s: {_tail(log)}")
        time.sleep(0.02)
    if starter.returncode != 0:
        raise ExposeError(f"nbdkit could not serve {served.disk}: {_tail(log)}")
    while True:
        with suppress(OSError, ValueError):
            pid = int(nbdkit_pid.read_text().split()[0])
            pid_file.write_text(f"{pid} {process_start_time(pid)}\n")
            break
        if time.monotonic() > deadline:
            raise ExposeError(f"nbdkit wrote no pid file within {timeout:.0f} s: {_tail(log)}")
        time.sleep(0.02)
    while True:
        if not server_alive(pid_file):
            raise ExposeError(f"nbdkit could not serve {served.disk}: {_tail(log)}")
        with suppress(SourceError):
            NbdDisk(str(served.socket), "", served.disk).close()
            return pid
        if time.monotonic() > deadline:
            raise ExposeError(f"nbdkit did not answer within {timeout:.0f} s: {_tail(log)}")
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
