"""Lineage: the artifacts and the tasks that produced and consumed them, walked across runs."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable, Sequence
from typing import Any

from pipetrail.client.reader import Reader, resolve_reader
from pipetrail.client.runs import Run
from pipetrail.core.model import ArtifactLink, ArtifactRecord, RunRecord, TaskRecord
from pipetrail.errors import NotFoundError, UsageError
from pipetrail.storage.metadata.base import MetadataStore

__all__ = [
    "MIN_PREFIX",
    "ArtifactNode",
    "LineageEdge",
    "LineageGraph",
    "TaskNode",
    "lineage",
    "resolve_artifact",
]

#: The shortest artifact hash prefix accepted.
MIN_PREFIX = 8

_HEX = re.compile(r"[0-9a-f]+")
_KEY_LENGTH = 64
_DIRECTIONS = ("up", "down")


@dataclasses.dataclass(frozen=True)
class ArtifactNode:
    """An artifact in the graph, by content hash.

    Attributes:
        hash: the content hash.
        names: every name it was produced or consumed under, in the walked links.
        type_name: the stored Python type (``"file"`` or ``"directory"`` for external inputs).
        size: bytes.
        serializer: how it was stored; ``"external"`` for inputs recorded by hash only.
        content_type: its media type.
        source_uris: where external inputs were read from.
    """

    hash: str
    names: tuple[str, ...]
    type_name: str
    size: int
    serializer: str
    content_type: str
    source_uris: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        """The node id: ``artifact:<hash>``."""
        return f"artifact:{self.hash}"

    @property
    def external(self) -> bool:
        """Whether this is a file read from outside the store (``pt.log_input``)."""
        return self.serializer == "external"

    @property
    def source_uri(self) -> str | None:
        """The first place an external input was read from."""
        return self.source_uris[0] if self.source_uris else None

    @property
    def label(self) -> str:
        """Its names (or its short hash when it has none) and short hash."""
        return f"{', '.join(self.names) or '?'} ({self.hash[:12]})"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "id": self.id,
            **_plain(self),
            "external": self.external,
            "source_uri": self.source_uri,
        }


@dataclasses.dataclass(frozen=True)
class TaskNode:
    """A task attempt in the graph, with the parameters and code fingerprint of its step.

    Attributes:
        task_id: the store's task id.
        pathspec: ``pipeline/run/step/index``, e.g. ``"iris/42/train/0"``.
        run: the run's pathspec.
        step: the step name.
        attempt: the attempt number.
        status: the attempt's status.
        params: the run's values of the parameters the step reads.
        source_hash: the step's source fingerprint.
        reused_from: the task whose outputs this one reused (a retried run), if any.
    """

    task_id: int
    pathspec: str
    run: str
    step: str
    attempt: int
    status: str
    params: dict[str, Any]
    source_hash: str | None = None
    reused_from: int | None = None

    @property
    def id(self) -> str:
        """The node id: ``task:<task id>``."""
        return f"task:{self.task_id}"

    @property
    def label(self) -> str:
        """Its pathspec, attempt, status and params."""
        params = ", ".join(f"{k}={json.dumps(v, default=repr)}" for k, v in self.params.items())
        text = f"{self.pathspec} (attempt {self.attempt}, {self.status})"
        return f"{text} {params}" if params else text

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"id": self.id, **_plain(self)}


@dataclasses.dataclass(frozen=True)
class LineageEdge:
    """Data flow: a task ``produced`` an artifact, or an artifact was ``consumed`` by a task.

    Edges point the way data flowed (producer → artifact → consumer) whatever the walk's
    direction. ``name`` is the output or input name on that link.
    """

    source: str
    target: str
    kind: str
    name: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return _plain(self)


def _plain(record: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(record):
        value = getattr(record, f.name)
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


@dataclasses.dataclass(frozen=True)
class LineageGraph:
    """Artifacts and tasks reached from a run or an artifact, walking up or down.

    Attributes:
        target: what was asked for: a run's pathspec or an artifact's full hash.
        target_kind: ``"run"`` or ``"artifact"``.
        direction: ``"up"`` (towards what made it) or ``"down"`` (towards what used it).
        depth: the most task hops walked (``None``: no limit).
        roots: node ids the walk started from (the target artifact, or the run's artifacts).
        artifacts: artifact nodes in the order reached.
        tasks: task nodes in the order reached.
        edges: data-flow edges between them.
        truncated: whether ``depth`` stopped the walk before it ran out of links.
    """

    target: str
    target_kind: str
    direction: str
    depth: int | None
    roots: tuple[str, ...]
    artifacts: tuple[ArtifactNode, ...]
    tasks: tuple[TaskNode, ...]
    edges: tuple[LineageEdge, ...]
    truncated: bool = False

    @property
    def runs(self) -> list[str]:
        """Pathspecs of the runs whose tasks are in the graph, in the order reached."""
        return list(dict.fromkeys(t.run for t in self.tasks))

    @property
    def external_inputs(self) -> list[ArtifactNode]:
        """The external files (``pt.log_input``) in the graph."""
        return [a for a in self.artifacts if a.external]

    def node(self, node_id: str) -> ArtifactNode | TaskNode:
        """The node with this id (``artifact:<hash>`` or ``task:<id>``).

        Raises:
            KeyError: no such node in the graph.
        """
        for node in self._nodes():
            if node.id == node_id:
                return node
        raise KeyError(f"no node {node_id!r} in the lineage of {self.target!r}")

    def _nodes(self) -> list[ArtifactNode | TaskNode]:
        return [*self.artifacts, *self.tasks]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: target, direction, depth, roots, nodes and edges."""
        return {
            "target": self.target,
            "target_kind": self.target_kind,
            "direction": self.direction,
            "depth": self.depth,
            "truncated": self.truncated,
            "roots": list(self.roots),
            "artifacts": [a.to_dict() for a in self.artifacts],
            "tasks": [t.to_dict() for t in self.tasks],
            "edges": [e.to_dict() for e in self.edges],
        }

    def to_dot(self) -> str:
        """Graphviz DOT: boxes for tasks, ellipses for artifacts, notes for external files."""
        lines = ["digraph lineage {", "  rankdir=LR;", '  node [fontname="Helvetica"];']
        for t in self.tasks:
            label = "\n".join([t.pathspec, f"attempt {t.attempt} · {t.status}", *_params(t)])
            lines.append(f"  {_dot(t.id)} [shape=box, label={_dot(label)}];")
        for a in self.artifacts:
            shape = "note" if a.external else "ellipse"
            label = "\n".join([", ".join(a.names), a.hash[:12], *a.source_uris])
            lines.append(f"  {_dot(a.id)} [shape={shape}, label={_dot(label)}];")
        for e in self.edges:
            lines.append(f"  {_dot(e.source)} -> {_dot(e.target)} [label={_dot(e.name)}];")
        lines.append("}")
        return "\n".join(lines) + "\n"

    def to_mermaid(self) -> str:
        """A Mermaid ``flowchart LR``: rectangles for tasks, stadiums for artifacts, and
        parallelograms for external files."""
        lines = ["flowchart LR"]
        for t in self.tasks:
            label = "<br/>".join(
                _mermaid(s) for s in (t.pathspec, f"attempt {t.attempt} · {t.status}", *_params(t))
            )
            lines.append(f'  {_mermaid_id(t.id)}["{label}"]')
        for a in self.artifacts:
            label = "<br/>".join(_mermaid(s) for s in (", ".join(a.names), a.hash[:12]))
            shape = ('[/"', '"/]') if a.external else ('(["', '"])')
            lines.append(f"  {_mermaid_id(a.id)}{shape[0]}{label}{shape[1]}")
        for e in self.edges:
            lines.append(
                f'  {_mermaid_id(e.source)} -->|"{_mermaid(e.name)}"| {_mermaid_id(e.target)}'
            )
        return "\n".join(lines) + "\n"

    def render_tree(self) -> Any:
        """A ``rich.tree.Tree`` rooted at the target: for ``up``, each node's children are what
        made it; for ``down``, what it made or fed. A node reached twice is shown once."""
        from rich.markup import escape
        from rich.tree import Tree

        nodes = {n.id: n for n in self._nodes()}
        children: dict[str, list[str]] = {}
        for e in self.edges:
            above, below = (e.target, e.source) if self.direction == "up" else (e.source, e.target)
            children.setdefault(above, []).append(below)

        def label(node_id: str) -> str:
            node = nodes[node_id]
            if isinstance(node, TaskNode):
                return f"[bold]{escape(node.label)}[/]"
            style = "yellow" if node.external else "cyan"
            where = f" ← {escape(node.source_uri)}" if node.source_uri else ""
            return f"[{style}]{escape(node.label)}[/] {escape(node.type_name)}{where}"

        if self.target_kind == "run" or not self.roots:
            root = Tree(f"[bold]run {escape(self.target)}[/] ({self.direction})")
            # Start from the run's artifacts nothing else in the graph leads to.
            leading = {child for kids in children.values() for child in kids}
            starts = [r for r in self.roots if r not in leading] or list(self.roots)
        else:
            root = Tree(label(self.roots[0]))
            starts = children.get(self.roots[0], [])
        shown: set[str] = set() if self.target_kind == "run" else set(self.roots)
        stack: list[tuple[str, Tree]] = [(node_id, root) for node_id in reversed(starts)]
        while stack:
            node_id, parent = stack.pop()
            if node_id in shown:
                parent.add(f"{label(node_id)} [dim](see above)[/]")
                continue
            shown.add(node_id)
            branch = parent.add(label(node_id))
            stack.extend((child, branch) for child in reversed(children.get(node_id, [])))
        return root


def _params(task: TaskNode) -> list[str]:
    return [f"{k}={json.dumps(v, default=repr)}" for k, v in task.params.items()]


def _dot(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _mermaid(text: str) -> str:
    escapes = (("#", "#35;"), ("&", "#amp;"), ('"', "#quot;"), ("<", "#lt;"), (">", "#gt;"))
    for raw, entity in escapes:
        text = text.replace(raw, entity)
    return text


def _mermaid_id(node_id: str) -> str:
    kind, _, value = node_id.partition(":")
    return f"{kind[0]}_{value}"


def lineage(
    target: Run | str | int,
    *,
    direction: str = "up",
    depth: int | None = None,
    reader: Reader | None = None,
) -> LineageGraph:
    """The lineage graph of a run or an artifact, across runs.

    ``up`` walks from artifacts to the tasks that produced them, to those tasks' inputs, and
    on to the tasks that produced those, down to external files (``pt.log_input``, by content
    hash). ``down`` walks from artifacts to every task, in any run, that consumed them, to
    what those tasks produced, and on.

    For a run, ``up`` starts from every artifact the run produced and ``down`` from every
    artifact it consumed or produced. An artifact is named by its content hash, in full or
    by a unique prefix of at least :data:`MIN_PREFIX` hex characters (so a run id of eight
    digits or more must be written as a pathspec, ``"iris/12345678"``).

    Each hop reads a whole frontier with one store call per kind of fact (links of
    artifacts, links of tasks, tasks), plus one read per run newly reached.

    Args:
        target: a Run, a run pathspec (``"iris/42"``) or id, or an artifact hash (prefix).
        direction: ``"up"`` or ``"down"``.
        depth: the most task hops to walk; ``None`` for no limit, 0 for the start alone.
        reader: the stores; the target run's, or the configured ones, by default.

    Returns:
        The graph.

    Raises:
        UsageError: a bad direction or depth, or an unknown, ambiguous or too short prefix.
        NotFoundError: no such run or artifact.
    """
    if direction not in _DIRECTIONS:
        raise UsageError(f"lineage direction must be 'up' or 'down', got {direction!r}")
    if depth is not None and (isinstance(depth, bool) or depth < 0):
        raise UsageError(f"lineage depth must be a whole number ≥ 0 or None, got {depth!r}")
    if isinstance(target, str) and _is_hash(target):
        store = resolve_reader(reader).store
        record = resolve_artifact(store, target)
        walk = _Walk(store, direction, depth)
        walk.see_artifact(record)
        roots: list[tuple[str, int | None]] = [(record.key, None)]
        label, kind = record.key, "artifact"
    else:
        run = target if isinstance(target, Run) else Run(target, reader=reader)
        store = run._reader.store
        walk = _Walk(store, direction, depth)
        walk.see_run(run.record)
        links = run._link_records()
        if direction == "up":
            starts = [link for link in links if link.direction == "output"]
            roots = [(link.artifact.key, link.task_id) for link in starts]
        else:
            starts = list(links)
            roots = [(link.artifact.key, None) for link in starts]
        for link in starts:
            walk.see_link(link)
        label, kind = run.pathspec, "run"
    walk.run(roots)
    return walk.graph(label, kind, [key for key, _ in roots])


def resolve_artifact(store: MetadataStore, text: str) -> ArtifactRecord:
    """The artifact whose content hash is ``text`` or starts with it.

    Args:
        store: the metadata store.
        text: a full hash (64 hex characters) or a prefix of at least :data:`MIN_PREFIX`.

    Raises:
        UsageError: not hex, too short, or a prefix that matches several artifacts.
        NotFoundError: no artifact has that hash or prefix.
    """
    prefix = text.strip().lower()
    if not _HEX.fullmatch(prefix) or len(prefix) > _KEY_LENGTH:
        raise UsageError(f"{text!r} is not an artifact hash: expected up to 64 hex characters")
    if len(prefix) < MIN_PREFIX:
        raise UsageError(
            f"artifact hash prefix {text!r} is too short: give at least {MIN_PREFIX} characters"
        )
    if len(prefix) == _KEY_LENGTH:
        try:
            return store.artifact(prefix)
        except NotFoundError:
            raise NotFoundError(f"no artifact {text!r} in the store") from None
    found = store.artifacts_by_prefix(prefix, 2)
    if not found:
        raise NotFoundError(f"no artifact in the store has a hash starting with {text!r}")
    if len(found) > 1:
        matches = ", ".join(f"{r.key[:16]}…" for r in found)
        raise UsageError(
            f"artifact hash prefix {text!r} is ambiguous: it matches {matches}; "
            "give more characters"
        )
    return found[0]


def _is_hash(text: str) -> bool:
    # Run ids are digits: a hash is told apart by length or by a letter in it.
    lowered = text.strip().lower()
    return bool(_HEX.fullmatch(lowered)) and (len(lowered) >= MIN_PREFIX or not lowered.isdigit())


class _Walk:
    """Breadth-first over task hops, one store call per frontier and kind of fact."""

    def __init__(self, store: MetadataStore, direction: str, depth: int | None) -> None:
        self.store = store
        self.direction = direction
        self.depth = depth
        self.truncated = False
        self.records: dict[str, ArtifactRecord] = {}
        self.names: dict[str, dict[str, None]] = {}
        self.uris: dict[str, dict[str, None]] = {}
        self.tasks: dict[int, TaskRecord] = {}
        self.task_links: dict[int, list[ArtifactLink]] = {}
        self.runs: dict[int, RunRecord] = {}
        self.edges: dict[tuple[str, str, str], LineageEdge] = {}

    def see_artifact(self, record: ArtifactRecord) -> None:
        self.records.setdefault(record.key, record)
        self.names.setdefault(record.key, {})
        self.uris.setdefault(record.key, {})

    def see_link(self, link: ArtifactLink) -> None:
        self.see_artifact(link.artifact)
        self.names[link.artifact.key][link.name] = None
        if link.source_uri and link.kind == "external":
            self.uris[link.artifact.key][link.source_uri] = None

    def see_run(self, record: RunRecord) -> None:
        self.runs[record.id] = record

    def run(self, roots: Sequence[tuple[str, int | None]]) -> None:
        if self.direction == "up":
            self._up(set(roots))
        else:
            self._down({key for key, _ in roots})

    def _up(self, frontier: set[tuple[str, int | None]]) -> None:
        seen = set(frontier)
        hops = 0
        while frontier:
            # Which task produced each artifact: known from the consuming link, else looked up.
            producers: dict[int, set[str]] = {}
            for key, hint in frontier:
                if hint is not None:
                    producers.setdefault(hint, set()).add(key)
            unknown = sorted({k for k, hint in frontier if hint is None and not self._external(k)})
            for link in self.store.links_of_artifacts(unknown):
                if link.direction == "output":
                    producers.setdefault(link.task_id, set()).add(link.artifact.key)
            new = [t for t in producers if t not in self.tasks]
            if new and self.depth is not None and hops >= self.depth:
                self.truncated = True
                new = []
            hops += 1
            self._fetch(new)
            frontier = set()
            for task_id, keys in producers.items():
                for link in self.task_links.get(task_id, ()):
                    if link.direction == "output" and link.artifact.key in keys:
                        self._edge(link)
                        origin = link.producer_task_id
                        if task_id in new and origin is not None and origin != task_id:
                            frontier.add((link.artifact.key, origin))
            for task_id in new:
                for link in self.task_links[task_id]:
                    if link.direction == "input":
                        self._edge(link)
                        if link.kind != "external":
                            frontier.add((link.artifact.key, link.producer_task_id))
            frontier -= seen
            seen |= frontier

    def _down(self, frontier: set[str]) -> None:
        seen = set(frontier)
        hops = 0
        while frontier:
            consumers: dict[int, set[str]] = {}
            for link in self.store.links_of_artifacts(sorted(frontier)):
                if link.direction == "input":
                    consumers.setdefault(link.task_id, set()).add(link.artifact.key)
            new = [t for t in consumers if t not in self.tasks]
            if new and self.depth is not None and hops >= self.depth:
                self.truncated = True
                new = []
            hops += 1
            self._fetch(new)
            for task_id, keys in consumers.items():
                for link in self.task_links.get(task_id, ()):
                    if link.direction == "input" and link.artifact.key in keys:
                        self._edge(link)
            frontier = set()
            for task_id in new:
                for link in self.task_links[task_id]:
                    if link.direction == "output":
                        self._edge(link)
                        frontier.add(link.artifact.key)
            frontier -= seen
            seen |= frontier

    def _external(self, key: str) -> bool:
        record = self.records.get(key)
        return record is not None and record.serializer == "external"

    def _fetch(self, task_ids: Iterable[int]) -> None:
        ids = sorted(set(task_ids))
        if not ids:
            return
        for record in self.store.get_tasks(ids):
            self.tasks[record.id] = record
            if record.run_id not in self.runs:
                self.runs[record.run_id] = self.store.get_run(record.run_id)
        for task_id in ids:
            self.task_links.setdefault(task_id, [])
        for link in self.store.links_of_tasks(ids):
            self.task_links[link.task_id].append(link)

    def _edge(self, link: ArtifactLink) -> None:
        self.see_link(link)
        task, artifact = f"task:{link.task_id}", f"artifact:{link.artifact.key}"
        if link.direction == "output":
            edge = LineageEdge(task, artifact, "produced", link.name)
        else:
            edge = LineageEdge(artifact, task, "consumed", link.name)
        self.edges.setdefault((edge.source, edge.target, edge.name), edge)

    def graph(self, target: str, kind: str, roots: Sequence[str]) -> LineageGraph:
        artifacts = tuple(
            ArtifactNode(
                hash=r.key,
                names=tuple(self.names[r.key]),
                type_name=r.type_name,
                size=r.size,
                serializer=r.serializer,
                content_type=r.content_type,
                source_uris=tuple(self.uris[r.key]),
            )
            for r in self.records.values()
        )
        return LineageGraph(
            target=target,
            target_kind=kind,
            direction=self.direction,
            depth=self.depth,
            roots=tuple(dict.fromkeys(f"artifact:{key}" for key in roots)),
            artifacts=artifacts,
            tasks=tuple(self._task_node(t) for t in self.tasks.values()),
            edges=tuple(self.edges.values()),
            truncated=self.truncated,
        )

    def _task_node(self, task: TaskRecord) -> TaskNode:
        run = self.runs[task.run_id]
        steps: list[dict[str, Any]] = run.dag.get("steps", [])
        step = next((s for s in steps if s.get("name") == task.step), {})
        params = {name: run.params[name] for name in step.get("params", ()) if name in run.params}
        return TaskNode(
            task_id=task.id,
            pathspec=f"{run.pathspec}/{task.step}/{task.task_index}",
            run=run.pathspec,
            step=task.step,
            attempt=task.attempt,
            status=task.status.value,
            params=params,
            source_hash=step.get("source_hash"),
            reused_from=task.reused_from_task_id,
        )
