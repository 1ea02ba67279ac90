"""Disk image files: format conversion with qemu-img (qemu-utils)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from surety.core.errors import TargetError

__all__ = ["convert_raw", "create_overlay"]


def create_overlay(path: Path, backing_uri: str, size: int) -> None:
    """A new qcow2 file at ``path`` whose reads fall through to raw ``backing_uri``
    (e.g. ``nbd+unix:///?socket=...``) and which takes every write itself."""
    qemu_img = shutil.which("qemu-img")
    if qemu_img is None:
        raise TargetError("qemu-img is needed for overlays (apt install qemu-utils)")
    argv = [qemu_img, "create", "-q", "-f", "qcow2", "-F", "raw", "-b", backing_uri]
    argv += ["-u", str(path), str(size)]  # -u: the size is given, the backing is not opened
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise TargetError(f"qemu-img create of an overlay failed: {proc.stderr.strip()}")


def convert_raw(raw: Path, target: Path, fmt: str) -> None:
    """Write ``raw`` as an image of format ``fmt`` (sparse) at ``target``."""
    qemu_img = shutil.which("qemu-img")
    if qemu_img is None:
        raise TargetError("qemu-img is needed for --format qcow2 (apt install qemu-utils)")
    proc = subprocess.run(
        [qemu_img, "convert", "-q", "-f", "raw", "-O", fmt, "-S", "4k", str(raw), str(target)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise TargetError(f"qemu-img convert to {fmt} failed: {proc.stderr.strip()}")
