"""File-level restore through the real CLI: ext4, xfs, MBR and GPT disks, errors, teardown.

Images are built with real tools (mkfs.ext4 -d, mkfs.xfs + cp -a, sfdisk),
backed up with ``surety backup image``, then listed and extracted with
``surety files``; extracted trees are compared with the source byte for byte
and in their metadata. After every test nothing may be left: no mount, no
loop device, no nbdkit or nbdfuse, no run directory.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli import Cli, cli_for
from tests.integration import fskit
from tests.prerequisites import require

_missing = fskit.missing_requirements()
require(_missing is None, str(_missing))

BARE = ("ext4", "xfs")
# the name a file is copied under until it is complete (not the target's write probe)
PARTIAL = re.compile(r"\.surety-[0-9a-f]{12}")


@pytest.fixture(scope="module")
def run_root() -> Iterator[Path]:
    """This module's own run directories (short: unix socket paths are limited)."""
    Path("/run/surety").mkdir(mode=0o700, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="test-", dir="/run/surety"))
    yield root
    root.rmdir()  # fails if a run directory was left


def _cli(repo: Path, run_root: Path) -> Cli:
    cli = cli_for(repo, dict(os.environ))
    cli.env["SURETY_RUNTIME_DIR"] = str(run_root)
    return cli


@pytest.fixture(scope="module")
def points(tmp_path_factory: pytest.TempPathFactory, run_root: Path) -> tuple[Cli, Path]:
    """One repository with bare ext4 and xfs disks, MBR and GPT disks and a blank one."""
    work = tmp_path_factory.mktemp("files")
    tree = fskit.build_tree(work / "tree")
    cli = _cli(work / "repo", run_root)
    cli.run("init", "--chunk-size", "64K")
    fskit.make_ext4(work / "ext4.img", tree)
    fskit.make_xfs(work / "xfs.img", tree)
    fskit.make_partitioned(work / "mbr.img", "dos", [(40, "ext4"), (64, "xfs")], tree)
    fskit.make_partitioned(work / "gpt.img", "gpt", [(8, "swap"), (40, "ext4")], tree)
    (work / "blank.img").write_bytes(os.urandom(4 << 20))
    for name in ("ext4", "xfs", "mbr", "gpt", "blank"):
        cli.run("backup", "image", work / f"{name}.img", "--name", name)
    return cli, tree


@pytest.fixture(autouse=True)
def nothing_left_behind(run_root: Path) -> Iterator[None]:
    yield
    assert fskit.leftovers(run_root) == []


def _fails(cli: Cli, code: int, *args: str | Path) -> str:
    proc = cli.run(*args, check=False)
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0, proc.stderr  # one line
    return proc.stderr


def test_ls_shows_the_guest_view(points: tuple[Cli, Path]) -> None:
    cli, tree = points
    listing = cli.json("files", "ls", "ext4@latest", "/")
    assert listing["path"] == "/"
    assert listing["fs"]["type"] == "ext4"
    names = {e["path"] for e in listing["entries"]}
    assert names == {f"/{p.name}" for p in tree.iterdir()} | {"/lost+found"}
    hello = next(e for e in listing["entries"] if e["path"] == "/hello.txt")
    source = os.lstat(tree / "hello.txt")
    assert (hello["kind"], hello["mode"], hello["uid"], hello["gid"]) == (
        "file",
        "0644",
        1000,
        1000,
    )
    assert hello["size"] == source.st_size
    assert hello["mtime_ns"] == source.st_mtime_ns // 10**9 * 10**9  # mkfs.ext4 -d: seconds
    links = cli.json("files", "ls", "ext4@latest", "/links")["entries"]
    assert {e["path"]: e["target"] for e in links}["/links/absolute"] == "/hello.txt"
    human = cli.run("files", "ls", "ext4@latest", "/links").stdout
    assert "absolute -> /hello.txt" in human
    assert "lrwxrwxrwx" in human
    single = cli.json("files", "ls", "ext4@latest", "/secret")["entries"]
    assert [(e["path"], e["mode"]) for e in single] == [("/secret", "0600")]


@pytest.mark.parametrize("fs", BARE)
def test_get_whole_file_system_is_identical(
    points: tuple[Cli, Path], fs: str, tmp_path: Path
) -> None:
    cli, tree = points
    out = tmp_path / "out"
    result = cli.json("files", "get", f"{fs}@latest", "/", "--to", out)
    compared = fskit.compare_trees(tree, out, ("lost+found",), whole_seconds=fs == "ext4")
    assert compared >= 20
    assert result["counts"]["symlink"] == 5
    assert result["counts"]["fifo"] == 1
    assert (out / "sparse.img").stat().st_size == fskit.SPARSE_SIZE
    assert (out / "sparse.img").stat().st_blocks * 512 < 1 << 20  # still sparse
    assert result["bytes"] < (4 << 20) + (1 << 20)  # holes were not read


def test_get_several_paths_lands_each_under_its_name(
    points: tuple[Cli, Path], tmp_path: Path
) -> None:
    cli, tree = points
    out = tmp_path / "out"
    text = cli.run(
        "files", "get", "xfs@latest", "/hello.txt", "/dir with space", "/links/absolute",
        "--to", out,
    ).stdout  # fmt: skip
    assert "every chunk verified" in text
    assert sorted(p.name for p in out.iterdir()) == ["absolute", "dir with space", "hello.txt"]
    assert os.readlink(out / "absolute") == "/hello.txt"
    assert os.lstat(out / "absolute").st_uid == 1000
    fskit.compare_trees(tree / "dir with space", out / "dir with space")
    assert oct(os.stat(out / "dir with space").st_mode & 0o7777) == "0o750"


def test_symlinks_and_dotdot_never_leave_the_guest(
    points: tuple[Cli, Path], tmp_path: Path
) -> None:
    cli, tree = points
    # ../../../etc on the host would exist; in the guest there is no /etc
    assert "no such file" in _fails(cli, 12, "files", "ls", "ext4@latest", "/links/escape/")
    _fails(cli, 12, "files", "get", "ext4@latest", "/../../../etc/passwd", "--to", tmp_path / "o")
    # an absolute link to a directory is the guest's directory
    entries = cli.json("files", "ls", "ext4@latest", "/links/to-dir")["entries"]
    assert [e["path"] for e in entries] == ["/dir with space/nested"]
    out = tmp_path / "followed"
    cli.run("files", "get", "ext4@latest", "/links/to-dir/", "--to", out)
    assert (out / "dir with space" / "nested" / "deep" / "file.txt").read_text() == "deep\n"
    cli.run("files", "get", "ext4@latest", "/links/../links/relative/", "--to", out)
    assert (out / "hello.txt").read_bytes() == (tree / "hello.txt").read_bytes()


def test_mbr_disk_with_two_file_systems(points: tuple[Cli, Path], tmp_path: Path) -> None:
    cli, tree = points
    found = cli.json("files", "fs", "mbr@latest")["file_systems"]
    assert [(f["number"], f["type"], f["label"]) for f in found] == [
        (1, "ext4", "part1"),
        (2, "xfs", "part2"),
    ]
    message = _fails(cli, 2, "files", "ls", "mbr@latest", "/")
    assert "1 (ext4" in message
    assert "2 (xfs" in message
    assert "--fs" in message
    _fails(cli, 2, "files", "ls", "mbr@latest", "/", "--fs", "3")
    listing = cli.json("files", "ls", "mbr@latest", "/", "--fs", "2")
    assert listing["fs"]["type"] == "xfs"
    assert "/hello.txt" in {e["path"] for e in listing["entries"]}
    cli.run("files", "get", "mbr@latest", "/big.bin", "--fs", "1", "--to", tmp_path)
    assert (tmp_path / "big.bin").read_bytes() == (tree / "big.bin").read_bytes()


def test_gpt_disk_picks_its_only_file_system(points: tuple[Cli, Path], tmp_path: Path) -> None:
    cli, tree = points
    found = cli.json("files", "fs", "gpt@latest")["file_systems"]
    assert [(f["number"], f["type"], f["mountable"]) for f in found] == [
        (1, "swap", False),
        (2, "ext4", True),
    ]
    assert "not a mountable" in _fails(cli, 13, "files", "ls", "gpt@latest", "--fs", "1")
    result = cli.json("files", "get", "gpt@latest", "/links", "/unicodé ☃.txt", "--to", tmp_path)
    assert result["fs"]["number"] == 2
    fskit.compare_trees(tree / "links", tmp_path / "links")
    assert (tmp_path / "unicodé ☃.txt").read_text() == "snow\n"


def test_user_mistakes_get_one_line_and_an_exit_code(
    points: tuple[Cli, Path], tmp_path: Path
) -> None:
    cli, _tree = points
    _fails(cli, 5, "files", "ls", "nosuch@latest", "/")
    _fails(cli, 5, "files", "ls", "ext4@latest", "/", "--disk", "vdz")
    assert "/nope: no such file" in _fails(cli, 12, "files", "ls", "ext4@latest", "/nope")
    _fails(cli, 12, "files", "get", "ext4@latest", "/hello.txt/x", "--to", tmp_path / "o")
    assert "no file system" in _fails(cli, 13, "files", "ls", "blank@latest", "/")
    a_file = tmp_path / "file"
    a_file.write_text("")
    _fails(cli, 11, "files", "get", "ext4@latest", "/hello.txt", "--to", a_file)
    _fails(cli, 11, "files", "get", "ext4@latest", "/hello.txt", "--to", tmp_path / "no" / "dir")


def test_read_only_target_is_refused(points: tuple[Cli, Path], tmp_path: Path) -> None:
    cli, _tree = points
    target = tmp_path / "ro"
    target.mkdir()
    subprocess.run(["mount", "--bind", target, target], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", target], check=True)
        message = _fails(cli, 11, "files", "get", "ext4@latest", "/hello.txt", "--to", target)
        assert "cannot write" in message
    finally:
        subprocess.run(["umount", target], check=True)


def test_existing_entries_need_overwrite(points: tuple[Cli, Path], tmp_path: Path) -> None:
    cli, tree = points
    (tmp_path / "hello.txt").write_text("mine")
    assert "--overwrite" in _fails(
        cli, 11, "files", "get", "ext4@latest", "/hello.txt", "--to", tmp_path
    )
    assert (tmp_path / "hello.txt").read_text() == "mine"
    os.symlink("/etc", tmp_path / "dir with space")  # a planted link is replaced, never followed
    cli.run("files", "get", "ext4@latest", "/hello.txt", "/dir with space", "--to", tmp_path,
            "--overwrite")  # fmt: skip
    assert (tmp_path / "hello.txt").read_bytes() == (tree / "hello.txt").read_bytes()
    assert not (tmp_path / "dir with space").is_symlink()
    assert not Path("/etc/nested").exists()
    fskit.compare_trees(tree / "dir with space", tmp_path / "dir with space", whole_seconds=True)


@pytest.fixture
def big_point(tmp_path: Path, run_root: Path) -> tuple[Cli, Path]:
    """An ext4 disk with one 48 MiB random file: extraction takes a moment."""
    source = tmp_path / "big-tree"
    source.mkdir()
    (source / "big.bin").write_bytes(os.urandom(48 << 20))
    (source / "small.txt").write_text("small\n")
    image = tmp_path / "big.img"
    fskit.make_ext4(image, source, size=64 << 20)
    cli = _cli(tmp_path / "repo", run_root)
    cli.run("init", "--chunk-size", "64K")
    cli.run("backup", "image", image, "--name", "big")
    return cli, image


def test_a_damaged_chunk_fails_with_integrity_error(
    big_point: tuple[Cli, Path], tmp_path: Path
) -> None:
    cli, image = big_point
    data = image.read_bytes()
    start = data.find((tmp_path / "big-tree" / "big.bin").read_bytes()[:65536])
    assert start > 0
    fskit.damage_chunk_at(cli.repo, "big@latest", start + (20 << 20))
    out = tmp_path / "out"
    message = _fails(cli, 6, "files", "get", "big@latest", "/big.bin", "--to", out)
    assert "damaged" in message
    assert "no damaged byte was returned" in message
    assert list(out.iterdir()) == []  # no file under its name, no temporary left


def _wait_for_partial_file(proc: subprocess.Popen[str], target: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if target.is_dir() and any(PARTIAL.fullmatch(p.name) for p in target.iterdir()):
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.005)
    raise AssertionError("no extraction started")


def test_kill_9_mid_extraction_then_next_run_cleans_up(
    big_point: tuple[Cli, Path], tmp_path: Path, run_root: Path
) -> None:
    cli, _image = big_point
    target = tmp_path / "out"
    proc = cli.popen("files", "get", "big@latest", "/big.bin", "--to", target)
    _wait_for_partial_file(proc, target)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert fskit.leftovers(run_root)  # the mount is left: the process could not clean up
    assert not (target / "big.bin").exists()  # never a partial file under its name
    listed = cli.run("files", "ls", "big@latest", "/")
    assert "cleaned up after an interrupted file-level restore" in listed.stderr
    assert "big.bin" in listed.stdout
    assert fskit.leftovers(run_root) == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_extraction_tears_down_at_once(
    big_point: tuple[Cli, Path], tmp_path: Path, sig: signal.Signals, run_root: Path
) -> None:
    cli, _image = big_point
    target = tmp_path / "out"
    proc = cli.popen("files", "get", "big@latest", "/big.bin", "--to", target)
    _wait_for_partial_file(proc, target)
    proc.send_signal(sig)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert fskit.leftovers(run_root) == []
    assert list(target.iterdir()) == []


def test_json_of_fs_listing_is_complete(points: tuple[Cli, Path]) -> None:
    cli, _tree = points
    document = json.loads(cli.run("files", "fs", "ext4@latest", "--json").stdout)
    assert document["disk"] == "ext4.img"
    (only,) = document["file_systems"]
    assert only["number"] == 0
    assert only["type"] == "ext4"
    assert only["label"] == "surety-ext4"
    assert only["mountable"] is True
