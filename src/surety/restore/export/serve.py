"""Serve one disk of a restore point over NBD, read-only, straight from the repository.

``serve_disk`` is the port that file-level restore, instant recovery (as
``detached``) and the verification lab share: it starts ``nbdkit`` with surety's
Python plugin (``nbdkit_plugin.py`` beside this module: nbdkit loads it by the
path ``PLUGIN``) on a unix socket in a private directory, waits until the
server answers an NBD handshake, yields a ``ServedDisk`` (socket,
``nbd+unix://`` URI, size) and always stops the server.

* Reads go through ``repo.reader.ImageReader``: every chunk authenticated and
  re-hashed, zero chunks answered without storage, a bounded LRU of decoded
  chunks. A damaged chunk answers the client EIO, never other bytes, and is
  recorded in a report file that ``ServedDisk.read_failures`` returns.
* Secrets never reach a command line (``ps`` shows those) nor the server's
  environment: the plugin gets the export document (``document``: storage
  location, master key material, image id) through an inherited pipe, read
  once at start. S3 credentials are the exception by design: the server
  inherits ``AWS_*`` from surety's environment (``server_env``), as any AWS
  tool would, and the document never holds them.
* The server dies with us: ``--exit-with-parent``, and its own session, so a
  Ctrl-C reaches surety only and teardown runs in order. Start it from the
  thread that stops it (the parent-death signal follows the forking thread).
* While serving, a shared repository lock is held: prune cannot remove packs
  being read.

``detached.start_detached_server`` is the variant for instant recovery: the
same plugin, export document and pipe (the pieces shared with it are here),
for a server that outlives the command that starts it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import surety
from surety.core.errors import ExposeError, SourceError
from surety.hypervisor.nbd import NbdDisk
from surety.repo.image import ImageIndex
from surety.repo.manifest import DiskRecord, Manifest
from surety.repo.repository import Repository
from surety.restore.export.document import export_document
from surety.restore.image import pick_disk

__all__ = ["ReadFailure", "ServedDisk", "serve_disk"]

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
    nbdkit = nbdkit_binary()
    with repo.lock(exclusive=False, operation=f"serve {point}", read_only=True):
        manifest, name, record, image = resolve_disk(repo, point, disk)
        with _private_dir(workdir) as directory:
            served = ServedDisk(
                manifest, name, image.size, directory / "nbd.sock", directory / "failures"
            )
            served.report.touch(mode=0o600)
            document = export_document(repo, record.image, cache_chunks, served.report)
            with _nbdkit(nbdkit, served, document, directory / "nbdkit.log", timeout):
                if client is not None:
                    hand_to(client, directory, served.socket)
                yield served


# -- shared with detached servers: the plugin's command line, the disk, the socket's owner


def hand_to(client: tuple[int, int], directory: Path, socket: Path) -> None:
    for path, mode in ((directory, 0o700), (socket, 0o600)):
        os.chown(path, *client)
        os.chmod(path, mode)


def nbdkit_binary() -> str:
    nbdkit = shutil.which("nbdkit")
    if nbdkit is None:
        raise ExposeError("nbdkit is needed (apt install nbdkit nbdkit-plugin-python)")
    return nbdkit


def resolve_disk(
    repo: Repository, point: str, disk: str | None
) -> tuple[Manifest, str, DiskRecord, ImageIndex]:
    """The restore point, the disk's name, its record and its image index."""
    manifest = repo.resolve(point)
    name = pick_disk(manifest, disk)
    record = manifest.disk(name)
    assert record is not None
    return manifest, name, record, repo.get_image(record.image)


def plugin_arguments(config_fd: int) -> list[str]:
    """nbdkit's arguments from the plugin on: ``python PLUGIN syspath=... config_fd=N``."""
    return ["python", str(PLUGIN), f"syspath={_python_path()}", f"config_fd={config_fd}"]


def _python_path() -> str:
    """Where the plugin finds surety and its dependencies (nbdkit embeds /usr/bin/python3)."""
    entries = [str(Path(surety.__file__).resolve().parent.parent)]
    entries += [p for p in sys.path if p and Path(p).is_dir() and p not in entries]
    return os.pathsep.join(entries)


def server_env() -> dict[str, str]:
    """The server's environment: ours without passphrases nor S3 maintenance keys.

    What an S3 repository needs reaches it (``AWS_ACCESS_KEY_ID``,
    ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_PROFILE``,
    ``AWS_SHARED_CREDENTIALS_FILE``, ``AWS_CONFIG_FILE``, ``HOME``): the export
    document names the bucket but never carries credentials.
    """
    return {k: v for k, v in os.environ.items() if not _secret_of_ours(k)}


def _secret_of_ours(name: str) -> bool:
    if not name.startswith("SURETY_"):
        return False
    return "PASS" in name or name.startswith("SURETY_S3_MAINT_")


def log_tail(log: Path) -> str:
    """The server log's last lines, for an error message."""
    with suppress(OSError):
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
        if lines:
            return " / ".join(lines[-3:])
    return "no message"


# -- the foreground server


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
                env=server_env(),
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
    argv = [nbdkit, "--foreground", "--readonly", "--exit-with-parent", "--unix", str(socket)]
    return [*argv, *plugin_arguments(config_fd)]


def _wait_until_serving(
    proc: subprocess.Popen[bytes], served: ServedDisk, log: Path, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise ExposeError(f"nbdkit could not serve {served.disk}: {log_tail(log)}")
        if served.socket.exists():
            with suppress(SourceError):
                NbdDisk(str(served.socket), "", served.disk).close()
                return
        if time.monotonic() > deadline:
            raise ExposeError(f"nbdkit did not answer within {timeout:.0f} s: {log_tail(log)}")
        time.sleep(0.05)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
