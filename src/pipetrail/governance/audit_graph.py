"""The audit report's lineage drawing: a layered layout of tasks and artifacts as inline SVG,
computed here (no script, no network), top to bottom in the direction data flowed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

__all__ = ["lineage_svg", "run_colours"]

WIDTH, TASK_HEIGHT, ARTIFACT_HEIGHT = 200, 40, 34
H_GAP, V_GAP, ROW_GAP, MARGIN = 22, 44, 16, 12
#: Nodes in one row: a wider layer wraps, so the drawing stays legible on a printed page.
PER_ROW = 4
#: Characters that fit one line of a box at the drawing's font size.
LINE_CHARS = 31
#: Fill colours given to runs in turn (stroke colours are darker shades of them).
PALETTE = (
    ("#dbeafe", "#1d4ed8"),
    ("#dcfce7", "#15803d"),
    ("#f3e8ff", "#7e22ce"),
    ("#ffedd5", "#c2410c"),
    ("#e0f2fe", "#0369a1"),
    ("#fce7f3", "#be185d"),
)
EXTERNAL = ("#fef9c3", "#a16207")
FAILED_STROKE = "#b91c1c"


def _layers(
    nodes: Sequence[Mapping[str, Any]], edges: Sequence[Mapping[str, Any]]
) -> list[list[str]]:
    """Nodes by layer: the longest path to them from a node nothing leads to, ordered within a
    layer by where their predecessors sit (one barycentre sweep)."""
    ids = [n["id"] for n in nodes]
    preds: dict[str, list[str]] = {i: [] for i in ids}
    for e in edges:
        if e["source"] in preds and e["target"] in preds:
            preds[e["target"]].append(e["source"])
    depth: dict[str, int] = {}

    def level(node: str, trail: frozenset[str]) -> int:
        if node not in depth:
            before = [p for p in preds[node] if p not in trail]  # a cycle would be no DAG; cut it
            depth[node] = 1 + max((level(p, trail | {node}) for p in before), default=-1)
        return depth[node]

    for node in ids:
        level(node, frozenset())
    layers: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for node in ids:
        layers[depth[node]].append(node)
    position: dict[str, float] = {}
    for layer in layers:

        def centre(node: str) -> float:
            places = [position[p] for p in preds[node] if p in position]
            return sum(places) / len(places) if places else float(ids.index(node))

        layer.sort(key=centre)
        for index, node in enumerate(layer):
            position[node] = float(index)
    return layers


def run_colours(runs: Sequence[str]) -> dict[str, tuple[str, str]]:
    """Each run's fill and stroke colour in the drawing, in the order the runs are listed."""
    return {run: PALETTE[i % len(PALETTE)] for i, run in enumerate(runs)}


def _clip(text: str) -> str:
    return text if len(text) <= LINE_CHARS else text[: LINE_CHARS - 1] + "…"


def _drawn(
    nodes: Sequence[Mapping[str, Any]], edges: Sequence[Mapping[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """What is drawn: a node per task and artifact, except that the tasks of one foreach step
    (more than two) are one box, and their outputs of one name one rounded box."""
    members: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for node in nodes:
        if node["kind"] == "task":
            members.setdefault((node["run"], node["step"]), []).append(node)
    into: dict[str, str] = {}
    drawn: dict[str, dict[str, Any]] = {}
    for (run, step), tasks in members.items():
        if len(tasks) <= 2:
            continue
        group = f"group:{run}/{step}"
        failed = sum(t["status"] == "failed" for t in tasks)
        state = f"{failed} failed" if failed else ", ".join(sorted({t["status"] for t in tasks}))
        drawn[group] = {
            "id": group,
            "kind": "task",
            "run": run,
            "failed": bool(failed),
            "lines": [f"{run}/{step} [{len(tasks)} tasks]", state],
            "tip": f"the {len(tasks)} tasks of step {run}/{step}: {state}",
            "anchor": tasks[0].get("anchor"),
            "hashes": set(),
        }
        into.update((t["id"], group) for t in tasks)
    producers: dict[str, set[str]] = {}
    for e in edges:
        if e["kind"] == "produced":
            producers.setdefault(e["target"], set()).add(into.get(e["source"], e["source"]))
    for node in nodes:
        made_by = producers.get(node["id"], set())
        if node["kind"] == "artifact" and len(made_by) == 1 and next(iter(made_by)) in drawn:
            group = f"{next(iter(made_by))}:{node['label']}"
            entry = drawn.setdefault(
                group,
                {
                    "id": group,
                    "kind": "artifact",
                    "external": False,
                    "hashes": set(),
                    "anchor": None,
                },
            )
            entry["hashes"].add(node["hash"])
            count = len(entry["hashes"])
            entry["lines"] = [f"{node['label']} [{count}]", f"{count} artifacts"]
            entry["tip"] = f"{count} artifacts named {node['label']}"
            into[node["id"]] = group
    for node in nodes:
        if node["id"] in into:
            continue
        if node["kind"] == "task":
            drawn[node["id"]] = {
                "id": node["id"],
                "kind": "task",
                "run": node["run"],
                "failed": node["status"] == "failed",
                "lines": [node["label"], f"attempt {node['attempt']} · {node['status']}"],
                "tip": f"task {node['label']} (attempt {node['attempt']}, {node['status']})",
                "anchor": node.get("anchor"),
                "hashes": set(),
            }
        else:
            uris = ", ".join(node["source_uris"])
            drawn[node["id"]] = {
                "id": node["id"],
                "kind": "artifact",
                "external": node["external"],
                "lines": [node["label"], node["hash"][:16]],
                "tip": f"artifact {node['label']} {node['hash']}"
                + (f" from {uris}" if uris else ""),
                "anchor": None,
                "hashes": {node["hash"]},
            }
    links = {
        (into.get(e["source"], e["source"]), into.get(e["target"], e["target"])): e for e in edges
    }
    flows = [
        {"source": a, "target": b, "kind": e["kind"]}
        for (a, b), e in links.items()
        if a in drawn and b in drawn and a != b
    ]
    return list(drawn.values()), flows


def lineage_svg(lineage: Mapping[str, Any], *, highlight: str | None = None) -> str:
    """The lineage graph of an audit document (its ``lineage`` part) as an ``<svg>`` element.

    Tasks are boxes coloured by run (failed ones outlined red), artifacts rounded boxes with
    their names and short hash, data from outside every run pale yellow with a dashed outline;
    arrows go from producer to artifact to consumer; the ``highlight`` artifact (the audited
    model's hash) has a heavy outline. Each node's full text is its tooltip.
    """
    nodes, edges = _drawn(lineage["nodes"], lineage["edges"])
    if not nodes:
        return ""
    by_id = {n["id"]: n for n in nodes}
    colours = run_colours(lineage["runs"])
    row_height = max(TASK_HEIGHT, ARTIFACT_HEIGHT)
    rows: list[tuple[float, list[str]]] = []  # each row's top and its nodes, left to right
    top = float(MARGIN)
    for layer in _layers(nodes, edges):
        for start in range(0, len(layer), PER_ROW):
            rows.append((top, layer[start : start + PER_ROW]))
            top += row_height + ROW_GAP
        top += V_GAP - ROW_GAP
    widest = max(len(members) for _, members in rows)
    total_width = MARGIN * 2 + widest * WIDTH + (widest - 1) * H_GAP
    total_height = top - V_GAP + MARGIN
    places: dict[str, tuple[float, float, float]] = {}  # id -> left, top, height
    for row_top, members in rows:
        # Centred: a row of one box sits in the middle, not at the left edge.
        left = (total_width - len(members) * WIDTH - (len(members) - 1) * H_GAP) / 2
        for index, node_id in enumerate(members):
            height = TASK_HEIGHT if by_id[node_id]["kind"] == "task" else ARTIFACT_HEIGHT
            places[node_id] = (
                left + index * (WIDTH + H_GAP),
                row_top + (row_height - height) / 2,
                float(height),
            )
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="lineage" role="img" '
        f'viewBox="0 0 {total_width:.0f} {total_height:.0f}" width="{total_width:.0f}" '
        f'height="{total_height:.0f}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" '
        f'font-size="11">',
        "<title>Lineage: tasks and the artifacts they produced and consumed</title>",
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#475569"/></marker></defs>',
    ]
    for e in edges:
        if e["source"] not in places or e["target"] not in places:
            continue
        (sx, sy, sh), (tx, ty, _) = places[e["source"]], places[e["target"]]
        x1, y1 = sx + WIDTH / 2, sy + sh
        x2, y2 = tx + WIDTH / 2, ty - 1
        bend = max((y2 - y1) / 2, 12)
        parts.append(
            f'<path d="M{x1:.1f},{y1:.1f} C{x1:.1f},{y1 + bend:.1f} {x2:.1f},{y2 - bend:.1f} '
            f'{x2:.1f},{y2:.1f}" fill="none" stroke="#475569" stroke-width="1.2" '
            f'marker-end="url(#arrow)"/>'
        )
    for item in nodes:
        parts.append(_box(item, places[item["id"]], colours, highlight in item["hashes"]))
    parts.append("</svg>")
    return "\n".join(parts)


def _box(
    node: Mapping[str, Any],
    place: tuple[float, float, float],
    colours: Mapping[str, tuple[str, str]],
    marked: bool = False,
) -> str:
    x, y, height = place
    lines = list(node["lines"])
    if node["kind"] == "task":
        fill, stroke = colours.get(node["run"], PALETTE[0])
        if node["failed"]:
            stroke = FAILED_STROKE
        shape = (
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{WIDTH}" height="{height}" fill="{fill}" '
            f'stroke="{stroke}" stroke-width="1.5"/>'
        )
    else:
        fill, stroke = EXTERNAL if node["external"] else ("#f8fafc", "#64748b")
        dash = ' stroke-dasharray="4 3"' if node["external"] else ""
        if marked:
            fill, stroke, lines[0] = "#fee2e2", "#0f172a", f"{lines[0]} (audited)"
        shape = (
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{WIDTH}" height="{height}" rx="12" '
            f'fill="{fill}" stroke="{stroke}" stroke-width="{3 if marked else 1.2}"{dash}/>'
        )
    tip = node["tip"]
    first, second = (escape(_clip(line)) for line in lines)
    cx = x + WIDTH / 2
    weight = "bold" if node["kind"] == "task" else "normal"
    mono = ' font-family="DejaVu Sans Mono, monospace"' if node["kind"] == "artifact" else ""
    text = (
        f'<text x="{cx:.1f}" y="{y + height / 2 - 3:.1f}" text-anchor="middle" '
        f'font-weight="{weight}">{first}</text>'
        f'<text x="{cx:.1f}" y="{y + height / 2 + 10:.1f}" text-anchor="middle" '
        f'fill="#334155" font-size="10"{mono}>{second}</text>'
    )
    body = f"<g><title>{escape(tip)}</title>{shape}{text}</g>"
    anchor = node.get("anchor")
    if anchor:
        return f'<a href="#{escape(anchor)}">{body}</a>'
    return body
