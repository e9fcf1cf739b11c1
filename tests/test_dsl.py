"""Pipeline definitions: wiring by argument names, and one clear error per definition mistake."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

import pipetrail as pt
from pipetrail.dsl import parse_duration
from pipetrail.errors import CycleError, DefinitionError, ParameterError


@pt.step
def load(source: str = "iris"):  # type: ignore[no-untyped-def]
    return source


@pt.step
def train(load, lr: float = 0.1, epochs: int = 3):  # type: ignore[no-untyped-def]
    return load


@pt.step
def evaluate(train, load):  # type: ignore[no-untyped-def]
    return train


def test_inputs_and_parameters_come_from_argument_names() -> None:
    pipeline = pt.Pipeline("iris", [load, train, evaluate])
    spec = pipeline.spec
    assert pipeline.dag.order == ["load", "train", "evaluate"]
    assert [i.step for i in spec.step("evaluate").inputs] == ["train", "load"]
    assert {p.name: (p.type, p.default) for p in spec.params} == {
        "source": ("str", "iris"),
        "lr": ("float", 0.1),
        "epochs": ("int", 3),
    }
    assert spec.step("train").params == ("lr", "epochs")
    assert pipeline.resolve_params({"lr": "0.5"}, from_text=True)["lr"] == 0.5
    assert train("x") == "x", "a step is still a plain function"


def test_version_ignores_comments_but_not_code() -> None:
    def make(body: str) -> str:
        namespace: dict[str, object] = {}
        exec(body, {"pt": pt}, namespace)
        return pt.Pipeline("v", [namespace["a"]]).version  # type: ignore[list-item]

    # exec'd functions have no source file; versions then hash their names only.
    assert make("def a():\n    return 1\n") == make("def a():\n    return 1\n")
    assert pt.Pipeline("v", [load]).version == pt.Pipeline("v", [load]).version


@pytest.mark.parametrize(
    ("build", "error", "message"),
    [
        (lambda: pt.Pipeline("p", [load, load]), DefinitionError, "two steps are named 'load'"),
        (
            lambda: pt.Pipeline("p", [train]),
            DefinitionError,
            "argument 'load' of step 'train' names no step",
        ),
        (lambda: pt.Pipeline("p", []), DefinitionError, "has no steps"),
        (lambda: pt.Pipeline("bad name", [load]), pt.PipetrailError, "invalid pipeline name"),
    ],
)
def test_definition_errors_name_the_step_and_argument(
    build: object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        build()  # type: ignore[operator]


def test_cycle_is_reported_with_its_path() -> None:
    @pt.step
    def a(c):  # type: ignore[no-untyped-def]
        return c

    @pt.step
    def b(a):  # type: ignore[no-untyped-def]
        return a

    @pt.step
    def c(b):  # type: ignore[no-untyped-def]
        return b

    with pytest.raises(
        CycleError, match=r"pipeline 'cyc': steps form a cycle: (\w) -> (\w) -> (\w) -> \1"
    ):
        pt.Pipeline("cyc", [a, b, c])


def test_missing_input_suggests_the_close_name() -> None:
    @pt.step
    def fit(laod):  # type: ignore[no-untyped-def]
        return laod

    with pytest.raises(DefinitionError, match="did you mean 'load'"):
        pt.Pipeline("p", [load, fit])


def test_ill_typed_default_is_a_definition_error() -> None:
    @pt.step
    def fit(lr: float = "fast"):  # type: ignore[assignment,no-untyped-def]
        return lr

    with pytest.raises(
        DefinitionError, match=r"argument 'lr' of step 'fit'.*expects a finite number"
    ):
        pt.Pipeline("p", [fit])


def test_conflicting_shared_parameter_names_both_steps() -> None:
    @pt.step
    def a(seed: int = 1):  # type: ignore[no-untyped-def]
        return seed

    @pt.step
    def b(a, seed: int = 2):  # type: ignore[no-untyped-def]
        return seed

    with pytest.raises(
        DefinitionError, match=r"parameter 'seed' is declared differently by step 'a'.*step 'b'"
    ):
        pt.Pipeline("p", [a, b])


def test_default_named_after_a_step_is_refused() -> None:
    @pt.step
    def fit(load=None):  # type: ignore[no-untyped-def]
        return load

    with pytest.raises(DefinitionError, match="has a default but is named after an upstream step"):
        pt.Pipeline("p", [load, fit])


def test_var_args_are_refused() -> None:
    @pt.step
    def fit(*args):  # type: ignore[no-untyped-def]
        return args

    with pytest.raises(DefinitionError, match=r"\*args and \*\*kwargs cannot be wired"):
        pt.Pipeline("p", [fit])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"lrr": "1"}, "unknown parameter 'lrr' for pipeline 'iris'; did you mean 'lr'"),
        ({"lr": "fast"}, "parameter 'lr' of step 'train' expects a finite number, got 'fast'"),
        ({"epochs": "2.5"}, "parameter 'epochs' of step 'train' expects an integer"),
    ],
)
def test_unknown_and_ill_typed_parameters(overrides: dict[str, str], message: str) -> None:
    pipeline = pt.Pipeline("iris", [load, train, evaluate])
    with pytest.raises(ParameterError, match=message):
        pipeline.resolve_params(overrides, from_text=True)


def test_python_values_are_type_checked_too() -> None:
    pipeline = pt.Pipeline("iris", [load, train, evaluate])
    assert pipeline.resolve_params({"lr": 1})["lr"] == 1
    with pytest.raises(ParameterError, match="expects an integer, got str"):
        pipeline.resolve_params({"epochs": "3"})


@dataclass
class Optimizer:
    lr: float = 0.1
    momentum: float = 0.9


def test_nested_parameters_are_allowed() -> None:
    @pt.step
    def fit(opt: Optimizer = Optimizer(), layers: list = [64, 32]):  # type: ignore[type-arg,no-untyped-def]  # noqa: B006, B008
        return opt

    pipeline = pt.Pipeline("nested", [fit])
    params = {p.name: p for p in pipeline.spec.params}
    assert params["opt"].default == {"lr": 0.1, "momentum": 0.9}
    assert params["layers"].type == "list"
    assert pipeline.resolve_params({"layers": "[1, 2]"}, from_text=True)["layers"] == [1, 2]


@pytest.mark.parametrize(
    ("text", "seconds"), [("10m", 600.0), ("30s", 30.0), ("2h", 7200.0), (5, 5.0), ("250ms", 0.25)]
)
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text, what="timeout") == seconds


def test_zero_retry_delay_retries_at_once() -> None:
    @pt.step(retries=2, retry_delay="0s")
    def flaky():  # type: ignore[no-untyped-def]
        return 1

    assert flaky.retry_delay_s == 0.0
    assert parse_duration(0, what="retry_delay", zero_ok=True) == 0.0


@pytest.mark.parametrize(
    "value", ["nan", "inf", "-inf", "1e400m", "1e300d", float("nan"), float("inf"), 10**400]
)
def test_meaningless_durations_are_refused(value: str | float) -> None:
    with pytest.raises(DefinitionError, match=r"retry_delay: .* is not a usable duration"):
        parse_duration(value, what="retry_delay", zero_ok=True)


@pytest.mark.parametrize("value", ["0s", 0, "-5s"])
def test_a_timeout_of_zero_or_less_is_refused(value: str | int) -> None:
    with pytest.raises(DefinitionError, match=r"timeout of step 'x': must be positive"):

        @pt.step(timeout=value)
        def x():  # type: ignore[no-untyped-def]
            return 1


def test_a_negative_retry_delay_and_a_nan_backoff_are_refused() -> None:
    with pytest.raises(DefinitionError, match=r"retry_delay of step 'x': must be zero or positive"):
        pt.step(name="x", retry_delay="-1s")(lambda: 1)
    with pytest.raises(DefinitionError, match=r"backoff must be a finite number >= 1, got nan"):
        pt.step(name="x", backoff=float("nan"))(lambda: 1)


def test_bad_duration_names_the_step() -> None:
    with pytest.raises(DefinitionError, match=r"timeout of step 'x'.*'soon'"):

        @pt.step(timeout="soon")
        def x():  # type: ignore[no-untyped-def]
            return 1
