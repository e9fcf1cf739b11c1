"""Importing pipeline files: whatever the file does at import becomes one PipelineLoadError."""

from __future__ import annotations

import pytest

from pipetrail.errors import PipelineLoadError
from pipetrail.runtime.loader import load_pipeline_file
from tests.conftest import FlowWriter


@pytest.mark.parametrize(("call", "code"), [("sys.exit(3)", "3"), ("sys.exit()", "None")])
def test_sys_exit_at_import_is_a_load_error_naming_the_file(
    flow_file: FlowWriter, call: str, code: str
) -> None:
    file = flow_file(f"import sys\n\n{call}\n", "exits")
    with pytest.raises(PipelineLoadError) as caught:
        load_pipeline_file(file)
    message = str(caught.value)
    assert str(file) in message
    assert f"called sys.exit({code}) at line 4" in message
    assert "\n" not in message


def test_a_file_that_exited_loads_once_fixed(flow_file: FlowWriter) -> None:
    file = flow_file("import sys\nsys.exit(3)\n", "fixed")
    with pytest.raises(PipelineLoadError):
        load_pipeline_file(file)
    file.write_text(
        "import pipetrail as pt\n\n@pt.step\ndef one():\n    return 1\n\n"
        "pipeline = pt.Pipeline('fixed', [one])\n"
    )
    assert load_pipeline_file(file).name == "fixed"
