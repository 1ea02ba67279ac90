"""Byte-size parsing and formatting (binary units, as disk tools use)."""

from __future__ import annotations

import re

from surety.core.errors import UsageError

__all__ = ["GiB", "KiB", "MiB", "format_size", "parse_size"]

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30

_UNITS = {"": 1, "k": KiB, "m": MiB, "g": GiB, "t": 1 << 40}
_SIZE = re.compile(r"^\s*(\d+)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``"1M"``, ``"1MiB"``, ``"4096"`` -> bytes; binary units only."""
    match = _SIZE.match(text)
    if match is None:
        raise UsageError(f"not a size: {text!r} (use e.g. 1M, 512K, 4096)")
    return int(match.group(1)) * _UNITS[match.group(2).lower()]


def format_size(count: float) -> str:
    """Bytes -> a short human string (``1.5 GiB``)."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
