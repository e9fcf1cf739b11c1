"""``pipetrail audit``: one self-contained report of a model version (or a run) and its lineage."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from pipetrail.cli.common import errors, workspace_or_nothing
from pipetrail.errors import UsageError
from pipetrail.governance.audit_render import FORMATS


def _format_of(output: str, fmt: str | None) -> str:
    if fmt is not None:
        return fmt
    suffix = Path(output).suffix.lower().lstrip(".")
    return suffix if suffix in FORMATS else "html"


@click.command("audit")
@click.argument("ref", metavar="REF")
@click.option(
    "-o",
    "--output",
    required=True,
    metavar="FILE",
    help="Where to write the report ('-': standard output, for html and json).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default=None,
    help="html, pdf or json [default: from FILE's suffix, else html].",
)
@click.option(
    "--run",
    "as_run",
    is_flag=True,
    help="Read REF as a run even when a model of that name is registered.",
)
@errors
def audit_command(ref: str, output: str, fmt: str | None, as_run: bool) -> None:
    """Write the audit report of a model version or a run: its lineage, code, data and approvals.

    REF is a model version (churn@production, churn/3, or churn for its latest version) or a
    run (prep/12, 12): the producing run and every upstream run whose artifacts it consumed,
    each step's code, parameters, environment, inputs and outputs with their content hashes,
    metrics, retries and failures, the approvals, and whether a reproduction matched. The
    HTML opens offline and prints well; --format pdf renders the same page with WeasyPrint.
    """
    from pipetrail.governance.audit import audit_document, resolve_subject
    from pipetrail.governance.audit_render import render, write_atomically
    from pipetrail.governance.identity import acting_user

    chosen = _format_of(output, fmt)
    if output == "-" and chosen == "pdf":
        raise UsageError("--format pdf needs a file: give -o report.pdf")
    if output != "-" and Path(output).is_dir():
        raise UsageError(f"-o {output!r} is a folder: give a file name such as report.html")
    workspace = workspace_or_nothing(f"model or run {ref!r}")
    reader = workspace.reader()
    subject = resolve_subject(reader, ref, as_run=as_run)
    who = acting_user(workspace.store, os.environ.get("PIPETRAIL_TOKEN"))
    document = audit_document(reader, subject, generated_by=who)
    data = render(document, chosen)
    if output == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    write_atomically(Path(output), data)
    what = subject.version.ref if subject.version is not None else f"run {subject.run.pathspec}"
    runs = len(document["runs"])
    click.echo(
        f"wrote {output} ({chosen}, {len(data):,} bytes): the audit of {what}, "
        f"{runs} run{'s' if runs != 1 else ''} covered"
    )
