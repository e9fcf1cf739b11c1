"""Schemathesis over the OpenAPI spec: no input makes a 5xx, every answer matches its schema.

Every case carries the server's own token (an admin, kept outside the store), so the tokens
the fuzzer creates with POST /api/tokens never lock it out: in local mode the first token made
would turn every later request into a 401, and the operations after it would test nothing.
The seeded runs are tagged ``keep``, so the deletion routes are refused them (a 409, still
checked) and the operations after those still find the runs.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import response_schema_conformance
from schemathesis.specs.openapi.schemas import OpenApiSchema

from pipetrail.api.roles import route_index
from pipetrail.governance.retention import KEEP_TAG
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

#: The server's own token: an admin no fuzzed request can revoke (it is not in the store).
TOKEN = "fuzz-admin-token"
HEADERS = {"Authorization": f"Bearer {TOKEN}"}

#: Examples per operation and mode (valid and invalid input): quick enough for every run.
EXAMPLES = 50


@pytest.fixture
def api_schema(
    workspace: Workspace, flow_file: FlowWriter
) -> Iterator[tuple[OpenApiSchema, FastAPI]]:
    """The spec of an app over a store with two real runs (fuzzed small ids hit them)."""
    # Retries the fuzzer starts run inline: no worker pools for throw-away runs.
    inline = Workspace(dataclasses.replace(workspace.settings, executor="inline"))
    record(inline, flow_file(RICH, name="rich_flow"), {"rows": 5}, tags=["exp", KEEP_TAG])
    record(inline, flow_file(FLAKY, name="flaky_flow"), tags=[KEEP_TAG])
    app = create_app(inline, project_dir=flow_file.folder, token=TOKEN)
    try:
        yield schemathesis.openapi.from_asgi("/openapi.json", app, headers=HEADERS), app
    finally:
        launcher = app.state.pipetrail.launcher
        launcher.shutdown(inline, wait_s=30)
        inline.close()


def _api_operations(app: FastAPI) -> set[tuple[str, str]]:
    """``(method, path)`` of every route the app serves under /api, as the spec writes paths."""
    return {
        (method, re.sub(r"\{(\w+):\w+\}", r"{\1}", template))
        for methods, template in route_index(app).routes()
        if methods and template.startswith("/api/")
        for method in methods
        if method != "HEAD"
    }


def test_no_server_errors_and_no_schema_violations(
    api_schema: tuple[OpenApiSchema, FastAPI],
) -> None:
    schema, app = api_schema
    # One Hypothesis run per operation and mode, over a fixture's app: schemathesis' own
    # pytest.from_fixture does not work with this pytest (it sets a removed node attribute).
    operations = []
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            raise result.err()
        operations.append(result.ok())
    # The fuzzer sees every operation of the app (a route missing from the spec, or one the
    # spec declares but nothing serves, would go untested), and none twice.
    found = [(operation.method.upper(), operation.path) for operation in operations]
    assert len(found) == len(set(found))
    assert set(found) == _api_operations(app)
    assert len(found) > 40
    for operation, mode in itertools.product(operations, GenerationMode):

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def check(case: schemathesis.Case[Any]) -> None:
            response = case.call_and_validate(
                headers=HEADERS,
                # A loaded machine (a retry runs inline in the request) is slow, not broken.
                timeout=120,
                checks=[not_a_server_error, response_schema_conformance],
            )
            # The token is never refused: no operation locked the fuzzer out.
            assert response.status_code != 401, (case.method, case.path, response.text)

        try:
            check()
        except Unsatisfiable:
            # No invalid input exists for an operation without parameters.
            if mode is not GenerationMode.NEGATIVE:
                raise
