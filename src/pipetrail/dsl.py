"""The ``@step`` decorator and the ``Pipeline`` builder: plain functions into validated specs."""

from __future__ import annotations

import difflib
import functools
import inspect
import math
import sys
import textwrap
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, overload

from pipetrail.core.fingerprint import fingerprint_source
from pipetrail.core.graph import Dag
from pipetrail.core.hashing import digest_bytes
from pipetrail.core.ids import validate_name
from pipetrail.core.model import InputSpec, ParamSpec, PipelineSpec, StepSpec
from pipetrail.core.params import coerce_text, to_json_value, type_label, validate_value
from pipetrail.errors import CycleError, DefinitionError, ParameterError

__all__ = ["Pipeline", "Step", "parse_duration", "step"]


TIMEOUT_POLICIES = ("failed", "cancelled", "warning")


class Step:
    """A step: a plain function plus its options. Calling it calls the function unchanged."""

    def __init__(
        self,
        func: Callable[..., Any],
        *,
        name: str | None = None,
        outputs: Sequence[str] = (),
        retries: int = 0,
        retry_delay: str | float | None = None,
        backoff: float = 1.0,
        retry_on: type[BaseException] | Sequence[type[BaseException]] = (Exception,),
        timeout: str | float | None = None,
        on_timeout: str = "failed",
        when: Callable[..., Any] | None = None,
        optional: Sequence[str] = (),
        allow_failure: bool = False,
        foreach: str | None = None,
        max_parallel: int | None = None,
    ) -> None:
        if not callable(func):
            raise DefinitionError(f"@step expects a function, got {type(func).__name__}")
        self.func = func
        self.name = validate_name("step", name or func.__name__)
        where = f"step {self.name!r}"
        if isinstance(outputs, str):
            outputs = (outputs,)
        self.outputs = tuple(validate_name("output", o) for o in outputs)
        if len(set(self.outputs)) != len(self.outputs):
            raise DefinitionError(f"{where} declares an output name twice: {self.outputs}")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise DefinitionError(f"{where}: retries must be an integer >= 0, got {retries!r}")
        self.retries = retries
        self.retry_delay_s = (
            parse_duration(retry_delay, what=f"retry_delay of {where}", zero_ok=True) or 0.0
        )
        if (
            isinstance(backoff, bool)
            or not isinstance(backoff, (int, float))
            or not 1 <= backoff < math.inf
        ):
            raise DefinitionError(f"{where}: backoff must be a finite number >= 1, got {backoff!r}")
        self.backoff = float(backoff)
        classes = (retry_on,) if isinstance(retry_on, type) else tuple(retry_on)
        if not classes or not all(
            isinstance(c, type) and issubclass(c, BaseException) for c in classes
        ):
            raise DefinitionError(
                f"{where}: retry_on must be exception classes, e.g. (IOError,), got {retry_on!r}"
            )
        self.retry_on: tuple[type[BaseException], ...] = classes
        self.timeout_s = parse_duration(timeout, what=f"timeout of {where}")
        if on_timeout not in TIMEOUT_POLICIES:
            raise DefinitionError(
                f"{where}: on_timeout must be one of {', '.join(TIMEOUT_POLICIES)}, got {on_timeout!r}"
            )
        self.on_timeout = on_timeout
        if when is not None and not callable(when):
            raise DefinitionError(f"{where}: when= must be a callable, got {when!r}")
        self.when = when
        self.optional = (optional,) if isinstance(optional, str) else tuple(optional)
        self.allow_failure = bool(allow_failure)
        if foreach is not None and not isinstance(foreach, str):
            raise DefinitionError(f"{where}: foreach= names an argument, got {foreach!r}")
        self.foreach = foreach
        if max_parallel is not None and (
            isinstance(max_parallel, bool) or not isinstance(max_parallel, int) or max_parallel < 1
        ):
            raise DefinitionError(
                f"{where}: max_parallel must be an integer >= 1, got {max_parallel!r} "
                "(0 would never run anything)"
            )
        self.max_parallel = max_parallel
        functools.update_wrapper(self, func)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.func(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<Step {self.name}>"


@overload
def step(func: Callable[..., Any], /) -> Step: ...


@overload
def step(
    *,
    name: str | None = None,
    outputs: Sequence[str] = (),
    retries: int = 0,
    retry_delay: str | float | None = None,
    backoff: float = 1.0,
    retry_on: type[BaseException] | Sequence[type[BaseException]] = (Exception,),
    timeout: str | float | None = None,
    on_timeout: str = "failed",
    when: Callable[..., Any] | None = None,
    optional: Sequence[str] = (),
    allow_failure: bool = False,
    foreach: str | None = None,
    max_parallel: int | None = None,
) -> Callable[[Callable[..., Any]], Step]: ...


def step(
    func: Callable[..., Any] | None = None, /, **options: Any
) -> Step | Callable[[Callable[..., Any]], Step]:
    """Make a function a pipeline step.

    Arguments without defaults are inputs: each names an upstream step (its return value) or a
    named output of one. Arguments with defaults are pipeline parameters, overridable per run.

    Args:
        func: the function, when used as a bare ``@step``.
        name: the step's name; the function's name by default.
        outputs: names for the items of a returned tuple (or keys of a returned dict); each is
            stored as its own artifact and can be consumed by name downstream.
        retries: how many more attempts a failing task gets.
        retry_delay: wait before the first retry (``"5s"``); multiplied by ``backoff`` each time.
        backoff: factor by which the delay grows per attempt.
        retry_on: only these exception classes are retried (default: any exception).
        timeout: ``"10m"``, ``"30s"``, ``"2h"`` or seconds.
        on_timeout: ``"failed"`` (default), ``"cancelled"`` or ``"warning"`` (record and go on).
        when: a condition; called with the run's parameters and the upstream outputs it names,
            false means the step is ``condition_failed`` (and so are steps needing its output).
        optional: inputs this step can run without (it gets None when they were skipped or
            failed with ``allow_failure``).
        allow_failure: the run goes on past a failure of this step (like Metaflow's ``@catch``);
            downstream steps get None for its output.
        foreach: an argument naming an upstream output or list parameter; one task per element.
        max_parallel: most tasks of this foreach at once.
    """
    if func is not None:
        return Step(func, **options)

    def decorate(f: Callable[..., Any]) -> Step:
        return Step(f, **options)

    return decorate


_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
#: The longest duration accepted (100 years): beyond it a deadline leaves ``datetime``'s range.
MAX_DURATION_S = 100 * 365 * 86400.0


def parse_duration(value: str | float | None, *, what: str, zero_ok: bool = False) -> float | None:
    """``"10m"`` → 600.0; numbers are seconds; None stays None.

    The one parser of durations (step and pipeline timeouts, retry delays, ``run --timeout``,
    ``--since 7d``).
    A duration is finite and at most :data:`MAX_DURATION_S`; zero only with ``zero_ok`` (a retry
    delay of zero retries at once; a timeout of zero means nothing).

    Raises:
        DefinitionError: naming ``what`` and the bad value.
    """
    if value is None:
        return None
    try:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            seconds = float(value)
        elif isinstance(value, str):
            text = value.strip().lower()
            unit = next((u for u in sorted(_UNITS, key=len, reverse=True) if text.endswith(u)), "s")
            number = text[: -len(unit)] if text.endswith(unit) else text
            try:
                seconds = float(number) * _UNITS[unit]
            except ValueError:
                raise DefinitionError(
                    f"{what}: cannot read {value!r} as a duration; use e.g. '30s', '10m' or '2h'"
                ) from None
        else:
            raise DefinitionError(f"{what}: expected a duration like '10m', got {value!r}")
    except OverflowError:
        seconds = math.inf
    if math.isnan(seconds) or not -MAX_DURATION_S <= seconds <= MAX_DURATION_S:
        raise DefinitionError(
            f"{what}: {value!r} is not a usable duration; give a finite one of at most "
            f"{MAX_DURATION_S / 86400:.0f}d, e.g. '30s', '10m' or '2h'"
        )
    if seconds < 0 or (seconds == 0 and not zero_ok):
        expected = "zero or positive" if zero_ok else "positive"
        raise DefinitionError(f"{what}: must be {expected}, got {value!r}")
    return seconds


class Pipeline:
    """A named DAG of steps, validated when built.

    Raises:
        DefinitionError: a duplicate name, an input that names nothing, a cycle, conflicting
            parameter declarations or a default of the wrong type, each naming the step and argument.
    """

    def __init__(
        self,
        name: str,
        steps: Iterable[Step | Callable[..., Any]],
        *,
        max_concurrent_runs: int | None = None,
        timeout: str | float | None = None,
        on_timeout: str = "failed",
    ) -> None:
        self.name = validate_name("pipeline", name)
        # The file that builds the pipeline (where workers find it), not the steps' file.
        self._defined_in = _caller_file()
        if max_concurrent_runs is not None and (
            isinstance(max_concurrent_runs, bool)
            or not isinstance(max_concurrent_runs, int)
            or max_concurrent_runs < 1
        ):
            raise DefinitionError(
                f"pipeline {name!r}: max_concurrent_runs must be an integer >= 1 or None "
                f"(no limit), got {max_concurrent_runs!r}; 0 would queue every run for ever"
            )
        if on_timeout not in TIMEOUT_POLICIES:
            raise DefinitionError(
                f"pipeline {name!r}: on_timeout must be one of {', '.join(TIMEOUT_POLICIES)}, "
                f"got {on_timeout!r}"
            )
        self._options: dict[str, Any] = {
            "max_concurrent_runs": max_concurrent_runs,
            "timeout_s": parse_duration(timeout, what=f"timeout of pipeline {name!r}"),
            "on_timeout": on_timeout,
        }
        self.steps: dict[str, Step] = {}
        for item in steps:
            s = item if isinstance(item, Step) else Step(item)
            if s.name in self.steps:
                raise DefinitionError(f"pipeline {name!r}: two steps are named {s.name!r}")
            self.steps[s.name] = s
        if not self.steps:
            raise DefinitionError(f"pipeline {name!r} has no steps")
        self._param_defaults: dict[str, Any] = {}
        self.spec = self._build_spec()
        try:
            self.dag = Dag(self.spec.step_names, {s.name: s.upstream for s in self.spec.steps})
        except CycleError as exc:
            raise CycleError(f"pipeline {name!r}: {exc}") from None
        self._check_conditions()

    def _build_spec(self) -> PipelineSpec:
        producers: dict[str, tuple[str, str]] = {}
        for s in self.steps.values():
            for output in s.outputs:
                if output in self.steps:
                    raise DefinitionError(
                        f"step {s.name!r}: output {output!r} has the same name as a step"
                    )
                if output in producers:
                    raise DefinitionError(
                        f"output {output!r} is declared by both step {producers[output][0]!r} "
                        f"and step {s.name!r}"
                    )
                producers[output] = (s.name, output)
        params: dict[str, dict[str, Any]] = {}
        specs = [self._step_spec(s, producers, params) for s in self.steps.values()]
        file = self._defined_in or next((spec.file for spec in specs if spec.file), None)
        param_specs = tuple(
            ParamSpec(n, p["type"], to_json_value(p["default"]), tuple(p["steps"]))
            for n, p in params.items()
        )
        return PipelineSpec(self.name, tuple(specs), param_specs, file, **self._options)

    def _step_spec(
        self,
        s: Step,
        producers: Mapping[str, tuple[str, str]],
        params: dict[str, dict[str, Any]],
    ) -> StepSpec:
        signature = inspect.signature(s.func)
        inputs: list[InputSpec] = []
        names: list[str] = []
        for arg in signature.parameters.values():
            where = f"argument {arg.name!r} of step {s.name!r}"
            if arg.kind in (arg.VAR_POSITIONAL, arg.VAR_KEYWORD):
                raise DefinitionError(
                    f"{where}: *args and **kwargs cannot be wired; name each input"
                )
            if arg.kind is arg.POSITIONAL_ONLY:
                raise DefinitionError(f"{where}: positional-only arguments cannot be wired by name")
            if arg.default is inspect.Parameter.empty:
                if arg.name == s.name:
                    raise DefinitionError(f"{where}: a step cannot consume its own output")
                if arg.name in self.steps:
                    inputs.append(InputSpec(arg.name, arg.name))
                elif arg.name in producers:
                    producer, output = producers[arg.name]
                    if producer == s.name:
                        raise DefinitionError(f"{where}: a step cannot consume its own output")
                    inputs.append(InputSpec(arg.name, producer, output))
                else:
                    known = sorted([*self.steps, *producers])
                    hint = difflib.get_close_matches(arg.name, known, n=1)
                    suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
                    raise DefinitionError(
                        f"{where} names no step or output of pipeline {self.name!r}{suggestion} "
                        f"(inputs must be named after an upstream step or output: {known}; "
                        "give the argument a default to make it a parameter)"
                    )
                continue
            if arg.name in self.steps or arg.name in producers:
                raise DefinitionError(
                    f"{where} has a default but is named after an upstream step or output; "
                    "remove the default to consume it, or rename the parameter"
                )
            annotation = None if arg.annotation is inspect.Parameter.empty else arg.annotation
            label = type_label(annotation, arg.default)
            if arg.default is not None:
                try:
                    validate_value(arg.name, label, arg.default, where=f"step {s.name!r}")
                except ParameterError as exc:
                    raise DefinitionError(f"default of {where}: {exc}") from None
            declared = params.get(arg.name)
            if declared is None:
                params[arg.name] = {"type": label, "default": arg.default, "steps": [s.name]}
                self._param_defaults[arg.name] = arg.default
            else:
                if declared["type"] != label or to_json_value(declared["default"]) != to_json_value(
                    arg.default
                ):
                    raise DefinitionError(
                        f"parameter {arg.name!r} is declared differently by step "
                        f"{declared['steps'][0]!r} ({declared['type']} = {declared['default']!r}) and "
                        f"step {s.name!r} ({label} = {arg.default!r}); a parameter shared by "
                        "steps needs one type and one default"
                    )
                declared["steps"].append(s.name)
            names.append(arg.name)
        source, file, line = _source_of(s.func)
        return StepSpec(
            name=s.name,
            inputs=tuple(inputs),
            params=tuple(names),
            outputs=s.outputs,
            source=source,
            source_hash=fingerprint_source(source) if source else digest_bytes(s.name.encode()),
            module=getattr(s.func, "__module__", "") or "",
            qualname=getattr(s.func, "__qualname__", s.name),
            file=file,
            line=line,
            retries=s.retries,
            timeout_s=s.timeout_s,
            retry_delay_s=s.retry_delay_s,
            backoff=s.backoff,
            retry_on=tuple(c.__name__ for c in s.retry_on),
            on_timeout=s.on_timeout,
            condition=_source_of(s.when)[0].strip() or repr(s.when) if s.when else None,
            condition_args=_condition_args(s),
            optional=self._check_optional(s, inputs),
            allow_failure=s.allow_failure,
            foreach=self._check_foreach(s, inputs, names, params),
            max_parallel=s.max_parallel,
        )

    def _check_optional(self, s: Step, inputs: list[InputSpec]) -> tuple[str, ...]:
        args = {i.arg for i in inputs}
        for name in s.optional:
            if name not in args:
                raise DefinitionError(
                    f"step {s.name!r}: optional={name!r} is not one of its inputs "
                    f"({', '.join(sorted(args)) or 'it has none'})"
                )
        return s.optional

    def _check_foreach(
        self,
        s: Step,
        inputs: list[InputSpec],
        names: list[str],
        params: dict[str, dict[str, Any]],
    ) -> str | None:
        if s.foreach is None:
            return None
        if s.foreach in {i.arg for i in inputs}:
            return s.foreach
        if s.foreach in names:
            label = params[s.foreach]["type"]
            if label not in ("list", "any"):
                raise DefinitionError(
                    f"step {s.name!r}: foreach={s.foreach!r} names a parameter of type {label}; "
                    "it must be a list (or an upstream output)"
                )
            return s.foreach
        raise DefinitionError(
            f"step {s.name!r}: foreach={s.foreach!r} is not one of its arguments; name the input "
            "or list parameter whose elements get one task each"
        )

    def _check_conditions(self) -> None:
        known_params = {p.name for p in self.spec.params}
        for spec in self.spec.steps:
            ancestors = self._ancestors(spec.name)
            outputs = {o for s in self.spec.steps if s.name in ancestors for o in s.outputs}
            available = known_params | ancestors | outputs
            for arg in spec.condition_args:
                if arg not in available:
                    raise DefinitionError(
                        f"step {spec.name!r}: its when= condition takes {arg!r}, which is neither "
                        "a pipeline parameter nor the output of an upstream step"
                    )

    def _ancestors(self, name: str) -> set[str]:
        seen: set[str] = set()
        todo = list(self.dag.upstream(name))
        while todo:
            current = todo.pop()
            if current not in seen:
                seen.add(current)
                todo.extend(self.dag.upstream(current))
        return seen

    @property
    def version(self) -> str:
        """Hash of the steps' code and wiring."""
        return self.spec.version

    def resolve_params(
        self, overrides: Mapping[str, Any] | None = None, *, from_text: bool = False
    ) -> dict[str, Any]:
        """Every parameter's value for a run: defaults, replaced by ``overrides``.

        Args:
            overrides: name → value (or → text when ``from_text``, as given by ``-p name=value``).
            from_text: coerce each override from command-line text to the declared type.

        Raises:
            ParameterError: an unknown name (with the valid names) or a value of the wrong type.
        """
        values = dict(self._param_defaults)
        by_name = {p.name: p for p in self.spec.params}
        for name, raw in (overrides or {}).items():
            param = by_name.get(name)
            if param is None:
                valid = sorted(by_name) or ["(none)"]
                hint = difflib.get_close_matches(name, list(by_name), n=1)
                suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
                raise ParameterError(
                    f"unknown parameter {name!r} for pipeline {self.name!r}{suggestion} "
                    f"(parameters: {', '.join(valid)})"
                )
            where = "step " + ", ".join(repr(s) for s in param.steps)
            if from_text and isinstance(raw, str):
                values[name] = coerce_text(name, param.type, raw, where=where)
            else:
                values[name] = validate_value(name, param.type, raw, where=where)
        return values

    def __repr__(self) -> str:
        return f"<Pipeline {self.name} steps={list(self.steps)}>"


def _caller_file() -> str | None:
    """The file of the first frame outside pipetrail itself."""
    frame = sys._getframe(1)
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if module != "pipetrail" and not module.startswith("pipetrail."):
            file = frame.f_globals.get("__file__")
            return str(Path(file).resolve()) if isinstance(file, str) else None
        frame = frame.f_back  # type: ignore[assignment]
    return None


def _condition_args(s: Step) -> tuple[str, ...]:
    if s.when is None:
        return ()
    try:
        signature = inspect.signature(s.when)
    except (TypeError, ValueError):
        return ()
    names = []
    for arg in signature.parameters.values():
        if arg.kind in (arg.VAR_POSITIONAL, arg.VAR_KEYWORD):
            continue
        if arg.kind is arg.POSITIONAL_ONLY:
            raise DefinitionError(
                f"step {s.name!r}: the when= condition's arguments are passed by name; "
                f"{arg.name!r} is positional-only"
            )
        names.append(arg.name)
    return tuple(names)


def _source_of(func: Callable[..., Any]) -> tuple[str, str | None, int | None]:
    try:
        lines, line = inspect.getsourcelines(func)
        file = inspect.getsourcefile(func)
    except (OSError, TypeError):
        return "", None, None
    source = textwrap.dedent("".join(lines))
    return source, file, line
