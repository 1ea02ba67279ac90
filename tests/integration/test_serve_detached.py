"""A detached NBD server (instant recovery): outlives its starter, holds its own lock.

A real nbdkit with surety's plugin, started from a child process that exits at
once; read with libnbd; stopped through its pid file.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from surety.app.repository import open_repository
from surety.core.errors import ExposeError, RepositoryLocked
from surety.repo.image import ImageIndex
from surety.repo.lock import hold_lock
from surety.restore.export import server_alive, start_detached_server, stop_server
from tests.cli import PASSPHRASE, Cli
from tests.integration.conftest import write_image
from tests.prerequisites import require, require_import

nbd: Any = require_import("nbd", "python3-libnbd")
require(shutil.which("nbdkit") is not None, "nbdkit (scripts/bootstrap installs it)")

STARTER = """
import json, sys
from pathlib import Path
from surety.app.repository import open_repository
from surety.repo.image import ImageIndex
from surety.restore.export import start_detached_server
repo = open_repository(sys.argv[1], sys.argv[2])
server = start_detached_server(repo, "served@latest", workdir=Path(sys.argv[3]))
print(json.dumps({"pid": server.pid, "socket": str(server.socket), "size": server.size}))
"""


def _locks(repo: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in (repo / "locks").glob("*") if p.is_file()]


def test_detached_server_outlives_its_starter_and_holds_the_lock(
    initialized: Cli, tmp_path: Path
) -> None:
    image = tmp_path / "disk.img"
    write_image(image, 4 << 20, seed=5)
    initialized.run("backup", "image", image, "--name", "served")
    workdir = tmp_path / "server"
    started = subprocess.run(
        [sys.executable, "-c", STARTER, str(initialized.repo), PASSPHRASE, str(workdir)],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    info = json.loads(started.stdout)
    pid_file = workdir / "server.pid"
    try:
        assert server_alive(pid_file)
        handle = nbd.NBD()
        handle.connect_unix(info["socket"])
        assert handle.pread(info["size"], 0) == image.read_bytes()
        handle.shutdown()
        (lock,) = _locks(initialized.repo)
        assert (lock["pid"], lock["exclusive"]) == (info["pid"], False)
        storage = open_repository(str(initialized.repo), PASSPHRASE).storage
        with pytest.raises(RepositoryLocked), hold_lock(storage, True, "prune"):
            pass
    finally:
        stop_server(pid_file)
    assert not server_alive(pid_file)
    assert not Path(info["socket"]).exists()
    assert _locks(initialized.repo) == []  # released when nbdkit unloads the plugin
    stop_server(pid_file)  # idempotent


def test_a_server_that_cannot_open_the_export_is_reported_and_gone(
    initialized: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = tmp_path / "disk.img"
    write_image(image, 1 << 20, seed=6)
    initialized.run("backup", "image", image, "--name", "served")
    repo = open_repository(str(initialized.repo), PASSPHRASE)
    (image_object,) = (initialized.repo / "images").iterdir()
    real_get_image = repo.get_image

    def get_image_then_lose_it(image_id: str) -> ImageIndex:
        found = real_get_image(image_id)
        image_object.unlink()  # the server reads it again when it opens the export
        return found

    monkeypatch.setattr(repo, "get_image", get_image_then_lose_it)
    workdir = tmp_path / "server"
    with pytest.raises(ExposeError, match="could not serve"):
        start_detached_server(repo, "served@latest", workdir=workdir, timeout=30)
    assert not server_alive(workdir / "server.pid")
    assert not (workdir / "nbd.sock").exists()
    assert _locks(initialized.repo) == []
