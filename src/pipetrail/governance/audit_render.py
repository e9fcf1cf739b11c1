"""The audit document as a file: self-contained HTML (inline CSS and SVG, nothing fetched),
the same HTML as PDF through WeasyPrint, or JSON; written atomically."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from pipetrail.errors import UsageError
from pipetrail.governance.audit_graph import lineage_svg, run_colours
from pipetrail.governance.audit_summary import when

__all__ = ["FORMATS", "render", "render_html", "render_json", "render_pdf", "write_atomically"]

FORMATS = ("html", "pdf", "json")

PDF_EXTRA = "pip install 'pipetrail[audit]'"


def render_json(document: dict[str, Any]) -> bytes:
    """The document as indented JSON (UTF-8)."""
    return (json.dumps(document, indent=2, ensure_ascii=False, default=str) + "\n").encode()


def _size(value: Any) -> str:
    if not isinstance(value, int | float):
        return "-"
    size = float(value)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


def _seconds(value: Any) -> str:
    if not isinstance(value, int | float):
        return "-"
    return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"


def _value(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def render_html(document: dict[str, Any]) -> str:
    """The document as one HTML page that opens offline and prints well."""
    from importlib.metadata import PackageNotFoundError, version

    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    env = Environment(
        loader=PackageLoader("pipetrail.governance", "templates"),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(size=_size, seconds=_seconds, value=_value, when=when)
    try:
        pipetrail_version = version("pipetrail")
    except PackageNotFoundError:  # running from a source tree that was never installed
        pipetrail_version = "unknown"
    environments: dict[str, dict[str, Any]] = {}
    for run in document["runs"]:
        env_doc = run["environment"]
        if env_doc and not env_doc.get("missing"):
            entry = environments.setdefault(env_doc["hash"], {"env": env_doc, "runs": []})
            entry["runs"].append(run["pathspec"])
    return env.get_template("audit.html").render(
        doc=document,
        svg=lineage_svg(document["lineage"], highlight=document["subject"]["artifact_hash"]),
        colours=run_colours(document["lineage"]["runs"]),
        anchors={s["pathspec"]: s["anchor"] for r in document["runs"] for s in r["steps"]},
        environments=list(environments.values()),
        pipetrail_version=pipetrail_version,
    )


def render_pdf(html: str) -> bytes:
    """The HTML as PDF, laid out by WeasyPrint (the ``audit`` extra).

    Raises:
        UsageError: WeasyPrint is not installed (or its system libraries are missing).
    """
    try:
        from weasyprint import HTML
    except (ImportError, OSError) as exc:
        raise UsageError(f"--format pdf needs WeasyPrint ({exc}): {PDF_EXTRA}") from None
    data: bytes = HTML(string=html).write_pdf()  # the bytes, when given no target
    return data


def render(document: dict[str, Any], fmt: str) -> bytes:
    """The document in ``fmt`` (html, pdf or json) as bytes.

    Raises:
        UsageError: an unknown format, or PDF without WeasyPrint.
    """
    if fmt == "json":
        return render_json(document)
    if fmt == "html":
        return render_html(document).encode()
    if fmt == "pdf":
        return render_pdf(render_html(document))
    raise UsageError(f"unknown audit format {fmt!r}: use one of {', '.join(FORMATS)}")


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file beside it and a rename, so a reader
    (or a failure) never sees half a report.

    Raises:
        UsageError: the folder does not exist or cannot be written.
    """
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise UsageError(f"cannot write {str(path)!r}: there is no folder {str(folder)!r}")
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise UsageError(f"cannot write {str(path)!r}: {exc.strerror}") from None
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException as exc:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise UsageError(f"cannot write {str(path)!r}: {exc.strerror}") from None
        raise
