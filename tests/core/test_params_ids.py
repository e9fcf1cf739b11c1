"""Parameter coercion and flattening; pathspec parsing."""

from __future__ import annotations

import pytest

from pipetrail.core.ids import Pathspec, parse_pathspec
from pipetrail.core.params import coerce_text, flatten, to_json_value
from pipetrail.errors import ParameterError, UsageError


@pytest.mark.parametrize(
    ("label", "text", "value"),
    [
        ("int", "3", 3),
        ("float", "0.05", 0.05),
        ("bool", "yes", True),
        ("bool", "False", False),
        ("str", "x=1", "x=1"),
        ("list", "[1, 2]", [1, 2]),
        ("dict", '{"a": 1}', {"a": 1}),
        ("any", "3", 3),
        ("any", "hello", "hello"),
    ],
)
def test_coerce_text(label: str, text: str, value: object) -> None:
    assert coerce_text("p", label, text, where="step 's'") == value


def test_coerce_text_rejects_with_the_name_and_value() -> None:
    with pytest.raises(
        ParameterError, match="parameter 'n' of step 's' expects an integer, got 'x'"
    ):
        coerce_text("n", "int", "x", where="step 's'")


def test_flatten_nested_values() -> None:
    value = to_json_value({"opt": {"lr": 0.1, "betas": (0.9, 0.99)}, "name": "adam"})
    assert dict(flatten(value)) == {
        "opt.lr": 0.1,
        "opt.betas.0": 0.9,
        "opt.betas.1": 0.99,
        "name": "adam",
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("42", Pathspec(None, 42)),
        ("iris/42", Pathspec("iris", 42)),
        ("iris/42/train", Pathspec("iris", 42, "train")),
        ("iris/42/train/0", Pathspec("iris", 42, "train", 0)),
    ],
)
def test_parse_pathspec(text: str, expected: Pathspec) -> None:
    assert parse_pathspec(text) == expected


@pytest.mark.parametrize("text", ["", "iris", "iris/x", "iris/-1", "a/1/b/c/d", "../1"])
def test_bad_pathspecs(text: str) -> None:
    with pytest.raises(UsageError, match="invalid run address"):
        parse_pathspec(text)
