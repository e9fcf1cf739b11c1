"""Pathspecs: the stable address of a run, step or task (``iris/42/train/0``)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from pipetrail.errors import UsageError

__all__ = [
    "NAME_PATTERN",
    "SYSTEM_TAG_PREFIXES",
    "Pathspec",
    "parse_pathspec",
    "validate_name",
    "validate_user_tags",
]

#: Tags pipetrail sets itself; a user tag may not pose as one.
SYSTEM_TAG_PREFIXES = ("user:", "runtime:", "pipeline_version:", "host:", "trigger:", "git_commit:")

#: Pipeline, step, output and parameter names: identifiers, so they are safe in paths and URLs.
NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")


def validate_name(kind: str, name: str) -> str:
    """Return ``name`` if it is a valid pipeline/step name, else raise UsageError naming it."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise UsageError(
            f"invalid {kind} name {name!r}: use letters, digits, '_' or '-', starting with a letter"
        )
    return name


@dataclass(frozen=True)
class Pathspec:
    """A parsed address: ``pipeline/run_id[/step[/task]]``; ``pipeline`` is None for a bare run id."""

    pipeline: str | None
    run_id: int
    step: str | None = None
    task: int | None = None

    def __str__(self) -> str:
        parts = [self.pipeline or "?", str(self.run_id)]
        if self.step is not None:
            parts.append(self.step)
        if self.task is not None:
            parts.append(str(self.task))
        return "/".join(parts)


def parse_pathspec(text: str) -> Pathspec:
    """Parse ``42``, ``iris/42``, ``iris/42/train`` or ``iris/42/train/0``.

    Raises:
        UsageError: naming the text and the expected shape.
    """
    parts = text.strip().strip("/").split("/")
    expected = "expected RUN_ID or PIPELINE/RUN_ID[/STEP[/TASK]], e.g. 'iris/42'"
    try:
        if len(parts) == 1:
            return Pathspec(None, _int(parts[0]))
        pipeline = validate_name("pipeline", parts[0])
        run_id = _int(parts[1])
        if len(parts) == 2:
            return Pathspec(pipeline, run_id)
        step = validate_name("step", parts[2])
        if len(parts) == 3:
            return Pathspec(pipeline, run_id, step)
        if len(parts) == 4:
            return Pathspec(pipeline, run_id, step, _int(parts[3]))
    except (UsageError, ValueError) as exc:
        raise UsageError(f"invalid run address {text!r}: {expected}") from exc
    raise UsageError(f"invalid run address {text!r}: {expected}")


def _int(text: str) -> int:
    value = int(text)
    if value < 0 or value >= 2**63:
        raise ValueError(text)
    return value


def validate_user_tags(tags: Iterable[str]) -> tuple[str, ...]:
    """Strip and check user tags: non-empty, at most 500 characters, not a system prefix.

    Raises:
        UsageError: naming the tag.
    """
    result = []
    for tag in tags:
        text = tag.strip() if isinstance(tag, str) else ""
        if not text or len(text) > 500:
            raise UsageError(
                f"a tag must be a non-empty string of at most 500 characters, got {tag!r}"
            )
        if text.startswith(SYSTEM_TAG_PREFIXES):
            raise UsageError(
                f"tag {text!r} starts with {text.split(':', 1)[0]!r}:, which is reserved for the "
                "system tags pipetrail sets itself; choose another prefix"
            )
        result.append(text)
    return tuple(dict.fromkeys(result))
