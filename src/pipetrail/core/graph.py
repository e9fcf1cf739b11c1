"""The DAG of a pipeline: build, cycle detection, topological order, upstream and downstream."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from pipetrail.errors import CycleError

__all__ = ["Dag"]


class Dag:
    """A DAG over step names; ``edges[name]`` are the steps ``name`` depends on."""

    def __init__(self, order: Sequence[str], edges: Mapping[str, Iterable[str]]) -> None:
        self._names = list(order)
        self._up: dict[str, tuple[str, ...]] = {n: tuple(edges.get(n, ())) for n in self._names}
        self._down: dict[str, list[str]] = {n: [] for n in self._names}
        for name, ups in self._up.items():
            for up in ups:
                self._down[up].append(name)
        self._order = self._toposort()

    def _toposort(self) -> list[str]:
        # Kahn's algorithm, keeping definition order among ready steps so the order is stable.
        position = {n: i for i, n in enumerate(self._names)}
        indegree = {n: len(set(ups)) for n, ups in self._up.items()}
        ready = [n for n in self._names if indegree[n] == 0]
        order: list[str] = []
        while ready:
            ready.sort(key=position.__getitem__)
            name = ready.pop(0)
            order.append(name)
            for down in dict.fromkeys(self._down[name]):
                indegree[down] -= 1
                if indegree[down] == 0:
                    ready.append(down)
        if len(order) != len(self._names):
            raise CycleError(f"steps form a cycle: {' -> '.join(self._find_cycle())}")
        return order

    def _find_cycle(self) -> list[str]:
        state: dict[str, int] = {}
        stack: list[str] = []

        def visit(name: str) -> list[str] | None:
            state[name] = 1
            stack.append(name)
            for up in self._up[name]:
                if state.get(up) == 1:
                    return [*stack[stack.index(up) :], up]
                if up not in state:
                    found = visit(up)
                    if found:
                        return found
            stack.pop()
            state[name] = 2
            return None

        for name in self._names:
            if name not in state:
                found = visit(name)
                if found:
                    # Report in data-flow direction: producer first.
                    return list(reversed(found))
        return []

    @property
    def order(self) -> list[str]:
        """Topological order: every step after all of its upstream steps."""
        return list(self._order)

    def upstream(self, name: str) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self._up[name]))

    def downstream(self, name: str) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self._down[name]))

    def descendants(self, name: str) -> set[str]:
        """Every step that depends on ``name``, directly or not."""
        seen: set[str] = set()
        todo = list(self._down[name])
        while todo:
            current = todo.pop()
            if current not in seen:
                seen.add(current)
                todo.extend(self._down[current])
        return seen
