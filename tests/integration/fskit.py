"""Real disk images for file-level restore tests: a sample tree, ext4/xfs, MBR/GPT.

Everything here runs real tools (mkfs.ext4 -d, mkfs.xfs, sfdisk, losetup,
mount) as root; ``missing_requirements`` names what is missing here (for
``tests.prerequisites.require``).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from surety.app.repository import open_repository
from surety.repo.reader import ImageReader
from tests.cli import PASSPHRASE

TOOLS = ("nbdkit", "nbdfuse", "fusermount3", "losetup", "mkfs.ext4", "mkfs.xfs", "sfdisk")
# mkfs.xfs refuses file systems under 300 MB unless run by the xfstests suite;
# these variables are its documented escape hatch, and keep test images small.
SMALL_XFS = {"TEST_DIR": "1", "TEST_DEV": "1", "QA_CHECK_FS": "1"}
MTIME = 1_600_000_000_123_456_789  # 2020-09-13, with nanoseconds
SPARSE_SIZE = 16 << 20


def missing_requirements() -> str | None:
    if os.geteuid() != 0:
        return "file-level restore tests need root (loop devices, mounts)"
    if not Path("/dev/fuse").exists():
        return "no /dev/fuse on this host"
    if not Path("/dev/loop-control").exists():
        return "no loop devices on this host"
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return f"missing tools: {', '.join(missing)} (scripts/bootstrap installs them)"
    return None


def _touch(path: Path, offset: int = 0) -> None:
    os.utime(path, ns=(MTIME + offset + 7, MTIME + offset), follow_symlinks=False)


def build_tree(root: Path) -> Path:
    """Owners, modes, times, links (relative, absolute, dangling, escaping), sparse, nested."""
    root.mkdir()
    (root / "hello.txt").write_text("hello from the guest\n")
    os.chown(root / "hello.txt", 1000, 1000)
    (root / "secret").write_bytes(b"s3cret")
    os.chmod(root / "secret", 0o600)
    (root / "setuid-tool").write_bytes(b"#!/bin/sh\n")
    os.chmod(root / "setuid-tool", 0o4755)
    (root / "empty").touch()
    (root / "big.bin").write_bytes(os.urandom(3 << 20))
    os.chown(root / "big.bin", 33, 33)
    os.chmod(root / "big.bin", 0o640)
    with open(root / "sparse.img", "wb") as sparse:
        sparse.truncate(SPARSE_SIZE)
        for offset in (0, 8 << 20, SPARSE_SIZE - 4096):
            sparse.seek(offset)
            sparse.write(os.urandom(4096))
    deep = root / "dir with space" / "nested" / "deep"
    deep.mkdir(parents=True)
    (deep / "file.txt").write_text("deep\n")
    (root / "unicodé ☃.txt").write_text("snow\n")
    os.link(root / "hello.txt", root / "hardlink.txt")
    os.mkfifo(root / "fifo")
    (root / "xattr.txt").write_text("attributes\n")
    os.setxattr(root / "xattr.txt", "user.surety", b"kept")
    links = root / "links"
    links.mkdir()
    for name, target in (
        ("relative", "../hello.txt"),
        ("absolute", "/hello.txt"),
        ("dangling", "/nowhere"),
        ("to-dir", "/dir with space"),
        ("escape", "../../../../../../../../etc"),
    ):
        os.symlink(target, links / name)
    os.chown(links / "absolute", 1000, 1001, follow_symlinks=False)
    for number, path in enumerate(sorted(root.rglob("*"), key=lambda p: -len(p.parts))):
        if path.name != "hardlink.txt":
            _touch(path, number)
    os.chown(root / "dir with space", 1001, 1002)
    os.chmod(root / "dir with space", 0o750)
    _touch(root / "dir with space", 99)
    return root


def make_ext4(image: Path, tree: Path | None, size: int = 48 << 20, label: str = "") -> None:
    image.unlink(missing_ok=True)
    with open(image, "wb") as out:
        out.truncate(size)
    argv = ["mkfs.ext4", "-q", "-I", "256", "-L", label or "surety-ext4"]
    argv += ["-d", str(tree)] if tree else []
    _run([*argv, str(image)])


@contextmanager
def loop_device(image: Path, partscan: bool = False) -> Iterator[str]:
    argv = ["losetup", "--find", "--show", *(["--partscan"] if partscan else []), str(image)]
    device = _run(argv).strip()
    name = Path(device).name
    if partscan and not list(Path(f"/sys/block/{name}").glob(f"{name}p*")):
        _run(["partx", "--add", device])  # kernels without partition table parsers
    try:
        yield device
    finally:
        _run(["losetup", "--detach", device])


@contextmanager
def mounted(device: str, where: Path) -> Iterator[Path]:
    where.mkdir(exist_ok=True)
    _run(["mount", device, str(where)])
    try:
        yield where
    finally:
        _run(["umount", str(where)])


def populate(device: str, tree: Path, where: Path) -> None:
    with mounted(device, where):
        _run(["cp", "-a", f"{tree}/.", str(where)])


def make_xfs(image: Path, tree: Path, size: int = 64 << 20, work: Path | None = None) -> None:
    with open(image, "wb") as out:
        out.truncate(size)
    _run(["mkfs.xfs", "-q", "-L", "surety-xfs", str(image)], env=SMALL_XFS)
    with loop_device(image) as device:
        populate(device, tree, (work or image.parent) / "xfs-mnt")


def make_partitioned(
    image: Path, table: str, parts: list[tuple[int, str]], tree: Path, size: int = 160 << 20
) -> None:
    """``parts``: (size in MiB, "ext4" | "xfs" | "swap" | "none"), each populated with ``tree``."""
    with open(image, "wb") as out:
        out.truncate(size)
    layout = f"label: {table}\n" + "".join(f"size={mib}MiB\n" for mib, _ in parts)
    _run(["sfdisk", "--quiet", str(image)], stdin=layout)
    with loop_device(image, partscan=True) as device:
        for number, (_mib, kind) in enumerate(parts, start=1):
            part = f"{device}p{number}"
            if kind == "ext4":
                _run(["mkfs.ext4", "-q", "-I", "256", "-L", f"part{number}", part])
            elif kind == "xfs":
                _run(["mkfs.xfs", "-q", "-L", f"part{number}", part], env=SMALL_XFS)
            elif kind == "swap":
                _run(["mkswap", part])
            if kind in ("ext4", "xfs"):
                populate(part, tree, image.parent / f"mnt-{number}")


def compare_trees(
    source: Path, extracted: Path, ignore: tuple[str, ...] = (), whole_seconds: bool = False
) -> int:
    """Names, types, modes, owners, mtimes, sizes, contents, link targets, xattrs, hard links.

    ``whole_seconds``: the image was made by ``mkfs.ext4 -d``, which keeps no nanoseconds.
    """
    unit = 10**9 if whole_seconds else 1
    names = _relative(source, ignore)
    assert _relative(extracted, ignore) == names
    inodes: dict[int, int] = {}
    for name in sorted(names):
        want, got = os.lstat(source / name), os.lstat(extracted / name)
        assert stat.S_IFMT(want.st_mode) == stat.S_IFMT(got.st_mode), name
        assert (want.st_uid, want.st_gid) == (got.st_uid, got.st_gid), name
        assert want.st_mtime_ns // unit * unit == got.st_mtime_ns, name
        if stat.S_ISLNK(want.st_mode):
            assert os.readlink(source / name) == os.readlink(extracted / name), name
            continue
        assert stat.S_IMODE(want.st_mode) == stat.S_IMODE(got.st_mode), name
        assert _xattrs(source / name) == _xattrs(extracted / name), name
        if stat.S_ISREG(want.st_mode):
            assert want.st_size == got.st_size, name
            assert (source / name).read_bytes() == (extracted / name).read_bytes(), name
            if want.st_nlink > 1:
                assert inodes.setdefault(want.st_ino, got.st_ino) == got.st_ino, name
    return len(names)


def _relative(root: Path, ignore: tuple[str, ...]) -> set[str]:
    found = set()
    for path in root.rglob("*"):
        name = str(path.relative_to(root))
        if not (ignore and name.startswith(ignore)):
            found.add(name)
    return found


def _xattrs(path: Path) -> dict[str, bytes]:
    return {n: os.getxattr(path, n) for n in os.listxattr(path) if n.startswith("user.")}


def damage_chunk_at(repo: Path, point: str, offset: int) -> None:
    """Flip one byte inside the stored chunk that holds disk byte ``offset``."""
    opened = open_repository(str(repo), PASSPHRASE)
    manifest = opened.resolve(point)
    reader = ImageReader(opened, opened.get_image(manifest.disks[0].image))
    chunk_id = reader.image.chunk_ids[offset // reader.image.chunk_size]
    location = opened.index().get(chunk_id)
    assert location is not None, "that chunk is a zero chunk"
    pack = next((repo / "data").rglob(location.pack))
    data = bytearray(pack.read_bytes())
    data[location.offset + location.length // 2] ^= 0x20
    pack.write_bytes(bytes(data))


def leftovers(root: Path) -> list[str]:
    """Mounts, loop devices, run directories and processes left under ``root``."""
    prefix = f"{root}/"
    with open("/proc/self/mountinfo") as mountinfo:
        found = [line.split()[4] for line in mountinfo if line.split()[4].startswith(prefix)]
    loops = _run(["losetup", "--list", "--noheadings", "--output", "NAME,BACK-FILE"])
    found += [line for line in loops.splitlines() if prefix in line]
    found += [str(p) for p in root.iterdir()] if root.is_dir() else []
    return found + processes_naming(root)


def processes_naming(path: Path) -> list[str]:
    """Live (not zombie) processes whose command line names ``path``."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes()
            alive = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (OSError, IndexError):
            continue
        if proc.name.isdigit() and alive and str(path).encode() in cmdline:
            found.append(cmdline.replace(b"\0", b" ").decode(errors="replace"))
    return found


def _run(argv: list[str], stdin: str | None = None, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        argv,
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
    )
    assert proc.returncode == 0, f"{argv}: {proc.stderr}"
    return proc.stdout
