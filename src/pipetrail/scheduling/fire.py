"""A trigger's tick into a run: the request (pipeline, params, cause) and, fired by hand, the tick.

The scheduler claims a tick and spawns a process that calls :func:`tick_request` then runs it;
``triggers run`` and the REST call claim a tick of their own with :func:`fire_now`. Either way
the run is bound to its tick in the run's own transaction (``NewRun.tick_trigger_id``), so a
tick never becomes two runs.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipetrail.core.model import RunCause, RunRecord
from pipetrail.errors import UsageError
from pipetrail.runtime.engine import Engine, RunRequest
from pipetrail.scheduling.alerts import AlertCenter
from pipetrail.storage.metadata.base import MetadataStore, TriggerRecord

__all__ = ["fire_now", "launcher_id", "open_tick", "tick_request"]


def launcher_id() -> tuple[str, int]:
    """This process, as a tick's launcher: (host, pid)."""
    return socket.gethostname(), os.getpid()


def tick_request(
    record: TriggerRecord,
    scheduled_at: datetime,
    *,
    kind: str | None = None,
    upstream: RunRecord | None = None,
    params: Mapping[str, Any] | None = None,
    variables: Mapping[str, str] | None = None,
) -> RunRequest:
    """The run of ``record``'s tick at ``scheduled_at``, bound to that tick.

    ``kind`` is what the run records as its trigger (the trigger's kind unless fired by hand:
    ``manual``); ``params``/``variables`` override the trigger's for this run only. Variables
    gain ``scheduled_at`` (and ``upstream_run`` for an ``after`` trigger), so a step can read the
    data of its slot.

    Raises:
        PipelineLoadError: the file is missing, does not import, or lacks the pipeline.
        ParameterError: an unknown parameter or a value of the wrong type.
    """
    from pipetrail.runtime.loader import load_pipeline_file

    d = record.definition
    pipeline = load_pipeline_file(Path(d.pipeline_file), d.pipeline_name)
    resolved = pipeline.resolve_params({**d.params, **(params or {})})
    merged = {**d.variables, **(variables or {})}
    merged["scheduled_at"] = scheduled_at.astimezone(UTC).isoformat()
    if upstream is not None:
        merged["upstream_run"] = upstream.pathspec
    return RunRequest(
        pipeline=pipeline,
        params=resolved,
        variables=merged,
        tags=d.tags,
        trigger=kind or d.kind,
        timeout_s=d.timeout_s,
        on_timeout=d.on_timeout,
        cause=RunCause(
            trigger=d.name,
            scheduled_at=scheduled_at,
            upstream_run_id=upstream.id if upstream is not None else None,
            upstream_pathspec=upstream.pathspec if upstream is not None else None,
        ),
        tick_trigger_id=record.id,
        sla_s=d.sla_s,
        trigger_limit=d.max_concurrent,
    )


def fire_now(
    store: MetadataStore,
    engine: Engine,
    record: TriggerRecord,
    *,
    params: Mapping[str, Any] | None = None,
    variables: Mapping[str, str] | None = None,
    user: str | None = None,
) -> tuple[RunRecord, RunRequest]:
    """Fire ``record`` once, now ("run once"): claim a tick at this moment and record its run,
    started by ``user`` (a token's user over REST; the local user when None).

    The run's trigger kind is ``api`` for an api trigger (it runs only when called), else
    ``manual`` (a scheduled trigger fired by hand or over REST).

    The run is prepared (recorded in ``initial``), not executed: the caller runs it in the
    foreground (CLI) or the background (REST). Bad parameters are refused before the tick is
    claimed, so they leave nothing behind.

    Raises:
        PipelineLoadError, ParameterError: from :func:`tick_request`.
        UsageError: the trigger is paused (resume it first) or its tick was taken.
    """
    if record.paused:
        raise UsageError(f"trigger {record.name!r} is paused; resume it first to fire it")
    kind = "api" if record.definition.kind == "api" else "manual"
    at = datetime.now(UTC)
    request = tick_request(record, at, kind=kind, params=params, variables=variables)
    while not store.claim_tick(record.id, at, launcher=launcher_id(), note=f"fired: {kind}"):
        at = datetime.now(UTC)  # the same microsecond as another fire: take the next one
        request = tick_request(record, at, kind=kind, params=params, variables=variables)
    request = dataclasses.replace(request, user=user)
    try:
        run = engine.prepare(request)
    except Exception as exc:
        # The tick is claimed: say why it has no run rather than leave it open.
        store.settle_tick(record.id, at, skip_reason=f"could not start: {exc}")
        raise
    return run, request


def open_tick(
    store: MetadataStore,
    name: str,
    scheduled_at: datetime,
    *,
    upstream_run_id: int | None = None,
    alerts: AlertCenter | None = None,
    base_url: str | None = None,
) -> RunRequest | str:
    """The request of a claimed tick a scheduler asked this process to start, or why not.

    A tick that has its run already (or was skipped) gives the reason text; one whose pipeline
    cannot be loaded, or whose parameters no longer fit, is settled with ``could not start: …``
    (and a ``start_failed`` alert) and gives that reason.

    Raises:
        NotFoundError: the trigger was deleted meanwhile.
    """
    record = store.get_trigger(name)
    tick = store.get_tick(record.id, scheduled_at)
    if tick is None or tick.settled:
        return f"tick {scheduled_at.isoformat()} of {name!r} is not open; nothing to do"
    try:
        upstream = store.get_run(upstream_run_id) if upstream_run_id is not None else None
        return tick_request(record, scheduled_at, upstream=upstream)
    except UsageError as exc:
        reason = f"could not start: {exc}"
        if store.settle_tick(record.id, scheduled_at, skip_reason=reason) and alerts is not None:
            alerts.start_failed(record, scheduled_at, reason, base_url=base_url)
        return reason
