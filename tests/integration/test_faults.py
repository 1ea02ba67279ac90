"""Bad input and bad states: a clear line, a distinct exit code, a consistent repository."""

from __future__ import annotations

import filecmp
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import Cli
from tests.prerequisites import require


@pytest.fixture(scope="module")
def big_image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """768 MiB of incompressible, unique data: a backup of it takes seconds."""
    path = tmp_path_factory.mktemp("big") / "big.img"
    with open(path, "wb") as out:
        for _ in range(768):
            out.write(os.urandom(1 << 20))
    yield path
    path.unlink()


def _packs(cli: Cli) -> list[Path]:
    return [p for p in (cli.repo / "data").rglob("*") if p.is_file() and p.name[0] != "."]


def _wait_for_first_pack(cli: Cli, proc: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _packs(cli):
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    raise AssertionError("backup wrote no pack")


def _no_traceback(proc: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") <= 2, proc.stderr


def test_kill_9_during_backup_leaves_no_point_and_next_backup_works(
    initialized: Cli, big_image: Path, image_factory: Callable[..., Path], tmp_path: Path
) -> None:
    proc = initialized.popen("backup", "image", big_image, "--name", "victim")
    _wait_for_first_pack(initialized, proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert list((initialized.repo / "locks").iterdir())  # the dead process's lock is left
    listed = initialized.run("points", "--json")
    assert "removed stale shared lock by 'backup image victim'" in listed.stderr
    assert json.loads(listed.stdout) == []
    assert not list((initialized.repo / "locks").iterdir())
    check = initialized.run("check", "--read-data")
    assert "not in any index" in check.stdout  # garbage is reported, not an error
    small = image_factory(size=4 << 20)
    initialized.run("backup", "image", small, "--name", "victim")
    initialized.run("restore", "image", "victim@latest", "--to", tmp_path / "r.img")
    assert filecmp.cmp(small, tmp_path / "r.img", shallow=False)
    initialized.run("prune")
    assert "not in any index" not in initialized.run("check", "--read-data").stdout


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_backup_exits_130_and_commits_nothing(
    initialized: Cli, big_image: Path, sig: signal.Signals
) -> None:
    proc = initialized.popen("backup", "image", big_image, "--name", "stopped")
    _wait_for_first_pack(initialized, proc)
    proc.send_signal(sig)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert initialized.json("points") == []
    assert not list((initialized.repo / "locks").iterdir())  # released in finally
    initialized.run("check")


def test_prune_during_backup_is_refused_and_backup_completes(
    initialized: Cli, big_image: Path, tmp_path: Path
) -> None:
    proc = initialized.popen("backup", "image", big_image, "--name", "busy")
    _wait_for_first_pack(initialized, proc)
    pruned = initialized.run("prune", check=False)
    assert proc.poll() is None, "backup finished too early for this test"
    assert pruned.returncode == 7
    assert "locked" in pruned.stderr
    assert "backup image busy" in pruned.stderr
    _no_traceback(pruned)
    _out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    initialized.run("check")
    initialized.run("restore", "image", "busy@latest", "--to", tmp_path / "b.img")
    assert filecmp.cmp(big_image, tmp_path / "b.img", shallow=False)


def test_flipped_byte_in_a_pack_is_reported_by_check_and_restore(
    initialized: Cli, image_factory: Callable[..., Path], tmp_path: Path
) -> None:
    image = image_factory(size=4 << 20)
    initialized.run("backup", "image", image, "--name", "c")
    pack = max(_packs(initialized), key=lambda p: p.stat().st_size)
    with open(pack, "r+b") as f:
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0x01]))
    assert initialized.run("check").returncode == 0  # structure is intact
    checked = initialized.run("check", "--read-data", check=False)
    assert checked.returncode == 6
    assert pack.name[:12] in checked.stdout
    assert "authentication failed" in checked.stdout
    target = tmp_path / "out.img"
    restored = initialized.run("restore", "image", "c@latest", "--to", target, check=False)
    assert restored.returncode == 6
    assert "damaged" in restored.stderr
    _no_traceback(restored)
    assert not target.exists()
    assert not list(tmp_path.glob(".out.img*"))


def test_truncated_index_is_reported(initialized: Cli, image_factory: Callable[..., Path]) -> None:
    initialized.run("backup", "image", image_factory(size=2 << 20), "--name", "i")
    (index,) = (initialized.repo / "index").iterdir()
    index.write_bytes(index.read_bytes()[:-7])
    proc = initialized.run("check", check=False)
    assert proc.returncode == 6, proc.stderr
    assert f"index/{index.name[:12]}" in proc.stdout
    # damage is contained: a backup still works, storing the absent chunks again
    second = image_factory(size=1 << 20)
    proc = initialized.run("backup", "image", second, "--name", "i", check=False)
    assert proc.returncode == 0, proc.stderr
    assert "treated as absent" in proc.stderr


def test_truncated_pack_is_reported(initialized: Cli, image_factory: Callable[..., Path]) -> None:
    initialized.run("backup", "image", image_factory(size=4 << 20), "--name", "t")
    pack = _packs(initialized)[0]
    os.truncate(pack, pack.stat().st_size // 2)
    proc = initialized.run("check", check=False)
    assert proc.returncode == 6
    assert "truncated" in proc.stdout


def test_wrong_passphrase(initialized: Cli, image_factory: Callable[..., Path]) -> None:
    env = {**initialized.env, "SURETY_PASSPHRASE": "not it"}
    proc = initialized.run("points", env=env, check=False)
    assert proc.returncode == 4
    assert "wrong passphrase" in proc.stderr
    _no_traceback(proc)


def test_passphrase_file(initialized: Cli, tmp_path: Path) -> None:
    env = {k: v for k, v in initialized.env.items() if k != "SURETY_PASSPHRASE"}
    secret = tmp_path / "pw"
    secret.write_text("correct horse battery staple\n")
    proc = initialized.run("--passphrase-file", secret, "points", env=env)
    assert "0 restore points" in proc.stdout
    no_pass = initialized.run("points", env=env, check=False)
    assert no_pass.returncode == 2
    assert "SURETY_PASSPHRASE" in no_pass.stderr


@pytest.mark.parametrize("kind", ["missing", "empty-dir", "file", "foreign"])
def test_not_a_repository(cli: Cli, tmp_path: Path, kind: str) -> None:
    where = tmp_path / "elsewhere"
    if kind == "empty-dir":
        where.mkdir()
    elif kind == "file":
        where.write_text("hello")
    elif kind == "foreign":
        where.mkdir()
        (where / "config").write_text("[core]\n")
    proc = cli.run("--repo", where, "points", check=False)
    assert proc.returncode == 3, proc.stderr
    assert "repository" in proc.stderr
    _no_traceback(proc)


def test_init_refuses_existing_repository_and_non_empty_dir(
    initialized: Cli, tmp_path: Path
) -> None:
    again = initialized.run("init", check=False)
    assert again.returncode == 3
    assert "already" in again.stderr
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "stuff").write_text("x")
    proc = initialized.run("--repo", busy, "init", check=False)
    assert proc.returncode == 3
    assert (busy / "stuff").read_text() == "x"


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("deadbeef", "no restore point"),
        ("nope@latest", "no restore point named"),
        ("zz", "not a restore point id"),
    ],
)
def test_unknown_restore_point(
    initialized: Cli, image_factory: Callable[..., Path], tmp_path: Path, ref: str, message: str
) -> None:
    initialized.run("backup", "image", image_factory(size=1 << 20), "--name", "u")
    proc = initialized.run("restore", "image", ref, "--to", tmp_path / "x.img", check=False)
    assert proc.returncode == 5
    assert message in proc.stderr
    _no_traceback(proc)


def test_unreadable_source(initialized: Cli, tmp_path: Path) -> None:
    for source in (tmp_path / "absent.img", tmp_path):
        proc = initialized.run("backup", "image", source, "--name", "s", check=False)
        assert proc.returncode == 10, proc.stderr
        _no_traceback(proc)
    assert initialized.json("points") == []


def test_bad_chunk_size_and_bad_name(cli: Cli, image_factory: Callable[..., Path]) -> None:
    proc = cli.run("init", "--chunk-size", "1000K", check=False)
    assert proc.returncode == 2
    assert "power of two" in proc.stderr
    cli.run("init")
    proc = cli.run("backup", "image", image_factory(size=1 << 20), "--name", "a b", check=False)
    assert proc.returncode == 2
    assert "invalid name" in proc.stderr


def test_disk_full_during_backup(
    cli: Cli, tmp_path: Path, image_factory: Callable[..., Path]
) -> None:
    require(os.geteuid() == 0, "root (to mount a small tmpfs)")
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", mount], check=True)
    try:
        repo = mount / "repo"
        cli.run("--repo", repo, "init")
        big = tmp_path / "random.img"
        big.write_bytes(os.urandom(96 << 20))
        proc = cli.run("--repo", repo, "backup", "image", big, "--name", "full", check=False)
        assert proc.returncode == 8, proc.stderr
        assert "no space left" in proc.stderr
        _no_traceback(proc)
        assert cli.json("--repo", repo, "points") == []
        assert not list(repo.rglob(".tmp-*"))
        cli.run("--repo", repo, "check")
        cli.run("--repo", repo, "prune")  # frees the orphan packs
        small = image_factory(size=4 << 20)
        cli.run("--repo", repo, "backup", "image", small, "--name", "full")
        cli.run("--repo", repo, "restore", "image", "full@latest", "--to", tmp_path / "ok.img")
        assert filecmp.cmp(small, tmp_path / "ok.img", shallow=False)
    finally:
        subprocess.run(["umount", "-l", mount], check=False)
