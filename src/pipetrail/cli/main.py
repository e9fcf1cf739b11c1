"""The ``pipetrail`` command: a thin shell over the workspace, the engine and the client.

One module per command group (run, runs, inspect: logs and lineage, ui); what they share is in
``cli.common``. A new command group is a new module added to ``cli`` here.
"""

from __future__ import annotations

import sys

import click
from click.exceptions import NoArgsIsHelpError

from pipetrail.cli.common import EXIT_INTERRUPTED, EXIT_OK
from pipetrail.cli.inspect import lineage_command, logs_command
from pipetrail.cli.run import run_command
from pipetrail.cli.runs import runs_group
from pipetrail.cli.scheduler import scheduler_group
from pipetrail.cli.triggers import triggers_group
from pipetrail.cli.ui import ui_command

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="pipetrail")
def cli() -> None:
    """pipetrail: run pipelines and keep a complete record of every run."""


for _command in (
    run_command,
    runs_group,
    lineage_command,
    logs_command,
    ui_command,
    scheduler_group,
    triggers_group,
):
    cli.add_command(_command)


def main() -> None:
    """Entry point of the ``pipetrail`` console script.

    Bad usage that click itself catches (an unknown option, a number out of range) ends like
    every other bad input: one line on stderr, exit 2.
    """
    try:
        code = cli.main(prog_name="pipetrail", standalone_mode=False)
    except NoArgsIsHelpError as exc:  # a bare group: its help, as click shows it
        exc.show()
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        context = exc.ctx if isinstance(exc, click.UsageError) else None
        hint = f" (see: {context.command_path} --help)" if context is not None else ""
        click.echo(f"error: {exc.format_message()}{hint}", err=True)
        sys.exit(exc.exit_code)
    except (click.Abort, KeyboardInterrupt):
        click.echo("interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(code if isinstance(code, int) else EXIT_OK)
