"""The file browser's pieces that need no mount: a directory streamed as tar (well-formed,
byte-exact, bounded memory), guest paths that never leave the file system."""

from __future__ import annotations

import io
import os
import tarfile
import tracemalloc
from pathlib import Path

import pytest

from surety.core.errors import UsageError
from surety.web.files import CHUNK, TarStream, guest_path, list_dir


def _tree(root: Path) -> Path:
    (root / "etc" / "deep").mkdir(parents=True)
    (root / "etc" / "app.conf").write_bytes(os.urandom(300_001))
    (root / "etc" / "deep" / "empty").touch()
    (root / "etc" / "link").symlink_to("/etc/passwd")
    with open(root / "etc" / "big.img", "wb") as big:  # 64 MiB, sparse
        big.truncate(64 << 20)
        big.seek(40 << 20)
        big.write(b"end of the data")
    return root / "etc"


def test_a_directory_streams_as_a_tar_byte_exact(tmp_path: Path) -> None:
    etc = _tree(tmp_path)
    data = b"".join(TarStream(etc, "etc"))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = tar.getnames()
        assert names[0] == "etc"
        assert set(names) == {
            "etc",
            "etc/app.conf",
            "etc/big.img",
            "etc/deep",
            "etc/deep/empty",
            "etc/link",
        }
        conf = tar.extractfile("etc/app.conf")
        assert conf is not None
        assert conf.read() == (etc / "app.conf").read_bytes()
        assert tar.getmember("etc/link").linkname == "/etc/passwd"  # stored, not followed
        big = tar.extractfile("etc/big.img")
        assert big is not None
        assert big.read() == (etc / "big.img").read_bytes()


def test_streaming_a_large_directory_keeps_memory_bounded(tmp_path: Path) -> None:
    etc = _tree(tmp_path)
    tracemalloc.start()
    try:
        largest = total = 0
        for block in TarStream(etc, "etc"):  # a slow client takes one block at a time
            largest = max(largest, len(block))
            total += len(block)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert total > 64 << 20
    assert largest <= CHUNK
    assert peak < 4 * CHUNK  # not the 64 MiB file, nor the archive


def test_guest_paths_stay_inside_and_links_are_not_followed(tmp_path: Path) -> None:
    etc = _tree(tmp_path)
    root = etc.parent
    assert guest_path(root, "//etc/./app.conf")[0] == "/etc/app.conf"
    with pytest.raises(UsageError, match=r"'\.\.' is not allowed"):
        guest_path(root, "/etc/../../outside")
    with pytest.raises(UsageError, match="symbolic link: not followed"):
        guest_path(root, "/etc/link/x")
    with pytest.raises(UsageError, match="no /etc/nothing"):
        guest_path(root, "/etc/nothing")
    path, entries = list_dir(root, "/etc")
    assert path == "/etc"
    assert entries[0].path == "/etc/deep"  # directories first
    with pytest.raises(UsageError, match="not a directory"):
        list_dir(root, "/etc/link")
