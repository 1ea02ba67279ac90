"""Every command's ``--help`` reads as plain text: no reStructuredText markup from docstrings."""

from __future__ import annotations

from collections.abc import Iterator

import click
from click.testing import CliRunner

from surety.cli.main import cli


def _commands(group: click.Command, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    if isinstance(group, click.Group):
        context = click.Context(group)
        for name in group.list_commands(context):  # the top group loads its commands lazily
            command = group.get_command(context, name)
            assert command is not None
            yield from _commands(command, (*path, name))


def test_no_help_text_shows_rst_markup() -> None:
    runner = CliRunner()
    marked = []
    paths = list(_commands(cli))
    for path in paths:
        result = runner.invoke(cli, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        if "``" in result.output or ":func:" in result.output:
            marked.append(" ".join(path) or "surety")
    assert len(paths) > 40  # the walk reached the subcommands
    assert marked == []
