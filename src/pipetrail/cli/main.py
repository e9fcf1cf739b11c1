"""The ``pipetrail`` command: a thin shell over the workspace, the engine and the client.

One module per command group (run, runs, inspect: logs and lineage, ui, ...); what they share
is in ``cli.common``. A new command group is a new module and a line in ``COMMANDS``.
"""

from __future__ import annotations

import importlib
import sys

import click
from click.exceptions import NoArgsIsHelpError

from pipetrail.cli.common import EXIT_INTERRUPTED, EXIT_OK

__all__ = ["COMMANDS", "cli", "main"]

# Each command: the module and attribute that define it, and its one-line help. A command's
# module is imported only when that command runs (``pipetrail --help`` imports none of them);
# tests/cli/test_main.py checks each line here against the command's own help.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "run": (
        "pipetrail.cli.run",
        "run_command",
        "Run the pipeline in FILE (naming PIPELINE when the file defines several).",
    ),
    "runs": (
        "pipetrail.cli.runs",
        "runs_group",
        "List, inspect, compare, retry, reproduce, cancel and delete recorded runs.",
    ),
    "gc": (
        "pipetrail.cli.retention",
        "gc_command",
        "Remove artifacts, code snapshots and rows that no remaining run or model version uses.",
    ),
    "lineage": (
        "pipetrail.cli.inspect",
        "lineage_command",
        "The graph of artifacts and the tasks that produced and consumed them, across runs.",
    ),
    "logs": (
        "pipetrail.cli.inspect",
        "logs_command",
        "Captured stdout/stderr of RUN's tasks (or of STEP's), also while they run.",
    ),
    "ui": (
        "pipetrail.cli.ui",
        "ui_command",
        "Serve the REST API and the dashboard over the configured store.",
    ),
    "scheduler": (
        "pipetrail.cli.scheduler",
        "scheduler_group",
        "Fire the triggers' ticks as runs, watch SLAs and send alerts, until Ctrl-C or SIGTERM.",
    ),
    "triggers": (
        "pipetrail.cli.triggers",
        "triggers_group",
        "Run pipelines on a schedule, after other pipelines, or when called over REST.",
    ),
    "tokens": (
        "pipetrail.cli.tokens",
        "tokens_group",
        "Named API tokens with roles: create (shown once), list and revoke them.",
    ),
    "models": (
        "pipetrail.cli.models",
        "models_group",
        "Register model versions, point aliases at them, and promote them with approvals.",
    ),
    "audit": (
        "pipetrail.cli.audit",
        "audit_command",
        "Write the audit report of a model version or a run: its lineage, code, data and approvals.",
    ),
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported when used, from ``COMMANDS``."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        module, attr, _ = entry
        command = getattr(importlib.import_module(module), attr)
        assert isinstance(command, click.Command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="pipetrail")
def cli() -> None:
    """pipetrail: run pipelines and keep a complete record of every run."""


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
