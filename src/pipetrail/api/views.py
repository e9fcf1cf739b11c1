"""Core records → API schemas: the read-only views the routes return."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import quote

from pipetrail.api.previews import artifact_url
from pipetrail.api.schemas import (
    AlertOut,
    ArtifactLinkOut,
    BlockRunDetail,
    BlockRunOut,
    DagEdge,
    DagOut,
    EventOut,
    ParamOut,
    PipelineDetail,
    PipelineRunDetail,
    PipelineRunOut,
    PipelineSummary,
    ResourcesOut,
    RunCostOut,
    RunRef,
    RunSlaOut,
    RunTriggerOut,
    StepOut,
    TickOut,
    TriggerDetail,
    TriggerOut,
    VersionOut,
)
from pipetrail.client.runs import RunTrigger, sla_of
from pipetrail.core.cost import run_cost, user_metrics_first
from pipetrail.core.model import ArtifactLink, EventRecord, PipelineSpec, RunRecord, TaskRecord
from pipetrail.core.status import RUN_TERMINAL, RunStatus
from pipetrail.scheduling.service import TriggerOverview
from pipetrail.scheduling.spec import to_fields
from pipetrail.storage.metadata.base import MetadataStore

__all__ = [
    "block_run_detail",
    "block_run_out",
    "link_out",
    "pipeline_detail",
    "pipeline_summaries",
    "run_detail",
    "run_out",
    "run_ref",
    "trigger_detail",
    "trigger_out",
    "trigger_url",
]


def _run_fields(run: RunRecord) -> dict[str, Any]:
    return {
        "id": run.id,
        "pathspec": run.pathspec,
        "pipeline": run.pipeline,
        "version": run.version,
        "status": run.status,
        "created_at": run.created_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "duration_s": run.duration_s,
        "user": run.user,
        "host": run.host,
        "trigger": RunTriggerOut(**RunTrigger.of(run).to_dict()),
        "sla": _sla(run),
        "params": run.params,
        "param_types": run.param_types,
        "variables": run.variables,
        "tags": list(run.user_tags),
        "system_tags": list(run.system_tags),
        "origin_run_id": run.origin_run_id,
        # Retries and reproductions are runs of the same pipeline.
        "origin_pathspec": (
            f"{run.pipeline}/{run.origin_run_id}" if run.origin_run_id is not None else None
        ),
        "error": run.error,
        "cancel_requested_at": run.cancel_requested_at,
        "heartbeat_at": run.heartbeat_at,
        "timeout_s": run.timeout_s,
        "block_runs_url": f"/api/pipeline_runs/{run.id}/block_runs",
    }


def _sla(run: RunRecord) -> RunSlaOut | None:
    sla = sla_of(run)
    return RunSlaOut(**sla) if sla is not None else None


def run_out(run: RunRecord) -> PipelineRunOut:
    """The list view of a run."""
    return PipelineRunOut(**_run_fields(run))


def run_detail(
    run: RunRecord,
    metrics: dict[str, float],
    events: Sequence[EventRecord],
    tasks: Sequence[TaskRecord] = (),
) -> PipelineRunDetail:
    """The full view of a run; its cost from ``tasks`` (every attempt: ``store.tasks(id)``)."""
    now = None if run.status in RUN_TERMINAL else datetime.now(UTC)
    return PipelineRunDetail(
        **_run_fields(run),
        metrics=user_metrics_first(metrics),
        cost=RunCostOut.model_validate(run_cost(run, tasks, now=now).to_dict()),
        git=run.git,
        code_key=run.code_key,
        environment_hash=run.environment_hash,
        dag=run.dag,
        events=[
            EventOut(
                at=e.at,
                block_run_id=e.task_id,
                kind=e.kind,
                status=e.status,
                previous=e.previous,
                message=e.message,
                actor=e.actor,
            )
            for e in events
        ],
    )


def _task_fields(task: TaskRecord, pipeline: str) -> dict[str, Any]:
    return {
        "id": task.id,
        "pipeline_run_id": task.run_id,
        "pathspec": f"{pipeline}/{task.run_id}/{task.step}/{task.task_index}",
        "step": task.step,
        "task_index": task.task_index,
        "attempt": task.attempt,
        "status": task.status,
        "created_at": task.created_at,
        "started_at": task.started_at,
        "finished_at": task.finished_at,
        "duration_s": task.duration_s,
        "resources": ResourcesOut(
            cpu_time_s=task.cpu_time_s,
            peak_memory_bytes=task.peak_memory_bytes,
            gpu_peak_memory_bytes=task.gpu_peak_memory_bytes,
            gpu_time_s=task.gpu_time_s,
            host=task.host,
            pid=task.pid,
            worker=task.worker,
        ),
        "exception_type": task.exception_type,
        "exception_message": task.exception_message,
        "failed_upstream": task.failed_upstream,
        "reused_from_block_run_id": task.reused_from_task_id,
        "allowed_failure": task.allowed_failure,
        "note": task.note,
        "logs_url": f"/api/block_runs/{task.id}/logs",
        "outputs_url": f"/api/block_runs/{task.id}/outputs",
    }


def block_run_out(task: TaskRecord, pipeline: str) -> BlockRunOut:
    """The list view of a block run."""
    return BlockRunOut(**_task_fields(task, pipeline))


def link_out(link: ArtifactLink) -> ArtifactLinkOut:
    """An artifact edge with its download URL (none for external inputs)."""
    record = link.artifact
    return ArtifactLinkOut(
        name=link.name,
        direction="input" if link.direction == "input" else "output",
        kind=link.kind,
        hash=record.key,
        size=record.size,
        serializer=record.serializer,
        content_type=record.content_type,
        type_name=record.type_name,
        source_uri=link.source_uri,
        producer_block_run_id=link.producer_task_id,
        download_url=None if record.serializer == "external" else artifact_url(record.key),
    )


def block_run_detail(
    task: TaskRecord, pipeline: str, links: Sequence[ArtifactLink]
) -> BlockRunDetail:
    """The full view of a block run with its inputs and outputs."""
    mine = [link for link in links if link.task_id == task.id]
    return BlockRunDetail(
        **_task_fields(task, pipeline),
        traceback=task.traceback,
        inputs=[link_out(k) for k in mine if k.direction == "input"],
        outputs=[link_out(k) for k in mine if k.direction == "output"],
    )


def pipeline_summaries(store: MetadataStore) -> list[PipelineSummary]:
    """One summary per pipeline, sorted by name, from one aggregate query and its newest runs."""
    summaries = []
    for stats in store.pipeline_stats():
        latest = store.get_run(stats.latest_run_id)
        summaries.append(
            PipelineSummary(
                name=stats.name,
                run_count=sum(stats.counts.values()),
                run_counts={s.value: stats.counts.get(s.value, 0) for s in RunStatus},
                latest_run_id=latest.id,
                latest_status=latest.status,
                latest_created_at=latest.created_at,
                version=latest.version,
                url=f"/api/pipelines/{stats.name}",
            )
        )
    return summaries


def pipeline_detail(store: MetadataStore, name: str) -> PipelineDetail | None:
    """A pipeline from aggregates of its runs: steps and DAG as the latest run had them."""
    found = store.pipeline_stats(name)
    if not found:
        return None
    stats = found[0]
    latest = store.get_run(stats.latest_run_id)
    spec = PipelineSpec.from_dict(latest.dag) if latest.dag.get("steps") else None
    steps = list(spec.steps) if spec else []
    return PipelineDetail(
        name=name,
        run_count=sum(stats.counts.values()),
        run_counts={s.value: stats.counts.get(s.value, 0) for s in RunStatus},
        latest_run_id=latest.id,
        latest_status=latest.status,
        latest_created_at=latest.created_at,
        version=latest.version,
        url=f"/api/pipelines/{name}",
        file=spec.file if spec else None,
        steps=[
            StepOut(
                name=s.name,
                upstream=list(s.upstream),
                params=list(s.params),
                outputs=list(s.outputs),
                retries=s.retries,
                timeout_s=s.timeout_s,
                foreach=s.foreach,
                condition=s.condition,
                allow_failure=s.allow_failure,
                file=s.file,
                line=s.line,
            )
            for s in steps
        ],
        dag=DagOut(
            nodes=[s.name for s in steps],
            edges=[DagEdge(source=up, target=s.name) for s in steps for up in s.upstream],
        ),
        params=[
            ParamOut(name=p.name, type=p.type, default=p.default, steps=list(p.steps))
            for p in (spec.params if spec else ())
        ],
        versions=[
            VersionOut(
                version=v.version,
                run_count=v.run_count,
                first_seen_at=v.first_seen_at,
                last_seen_at=v.last_seen_at,
                latest_run_id=v.latest_run_id,
            )
            for v in store.pipeline_versions(name)
        ],
    )


def run_ref(run: RunRecord) -> RunRef:
    """A run, briefly: id, pathspec and status."""
    return RunRef(id=run.id, pathspec=run.pathspec, status=run.status)


_ALERT_STATES: dict[str, Literal["delivered", "failed", "pending"]] = {
    "delivered": "delivered",
    "failed": "failed",
    "pending": "pending",
}


def trigger_url(name: str) -> str:
    """Where trigger ``name`` is (its name percent-encoded: any text may name a trigger)."""
    return f"/api/triggers/{quote(name, safe='')}"


def _trigger_fields(overview: TriggerOverview) -> dict[str, Any]:
    record = overview.record
    return {
        "name": record.name,
        "definition": to_fields(record.definition),
        "kind": record.definition.kind,
        "schedule": overview.schedule,
        "paused": record.paused,
        "next_at": overview.next_at,
        "last_run": run_ref(overview.last_run) if overview.last_run is not None else None,
        "sla_missed": overview.sla_missed,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "url": trigger_url(record.name),
        "runs_url": f"{trigger_url(record.name)}/runs",
    }


def trigger_out(overview: TriggerOverview) -> TriggerOut:
    """The list view of a trigger (from ``TriggerService.overview``)."""
    return TriggerOut(**_trigger_fields(overview))


def trigger_detail(overview: TriggerOverview) -> TriggerDetail:
    """A trigger with its recent ticks, alerts and next fire times (``overview(detail=True)``)."""
    runs = overview.runs
    return TriggerDetail(
        **_trigger_fields(overview),
        ticks=[
            TickOut(
                scheduled_at=t.scheduled_at,
                claimed_at=t.claimed_at,
                run=run_ref(runs[t.run_id]) if t.run_id in runs else None,
                skip_reason=t.skip_reason,
                note=t.note,
            )
            for t in overview.ticks
        ],
        alerts=[
            AlertOut(
                event=a.event,
                notifier=a.notifier,
                state=_ALERT_STATES.get(a.state, "pending"),
                attempts=a.attempts,
                last_error=a.last_error,
                run_id=a.run_id,
                created_at=a.created_at,
            )
            for a in overview.alerts
        ],
        upcoming=list(overview.upcoming),
    )
