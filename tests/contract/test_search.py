"""Run search through ``list_runs(RunQuery(filter=…, order_by=…))``, on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import inspect, update

import pipetrail as pt
from pipetrail.core.query import QuerySyntaxError
from pipetrail.core.status import RunStatus
from pipetrail.errors import UsageError
from pipetrail.storage.metadata.base import MetricRow, NewRun, RunQuery
from pipetrail.storage.metadata.sql.store import SqlMetadataStore
from pipetrail.storage.metadata.sql.tables import pipeline_run
from pipetrail.workspace import Workspace


@pt.step
def only(lr: float = 0.1):  # type: ignore[no-untyped-def]
    return lr


MAIN = pt.Pipeline("search-main", [only])
OTHER = pt.Pipeline("search-other", [only])
INJECTION = "'; drop table pipeline_run; --"


def _run(
    store: SqlMetadataStore,
    label: str,
    params: Mapping[str, Any],
    *,
    metrics: Mapping[str, Sequence[float]] | None = None,
    tags: Sequence[str] = (),
    status: RunStatus | None = None,
    user: str = "ana",
    pipeline: pt.Pipeline = MAIN,
) -> int:
    """A run labelled ``label`` (the ``label`` param) with these params, metric histories, tags."""
    full = {"label": label, **params}
    run = store.create_run(
        NewRun(
            spec=pipeline.spec,
            params=full,
            param_types={k: "any" for k in full},
            variables={},
            user=user,
            host="box",
            trigger="cli",
            system_tags=(f"user:{user}",),
        )
    )
    if metrics:
        key = ("only", 0, 0)
        task_id = store.create_tasks(run.id, [key])[key]
        base = time.time()
        store.add_metrics(
            [
                MetricRow(run.id, task_id, name, value, step, base + step)
                for name, values in metrics.items()
                for step, value in enumerate(values)
            ]
        )
    if tags:
        store.change_tags(run.id, add=tags)
    if status is not None:
        if status is not RunStatus.FAILED:
            store.set_run_status(run.id, RunStatus.RUNNING)
        if status is not RunStatus.RUNNING:
            store.set_run_status(run.id, status)
    return run.id


@dataclass
class Corpus:
    """Four runs (``a``..``d``, created in that order) with everything search looks at."""

    store: SqlMetadataStore
    ids: dict[str, int]
    before: datetime
    after_b: datetime

    def labels(
        self, filter: str | None = None, order_by: Sequence[str] = (), **query: Any
    ) -> list[str]:
        runs = self.store.list_runs(RunQuery(filter=filter, order_by=tuple(order_by), **query))
        return [str(r.params["label"]) for r in runs]

    def matching(self, filter: str) -> set[str]:
        return set(self.labels(filter))


@pytest.fixture
def corpus(workspace: Workspace) -> Corpus:
    store = workspace.store
    before = datetime.now(UTC) - timedelta(seconds=1)
    ids = {
        "a": _run(
            store,
            "a",
            {
                "lr": 0.01,
                "epochs": 10,
                "opt": {"name": "adam", "betas": [0.9, 0.99]},
                "flag": True,
                "note": None,
                "my key": "spaced",
            },
            metrics={"acc": [0.5, 0.95], "loss": [1.0, 0.2], "val/loss": [0.3]},
            tags=("phase:experiment", "joined"),
            status=RunStatus.COMPLETED,
        ),
        "b": _run(
            store,
            "b",
            {"lr": 0.1, "epochs": 20, "opt": {"name": "sgd", "betas": [0.8]}, "flag": False},
            metrics={"acc": [0.7, 0.8], "loss": [0.9, 0.6]},
            tags=("phase:baseline",),
            status=RunStatus.FAILED,
            user="bob",
        ),
    }
    time.sleep(0.01)
    after_b = datetime.now(UTC)
    time.sleep(0.01)
    ids["c"] = _run(
        store,
        "c",
        {"lr": "auto", "opt": {"name": "Adam_v2"}, "flag": True, "note": "50% off"},
        metrics={"acc": [0.99], "loss": [0.5]},
        tags=("phase:experiment", "Phase:X", "team:vision"),
        status=RunStatus.RUNNING,
        pipeline=OTHER,
    )
    ids["d"] = _run(store, "d", {}, user="carol")
    return Corpus(store, ids, before, after_b)


# -- fields -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filter", "expected"),
    [
        # numbers compare numerically, against numeric params only
        ("params.lr > 0.05", {"b"}),
        ("params.lr = 0.01", {"a"}),
        ("params.lr <= 0.1", {"a", "b"}),
        ("params.epochs >= 10 and params.epochs < 20", {"a"}),
        ("params.lr = 1e-2", {"a"}),
        ("params.epochs = 10.0", {"a"}),
        # text compares the stored text: a string param, or a number as written
        ("params.lr = 'auto'", {"c"}),
        ("params.lr = '0.01'", {"a"}),
        ("params.epochs = '20'", {"b"}),
        # booleans match booleans, and true is not 1
        ("params.flag = true", {"a", "c"}),
        ("params.flag = false", {"b"}),
        ("params.flag != true", {"b"}),
        ("params.flag = 1", set()),
        # null: recorded as None; != null means present and not null
        ("params.note = null", {"a"}),
        ("params.note != null", {"c"}),
        ("params.lr != null", {"a", "b", "c"}),
        # nested params by dotted path, list items by index, backquoted names
        ("params.opt.name = 'adam'", {"a"}),
        ("params.opt.betas.1 = 0.99", {"a"}),
        ("params.opt.betas.0 < 0.85", {"b"}),
        ("params.`my key` = 'spaced'", {"a"}),
        ("PARAMS.opt.name = 'sgd'", {"b"}),
    ],
)
def test_params(corpus: Corpus, filter: str, expected: set[str]) -> None:
    assert corpus.matching(filter) == expected


@pytest.mark.parametrize(
    ("filter", "expected"),
    [
        ("metrics.acc > 0.9", {"a", "c"}),
        ("metrics.acc = 0.8", {"b"}),
        ("metrics.loss <= 0.5", {"a", "c"}),
        ("min(metrics.acc) < 0.6", {"a"}),
        ("max(metrics.loss) >= 0.9", {"a", "b"}),
        ("max(metrics.acc) = 0.99 and min(metrics.acc) = 0.99", {"c"}),
        ("metrics.val/loss < 1", {"a"}),
        ("metrics.acc != 0.8", {"a", "c"}),
        ("metrics.acc != null", {"a", "b", "c"}),
        ("metrics.acc = null", set()),
        ("not metrics.acc != null", {"d"}),
        ("metrics.nope > 0", set()),
    ],
)
def test_metrics_latest_min_max(corpus: Corpus, filter: str, expected: set[str]) -> None:
    assert corpus.matching(filter) == expected


@pytest.mark.parametrize(
    ("filter", "expected"),
    [
        ("tags.phase = 'experiment'", {"a", "c"}),
        ("tags.phase != 'experiment'", {"b"}),
        ("tags.phase in ('baseline', 'nope')", {"b"}),
        ("tags.phase not in ('baseline')", {"a", "c"}),
        ("tags.phase < 'c'", {"b"}),
        ("tags.phase like 'exp%'", {"a", "c"}),
        ("tags.phase ~ '^base'", {"b"}),
        ("tags.Phase = 'X'", {"c"}),
        ("tags.phase != null", {"a", "b", "c"}),
        ("tag = 'joined'", {"a"}),
        ("not tag = 'joined'", {"b", "c", "d"}),
        ("tag = 'user:bob'", {"b"}),
        ("tag like 'team:%'", {"c"}),
        ("tag in ('joined', 'team:vision')", {"a", "c"}),
    ],
)
def test_tags(corpus: Corpus, filter: str, expected: set[str]) -> None:
    assert corpus.matching(filter) == expected


@pytest.mark.parametrize(
    ("filter", "expected"),
    [
        ("status = 'completed'", {"a"}),
        ("status != 'completed'", {"b", "c", "d"}),
        ("status in ('failed', 'running')", {"b", "c"}),
        ("status not in ('initial')", {"a", "b", "c"}),
        ("pipeline = 'search-other'", {"c"}),
        ("pipeline like 'search-%'", {"a", "b", "c", "d"}),
        ("pipeline != 'search-other'", {"a", "b", "d"}),
        ("user = 'bob'", {"b"}),
        ("user in ('bob', 'carol')", {"b", "d"}),
        ("user ~ '^[ab]'", {"a", "b", "c"}),
        ("finished = null", {"c", "d"}),
        ("finished != null", {"a", "b"}),
        ("duration >= 0", {"a", "b"}),
        ("duration = null", {"c", "d"}),
        ("not duration > 1000000", {"a", "b", "c", "d"}),
    ],
)
def test_run_fields(corpus: Corpus, filter: str, expected: set[str]) -> None:
    assert corpus.matching(filter) == expected


def test_created_and_finished_compare_iso_times(corpus: Corpus) -> None:
    after_b = corpus.after_b.isoformat()
    assert corpus.matching(f"created < '{after_b}'") == {"a", "b"}
    assert corpus.matching(f"created >= '{after_b}'") == {"c", "d"}
    # Without an offset a time is UTC; a date alone is midnight.
    naive = corpus.after_b.replace(tzinfo=None).isoformat()
    assert corpus.matching(f"created >= '{naive}'") == {"c", "d"}
    assert corpus.matching("created > '2000-01-01'") == {"a", "b", "c", "d"}
    assert corpus.matching(f"finished > '{corpus.before.isoformat()}'") == {"a", "b"}
    assert corpus.matching("finished < '2000-01-01'") == set()
    # The same instant written with another offset.
    shifted = corpus.after_b.astimezone(timezone(timedelta(hours=5)))
    assert corpus.matching(f"created >= '{shifted.isoformat()}'") == {"c", "d"}


def test_duration_compares_seconds(corpus: Corpus) -> None:
    store = corpus.store
    with store.engine.begin() as conn:
        for label, seconds in (("a", 12.5), ("b", 300.0)):
            conn.execute(
                update(pipeline_run)
                .where(pipeline_run.c.id == corpus.ids[label])
                .values(duration_s=seconds)
            )
    assert corpus.matching("duration > 60") == {"b"}
    assert corpus.matching("duration in (12.5, 1)") == {"a"}
    assert corpus.labels(order_by=["duration desc"]) == ["b", "a", "d", "c"]


# -- operators ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filter", "expected"),
    [
        ("params.opt.name like 'adam'", {"a"}),
        ("params.opt.name like 'a%'", {"a"}),
        ("params.opt.name like 'A%'", {"c"}),  # case-sensitive on both stores
        ("params.opt.name like '_dam%'", {"a", "c"}),
        ("params.opt.name like '%\\_v2'", {"c"}),  # \_ is a literal underscore
        ("params.note like '50\\%%'", {"c"}),  # \% is a literal percent
        ("params.note like '50_%'", {"c"}),
        ("params.opt.name not like 'a%'", {"b", "c"}),
        ("params.opt.name like '%*%'", set()),  # GLOB characters are literal too
        ("params.opt.name ~ '^[aA]dam'", {"a", "c"}),
        ("params.opt.name matches 'v[0-9]$'", {"c"}),
        ("params.opt.name !~ 'a'", {"b"}),
        ("params.opt.name not matches 'a'", {"b"}),
        ("params.lr ~ '^0\\.0'", {"a"}),  # a regex sees a number as its text
        ("params.lr in (0.1, 'auto')", {"b", "c"}),
        ("params.lr not in (0.1, 'auto')", {"a"}),
        ("params.flag in (true)", {"a", "c"}),
        ("params.opt.name in ('adam', 'sgd')", {"a", "b"}),
        ("params.opt.name not in ('adam')", {"b", "c"}),
        ("metrics.acc in (0.8, 0.99)", {"b", "c"}),
        ("metrics.acc not in (0.8)", {"a", "c"}),
        ("params.lr == 0.01", {"a"}),
        ("params.lr <> 0.01", {"b", "c"}),
    ],
)
def test_operators(corpus: Corpus, filter: str, expected: set[str]) -> None:
    assert corpus.matching(filter) == expected


@pytest.mark.parametrize(
    ("filter", "expected"),
    [
        # and binds tighter than or
        ("status = 'failed' or status = 'running' and params.flag = false", {"b"}),
        ("status = 'completed' or status = 'running' and params.flag = true", {"a", "c"}),
        ("(status = 'completed' or status = 'failed') and params.flag = false", {"b"}),
        # not binds tighter than and
        ("not params.flag = true and params.lr != null", {"b"}),
        ("not (params.flag = true and params.lr = 'auto')", {"a", "b", "d"}),
        ("not not params.flag = true", {"a", "c"}),
        ("((metrics.acc > 0.9)) AND (tag = 'joined' OR user = 'carol')", {"a"}),
        ("params.lr = 0.01 or params.lr = 0.1 or params.lr = 'auto'", {"a", "b", "c"}),
    ],
)
def test_and_or_not_and_parentheses(corpus: Corpus, filter: str, expected: set[str]) -> None:
    assert corpus.matching(filter) == expected


def test_missing_values_match_no_comparison_but_not_negates_the_whole(corpus: Corpus) -> None:
    assert corpus.matching("params.lr > 1") == set()
    assert corpus.matching("not params.lr > 1") == {"a", "b", "c", "d"}
    assert corpus.matching("params.lr != 0.01") == {"b", "c"}, "!= needs the param present"
    assert corpus.matching("not params.lr = 0.01") == {"b", "c", "d"}
    assert corpus.matching("params.opt.name not in ('x')") == {"a", "b", "c"}
    assert corpus.matching("not params.opt.name in ('x')") == {"a", "b", "c", "d"}
    assert corpus.matching("metrics.acc < 2 or not metrics.acc < 2") == {"a", "b", "c", "d"}


# -- ordering and limits ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("order_by", "expected"),
    [
        ((), ["d", "c", "b", "a"]),
        (("metrics.acc desc",), ["c", "a", "b", "d"]),
        (("metrics.acc",), ["b", "a", "c", "d"]),
        (("metrics.acc asc",), ["b", "a", "c", "d"]),
        (("min(metrics.acc) desc",), ["c", "b", "a", "d"]),
        (("max(metrics.loss)",), ["c", "b", "a", "d"]),
        # numbers before text, missing last, in both directions
        (("params.lr",), ["a", "b", "c", "d"]),
        (("params.lr desc",), ["b", "a", "c", "d"]),
        (("params.note",), ["c", "d", "b", "a"]),  # a's note is null: missing
        (("params.flag desc",), ["c", "a", "b", "d"]),  # ties newest first
        (("tags.phase",), ["b", "c", "a", "d"]),
        (("tags.phase desc",), ["c", "a", "b", "d"]),
        (("user", "metrics.acc desc"), ["c", "a", "b", "d"]),
        (("user desc, created desc",), ["d", "b", "c", "a"]),
        (("status",), ["a", "b", "d", "c"]),
        (("pipeline desc",), ["c", "d", "b", "a"]),
        (("finished",), ["a", "b", "d", "c"]),
        (("finished desc",), ["b", "a", "d", "c"]),
        (("created",), ["a", "b", "c", "d"]),
    ],
)
def test_order_by(corpus: Corpus, order_by: tuple[str, ...], expected: list[str]) -> None:
    assert corpus.labels(order_by=order_by) == expected


def test_filter_order_and_limit_apply_in_sql(corpus: Corpus) -> None:
    query = "metrics.acc > 0.5"
    assert corpus.labels(query, ["metrics.acc desc"]) == ["c", "a", "b"]
    assert corpus.labels(query, ["metrics.acc desc"], limit=2) == ["c", "a"]
    assert corpus.labels(query, ["metrics.acc"], limit=1) == ["b"]
    assert corpus.labels(query, limit=1) == ["c"]
    assert corpus.labels("  ", limit=None) == ["d", "c", "b", "a"], "a blank filter is no filter"


def test_filter_combines_with_the_other_query_fields(corpus: Corpus) -> None:
    assert corpus.labels("params.flag = true", pipeline="search-main") == ["a"]
    assert corpus.labels("params.lr != null", statuses=(RunStatus.FAILED,)) == ["b"]
    assert corpus.labels("params.lr != null", tags=("joined",)) == ["a"]


def test_users_namespace_and_until(corpus: Corpus) -> None:
    assert corpus.labels(users=("ana",)) == ["c", "a"]
    assert corpus.labels(users=("bob", "carol")) == ["d", "b"]
    assert corpus.labels("metrics.acc > 0.9", users=("ana",)) == ["c", "a"]
    assert corpus.labels(until=corpus.after_b) == ["b", "a"]
    assert corpus.labels(since=corpus.after_b) == ["d", "c"]
    assert corpus.labels(since=corpus.before, until=corpus.after_b, users=("bob",)) == ["b"]


# -- safety and errors --------------------------------------------------------------------------


def test_values_are_bound_never_spliced(workspace: Workspace) -> None:
    store = workspace.store
    _run(store, "evil", {"name": INJECTION, INJECTION: 1}, tags=(INJECTION, f"k:{INJECTION}"))
    _run(store, "plain", {"name": "x"})
    quoted = INJECTION.replace("'", "\\'")
    corpus = Corpus(store, {}, datetime.now(UTC), datetime.now(UTC))
    for filter in (
        f"params.name = '{quoted}'",
        f'params.name = "{INJECTION}"',
        f"params.name like '{quoted}'",
        f"params.name ~ '{quoted.replace(';', '[;]')}'",
        f"params.name in ('{quoted}')",
        f"tag = '{quoted}'",
        f"tags.k = '{quoted}'",
        f"user = '{quoted}' or params.`{INJECTION}` = 1",
        f"pipeline = '{quoted}' or params.`{INJECTION}` = 1",
    ):
        assert corpus.labels(filter) == ["evil"], filter
    assert corpus.labels(order_by=[f"params.`{INJECTION}` desc"]) == ["evil", "plain"]
    assert corpus.labels(order_by=[f"tags.`{INJECTION}`"]) == ["plain", "evil"]
    assert inspect(store.engine).has_table("pipeline_run")
    assert len(store.list_runs(RunQuery())) == 2


@pytest.mark.parametrize(
    ("filter", "order_by", "fragment"),
    [
        ("metrics.acc >  and x", (), "filter: expected a value after '>' at position 16"),
        ("metrics.acc > 1", ("metrics.acc up",), "order_by: expected asc, desc or ','"),
        ("param.lr = 1", (), "did you mean 'params.lr'?"),
        ("params.x ~ '('", (), "invalid regular expression"),
    ],
)
def test_malformed_queries_raise_before_touching_the_store(
    corpus: Corpus, filter: str, order_by: tuple[str, ...], fragment: str
) -> None:
    with pytest.raises(QuerySyntaxError) as caught:
        corpus.store.list_runs(RunQuery(filter=filter, order_by=order_by))
    assert fragment in str(caught.value)
    assert isinstance(caught.value, UsageError)
