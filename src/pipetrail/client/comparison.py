"""Compare runs: params, metrics, step code, environment, artifacts and data inputs."""

from __future__ import annotations

import dataclasses
import difflib
import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from pipetrail.client.reader import Reader
from pipetrail.client.runs import Run
from pipetrail.core.model import ArtifactLink
from pipetrail.errors import UsageError

if TYPE_CHECKING:
    from pipetrail.provenance.environment import PackageDiff

__all__ = [
    "ArtifactDiff",
    "Comparison",
    "EnvironmentDiff",
    "FieldDiff",
    "InputDiff",
    "MetricDiff",
    "ParamDiff",
    "StepCodeDiff",
    "compare",
    "render",
]


class _Record:
    """JSON conversion shared by the comparison's records."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: tuples become lists, nested records dicts."""
        plain: dict[str, Any] = _plain(self)
        return plain


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: _plain(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if not f.name.startswith("_")
        }
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


@dataclasses.dataclass(frozen=True)
class ParamDiff(_Record):
    """One parameter across the compared runs (nested values flattened to dotted names).

    Attributes:
        name: the parameter name, e.g. ``"lr"`` or ``"model.depth"``.
        values: its value in each run, in run order; ``None`` where ``present`` is False.
        present: whether each run has the parameter at all.
        differs: whether any two runs disagree (a missing parameter differs from any value).
    """

    name: str
    values: tuple[Any, ...]
    present: tuple[bool, ...]
    differs: bool


@dataclasses.dataclass(frozen=True)
class MetricDiff(_Record):
    """The latest value of one metric across the compared runs.

    Attributes:
        name: the metric name.
        values: its latest value in each run, ``None`` where the run did not log it.
        differs: whether any two runs disagree.
        delta: second minus first (two runs, both logged), else ``None``.
        relative: ``delta / |first|`` when the first is non-zero, else ``None``.
    """

    name: str
    values: tuple[float | None, ...]
    differs: bool
    delta: float | None = None
    relative: float | None = None


@dataclasses.dataclass(frozen=True)
class StepCodeDiff(_Record):
    """How one step's source differs between two runs.

    Attributes:
        step: the step name.
        status: ``"same"``, ``"changed"``, ``"added"`` (only in the second run) or ``"removed"``.
        changed: whether the step's source text is not the same in both runs.
        diff: unified diff of the step's source, first run to second (empty when the same).
        source_hashes: each run's source fingerprint (comment- and docstring-insensitive).
    """

    step: str
    status: str
    changed: bool
    diff: str
    source_hashes: tuple[str | None, str | None]


@dataclasses.dataclass(frozen=True)
class FieldDiff(_Record):
    """One environment fact (python version, platform, …) that differs between two runs."""

    name: str
    first: Any
    second: Any


@dataclasses.dataclass(frozen=True)
class EnvironmentDiff(_Record):
    """How the environments of two runs differ.

    Attributes:
        identical: both runs recorded the same environment snapshot (same hash).
        recorded: whether each run recorded an environment at all.
        fields: interpreter and platform facts that differ.
        packages: distributions added, removed and changed (upgraded or downgraded).
    """

    identical: bool
    recorded: tuple[bool, bool]
    fields: tuple[FieldDiff, ...]
    packages: PackageDiff


@dataclasses.dataclass(frozen=True)
class ArtifactDiff(_Record):
    """One named output of one step, by content hash, in two runs.

    Attributes:
        step: the step (``"step/index"`` for a step that ran as several tasks).
        name: the output name.
        status: ``"identical"``, ``"changed"``, ``"added"`` (only in the second) or ``"removed"``.
        hashes: the content hash in each run (``None`` where absent).
        type_names: the stored type in each run.
    """

    step: str
    name: str
    status: str
    hashes: tuple[str | None, str | None]
    type_names: tuple[str | None, str | None]


@dataclasses.dataclass(frozen=True)
class InputDiff(_Record):
    """One external data input (``pt.log_input``), by content hash, in two runs.

    Attributes:
        name: the input name (the file name unless given).
        status: ``"identical"``, ``"changed"``, ``"added"`` or ``"removed"``.
        hashes: the content hash in each run.
        source_uris: where each run read it from.
    """

    name: str
    status: str
    hashes: tuple[str | None, str | None]
    source_uris: tuple[str | None, str | None]


@dataclasses.dataclass(frozen=True)
class Comparison(_Record):
    """What differs between runs; two runs get the full report, more get params and metrics.

    Attributes:
        runs: the compared runs' pathspecs, in the order given.
        params: every parameter, the differing ones first.
        metrics: every metric's latest value, the differing ones first.
        code: per step, its source diff (two runs only).
        environment: the environment difference (two runs only).
        artifacts: per step output, identical or changed by content hash (two runs only).
        inputs: external data inputs, identical or changed by content hash (two runs only).
        columns: the :meth:`table` columns: ``run``, then ``params.<name>`` and
            ``metrics.<name>``, the differing ones first.
    """

    runs: tuple[str, ...]
    params: tuple[ParamDiff, ...]
    metrics: tuple[MetricDiff, ...]
    code: tuple[StepCodeDiff, ...] = ()
    environment: EnvironmentDiff | None = None
    artifacts: tuple[ArtifactDiff, ...] = ()
    inputs: tuple[InputDiff, ...] = ()
    columns: tuple[str, ...] = ()

    @property
    def pairwise(self) -> bool:
        """Whether this compares exactly two runs (and so has code, environment, artifacts)."""
        return len(self.runs) == 2

    def table(self) -> list[dict[str, Any]]:
        """One row per run: its pathspec, params and metrics, keyed by :attr:`columns`."""
        rows: list[dict[str, Any]] = [{"run": pathspec} for pathspec in self.runs]
        for p in self.params:
            for row, value in zip(rows, p.values, strict=True):
                row[f"params.{p.name}"] = value
        for m in self.metrics:
            for row, metric in zip(rows, m.values, strict=True):
                row[f"metrics.{m.name}"] = metric
        return [{c: row.get(c) for c in self.columns} for row in rows]

    def to_pandas(self) -> Any:
        """The :meth:`table` as a ``pandas.DataFrame`` indexed by run.

        Raises:
            UsageError: pandas is not installed.
        """
        try:
            import pandas as pd
        except ImportError as exc:
            raise UsageError(
                "Comparison.to_pandas() needs pandas: pip install 'pipetrail[data]' (or pandas)"
            ) from exc
        return pd.DataFrame(self.table(), columns=list(self.columns)).set_index("run")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form of the whole comparison, the :meth:`table` included."""
        return {**super().to_dict(), "table": self.table()}


def compare(*runs: Run | str | int, reader: Reader | None = None) -> Comparison:
    """Compare two or more runs, from any pipelines.

    Two runs give the full report: params, metrics with deltas (second minus first), each
    step's code as a unified diff, environment, artifacts and external inputs by content hash.
    More runs give params and metrics only, as a table (:meth:`Comparison.table`).

    Args:
        *runs: Run handles or pathspecs (``"iris/42"``, or a run id).
        reader: the stores to read pathspecs from; the configured ones by default.

    Returns:
        The comparison.

    Raises:
        UsageError: fewer than two runs, or a pathspec that names no run.
    """
    if len(runs) < 2:
        raise UsageError(f"compare needs at least two runs, got {len(runs)}")
    handles = [r if isinstance(r, Run) else Run(r, reader=reader) for r in runs]
    params = _param_diffs([_flatten(h.params) for h in handles])
    metrics = _metric_diffs([h.metrics for h in handles])
    columns = _columns(params, metrics)
    pathspecs = tuple(h.pathspec for h in handles)
    if len(handles) != 2:
        return Comparison(pathspecs, params, metrics, columns=columns)
    a, b = handles
    links_a, links_b = _FinalLinks(a), _FinalLinks(b)
    return Comparison(
        pathspecs,
        params,
        metrics,
        code=_code_diffs(a, b),
        environment=_environment_diff(a, b),
        artifacts=_artifact_diffs(links_a.outputs, links_b.outputs),
        inputs=_input_diffs(links_a.inputs, links_b.inputs),
        columns=columns,
    )


def _flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for name, value in params.items():
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, f"{prefix}{name}."))
        else:
            flat[f"{prefix}{name}"] = value
    return flat


def _same_key(value: Any) -> str:
    # JSON tells 1 from 1.0 and True from 1, which Python's == does not.
    return json.dumps(value, sort_keys=True, default=repr)


def _param_diffs(per_run: list[dict[str, Any]]) -> tuple[ParamDiff, ...]:
    names = sorted({name for params in per_run for name in params})
    diffs = []
    for name in names:
        present = tuple(name in params for params in per_run)
        values = tuple(params.get(name) for params in per_run)
        keys = {(p, _same_key(v)) for p, v in zip(present, values, strict=True)}
        diffs.append(ParamDiff(name, values, present, len(keys) > 1))
    return tuple(sorted(diffs, key=lambda d: not d.differs))


def _metric_diffs(per_run: list[dict[str, float]]) -> tuple[MetricDiff, ...]:
    names = sorted({name for metrics in per_run for name in metrics})
    diffs = []
    for name in names:
        values = tuple(metrics.get(name) for metrics in per_run)
        delta = relative = None
        if len(values) == 2 and values[0] is not None and values[1] is not None:
            delta = values[1] - values[0]
            relative = delta / abs(values[0]) if values[0] != 0 else None
        diffs.append(MetricDiff(name, values, len(set(values)) > 1, delta, relative))
    return tuple(sorted(diffs, key=lambda d: not d.differs))


def _columns(params: Iterable[ParamDiff], metrics: Iterable[MetricDiff]) -> tuple[str, ...]:
    cells = [(f"params.{p.name}", p.differs) for p in params]
    cells += [(f"metrics.{m.name}", m.differs) for m in metrics]
    differing = [name for name, differs in cells if differs]
    same = [name for name, differs in cells if not differs]
    return ("run", *differing, *same)


def _steps(run: Run) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in run.dag.get("steps", [])}


def _code_diffs(a: Run, b: Run) -> tuple[StepCodeDiff, ...]:
    steps_a, steps_b = _steps(a), _steps(b)
    diffs = []
    for name in [*steps_a, *(n for n in steps_b if n not in steps_a)]:
        sa, sb = steps_a.get(name), steps_b.get(name)
        source_a = "" if sa is None else str(sa.get("source", ""))
        source_b = "" if sb is None else str(sb.get("source", ""))
        if sa is None:
            status = "added"
        elif sb is None:
            status = "removed"
        else:
            status = "same" if source_a == source_b else "changed"
        text = ""
        if status != "same":
            lines = difflib.unified_diff(
                source_a.splitlines(),
                source_b.splitlines(),
                fromfile=f"{a.pathspec}/{name}" if sa is not None else "/dev/null",
                tofile=f"{b.pathspec}/{name}" if sb is not None else "/dev/null",
                lineterm="",
            )
            text = "\n".join(lines) + "\n"
        hashes = (
            None if sa is None else sa.get("source_hash"),
            None if sb is None else sb.get("source_hash"),
        )
        diffs.append(StepCodeDiff(name, status, status != "same", text, hashes))
    return tuple(diffs)


def _environment_diff(a: Run, b: Run) -> EnvironmentDiff:
    from pipetrail.provenance.environment import diff_packages

    env_a, env_b = a.environment or {}, b.environment or {}
    hash_a, hash_b = a.record.environment_hash, b.record.environment_hash
    names = sorted((env_a.keys() | env_b.keys()) - {"packages"})
    fields = tuple(
        FieldDiff(n, env_a.get(n), env_b.get(n))
        for n in names
        if _same_key(env_a.get(n)) != _same_key(env_b.get(n))
    )
    packages = diff_packages(
        dict(env_a.get("packages", {})).items(), dict(env_b.get("packages", {})).items()
    )
    return EnvironmentDiff(
        identical=hash_a is not None and hash_a == hash_b,
        recorded=(hash_a is not None, hash_b is not None),
        fields=fields,
        packages=packages,
    )


class _FinalLinks:
    """The outputs and external inputs of the latest attempt of each task of a run."""

    def __init__(self, run: Run) -> None:
        latest: dict[tuple[str, int], tuple[int, int]] = {}
        for t in run._task_records():
            key = (t.step, t.task_index)
            if key not in latest or (t.attempt, t.id) > latest[key]:
                latest[key] = (t.attempt, t.id)
        indexes: dict[str, int] = {}
        for step, _ in latest:
            indexes[step] = indexes.get(step, 0) + 1
        labels = {
            task_id: step if indexes[step] == 1 else f"{step}/{index}"
            for (step, index), (_, task_id) in latest.items()
        }
        self.outputs: dict[tuple[str, str], ArtifactLink] = {}
        external: dict[str, dict[tuple[str | None, str], ArtifactLink]] = {}
        for link in run._link_records():
            if link.task_id not in labels:
                continue
            if link.direction == "output":
                self.outputs[(labels[link.task_id], link.name)] = link
            elif link.kind == "external":
                external.setdefault(link.name, {})[(link.source_uri, link.artifact.key)] = link
        # One name read from several places in one run: tell them apart by where.
        self.inputs: dict[str, ArtifactLink] = {}
        for name, found in external.items():
            for (uri, _), link in found.items():
                self.inputs[name if len(found) == 1 else f"{name}@{uri}"] = link


def _status(key_a: str | None, key_b: str | None) -> str:
    if key_a is None:
        return "added"
    if key_b is None:
        return "removed"
    return "identical" if key_a == key_b else "changed"


def _key(link: ArtifactLink | None) -> str | None:
    return None if link is None else link.artifact.key


_ORDER = {"changed": 0, "added": 1, "removed": 2, "identical": 3}


def _artifact_diffs(
    a: dict[tuple[str, str], ArtifactLink], b: dict[tuple[str, str], ArtifactLink]
) -> tuple[ArtifactDiff, ...]:
    diffs = []
    for step, name in [*a, *(k for k in b if k not in a)]:
        la, lb = a.get((step, name)), b.get((step, name))
        keys = (_key(la), _key(lb))
        types = (
            None if la is None else la.artifact.type_name,
            None if lb is None else lb.artifact.type_name,
        )
        diffs.append(ArtifactDiff(step, name, _status(*keys), keys, types))
    return tuple(sorted(diffs, key=lambda d: _ORDER[d.status]))


def _input_diffs(a: dict[str, ArtifactLink], b: dict[str, ArtifactLink]) -> tuple[InputDiff, ...]:
    diffs = []
    for name in sorted(a.keys() | b.keys()):
        la, lb = a.get(name), b.get(name)
        keys = (_key(la), _key(lb))
        uris = (None if la is None else la.source_uri, None if lb is None else lb.source_uri)
        diffs.append(InputDiff(name, _status(*keys), keys, uris))
    return tuple(sorted(diffs, key=lambda d: _ORDER[d.status]))


def render(comparison: Comparison) -> Any:
    """A Rich renderable of ``comparison``: tables of params and metrics (deltas coloured), and
    for two runs the code diffs, environment, artifacts and inputs.

    Args:
        comparison: what :func:`compare` returned.

    Returns:
        A ``rich.console.Group`` to print with a Rich console.
    """
    from rich.console import Group
    from rich.panel import Panel
    from rich.syntax import Syntax
    from rich.table import Table
    from rich.text import Text

    parts: list[Any] = [Text("Comparing " + " ↔ ".join(comparison.runs), style="bold")]
    if not comparison.pairwise:
        table = Table(title="Runs (differing columns first)")
        for column in comparison.columns:
            table.add_column(column, style="bold" if column == "run" else None)
        for row in comparison.table():
            table.add_row(*(_cell(row[c]) for c in comparison.columns))
        parts.append(table)
        return Group(*parts)
    first, second = comparison.runs
    params = Table(title="Parameters")
    for column in ("name", first, second):
        params.add_column(column)
    for p in comparison.params:
        style = "yellow" if p.differs else "dim"
        cells = [_cell(v) if here else "—" for v, here in zip(p.values, p.present, strict=True)]
        params.add_row(p.name, *cells, style=style)
    metrics = Table(title="Metrics")
    for column in ("name", first, second, "delta", "relative"):
        metrics.add_column(column, justify="left" if column == "name" else "right")
    for m in comparison.metrics:
        colour = "dim" if not m.delta else ("green" if m.delta > 0 else "red")
        metrics.add_row(
            m.name,
            *(_cell(v) for v in m.values),
            Text("—" if m.delta is None else f"{m.delta:+.6g}", style=colour),
            Text("—" if m.relative is None else f"{m.relative:+.2%}", style=colour),
        )
    parts += [params, metrics]
    changed = [c for c in comparison.code if c.changed]
    if changed:
        for c in changed:
            title = f"code: step {c.step!r} {c.status}"
            parts.append(Panel(Syntax(c.diff, "diff", theme="ansi_dark"), title=title))
    else:
        parts.append(Text("code: every step's source is the same", style="green"))
    parts.append(_render_environment(comparison.environment))
    hashes = Table(title="Artifacts and data inputs (by content hash)")
    for column in ("kind", "step", "name", "status", first, second):
        hashes.add_column(column)
    colours = {"identical": "green", "changed": "yellow", "added": "cyan", "removed": "red"}
    for a in comparison.artifacts:
        keys = (_short(k) for k in a.hashes)
        hashes.add_row("output", a.step, a.name, Text(a.status, colours[a.status]), *keys)
    for i in comparison.inputs:
        keys = (_short(k) for k in i.hashes)
        hashes.add_row("input", "", i.name, Text(i.status, colours[i.status]), *keys)
    parts.append(hashes)
    return Group(*parts)


def _render_environment(env: EnvironmentDiff | None) -> Any:
    from rich.table import Table
    from rich.text import Text

    if env is None or env.identical:
        return Text("environment: identical", style="green")
    if not all(env.recorded):
        return Text("environment: not recorded for every run", style="yellow")
    table = Table(title="Environment")
    for column in ("what", "first", "second"):
        table.add_column(column)
    for f in env.fields:
        table.add_row(f.name, _cell(f.first), _cell(f.second))
    for name, version in env.packages.added:
        table.add_row(Text(f"+ {name}", "green"), "—", version)
    for name, version in env.packages.removed:
        table.add_row(Text(f"- {name}", "red"), version, "—")
    for name, old, new in env.packages.changed:
        table.add_row(Text(f"~ {name}", "yellow"), old, new)
    return table


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.6g}"
    return value if isinstance(value, str) else json.dumps(value, default=repr)


def _short(key: str | None) -> str:
    return "—" if key is None else key[:12]
