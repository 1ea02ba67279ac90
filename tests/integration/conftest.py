"""CLI-level fixtures: run the real ``surety`` command on generated images."""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cli import Cli, cli_for

__all__ = ["Cli", "rewrite_blocks", "write_image"]


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return cli_for(tmp_path / "repo", dict(os.environ))


@pytest.fixture
def initialized(cli: Cli) -> Cli:
    cli.run("init", "--chunk-size", "64K")
    return cli


def write_image(path: Path, size: int, seed: int = 1) -> None:
    """A disk-like image: text-ish (compressible) runs, random runs, zero runs, repeats."""
    rng = random.Random(seed)
    words = [bytes(rng.choices(range(97, 123), k=rng.randint(2, 9))) for _ in range(500)]
    with open(path, "w+b") as out:
        out.truncate(size)
        offset = 0
        while offset < size:
            kind = rng.random()
            length = min(rng.choice([4096, 65536, 200_000, 1 << 20]), size - offset)
            if kind < 0.45:
                text = b" ".join(rng.choices(words, k=length // 4))
                block = (text * (length // max(len(text), 1) + 1))[:length]
            elif kind < 0.7:
                block = rng.randbytes(length)
            elif kind < 0.85:
                block = bytes(length)
            else:
                out.seek(rng.randrange(0, max(offset, 1)))
                block = out.read(length).ljust(length, b"\0")
            out.seek(offset)
            out.write(block)
            offset += length


def rewrite_blocks(path: Path, fraction: float, seed: int = 2, block: int = 4096) -> int:
    """Overwrite a fraction of 4 KiB blocks with new data; returns bytes changed."""
    rng = random.Random(seed)
    size = path.stat().st_size
    count = int(size // block * fraction)
    with open(path, "r+b") as out:
        for _ in range(count):
            out.seek(rng.randrange(size // block) * block)
            out.write(rng.randbytes(block))
    return count * block


@pytest.fixture
def image_factory(tmp_path: Path) -> Callable[..., Path]:
    def make(name: str = "disk.img", size: int = 8 << 20, seed: int = 1) -> Path:
        path = tmp_path / name
        write_image(path, size, seed)
        return path

    return make
