"""What is wrong with a configuration file: every problem, each naming file, line and key.

A ``Problem`` renders as ``FILE[:LINE]: key.path: why`` (the line is left out when it
cannot be found, the key when the problem is the file itself). ``ConfigError`` carries
all problems of one file: configuration is validated up front and completely, so an
admin fixes everything in one pass instead of one error per restart.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from surety.core.errors import UsageError

__all__ = ["ConfigError", "Problem"]


@dataclass(frozen=True)
class Problem:
    file: Path
    line: int | None
    key: str  # dotted key path, e.g. "policy.nightly.schedule"; "" for the file itself
    why: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else str(self.file)
        return f"{where}: {self.key}: {self.why}" if self.key else f"{where}: {self.why}"

    def as_json(self) -> dict[str, object]:
        return {
            "file": str(self.file),
            "line": self.line,
            "key": self.key,
            "why": self.why,
            "text": str(self),
        }


class ConfigError(UsageError):
    """The configuration file is missing, unreadable or invalid (exit 2): nothing starts."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))
