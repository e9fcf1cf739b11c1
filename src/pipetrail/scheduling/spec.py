"""A trigger as people write it (CLI options, YAML, REST, Python) into a TriggerDefinition.

One vocabulary everywhere: ``pipeline`` (``FILE[:PIPELINE]``), one of ``cron``, ``every``,
``once_at``, ``always_on``, ``after`` (with ``on``) and ``api``, then ``timezone``, ``start``,
``end``, ``params``, ``variables``, ``tags``, ``sla``, ``timeout``, ``on_timeout``,
``max_concurrent``, ``overlap`` and ``catchup``. :func:`to_fields` writes the same keys back.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from pipetrail.core.params import to_json_value
from pipetrail.dsl import parse_duration
from pipetrail.errors import UsageError
from pipetrail.storage.metadata.base import TriggerDefinition

__all__ = ["FIELDS", "KIND_FIELDS", "check_pipeline", "definition_from", "parse_time", "to_fields"]

#: The field that names each kind, in the order they are looked for.
KIND_FIELDS = {
    "cron": "cron",
    "every": "interval",
    "once_at": "once",
    "always_on": "always_on",
    "after": "after",
    "api": "api",
}
FIELDS = (
    "name",
    "pipeline",
    *KIND_FIELDS,
    "on",
    "timezone",
    "start",
    "end",
    "params",
    "variables",
    "tags",
    "sla",
    "timeout",
    "on_timeout",
    "max_concurrent",
    "overlap",
    "catchup",
)
ON_TIMEOUT = ("failed", "cancelled", "warning")


def parse_time(value: Any, what: str) -> datetime:
    """An ISO 8601 time with its zone (``2026-12-24T18:00:00Z``), or a datetime.

    Raises:
        UsageError: naming ``what`` and the value.
    """
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            raise UsageError(
                f"{what}: cannot read {value!r} as a time; use ISO 8601 such as "
                "2026-12-24T18:00:00Z"
            ) from None
    else:
        raise UsageError(f"{what}: expected an ISO 8601 time, got {value!r}")
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise UsageError(f"{what}: {value!r} has no time zone; add one, e.g. 'Z' or '+01:00'")
    return parsed


def _mapping(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise UsageError(f"{what}: expected a mapping of names to values, got {value!r}")
    return dict(value)


def definition_from(
    fields: Mapping[str, Any], *, base_dir: Path | None = None, where: str = "trigger"
) -> TriggerDefinition:
    """Read a trigger written in the common vocabulary; relative files are taken from ``base_dir``.

    ``where`` names the source in errors (``triggers.yaml: trigger 'nightly'``).

    Raises:
        UsageError: an unknown field, no kind or two kinds, a bad duration, time or value;
            one line naming the field and what is expected.
    """
    unknown = sorted(set(fields) - set(FIELDS))
    if unknown:
        raise UsageError(
            f"{where}: unknown field {unknown[0]!r}; expected one of {', '.join(FIELDS)}"
        )
    name = fields.get("name")
    if not isinstance(name, str) or not name.strip():
        raise UsageError(f"{where}: 'name' must be a non-empty string, got {name!r}")
    where = f"{where} {name!r}" if where == "trigger" else f"{where}: trigger {name!r}"
    target = fields.get("pipeline")
    if not isinstance(target, str) or not target.strip():
        raise UsageError(f"{where}: 'pipeline' must be FILE[:PIPELINE], got {target!r}")
    file_text, _, pipeline_name = target.partition(":")
    file = Path(file_text).expanduser()
    if not file.is_absolute():
        file = (base_dir or Path.cwd()) / file
    kinds = [k for k in KIND_FIELDS if fields.get(k) not in (None, False)]
    if len(kinds) != 1:
        said = ", ".join(kinds) if kinds else "none"
        raise UsageError(
            f"{where}: give exactly one of cron, every, once_at, always_on, after, api (got {said})"
        )
    key = kinds[0]
    values: dict[str, Any] = {"kind": KIND_FIELDS[key]}
    if key == "cron":
        values["cron"] = str(fields["cron"])
    elif key == "every":
        values["interval_s"] = parse_duration(fields["every"], what=f"{where}: every")
    elif key == "once_at":
        values["once_at"] = parse_time(fields["once_at"], f"{where}: once_at")
    elif key == "after":
        values["after_pipeline"] = str(fields["after"])
        values["after_on"] = fields.get("on")
    for flag in ("always_on", "api"):
        if fields.get(flag) not in (None, False, True):
            raise UsageError(f"{where}: {flag!r} is true or false, got {fields[flag]!r}")
    if fields.get("on") is not None and key != "after":
        raise UsageError(f"{where}: 'on' goes with 'after', not with {key!r}")
    for bound in ("start", "end"):
        if fields.get(bound) is not None:
            if key != "every":
                raise UsageError(f"{where}: {bound!r} bounds an 'every' trigger, not {key!r}")
            values[f"{bound}_at"] = parse_time(fields[bound], f"{where}: {bound}")
    params = _mapping(fields.get("params"), f"{where}: params")
    variables = {
        k: str(v) for k, v in _mapping(fields.get("variables"), f"{where}: variables").items()
    }
    tags = fields.get("tags") or []
    if isinstance(tags, str):
        tags = [tags]
    if not isinstance(tags, (list, tuple)) or not all(isinstance(t, str) for t in tags):
        raise UsageError(f"{where}: 'tags' must be a list of strings, got {tags!r}")
    on_timeout = fields.get("on_timeout")
    if on_timeout is not None and on_timeout not in ON_TIMEOUT:
        raise UsageError(
            f"{where}: on_timeout {on_timeout!r} is not one of {', '.join(ON_TIMEOUT)}"
        )
    most = fields.get("max_concurrent")
    if most is not None and (isinstance(most, bool) or not isinstance(most, int) or most < 1):
        raise UsageError(f"{where}: max_concurrent must be an integer >= 1, got {most!r}")
    from pipetrail.core.ids import validate_user_tags

    return TriggerDefinition(
        name=name.strip(),
        pipeline_file=str(file.resolve()),
        pipeline_name=pipeline_name or None,
        timezone=str(fields.get("timezone") or "UTC"),
        params={k: to_json_value(v) for k, v in params.items()},
        variables=variables,
        tags=tuple(validate_user_tags(list(tags))),
        timeout_s=parse_duration(fields.get("timeout"), what=f"{where}: timeout"),
        on_timeout=on_timeout,
        sla_s=parse_duration(fields.get("sla"), what=f"{where}: sla"),
        max_concurrent=most,
        overlap=str(fields.get("overlap") or "wait"),
        catchup=str(fields.get("catchup") or "latest"),
        **values,
    )


def to_fields(definition: TriggerDefinition) -> dict[str, Any]:
    """The definition in the common vocabulary (what ``definition_from`` reads), defaults left out."""
    d = definition
    out: dict[str, Any] = {
        "name": d.name,
        "pipeline": d.pipeline_file + (f":{d.pipeline_name}" if d.pipeline_name else ""),
    }
    if d.kind == "cron":
        out["cron"] = d.cron
    elif d.kind == "interval":
        out["every"] = _seconds_text(d.interval_s)
    elif d.kind == "once" and d.once_at is not None:
        out["once_at"] = d.once_at.isoformat()
    elif d.kind == "after":
        out["after"] = d.after_pipeline
        out["on"] = d.after_on or "completed"
    else:
        out[d.kind] = True
    if d.timezone != "UTC":
        out["timezone"] = d.timezone
    if d.start_at is not None:
        out["start"] = d.start_at.isoformat()
    if d.end_at is not None:
        out["end"] = d.end_at.isoformat()
    optional: dict[str, Any] = {
        "params": d.params or None,
        "variables": d.variables or None,
        "tags": list(d.tags) or None,
        "sla": _seconds_text(d.sla_s),
        "timeout": _seconds_text(d.timeout_s),
        "on_timeout": d.on_timeout,
        "max_concurrent": d.max_concurrent,
        "overlap": None if d.overlap == "wait" else d.overlap,
        "catchup": None if d.catchup == "latest" else d.catchup,
    }
    out.update({k: v for k, v in optional.items() if v is not None})
    return out


def _seconds_text(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def check_pipeline(definition: TriggerDefinition, *, from_text: bool = False) -> TriggerDefinition:
    """Load the trigger's pipeline and check its parameters, before anything is stored.

    ``from_text``: the parameters are command-line text (``-p lr=0.1``), coerced to their types.

    Returns the definition with the pipeline's name filled in and the parameters as the
    pipeline types them (JSON values).

    Raises:
        PipelineLoadError: the file is missing, does not import, or lacks the pipeline.
        ParameterError: an unknown parameter or a value of the wrong type.
    """
    import dataclasses

    from pipetrail.runtime.loader import load_pipeline_file

    pipeline = load_pipeline_file(Path(definition.pipeline_file), definition.pipeline_name)
    resolved = pipeline.resolve_params(definition.params, from_text=from_text)
    params = {k: to_json_value(resolved[k]) for k in definition.params}
    return dataclasses.replace(definition, pipeline_name=pipeline.name, params=params)
