"""Disk image files: format conversion with qemu-img (qemu-utils)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from surety.core.errors import TargetError

__all__ = ["convert_raw"]


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
