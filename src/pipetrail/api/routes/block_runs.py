"""Block runs (task attempts): one with its lineage, its logs, and previews of its outputs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from pipetrail.api.deps import BlockRunId, Context
from pipetrail.api.errors import ERROR_RESPONSES
from pipetrail.api.previews import preview
from pipetrail.api.schemas import BlockRunEnvelope, LogsOut, OutputList, OutputPreview
from pipetrail.api.views import block_run_detail

__all__ = ["router"]

router = APIRouter(prefix="/api", tags=["block runs"], responses=ERROR_RESPONSES)


@router.get(
    "/block_runs/{block_run_id}", response_model=BlockRunEnvelope, summary="Get a block run"
)
def get_block_run(ctx: Context, block_run_id: BlockRunId) -> BlockRunEnvelope:
    """One task attempt: status, timing, resources, error with traceback, inputs and outputs."""
    store = ctx.workspace.store
    task = store.get_task(block_run_id)
    run = store.get_run(task.run_id)
    links = store.links_of_tasks([task.id])
    return BlockRunEnvelope(block_run=block_run_detail(task, run.pipeline, links))


@router.get(
    "/block_runs/{block_run_id}/logs", response_model=LogsOut, summary="Get a block run's logs"
)
def get_block_run_logs(
    ctx: Context,
    block_run_id: BlockRunId,
    tail: Annotated[
        int | None, Query(ge=1, le=1_000_000, description="Only the last this many lines.")
    ] = None,
) -> LogsOut:
    """Captured stdout and stderr (read from the store, never from a file path)."""
    store = ctx.workspace.store
    store.get_task(block_run_id)
    logs = store.logs(block_run_id)
    return LogsOut(
        block_run_id=block_run_id,
        stdout=_tail(logs.get("stdout", ""), tail),
        stderr=_tail(logs.get("stderr", ""), tail),
    )


@router.get(
    "/block_runs/{block_run_id}/outputs",
    response_model=OutputList,
    summary="Preview a block run's outputs",
)
def get_block_run_outputs(
    ctx: Context,
    block_run_id: BlockRunId,
    sample_count: Annotated[
        int, Query(ge=1, le=10000, description="Rows, items or lines in each preview.")
    ] = 100,
) -> OutputList:
    """A preview of each output: table rows as records, the head of an array, a small value or
    its repr, the first lines of a text file; each with its content type and download URL."""
    store = ctx.workspace.store
    store.get_task(block_run_id)
    reader = ctx.reader
    links = [k for k in store.links_of_tasks([block_run_id]) if k.direction == "output"]
    return OutputList(
        block_run_id=block_run_id,
        outputs=[
            OutputPreview(**preview(reader, link, sample_count), hash=link.artifact.key)
            for link in links
        ],
    )


def _tail(text: str, lines: int | None) -> str:
    if lines is None:
        return text
    return "".join(text.splitlines(keepends=True)[-lines:])
