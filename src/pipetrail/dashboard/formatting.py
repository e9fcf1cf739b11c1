"""How the dashboard shows values: durations, sizes, times and previews of parameters."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "EMPTY",
    "FILTERS",
    "format_bytes",
    "format_duration",
    "format_metric",
    "format_offset",
    "format_time",
    "format_value",
    "iso",
    "short_hash",
]


#: What an unknown value shows as.
EMPTY = "\N{EN DASH}"


def format_duration(seconds: float | None) -> str:
    """``420 ms``, ``4.20 s``, ``12.3 s``, ``4 min 05 s``, ``2 h 03 min``; an en dash when unknown."""
    if seconds is None:
        return EMPTY
    if seconds < 0.0005:
        return "0 ms"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours:02d} h"


def format_offset(seconds: float, span: float) -> str:
    """A mark on a time axis ``span`` seconds long: precise enough to tell marks apart."""
    if span < 0.01:
        return f"{seconds * 1000:.2f} ms"
    if span < 1:
        return f"{seconds * 1000:.0f} ms"
    if span < 10:
        return f"{seconds:.1f} s"
    return format_duration(seconds)


def format_bytes(size: int | float | None) -> str:
    """``512 B``, ``1.5 KiB``, ``230 MiB``; an en dash when unknown."""
    if size is None:
        return EMPTY
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover - the loop always returns


def iso(moment: datetime | None) -> str:
    """ISO 8601 in UTC, for ``<time datetime>`` and for scripts; empty when unknown."""
    if moment is None:
        return ""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def format_time(moment: datetime | None) -> str:
    """``2024-05-01 12:30:05 UTC`` (the page's script shows it in local time)."""
    if moment is None:
        return EMPTY
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def format_value(value: Any, limit: int = 80) -> str:
    """A parameter or variable value as short text: strings bare, the rest as JSON."""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=repr)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def format_metric(value: Any) -> str:
    """A metric value with five significant digits (text such as ``nan`` as it is)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    return f"{value:.5g}"


def short_hash(key: str | None, length: int = 12) -> str:
    """The first characters of a content hash (the rest is in the link)."""
    return (key or "")[:length]


#: Jinja filters, by name.
FILTERS = {
    "duration": format_duration,
    "bytes": format_bytes,
    "iso": iso,
    "time": format_time,
    "value": format_value,
    "metric": format_metric,
    "short": short_hash,
}
