"""Where a key path is written in a TOML text, so a problem can name its line.

``tomllib`` gives values, not positions, so this scans the text itself: table headers
(``[policy.nightly]``, ``[[x]]``), ``key = value`` lines (dotted and quoted keys
included) and the keys of an inline table on the same line (``retries = { attempts =
3 }``). It does not follow multi-line arrays or strings, and a key of an array of
tables maps to the last one. That is good enough to point an admin at the right line;
a key path it cannot place falls back to its nearest written parent (``line_of``).
"""

from __future__ import annotations

import re

__all__ = ["key_lines", "line_of"]

_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_ASSIGNMENT = re.compile(
    r"^\s*((?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*'))*)\s*=(.*)$"
)
_INLINE_KEY = re.compile(r"[{,]\s*([A-Za-z0-9_-]+|\"[^\"]*\")\s*=")

KeyPath = tuple[str, ...]


def key_lines(text: str) -> dict[KeyPath, int]:
    """Every key path the scan finds, with its (1-based) line."""
    found: dict[KeyPath, int] = {}
    table: KeyPath = ()
    for number, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        if header is not None:
            table = _split(header.group(1))
            found[table] = number
            continue
        assignment = _ASSIGNMENT.match(line)
        if assignment is None:
            continue
        key = (*table, *_split(assignment.group(1)))
        found.setdefault(key, number)
        for inner in _INLINE_KEY.findall(assignment.group(2)):
            found.setdefault((*key, _unquote(inner)), number)
    return found


def line_of(lines: dict[KeyPath, int], path: KeyPath) -> int | None:
    """The line of ``path``, else of its nearest parent that is written down, else the
    first line of a key below it (``[policy.x]`` for ``policy``)."""
    for end in range(len(path), 0, -1):
        if path[:end] in lines:
            return lines[path[:end]]
    below = [line for key, line in lines.items() if key[: len(path)] == path]
    return min(below, default=None)


def _split(dotted: str) -> KeyPath:
    parts = re.findall(r"\"[^\"]*\"|'[^']*'|[^.\s]+", dotted)
    return tuple(_unquote(part) for part in parts)


def _unquote(part: str) -> str:
    part = part.strip()
    if len(part) >= 2 and part[0] == part[-1] and part[0] in "\"'":
        return part[1:-1]
    return part
