"""The command group loads a command's module only when that command runs, and its
table of commands (``surety.cli.main.COMMANDS``) is the commands of the ``*_cmds``
modules: the same names, objects and short help, and ``--help`` lists them as an
eager group of those commands would."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

import surety.cli
from surety.cli.main import COMMANDS, cli


def _real_commands() -> dict[str, tuple[str, click.Command]]:
    """Every command of every ``surety.cli.*_cmds`` module: name -> (module, command)."""
    found: dict[str, tuple[str, click.Command]] = {}
    for module_info in pkgutil.iter_modules(surety.cli.__path__):
        if not module_info.name.endswith("_cmds"):
            continue
        module = importlib.import_module(f"surety.cli.{module_info.name}")
        for command in module.COMMANDS:
            assert command.name is not None
            assert command.name not in found, command.name
            found[command.name] = (module_info.name, command)
    return found


def test_the_table_names_every_command_with_its_short_help_and_nothing_else() -> None:
    real = _real_commands()
    assert sorted(COMMANDS) == sorted(real)
    for name, (module_name, attribute, short_help) in COMMANDS.items():
        real_module, command = real[name]
        assert module_name == real_module, name
        assert getattr(importlib.import_module(f"surety.cli.{module_name}"), attribute) is command
        assert short_help == command.get_short_help_str(sys.maxsize), name
        assert not command.hidden, name  # --help lists every command of the table
        assert not command.deprecated, name


@pytest.mark.parametrize("width", [40, 60, 80, 120])
def test_help_lists_the_commands_as_an_eager_group_does(width: int) -> None:
    eager = click.Group(
        name=cli.name,
        params=cli.params,
        help=cli.help,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    for _module, command in _real_commands().values():
        eager.add_command(command)
    runner = CliRunner()
    lazy_help = runner.invoke(cli, ["--help"], terminal_width=width)
    eager_help = runner.invoke(eager, ["--help"], terminal_width=width)
    assert lazy_help.exit_code == eager_help.exit_code == 0
    assert "  restore  " in lazy_help.output
    assert lazy_help.output == eager_help.output


def test_help_and_version_import_no_command_module() -> None:
    probe = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from surety.cli.main import cli\n"
        "for args in (['--help'], ['--version'], ['restore', 'image', '--help']):\n"
        "    assert CliRunner().invoke(cli, args).exit_code == 0, args\n"
        "    if args[0] == 'restore':\n"
        "        break\n"
        "    loaded = sorted(m for m in sys.modules if m.endswith('_cmds'))\n"
        "    assert loaded == [], (args, loaded)\n"
        "loaded = sorted(m for m in sys.modules if m.endswith('_cmds'))\n"
        "assert loaded == ['surety.cli.restore_cmds'], loaded\n"
        # restore image needs neither the configuration nor restore vm's use cases
        "unneeded = ('surety.config', 'surety.restore.mode', 'surety.restore.vm',\n"
        "            'surety.app.hypervisor', 'surety.catalog')\n"
        "assert [m for m in unneeded if m in sys.modules] == []\n"
    )
    subprocess.run([sys.executable, "-c", probe], check=True)
