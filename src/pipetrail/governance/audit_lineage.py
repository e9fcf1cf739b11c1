"""Which runs an audit covers: the audited run and, transitively, every run whose artifacts it
consumed, found through the lineage graph and through inputs read by content hash."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipetrail.client.lineage_graph import ArtifactNode, LineageEdge, TaskNode, lineage
from pipetrail.client.reader import Reader
from pipetrail.client.runs import Run
from pipetrail.core.model import RunRecord, TaskRecord
from pipetrail.core.status import TaskStatus

__all__ = ["MAX_RUNS", "Upstream", "collect_upstream"]

#: The most runs one audit walks; beyond it the report says the lineage was cut.
MAX_RUNS = 200


@dataclass
class Upstream:
    """The runs of an audit in the order reached (the audited run first) and their graph.

    Attributes:
        runs: run id → record, the audited run first, then upstream runs breadth first.
        tasks: task nodes of the merged graph, by node id.
        artifacts: artifact nodes of the merged graph, by node id.
        edges: data-flow edges of the merged graph.
        producers: content hash → pathspecs of the tasks in other runs that produced an
            input a task read from outside its run (by content hash, ``pt.log_input``).
        truncated: whether :data:`MAX_RUNS` stopped the walk.
    """

    runs: dict[int, RunRecord] = field(default_factory=dict)
    tasks: dict[str, TaskNode] = field(default_factory=dict)
    artifacts: dict[str, ArtifactNode] = field(default_factory=dict)
    edges: dict[tuple[str, str, str], LineageEdge] = field(default_factory=dict)
    producers: dict[str, list[str]] = field(default_factory=dict)
    truncated: bool = False

    def to_dict(self, anchors: dict[str, str]) -> dict[str, Any]:
        """The graph as plain data: nodes (tasks and artifacts) and edges."""
        nodes: list[dict[str, Any]] = []
        outside = self.external_keys()
        for task in self.tasks.values():
            nodes.append(
                {
                    "id": task.id,
                    "kind": "task",
                    "label": task.pathspec,
                    "run": task.run,
                    "step": task.step,
                    "attempt": task.attempt,
                    "status": task.status,
                    "anchor": anchors.get(f"{task.run}/{task.step}"),
                }
            )
        for artifact in self.artifacts.values():
            nodes.append(
                {
                    "id": artifact.id,
                    "kind": "artifact",
                    "label": ", ".join(artifact.names) or artifact.hash[:12],
                    "hash": artifact.hash,
                    "names": list(artifact.names),
                    "external": artifact.external or artifact.hash in outside,
                    "source_uris": list(artifact.source_uris),
                }
            )
        return {
            "runs": [r.pathspec for r in self.runs.values()],
            "truncated": self.truncated,
            "nodes": nodes,
            "edges": [e.to_dict() for e in self.edges.values()],
        }

    def external_keys(self) -> set[str]:
        """Hashes of inputs no task in the graph produced: data from outside every run."""
        produced = {e.target for e in self.edges.values() if e.kind == "produced"}
        consumed = {e.source for e in self.edges.values() if e.kind == "consumed"}
        return {node_id.partition(":")[2] for node_id in consumed - produced}


def collect_upstream(reader: Reader, subject: RunRecord) -> Upstream:
    """The audited run and every run whose artifacts it consumed, transitively.

    Within a pipeline the lineage walk follows upstream steps and the outputs a retried run
    reused from its origin. Across pipelines a task reads another run's output as a file
    (``pt.log_input``): an input whose content hash an earlier completed task of another run
    produced leads to that run, which is walked in turn.
    """
    store = reader.store
    found = Upstream()
    found.runs[subject.id] = subject
    queue = [subject]
    walked: set[int] = set()
    while queue:
        record = queue.pop(0)
        if record.id in walked:
            continue
        walked.add(record.id)
        graph = lineage(Run(record.id, reader=reader), direction="up", reader=reader)
        for task in graph.tasks:
            found.tasks.setdefault(task.id, task)
        for artifact in graph.artifacts:
            found.artifacts.setdefault(artifact.id, artifact)
        for edge in graph.edges:
            found.edges.setdefault((edge.source, edge.target, edge.name), edge)
        _dead_ends(reader, found, record)
        reached = {int(t.run.rsplit("/", 1)[1]) for t in graph.tasks}
        for run_id in sorted(reached - set(found.runs)):
            found.runs[run_id] = store.get_run(run_id)
        for producer in _producers_outside(reader, found):
            if producer.id not in found.runs:
                if len(found.runs) >= MAX_RUNS:
                    found.truncated = True
                    continue
                found.runs[producer.id] = producer
            queue.append(producer)
    return found


def _dead_ends(reader: Reader, found: Upstream, record: RunRecord) -> None:
    """Add the run's tasks that produced nothing the walk followed (a failed step, a step
    whose outputs nothing used) with what they consumed: the drawing shows where it stopped."""
    latest: dict[tuple[str, int], TaskRecord] = {}
    for task in reader.store.tasks(record.id):
        latest[(task.step, task.task_index)] = task
    missing = {t.id: t for t in latest.values() if f"task:{t.id}" not in found.tasks}
    if not missing:
        return
    for task in missing.values():
        node = TaskNode(
            task_id=task.id,
            pathspec=f"{record.pathspec}/{task.step}/{task.task_index}",
            run=record.pathspec,
            step=task.step,
            attempt=task.attempt,
            status=task.status.value,
            params={},
            reused_from=task.reused_from_task_id,
        )
        found.tasks[node.id] = node
    for link in reader.store.links_of_tasks(sorted(missing)):
        artifact = link.artifact
        node_id = f"artifact:{artifact.key}"
        if node_id not in found.artifacts:
            found.artifacts[node_id] = ArtifactNode(
                hash=artifact.key,
                names=(link.name,),
                type_name=artifact.type_name,
                size=artifact.size,
                serializer=artifact.serializer,
                content_type=artifact.content_type,
                source_uris=(link.source_uri,) if link.source_uri else (),
            )
        task_id = f"task:{link.task_id}"
        if link.direction == "input":
            edge = LineageEdge(node_id, task_id, "consumed", link.name)
        else:
            edge = LineageEdge(task_id, node_id, "produced", link.name)
        found.edges.setdefault((edge.source, edge.target, edge.name), edge)


def _producers_outside(reader: Reader, found: Upstream) -> list[RunRecord]:
    """Runs with a task that produced an input the graph's tasks read from outside, before
    they read it; records each such producer in ``found.producers``."""
    store = reader.store
    leaves = sorted(found.external_keys() - set(found.producers))
    if not leaves:
        return []
    consumers: dict[str, set[int]] = {}
    for edge in found.edges.values():
        key = edge.source.partition(":")[2]
        if edge.kind == "consumed" and key in leaves:
            consumers.setdefault(key, set()).add(int(edge.target.partition(":")[2]))
    outputs = [
        link
        for link in store.links_of_artifacts(leaves)
        if link.direction == "output" and f"task:{link.task_id}" not in found.tasks
    ]
    wanted = {link.task_id for link in outputs} | {t for ids in consumers.values() for t in ids}
    records: dict[int, TaskRecord] = {t.id: t for t in store.get_tasks(sorted(wanted))}
    runs: dict[int, RunRecord] = {}
    for key in leaves:
        found.producers[key] = []
        starts = [records[t].started_at for t in consumers.get(key, ()) if t in records]
        first_read = min((s for s in starts if s is not None), default=None)
        for link in outputs:
            task = records.get(link.task_id)
            if link.artifact.key != key or task is None or task.status is not TaskStatus.COMPLETED:
                continue
            if first_read is not None and (
                task.finished_at is None or task.finished_at > first_read
            ):
                continue  # made later: the same bytes, but not where the reader got them
            run = runs.get(task.run_id) or store.get_run(task.run_id)
            runs[run.id] = run
            path = f"{run.pathspec}/{task.step}/{task.task_index}"
            if path not in found.producers[key]:
                found.producers[key].append(path)
    return list(runs.values())
