"""Guest paths resolve inside the guest's root; file system choice is explicit or unique."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from surety.core.errors import ExposeError, PathNotFound, UsageError
from surety.restore.export import FileSystem
from surety.restore.files import choose_file_system
from surety.restore.files.guestpath import resolve


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A guest tree beside a host directory of the same names it must never reach."""
    host_etc = tmp_path / "etc"
    host_etc.mkdir()
    (host_etc / "passwd").write_text("host")
    guest = tmp_path / "guest"
    (guest / "usr" / "lib").mkdir(parents=True)
    (guest / "usr" / "lib" / "os-release").write_text("guest")
    os.symlink("usr/lib", guest / "lib")  # merged /usr, relative
    os.symlink("/usr/lib/os-release", guest / "abs")
    os.symlink("../../../../etc", guest / "escape")
    os.symlink("/etc", guest / "abs-escape")
    os.symlink("loop2", guest / "loop1")
    os.symlink("loop1", guest / "loop2")
    (guest / "file").write_text("x")
    return guest


def test_links_on_the_way_are_read_as_guest_paths(root: Path) -> None:
    assert resolve(root, "/lib/os-release") == ("/usr/lib/os-release", root / "usr/lib/os-release")
    assert resolve(root, "lib/../lib/./os-release")[0] == "/usr/lib/os-release"


def test_the_last_link_is_followed_only_when_asked(root: Path) -> None:
    assert resolve(root, "/abs") == ("/abs", root / "abs")
    assert resolve(root, "/abs", follow=True) == (
        "/usr/lib/os-release",
        root / "usr/lib/os-release",
    )


@pytest.mark.parametrize(
    "path", ["/escape/passwd", "/abs-escape/passwd", "/../../etc/passwd", "../etc/passwd"]
)
def test_nothing_resolves_outside_the_root(root: Path, path: str) -> None:
    with pytest.raises(PathNotFound):
        resolve(root, path)


def test_dotdot_stops_at_the_root(root: Path) -> None:
    assert resolve(root, "/../../../file") == ("/file", root / "file")
    assert resolve(root, "/..") == ("/", root)


def test_loops_and_files_used_as_directories_are_not_found(root: Path) -> None:
    with pytest.raises(PathNotFound, match="symbolic links"):
        resolve(root, "/loop1/x")
    with pytest.raises(PathNotFound, match="not a directory"):
        resolve(root, "/file/x")
    with pytest.raises(PathNotFound, match="no such file"):
        resolve(root, "/usr/nope")


FOUND = [
    FileSystem(1, "/dev/loop0p1", "swap", 1 << 20),
    FileSystem(2, "/dev/loop0p2", "ext4", 8 << 20, "root"),
    FileSystem(3, "/dev/loop0p3", "xfs", 8 << 20),
]


def test_choice_by_number_or_the_only_mountable_one() -> None:
    assert choose_file_system(FOUND, 3, "vda").type == "xfs"
    assert choose_file_system(FOUND[:2], None, "vda").number == 2
    with pytest.raises(UsageError, match=r"2 \(ext4 'root', 8.0 MiB\), 3 \(xfs"):
        choose_file_system(FOUND, None, "vda")
    with pytest.raises(UsageError, match="no file system 7"):
        choose_file_system(FOUND, 7, "vda")
    with pytest.raises(ExposeError, match="not a mountable"):
        choose_file_system(FOUND, 1, "vda")
    with pytest.raises(ExposeError, match="found: none"):
        choose_file_system([], None, "vda")
