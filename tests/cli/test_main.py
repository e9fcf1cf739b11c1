"""The top-level command: its lazily imported subcommands are what COMMANDS says they are."""

from __future__ import annotations

import importlib
import subprocess
import sys

import click
import pytest

from pipetrail.cli.main import COMMANDS, cli


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_command_is_listed_with_its_own_help(name: str) -> None:
    module, attr, short_help = COMMANDS[name]
    command = getattr(importlib.import_module(module), attr)
    assert isinstance(command, click.Command)
    assert command.name == name
    assert command.get_short_help_str(limit=200) == short_help


def test_help_lists_every_command_without_importing_them() -> None:
    code = (
        "import sys\n"
        "from pipetrail.cli.main import main\n"
        "sys.argv = ['pipetrail', '--help']\n"
        "try:\n"
        "    main()\n"
        "except SystemExit:\n"
        "    pass\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('pipetrail.cli.') "
        "and m not in ('pipetrail.cli.main', 'pipetrail.cli.common', 'pipetrail.cli.__main__'))\n"
        "print('LOADED', loaded)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    for name in COMMANDS:
        assert f"  {name} " in out
    assert "LOADED []" in out


def test_an_unknown_command_is_refused() -> None:
    assert cli.get_command(click.Context(cli), "nope") is None
