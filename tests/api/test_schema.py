"""Schemathesis over the OpenAPI spec: no input makes a 5xx, every answer matches its schema."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import response_schema_conformance
from schemathesis.specs.openapi.schemas import OpenApiSchema

from pipetrail.server import create_app
from pipetrail.workspace import Workspace
from tests.api.conftest import RICH, record
from tests.conftest import FlowWriter

#: Fails once, then succeeds: retries of it (which the fuzzer starts, also in batches of "every
#: failed run") do not fail again and multiply.
FLAKY = """
from pathlib import Path

@pt.step
def once():
    marker = Path(__file__).with_suffix(".ran")
    if not marker.exists():
        marker.touch()
        raise ValueError("first time fails")
    return 1

pipeline = pt.Pipeline("flaky", [once])
"""

#: Examples per operation and mode (valid and invalid input): quick enough for every run.
EXAMPLES = 50


@pytest.fixture
def api_schema(workspace: Workspace, flow_file: FlowWriter) -> Iterator[OpenApiSchema]:
    """The spec of an app over a store with two real runs (fuzzed small ids hit them)."""
    # Retries the fuzzer starts run inline: no worker pools for throw-away runs.
    inline = Workspace(dataclasses.replace(workspace.settings, executor="inline"))
    record(inline, flow_file(RICH, name="rich_flow"), {"rows": 5}, tags=["exp"])
    record(inline, flow_file(FLAKY, name="flaky_flow"))
    app = create_app(inline, project_dir=flow_file.folder)
    try:
        yield schemathesis.openapi.from_asgi("/openapi.json", app)
    finally:
        launcher = app.state.pipetrail.launcher
        launcher.shutdown(inline, wait_s=30)
        inline.close()


def test_no_server_errors_and_no_schema_violations(api_schema: OpenApiSchema) -> None:
    # One Hypothesis run per operation and mode, over a fixture's app: schemathesis' own
    # pytest.from_fixture does not work with this pytest (it sets a removed node attribute).
    operations = []
    for result in api_schema.get_all_operations():
        if isinstance(result, Err):
            raise result.err()
        operations.append(result.ok())
    assert len(operations) == 26
    for operation, mode in itertools.product(operations, GenerationMode):

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def check(case: schemathesis.Case[Any]) -> None:
            case.call_and_validate(checks=[not_a_server_error, response_schema_conformance])

        try:
            check()
        except Unsatisfiable:
            # No invalid input exists for an operation without parameters.
            if mode is not GenerationMode.NEGATIVE:
                raise
