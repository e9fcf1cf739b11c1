"""Pipeline parameters: declared types, coercion of command-line text, typed JSON and flattening."""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Iterator, Mapping
from typing import Any

from pipetrail.errors import ParameterError

__all__ = [
    "SCALAR_TYPES",
    "coerce_text",
    "flatten",
    "to_json_value",
    "type_label",
    "validate_value",
]

#: Types a parameter can be declared with and given on the command line as text.
SCALAR_TYPES: dict[str, type] = {"int": int, "float": float, "bool": bool, "str": str}
_CONTAINER_TYPES: dict[str, type] = {"list": list, "dict": dict}
_TRUE = {"true", "1", "yes", "on", "y"}
_FALSE = {"false", "0", "no", "off", "n"}


def type_label(annotation: Any, default: Any) -> str:
    """The declared type of a parameter as a short label (``int``, ``float``, ``dict``, ``any`` …).

    The annotation wins (``Optional[X]`` and ``X | None`` count as ``X``); without one (None)
    the default's type is used.
    """
    label = _annotation_label(annotation)
    if label is None and default is not None:
        label = _class_label(type(default))
    return label or "any"


def _annotation_label(annotation: Any) -> str | None:
    if annotation is None:
        return None
    if isinstance(annotation, str):
        # `from __future__ import annotations` turns annotations into strings.
        text = annotation.replace(" ", "")
        for wrapper in ("Optional[", "typing.Optional["):
            if text.startswith(wrapper) and text.endswith("]"):
                text = text[len(wrapper) : -1]
        parts = [p for p in text.split("|") if p != "None"]
        if len(parts) != 1:
            return "any"
        base = parts[0].split("[", 1)[0].lower()
        base = {"typing.list": "list", "typing.dict": "dict", "tuple": "list"}.get(base, base)
        return base if base in SCALAR_TYPES or base in _CONTAINER_TYPES else "any"
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _annotation_label(args[0]) if len(args) == 1 else "any"
    if origin is not None:
        return _class_label(origin)
    if isinstance(annotation, type):
        return _class_label(annotation)
    return "any"


def _class_label(kind: type) -> str:
    for label, known in {**SCALAR_TYPES, **_CONTAINER_TYPES}.items():
        if kind is known:
            return label
    return "list" if kind is tuple else "any"


def coerce_text(name: str, label: str, text: str, *, where: str) -> Any:
    """Turn command-line text into a value of the declared type.

    Args:
        name: the parameter's name, for the message.
        label: its declared type label (see ``type_label``).
        text: the raw text after ``name=``.
        where: which step(s) declare it, for the message.

    Raises:
        ParameterError: naming the parameter, the text and the expected type.
    """
    try:
        if label == "int":
            return int(text)
        if label == "float":
            value = float(text)
            if not math.isfinite(value):
                raise ValueError(text)
            return value
        if label == "bool":
            lowered = text.strip().lower()
            if lowered in _TRUE:
                return True
            if lowered in _FALSE:
                return False
            raise ValueError(text)
        if label == "str":
            return text
        if label in ("list", "dict"):
            value = json.loads(text)
            if not isinstance(value, _CONTAINER_TYPES[label]):
                raise ValueError(text)
            return value
    except ValueError:
        raise ParameterError(
            f"parameter {name!r} of {where} expects {_article(label)}, got {text!r}"
        ) from None
    # Untyped parameter: JSON if it parses (numbers, lists, objects), else the plain string.
    try:
        return json.loads(text)
    except ValueError:
        return text


def validate_value(name: str, label: str, value: Any, *, where: str) -> Any:
    """Check a Python value against the declared type; ints are accepted (and kept) for floats.

    Raises:
        ParameterError: naming the parameter, the value and the expected type.
    """
    expected = SCALAR_TYPES.get(label) or _CONTAINER_TYPES.get(label)
    if expected is None:
        return value
    ok = isinstance(value, expected)
    if label == "float":
        ok = (
            isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        )
    elif label == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif label == "list":
        ok = isinstance(value, (list, tuple))
    if not ok:
        raise ParameterError(
            f"parameter {name!r} of {where} expects {_article(label)}, "
            f"got {type(value).__name__} {value!r}"
        )
    return value


def to_json_value(value: Any) -> Any:
    """A JSON-ready form of a parameter value: dataclasses and Pydantic models become dicts."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json_value(getattr(value, f.name)) for f in dataclasses.fields(value)}
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return to_json_value(dump(mode="json"))
    if isinstance(value, Mapping):
        return {str(k): to_json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
        return [to_json_value(v) for v in items]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    return repr(value)


def flatten(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Yield ``(dotted.path, scalar)`` pairs of a JSON value: ``{"opt": {"lr": 1}}`` → ``opt.lr``.

    List items are addressed by index (``layers.0``). Empty containers yield nothing.
    """
    if isinstance(value, dict):
        for key, item in value.items():
            yield from flatten(item, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from flatten(item, f"{prefix}.{index}" if prefix else str(index))
    else:
        yield prefix, value


def _article(label: str) -> str:
    names = {
        "int": "an integer",
        "float": "a finite number",
        "bool": "true or false",
        "str": "a string",
    }
    return names.get(label, f"a JSON {label}")
