"""Render benchmark results: a table on stdout (Rich when available) and the JSON document."""

from __future__ import annotations

import hashlib
import os
import platform
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["machine_info", "print_table", "repo_info"]


def machine_info() -> dict[str, Any]:
    """CPU, memory, OS and interpreter facts that figures depend on."""
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "sqlite": sqlite3.sqlite_version,
        "timestamp": datetime.now(UTC).isoformat(),
    }
    try:
        import psutil

        info["memory_bytes"] = psutil.virtual_memory().total
    except ImportError:
        info["memory_bytes"] = None
    for package in ("pipetrail", "numpy", "sqlalchemy"):
        try:
            from importlib.metadata import version

            info[f"{package}_version"] = version(package)
        except Exception:
            info[f"{package}_version"] = None
    return info


def repo_info(repo: Path) -> dict[str, Any]:
    """Commit and dirty flag of the checkout being measured (read-only git calls)."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", *args], cwd=repo, capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    status = git("status", "--porcelain", "--", "src")
    return {
        "commit": git("rev-parse", "HEAD"),
        "src_dirty": bool(status) if status is not None else None,
        "src_digest": _tree_digest(repo / "src"),
    }


def _tree_digest(root: Path) -> str:
    """sha256 over every ``.py`` file's path and bytes: which uncommitted source was measured."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _format(value: float, unit: str) -> str:
    if unit in ("points/s", "bytes"):
        return f"{value:,.0f}"
    if unit == "s":
        return f"{value:.3f}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}"


def _rows(results: dict[str, dict[str, Any]]) -> list[tuple[str, str, str, str, str, str]]:
    rows = []
    for name, result in results.items():
        for figure in result.get("figures", []):
            rows.append(
                (
                    figure["name"],
                    _format(figure["value"], figure["unit"]),
                    figure["unit"],
                    figure["target"] or "-",
                    figure["verdict"],
                    figure["note"],
                )
            )
        if result["status"] != "ok":
            rows.append((name, "-", "-", "-", result["status"].upper(), result["error"][:120]))
    return rows


def print_table(results: dict[str, dict[str, Any]], title: str) -> None:
    """Print name / figure / unit / target / verdict / how-measured, one row per figure."""
    rows = _rows(results)
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        _print_plain(rows, title)
        return
    colours = {"PASS": "green", "MISS": "red", "INFO": "dim"}
    table = Table(title=title, show_lines=False)
    for header, justify in (
        ("name", "left"),
        ("figure", "right"),
        ("unit", "left"),
        ("target", "left"),
        ("verdict", "left"),
        ("how measured", "left"),
    ):
        table.add_column(header, justify=justify)  # type: ignore[arg-type]
    for name, value, unit, target, verdict, note in rows:
        style = colours.get(verdict, "bold red")
        table.add_row(name, value, unit, target, f"[{style}]{verdict}[/]", note)
    Console(width=max(160, Console().width)).print(table)


def _print_plain(rows: list[tuple[str, str, str, str, str, str]], title: str) -> None:
    headers = ("name", "figure", "unit", "target", "verdict", "how measured")
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(5)]
    print(title)
    for row in [headers, *rows]:
        cells = [
            str(row[i]).ljust(widths[i]) if i != 1 else str(row[i]).rjust(widths[i])
            for i in range(5)
        ]
        print("  ".join([*cells, row[5]]))
