"""The side-by-side table: each figure for pipetrail, the best peer (which) and the ratio."""

from __future__ import annotations

import math
from typing import Any

from cases import Figure

__all__ = ["best_peer", "format_value", "print_table", "ratio_text"]

NAMES = {"pipetrail": "pipetrail", "kedro": "Kedro", "mlflow": "MLflow"}


def format_value(value: float | None, unit: str) -> str:
    """``2.5 ms``, ``0.78 s``, ``244,000``: what a reader compares at a glance."""
    if value is None or math.isnan(value):
        return "n/a"
    if unit == "points/s":
        return f"{value:,.0f}"
    if unit == "MB":
        return f"{value:,.1f} MB"
    digits = 3 if value < 0.1 else 2 if value < 10 else 1
    return f"{value:.{digits}f} {unit}"


def best_peer(figure: Figure, values: dict[str, float]) -> tuple[str, float] | None:
    """The peer with the best value of ``figure`` (lowest, or highest where that is better)."""
    peers = [(t, v) for t, v in values.items() if t != "pipetrail" and not math.isnan(v)]
    if not peers:
        return None
    pick = max if figure.higher_is_better else min
    return pick(peers, key=lambda tv: tv[1])


def ratio(figure: Figure, ours: float, theirs: float) -> float | None:
    """How many times better pipetrail is (>1 ahead, <1 behind); None when a side is zero."""
    if ours <= 0 or theirs <= 0:
        return None
    return ours / theirs if figure.higher_is_better else theirs / ours


def ratio_text(figure: Figure, ours: float | None, theirs: float | None) -> str:
    """``1.8x ahead``, ``11x behind``, ``level`` (within 10 %), ``n/a``."""
    if ours is None or theirs is None or math.isnan(ours) or math.isnan(theirs):
        return "n/a"
    r = ratio(figure, ours, theirs)
    if r is None:
        if ours == theirs:
            return "level"
        ahead = (ours > theirs) == figure.higher_is_better
        return "ahead" if ahead else "behind"
    if 1 / 1.1 <= r <= 1.1:
        return f"level ({r:.2f}x)"
    times = r if r > 1 else 1 / r
    shown = f"{times:.1f}" if times < 10 else f"{times:.0f}"
    return f"{shown}x {'ahead' if r > 1 else 'behind'}"


def rows(figures: list[Figure], values: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    """One dict per figure: every tool's value, the best peer and the ratio (for JSON and print)."""
    out = []
    for figure in figures:
        by_tool = {tool: values[tool][figure.key] for tool in values if figure.key in values[tool]}
        ours = by_tool.get("pipetrail")
        best = best_peer(figure, by_tool)
        theirs = best[1] if best else None
        out.append(
            {
                "figure": figure.key,
                "label": figure.label,
                "unit": figure.unit,
                "higher_is_better": figure.higher_is_better,
                "values": by_tool,
                "best_peer": best[0] if best else None,
                "ratio": ratio(figure, ours, theirs)
                if figure.compared and ours is not None and theirs
                else None,
                "verdict": ratio_text(figure, ours, theirs) if figure.compared else "info",
            }
        )
    return out


def print_table(table: list[dict[str, Any]], title: str) -> None:
    """Print ``table`` (from :func:`rows`) as plain aligned text."""
    lines = [("figure", "pipetrail", "best peer", "ratio", "all peers")]
    for row in table:
        unit = row["unit"]
        best = row["best_peer"]
        values = row["values"]
        others = ", ".join(
            f"{NAMES[t]} {format_value(v, unit)}" for t, v in values.items() if t != "pipetrail"
        )
        lines.append(
            (
                row["label"],
                format_value(values.get("pipetrail"), unit),
                f"{NAMES[best]} {format_value(values[best], unit)}" if best else "n/a",
                row["verdict"],
                others or "-",
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    print(title)
    for n, line in enumerate(lines):
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))
