"""The error tree is public surface: ``__all__``, its docstring and README.md agree with the code.

A new error that is not exported, not drawn in ``core/errors.py``'s tree, or
whose exit code README.md does not document fails here, not in a user's script.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from surety.cli.status_cmds import NEEDS_ATTENTION_EXIT
from surety.core import errors
from surety.core.errors import SuretyError

README = Path(__file__).resolve().parents[3] / "README.md"
TABLE_AFTER = "Errors are one line with a distinct exit code"
TREE_LINE = re.compile(r"^(?P<indent>[ |+-]*)(?P<name>[A-Z]\w+)\s+exit (?P<code>\d+)\b")


def _defined() -> dict[str, type[SuretyError]]:
    """Every ``SuretyError`` class that ``core/errors.py`` itself defines."""
    return {
        name: value
        for name, value in vars(errors).items()
        if isinstance(value, type)
        and issubclass(value, SuretyError)
        and value.__module__ == errors.__name__
    }


def _tree() -> list[tuple[int, str, int]]:
    """(column, name, exit code) of each class drawn in the module docstring, in order."""
    rows = []
    for line in (errors.__doc__ or "").splitlines():
        if match := TREE_LINE.match(line):
            rows.append((match.start("name"), match["name"], int(match["code"])))
    return rows


def _readme_codes() -> list[int]:
    """The exit codes of the markdown table that follows the errors paragraph in README.md."""
    # the sentence may wrap anywhere between its words
    found = re.search(r"\s+".join(TABLE_AFTER.split()), README.read_text())
    assert found, f"README.md no longer says {TABLE_AFTER!r}"
    lines = found.string[found.end() :].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    table = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        table.append([cell.strip() for cell in line.strip("|").split("|")])
    header, rule, *rows = table
    assert header[0] == "exit"
    assert set("".join(rule)) <= set("-: ")
    return [int(row[0]) for row in rows]


def _codes_in_use() -> set[int]:
    """Exit codes an error raised by surety can end with (the base is never raised)."""
    return {cls.exit_code for cls in _defined().values() if cls is not SuretyError}


def test_every_error_class_is_exported_and_nothing_else() -> None:
    assert sorted(errors.__all__) == sorted(_defined())


@pytest.mark.parametrize("name", sorted(_defined()))
def test_each_error_maps_to_exactly_one_exit_code(name: str) -> None:
    code = _defined()[name].exit_code
    assert type(code) is int, f"{name}.exit_code is {code!r}"
    assert 1 <= code <= 255, f"{name}.exit_code {code} is not a process exit status"


def test_the_docstring_tree_draws_every_class_once_with_its_code() -> None:
    drawn = [(name, code) for _column, name, code in _tree()]
    assert len(drawn) == len({name for name, _ in drawn}), "a class is drawn twice"
    assert dict(drawn) == {name: cls.exit_code for name, cls in _defined().items()}


def test_the_docstring_tree_nests_as_the_classes_inherit() -> None:
    parents: list[tuple[int, str]] = []  # (column, name) of the open ancestors
    for column, name, _code in _tree():
        while parents and parents[-1][0] >= column:
            parents.pop()
        base = _defined()[name].__bases__[0]
        expected = parents[-1][1] if parents else "Exception"
        assert base.__name__ == expected, f"{name} is drawn under {expected}, inherits {base}"
        parents.append((column, name))


def test_readme_lists_exactly_the_exit_codes_in_use() -> None:
    listed = _readme_codes()
    assert len(listed) == len(set(listed)), f"README.md lists a code twice: {listed}"
    verdicts = {NEEDS_ATTENTION_EXIT}  # not errors: `surety status` says a person is needed
    assert set(listed) == _codes_in_use() | verdicts
