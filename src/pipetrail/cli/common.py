"""What the ``pipetrail`` commands share: exit codes, the error wrapper, option parsers, the store."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import click

from pipetrail.core.bounds import MAX_COUNT, check_time
from pipetrail.errors import DefinitionError, PipetrailError, UsageError

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def errors(func: F) -> F:
    """Turn pipetrail errors into one line on stderr and the right exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except UsageError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_USAGE)
        except PipetrailError as exc:  # the store failing, an artifact unreadable, …
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_FAILED)

    return wrapper  # type: ignore[return-value]


def pairs(values: tuple[str, ...], option: str) -> dict[str, str]:
    result: dict[str, str] = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"{option} expects NAME=VALUE, got {item!r}")
        result[name.strip()] = value
    return result


def count(*, low: int) -> click.IntRange:
    """The type of every count option (limits, parallelism, depths, attempts): from ``low`` to
    the largest count a store takes, so a huge number is a usage error, not a store failure."""
    return click.IntRange(min=low, max=MAX_COUNT)


def since_time(text: str | None, option: str = "--since") -> datetime | None:
    """The time ``text`` names: an ISO date, or a duration back from now (30m, 2h, 7d, 1w).

    Raises:
        UsageError: naming ``option`` and the value, when it is unreadable or out of range.
    """
    if text is None:
        return None
    from pipetrail.dsl import parse_duration

    try:
        return check_time(datetime.fromisoformat(text), option)
    except ValueError:
        pass  # not a date: a duration
    try:
        back = parse_duration(text, what=option, zero_ok=True) or 0.0
    except DefinitionError as exc:
        raise UsageError(f"{exc}; or give an ISO date such as 2026-01-31") from None
    return check_time(datetime.now(UTC) - timedelta(seconds=back), option)


def run_and_step(ref: str) -> tuple[Any, str | None]:
    """The run a pathspec names, and its step part (checked against the run's steps)."""
    from pipetrail.client import Run
    from pipetrail.core.ids import parse_pathspec

    spec = parse_pathspec(ref)
    workspace = workspace_or_nothing(f"run {ref!r}")
    record = workspace.store.get_run(spec.run_id)
    if spec.pipeline is not None and spec.pipeline != record.pipeline:
        raise UsageError(
            f"run {spec.run_id} is {record.pathspec}, not a run of {spec.pipeline!r}; run ids are "
            f"shared by all pipelines: see pipetrail runs list --pipeline {spec.pipeline}"
        )
    run = Run(spec.run_id, reader=workspace.reader())
    if spec.step is not None and spec.step not in run:
        raise UsageError(
            f"run {run.pathspec} has no step {spec.step!r}; steps: {', '.join(s.name for s in run)}"
        )
    return run, spec.step


def asked_runs(refs: tuple[str, ...]) -> str | None:
    """How :func:`workspace_or_nothing` names the runs a command was given, if any."""
    if not refs:
        return None
    return ("run " if len(refs) == 1 else "runs ") + ", ".join(map(repr, refs))


def workspace_or_nothing(asked: str | None = None) -> Any:
    """The configured store, for commands that read or act on recorded runs.

    They never create an embedded store: with nothing recorded yet they say so, naming what was
    ``asked`` for (``"run 'iris/42'"``) when there is one.
    """
    from pipetrail.config import load_settings
    from pipetrail.workspace import open_workspace

    settings = load_settings()
    database = settings.sqlite_file
    if database is not None and not database.exists():
        raise NothingRecorded(
            (f"no {asked}: " if asked else "")
            + f"no runs recorded yet: there is no store at {str(database)!r} (PIPETRAIL_HOME is "
            f"{str(settings.home)!r}); start one with: pipetrail run FILE"
        )
    return open_workspace(settings)


class NothingRecorded(UsageError):
    """The embedded store does not exist yet."""
