"""Serve one disk of a restore point over NBD, read-only, straight from the repository.

``serve_disk`` is the port that file-level restore, instant recovery and the
verification lab share: it starts ``nbdkit`` with surety's Python plugin
(``restore/nbdkit_plugin.py``) on a unix socket in a private directory, waits
until the server answers an NBD handshake, yields a ``ServedDisk`` (socket,
``nbd+unix://`` URI, size) and always stops the server.

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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import surety
from surety.core.errors import ExposeError, SourceError, UsageError
from surety.hypervisor.nbd import NbdDisk
from surety.repo.crypto import MasterKeys
from surety.repo.manifest import Manifest
from surety.repo.reader import ImageReader
from surety.repo.repository import RepoConfig, Repository
from surety.repo.storage import LocalStorage, Storage
from surety.restore.image import pick_disk

__all__ = ["ReadFailure", "ServedDisk", "open_export", "serve_disk"]

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
    nbdkit = shutil.which("nbdkit")
    if nbdkit is None:
        raise ExposeError("nbdkit is needed (apt install nbdkit nbdkit-plugin-python)")
    with repo.lock(exclusive=False, operation=f"serve {point}"):
        manifest = repo.resolve(point)
        name = pick_disk(manifest, disk)
        record = manifest.disk(name)
        assert record is not None
        image = repo.get_image(record.image)
        with _private_dir(workdir) as directory:
            served = ServedDisk(
                manifest, name, image.size, directory / "nbd.sock", directory / "failures"
            )
            served.report.touch(mode=0o600)
            document = {
                "storage": _storage_spec(repo.storage),
                "keys": repo.keys.material.hex(),
                "config": asdict(repo.config),
                "image": record.image,
                "cache_chunks": cache_chunks,
                "report": str(served.report),
            }
            with _nbdkit(nbdkit, served, document, directory / "nbdkit.log", timeout):
                if client is not None:
                    _hand_to(client, directory, served.socket)
                yield served


def _hand_to(client: tuple[int, int], directory: Path, socket: Path) -> None:
    for path, mode in ((directory, 0o700), (socket, 0o600)):
        os.chown(path, *client)
        os.chmod(path, mode)


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
        argv = [nbdkit, "--foreground", "--readonly", "--exit-with-parent"]
        argv += ["--unix", str(served.socket), "python", str(PLUGIN)]
        argv += [f"syspath={_python_path()}", f"config_fd={read_end}"]
        with open(log, "wb") as log_file:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                pass_fds=(read_end,),
                start_new_session=True,
                env={k: v for k, v in os.environ.items() if not k.startswith("SURETY_PASS")},
            )
    finally:
        os.close(read_end)
    try:
        _wait_until_serving(proc, served, log, timeout)
        yield
    finally:
        _stop(proc)
        served.socket.unlink(missing_ok=True)


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
