"""CLI-level fixtures: run the real ``surety`` command on generated images."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

PASSPHRASE = "correct horse battery staple"


@dataclass
class Cli:
    repo: Path
    env: dict[str, str]

    def run(
        self,
        *args: str | Path,
        check: bool = True,
        timeout: float = 300,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "surety", *map(str, args)],
            env=env or self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"surety {args} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    def json(self, *args: str | Path) -> Any:
        return json.loads(self.run(*args, "--json").stdout)

    def popen(self, *args: str | Path) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "surety", *map(str, args)],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SURETY_")}
    env.update(SURETY_REPOSITORY=str(tmp_path / "repo"), SURETY_PASSPHRASE=PASSPHRASE)
    return Cli(tmp_path / "repo", env)


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
