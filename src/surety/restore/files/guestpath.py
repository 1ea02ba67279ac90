"""Paths inside a restore point's file system, resolved as ``chroot`` would.

A guest's file system is mounted somewhere on the host, but its symlinks mean
guest paths: ``/etc/localtime -> /usr/share/zoneinfo/UTC`` must not read the
host's zoneinfo, and ``/x -> ../../../root`` must not climb out.
``resolve`` walks a guest path one component at a time with ``lstat`` (the
kernel never follows a link for us): a symlink on the way is replaced by its
target read as a guest path, ``..`` stops at the guest's root, and the last
component is followed only when asked. The file system is mounted read-only
in a private directory, so nothing changes between the checks and the use.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from surety.core.errors import PathNotFound

__all__ = ["Entry", "kind_of", "resolve"]

MAX_LINKS = 40  # as the kernel's ELOOP limit
_KINDS = {
    stat.S_IFREG: "file",
    stat.S_IFDIR: "dir",
    stat.S_IFLNK: "symlink",
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
    stat.S_IFCHR: "char",
    stat.S_IFBLK: "block",
}


def kind_of(mode: int) -> str:
    return _KINDS.get(stat.S_IFMT(mode), "unknown")


@dataclass(frozen=True)
class Entry:
    """One file, directory, link or special file as the guest sees it."""

    path: str  # absolute guest path
    kind: str  # file | dir | symlink | fifo | socket | char | block
    mode: int  # st_mode (type and permission bits)
    uid: int
    gid: int
    size: int
    mtime_ns: int
    target: str | None = None  # what a symlink points to

    @classmethod
    def of(cls, path: str, host_path: Path, st: os.stat_result) -> Entry:
        link = os.readlink(host_path) if stat.S_ISLNK(st.st_mode) else None
        return cls(
            path=path,
            kind=kind_of(st.st_mode),
            mode=st.st_mode,
            uid=st.st_uid,
            gid=st.st_gid,
            size=st.st_size,
            mtime_ns=st.st_mtime_ns,
            target=link,
        )


def resolve(root: Path, path: str, follow: bool = False) -> tuple[str, Path]:
    """``(guest path, host path)`` of ``path`` under the guest root ``root``.

    Raises ``PathNotFound`` when a component is missing, is not a directory
    where one is needed, or the links loop.
    """
    pending = _split(path)
    done: list[str] = []
    links = 0
    while pending:
        name = pending.pop(0)
        if name == "..":
            if done:
                done.pop()
            continue
        host = root.joinpath(*done, name)
        try:
            st = os.lstat(host)
        except FileNotFoundError:
            raise PathNotFound(f"{path}: no such file or directory") from None
        except NotADirectoryError:
            raise PathNotFound(f"{path}: not a directory") from None
        if stat.S_ISLNK(st.st_mode) and (pending or follow):
            links += 1
            if links > MAX_LINKS:
                raise PathNotFound(f"{path}: too many levels of symbolic links")
            target = os.readlink(host)
            if target.startswith("/"):
                done = []
            pending = _split(target) + pending
            continue
        if pending and not stat.S_ISDIR(st.st_mode):
            raise PathNotFound(f"{path}: not a directory")
        done.append(name)
    return "/" + "/".join(done), root.joinpath(*done)


def _split(path: str) -> list[str]:
    return [part for part in path.split("/") if part not in ("", ".")]
