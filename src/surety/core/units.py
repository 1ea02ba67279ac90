"""Byte-size parsing and formatting (binary units, as disk tools use); durations as
admins write them in options and the configuration file (``90s``, ``15m``, ``4h``,
``2d``, ``1w``, ``1h30m``)."""

from __future__ import annotations

import re
from datetime import timedelta

from surety.core.errors import UsageError

__all__ = ["GiB", "KiB", "MiB", "format_duration", "format_size", "parse_duration", "parse_size"]

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


_DURATION_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_DURATION = re.compile(r"(\d+)\s*([wdhms])", re.IGNORECASE)


def parse_duration(text: str) -> timedelta:
    """``"90s"``, ``"15m"``, ``"4h"``, ``"2d"``, ``"1w"``, ``"1h30m"`` -> a positive timedelta.

    A unit is required (a bare ``"30"`` is refused: seconds or minutes?)."""
    compact = "".join(text.split())
    parts = _DURATION.findall(compact)
    if not parts or "".join(n + u for n, u in parts) != compact:
        raise UsageError(f"not a duration: {text!r} (use e.g. 90s, 15m, 4h, 2d, 1w)")
    seconds = sum(int(n) * _DURATION_UNITS[u.lower()] for n, u in parts)
    if seconds <= 0:
        raise UsageError(f"duration {text!r} must be longer than zero")
    return timedelta(seconds=seconds)


def format_duration(duration: timedelta) -> str:
    """A timedelta as ``parse_duration`` reads it: ``2d``, ``1h30m``, ``0s``."""
    seconds = int(duration.total_seconds())
    out = []
    for unit, size in _DURATION_UNITS.items():
        count, seconds = divmod(seconds, size)
        if count:
            out.append(f"{count}{unit}")
    return "".join(out) or "0s"
