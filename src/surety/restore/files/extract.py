"""``surety files get``: copy files and directories out of a restore point's file system.

Each PATH lands in the target directory under its own name (as ``cp -a``
does); ``/`` copies the file system's content into the target itself. Kept:
contents (sparse files stay sparse: only data extents are read), numeric
owner and group, permission bits (setuid included), access and modification
times, symlinks as symlinks, hard links within one extraction, fifos and
device nodes, extended attributes where the target supports them.

Safety:

* Guest paths resolve inside the guest (``guestpath``) and the walk never
  follows a symlink: nothing outside the restore point's file system is read.
* Everything is planned, and every PATH found, before the first byte is
  written; without ``overwrite`` no existing entry is touched.
* On the target, every directory entered is a real directory (``lstat``),
  never a symlink; entries are made under a temporary name and renamed into
  place, so a failed or interrupted copy never leaves a partial file under
  its name. What was completed before a failure stays.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from surety.core.errors import TargetError, UsageError
from surety.core.progress import Progress
from surety.repo.manifest import Manifest
from surety.repo.repository import Repository
from surety.restore.export import FileSystem
from surety.restore.files.browse import FileSource, mounted_file_system
from surety.restore.files.guestpath import kind_of, resolve

__all__ = ["Extraction", "GetOptions", "get_files"]

_BUFFER = 1 << 20


@dataclass(frozen=True)
class GetOptions:
    source: FileSource
    paths: tuple[str, ...]
    target: Path
    overwrite: bool = False


@dataclass(frozen=True)
class Extraction:
    point: Manifest
    disk: str
    fs: FileSystem
    target: Path
    items: list[tuple[str, Path]]  # guest path -> where it went
    counts: dict[str, int]  # per kind: file, dir, symlink, ...
    bytes: int  # file contents copied (holes excluded)
    xattrs_skipped: int


@dataclass(frozen=True)
class _Item:
    source: Path
    dest: Path
    st: os.stat_result
    is_target: bool = False  # "/" copied into the target itself: only its content


def get_files(repo: Repository, options: GetOptions, progress: Progress) -> Extraction:
    if not options.paths:
        raise UsageError("name at least one PATH to extract")
    _prepare_target(options.target)
    with mounted_file_system(repo, options.source, progress) as mounted:
        tops = [_top(mounted.root, path, options.target) for path in options.paths]
        names = [dest for _, _, dest in tops]
        if len(set(names)) != len(names):
            raise UsageError("two PATHs would land under the same name in the target")
        plan = [item for source, guest, dest in tops for item in _walk(source, dest, guest == "/")]
        if not options.overwrite:
            _refuse_existing(plan)
        progress.phase("extract", sum(i.st.st_size for i in plan if stat.S_ISREG(i.st.st_mode)))
        copier = _Copier(progress, options.overwrite)
        for item in plan:
            copier.place(item)
        copier.finish_directories()
        items = [(guest, dest) for _, guest, dest in tops]
        return Extraction(
            point=mounted.served.point,
            disk=mounted.served.disk,
            fs=mounted.fs,
            target=options.target,
            items=items,
            counts=copier.counts,
            bytes=copier.copied,
            xattrs_skipped=copier.xattrs_skipped,
        )


def _prepare_target(target: Path) -> None:
    try:
        if not target.exists():
            target.mkdir(mode=0o755)
        if not target.is_dir():
            raise TargetError(f"{target} is not a directory")
        # O_TMPFILE where the file system has it: the probe never has a name, so
        # nothing can be left behind if the process dies here.
        with tempfile.TemporaryFile(dir=target, prefix=".surety-probe-"):
            pass
    except OSError as exc:
        raise TargetError(f"{target}: cannot write there ({exc.strerror})") from exc


def _top(root: Path, path: str, target: Path) -> tuple[Path, str, Path]:
    """(host source, guest path, destination) of one PATH; a trailing / follows a link."""
    guest, source = resolve(root, path, follow=path.endswith("/"))
    dest = target if guest == "/" else target / guest.rsplit("/", 1)[1]
    return source, guest, dest


def _walk(source: Path, dest: Path, into_target: bool) -> Iterator[_Item]:
    """Pre-order: a directory before its content; symlinks are never followed."""
    yield _Item(source, dest, os.lstat(source), is_target=into_target)
    stack = _children(source, dest) if stat.S_ISDIR(os.lstat(source).st_mode) else []
    while stack:
        src, dst, st = stack.pop()
        yield _Item(src, dst, st)
        if stat.S_ISDIR(st.st_mode):
            stack.extend(_children(src, dst))


def _children(source: Path, dest: Path) -> list[tuple[Path, Path, os.stat_result]]:
    """Entries of a directory, in reverse name order (popped from the end: name order)."""
    with os.scandir(source) as found:
        children = sorted(found, key=lambda entry: entry.name, reverse=True)
        return [(Path(c.path), dest / c.name, c.stat(follow_symlinks=False)) for c in children]


def _refuse_existing(plan: list[_Item]) -> None:
    for item in plan:
        if not item.is_target and os.path.lexists(item.dest):
            raise TargetError(f"{item.dest} exists; use --overwrite to replace it")


@contextmanager
def _writing(dest: Path) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise TargetError(f"{dest}: {exc.strerror or exc}") from exc


@dataclass
class _Copier:
    progress: Progress
    overwrite: bool
    counts: dict[str, int] = field(default_factory=dict)
    copied: int = 0
    xattrs_skipped: int = 0
    _directories: list[_Item] = field(default_factory=list)
    _links: dict[tuple[int, int], Path] = field(default_factory=dict)
    _buffer: bytearray = field(default_factory=lambda: bytearray(_BUFFER))

    def place(self, item: _Item) -> None:
        if item.is_target:
            return  # the target directory itself: only its content is placed
        kind = kind_of(item.st.st_mode)
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if stat.S_ISDIR(item.st.st_mode):
            self._make_directory(item)
            return
        first = self._links.get((item.st.st_dev, item.st.st_ino))
        temporary = item.dest.with_name(f".surety-{secrets.token_hex(6)}")
        try:
            if first is not None:
                with _writing(item.dest):
                    os.link(first, temporary)
            else:
                self._create(item, temporary)
            self._install(temporary, item.dest)
        finally:
            with _writing(item.dest):
                if os.path.lexists(temporary):
                    os.unlink(temporary)
        if item.st.st_nlink > 1 and first is None:
            self._links[(item.st.st_dev, item.st.st_ino)] = item.dest

    def finish_directories(self) -> None:
        """Directory metadata last, deepest first: adding entries changes mtimes."""
        for item in reversed(self._directories):
            self._metadata(item.source, item.dest, item.st)

    def _make_directory(self, item: _Item) -> None:
        with _writing(item.dest):
            if os.path.lexists(item.dest) and not stat.S_ISDIR(os.lstat(item.dest).st_mode):
                os.unlink(item.dest)  # only with overwrite: checked before the first write
            if not os.path.lexists(item.dest):
                os.mkdir(item.dest, 0o700)
        self._directories.append(item)

    def _create(self, item: _Item, temporary: Path) -> None:
        mode = item.st.st_mode
        if stat.S_ISREG(mode):
            self._copy_file(item, temporary)
            return
        if stat.S_ISLNK(mode):
            link = os.readlink(item.source)
            with _writing(item.dest):
                os.symlink(link, temporary)
        else:
            with _writing(item.dest):
                os.mknod(temporary, mode, item.st.st_rdev)
        self._metadata(item.source, temporary, item.st)

    def _copy_file(self, item: _Item, temporary: Path) -> None:
        source = os.open(item.source, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            with _writing(item.dest):
                dest = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                self._copy_data(source, dest, item)
                with _writing(item.dest):
                    os.ftruncate(dest, item.st.st_size)
                    os.fsync(dest)
            finally:
                os.close(dest)
        finally:
            os.close(source)
        self._metadata(item.source, temporary, item.st)

    def _copy_data(self, source: int, dest: int, item: _Item) -> None:
        view, position = memoryview(self._buffer), 0
        for start, end in _data_extents(source, item.st.st_size):
            self.progress.advance(start - position)  # a hole: nothing to read
            offset = start
            while offset < end:
                got = os.preadv(source, [view[: min(len(view), end - offset)]], offset)
                if got == 0:
                    raise OSError(errno.EIO, "file ends before its size", str(item.source))
                with _writing(item.dest):
                    _pwrite_all(dest, view[:got], offset)
                offset += got
                self.copied += got
                self.progress.advance(got)
            position = end
        self.progress.advance(item.st.st_size - position)

    def _metadata(self, source: Path, dest: Path, st: os.stat_result) -> None:
        """Owner, then mode (chown clears setuid), then xattrs (it clears capabilities), times."""
        is_link = stat.S_ISLNK(st.st_mode)
        with _writing(dest):
            os.chown(dest, st.st_uid, st.st_gid, follow_symlinks=False)
            if not is_link:
                os.chmod(dest, stat.S_IMODE(st.st_mode))
        if not is_link:
            self._copy_xattrs(source, dest)
        with _writing(dest):
            os.utime(dest, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)

    def _copy_xattrs(self, source: Path, dest: Path) -> None:
        try:
            names = os.listxattr(source, follow_symlinks=False)
        except OSError as exc:
            if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
                return
            raise
        for name in names:
            value = os.getxattr(source, name, follow_symlinks=False)
            try:
                os.setxattr(dest, name, value, follow_symlinks=False)
            except OSError:  # the target's file system may not take it (e.g. security.*)
                self.xattrs_skipped += 1

    def _install(self, temporary: Path, dest: Path) -> None:
        with _writing(dest):
            if os.path.lexists(dest) and stat.S_ISDIR(os.lstat(dest).st_mode):
                raise TargetError(f"{dest} is a directory; not replacing it with a file")
            os.replace(temporary, dest)


def _data_extents(fd: int, size: int) -> Iterator[tuple[int, int]]:
    """Data regions of a file (SEEK_DATA/SEEK_HOLE); holes are skipped."""
    position = 0
    while position < size:
        try:
            start = os.lseek(fd, position, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only a hole is left
                return
            raise
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        yield start, end
        position = end


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        written = os.pwrite(fd, data, offset)
        data, offset = data[written:], offset + written
