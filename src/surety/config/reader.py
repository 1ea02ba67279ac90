"""Typed reads of parsed TOML that collect problems instead of stopping at the first.

Every getter returns the value, or None when the key is absent *or* wrong (then a
``Problem`` naming the key path and its line is recorded). ``known`` reports keys
nobody reads, with a "did you mean" from difflib. ``load`` walks the file with these.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from surety.config.errors import Problem
from surety.config.lines import KeyPath, line_of
from surety.core.errors import UsageError
from surety.core.units import parse_duration

__all__ = ["Reader", "Table"]

Table = dict[str, Any]
T = TypeVar("T")

_TYPE_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
    dict: "a table",
    list: "a list",
}


class Reader:
    def __init__(self, source: Path, lines: dict[KeyPath, int]) -> None:
        self.source = source
        self.lines = lines
        self.problems: list[Problem] = []

    def problem(self, path: KeyPath, why: str) -> None:
        self.problems.append(Problem(self.source, line_of(self.lines, path), ".".join(path), why))

    def known(self, table: Table, path: KeyPath, keys: Iterable[str]) -> None:
        """A problem for every key of ``table`` not in ``keys``, with a suggestion."""
        allowed = list(keys)
        for key in table:
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                self.problem((*path, key), f"unknown key{hint}")

    def table(self, parent: Table, path: KeyPath, key: str) -> Table | None:
        return self._typed(parent, path, key, dict)

    def text(self, parent: Table, path: KeyPath, key: str) -> str | None:
        value = self._typed(parent, path, key, str)
        if value is not None and not value.strip():
            self.problem((*path, key), "must not be empty")
            return None
        return value

    def flag(self, parent: Table, path: KeyPath, key: str) -> bool | None:
        return self._typed(parent, path, key, bool)

    def integer(self, parent: Table, path: KeyPath, key: str, low: int = 0) -> int | None:
        value = self._typed(parent, path, key, int)
        if value is not None and value < low:
            self.problem((*path, key), f"must be at least {low}, not {value}")
            return None
        return value

    def number(
        self, parent: Table, path: KeyPath, key: str, low: float, high: float
    ) -> float | None:
        value = parent.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.problem((*path, key), f"expected a number, got {_describe(value)}")
            return None
        if not low <= value <= high:
            self.problem((*path, key), f"must be between {low:g} and {high:g}, not {value:g}")
            return None
        return float(value)

    def names(self, parent: Table, path: KeyPath, key: str) -> tuple[str, ...] | None:
        """A string or a list of strings, as a tuple."""
        value = parent.get(key)
        if value is None:
            return None
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            self.problem((*path, key), f"expected a list of names, got {_describe(value)}")
            return None
        return tuple(value)

    def choice(
        self, parent: Table, path: KeyPath, key: str, choices: tuple[str, ...]
    ) -> str | None:
        value = self._typed(parent, path, key, str)
        if value is not None and value not in choices:
            self.problem((*path, key), f"{value!r} is not one of {', '.join(choices)}")
            return None
        return value

    def duration(self, parent: Table, path: KeyPath, key: str) -> timedelta | None:
        return self.parsed(parent, path, key, parse_duration)

    def parsed(self, parent: Table, path: KeyPath, key: str, parse: Callable[[str], T]) -> T | None:
        """A string turned into a value by ``parse``; its ``UsageError`` becomes the problem."""
        value = self.text(parent, path, key)
        if value is None:
            return None
        try:
            return parse(value)
        except UsageError as exc:
            self.problem((*path, key), str(exc))
            return None

    def file(self, parent: Table, path: KeyPath, key: str) -> Path | None:
        """A path (relative to the configuration file's folder) to a readable file."""
        value = self.text(parent, path, key)
        if value is None:
            return None
        where = (self.source.parent / Path(value).expanduser()).absolute()
        try:
            with where.open("rb"):
                pass
        except OSError as exc:
            self.problem((*path, key), f"cannot read {where}: {exc.strerror}")
        return where

    def strings(self, parent: Table, path: KeyPath, key: str) -> dict[str, str] | None:
        """A table of string values (storage settings, HTTP headers)."""
        value = self.table(parent, path, key)
        if value is None:
            return None
        bad = [k for k, v in value.items() if not isinstance(v, str)]
        for k in bad:
            self.problem((*path, key, k), f"expected a string, got {_describe(value[k])}")
        return {k: v for k, v in value.items() if k not in bad}

    def _typed(self, parent: Table, path: KeyPath, key: str, kind: type[T]) -> T | None:
        value = parent.get(key)
        if value is None:
            return None
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            self.problem((*path, key), f"expected {_TYPE_NAMES[kind]}, got {_describe(value)}")
            return None
        return value


def _describe(value: object) -> str:
    """``string 'x'``, ``integer 5``, ``boolean true``, ``table``, ``list``."""
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    for kind, name in (
        (str, "string"),
        (int, "integer"),
        (float, "number"),
        (dict, "table"),
        (list, "list"),
    ):
        if isinstance(value, kind):
            return name if isinstance(value, dict | list) else f"{name} {value!r}"
    return type(value).__name__
