"""The DAG: topological order as an invariant over random graphs, and cycle reporting."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipetrail.core.graph import Dag
from pipetrail.errors import CycleError


@st.composite
def dags(draw: st.DrawFn) -> tuple[list[str], dict[str, list[str]]]:
    count = draw(st.integers(min_value=1, max_value=30))
    names = [f"s{i}" for i in range(count)]
    edges: dict[str, list[str]] = {}
    for i, name in enumerate(names):
        # Only edges to earlier nodes: acyclic by construction.
        ups = draw(st.lists(st.sampled_from(names[:i]), max_size=4)) if i else []
        edges[name] = ups
    order = draw(st.permutations(names))
    return list(order), edges


@given(dags())
def test_topological_order_puts_every_step_after_its_upstream(
    graph: tuple[list[str], dict[str, list[str]]],
) -> None:
    names, edges = graph
    dag = Dag(names, edges)
    position = {name: i for i, name in enumerate(dag.order)}
    assert sorted(dag.order) == sorted(names)
    for name, ups in edges.items():
        for up in ups:
            assert position[up] < position[name]
            assert name in dag.descendants(up)


def test_order_is_stable_among_independent_steps() -> None:
    dag = Dag(["root", "b", "a", "c"], {"b": ["root"], "a": ["root"], "c": ["root"]})
    assert dag.order == ["root", "b", "a", "c"]
    assert dag.downstream("root") == ("b", "a", "c")


@pytest.mark.parametrize(
    ("edges", "cycle"),
    [
        ({"a": ["a"]}, "a -> a"),
        ({"a": ["b"], "b": ["a"]}, "a -> b -> a"),
    ],
)
def test_cycles_are_named(edges: dict[str, list[str]], cycle: str) -> None:
    with pytest.raises(CycleError, match=cycle):
        Dag(sorted(edges), edges)
