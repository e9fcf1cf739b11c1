"""``pipetrail run`` with PIPETRAIL_ARTIFACTS=s3://… against moto's server on 127.0.0.1.

Outputs, files and the code snapshot land in the bucket (and nothing else: logs live in the
metadata store); ``runs show``, ``logs`` and ``run.data`` read them back; a second run adds no
objects for identical content; a bucket that does not exist or an endpoint that cannot be
reached is one line naming the store, exit 1, and no run recorded.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import FlowWriter
from tests.e2e.test_control_cli import Cli
from tests.servers import S3Server, free_port

FLOW = """
import tempfile
from pathlib import Path

import numpy as np

@pt.step
def load(rows: int = 1000):
    print("loading", rows, "rows")
    return np.arange(rows * 8, dtype=np.float64).reshape(rows, 8)

@pt.step
def train(load):
    folder = Path(tempfile.mkdtemp())
    (folder / "report.txt").write_text("mean " + str(float(load.mean())))
    pt.log_artifact(folder / "report.txt")
    return {"mean": float(load.mean()), "rows": int(load.shape[0])}

pipeline = pt.Pipeline("s3_flow", [load, train])
"""

READ_BACK = """
import json, sys
import pipetrail as pt
run = pt.Run(sys.argv[1])
train = run["train"].task
print(json.dumps({
    "total": float(run.data.load.sum()),
    "train": run.data.train,
    "report": train.outputs["report.txt"].data.decode(),
    "code": "def load" in run.code["s3_flow.py"],
}))
"""


@pytest.fixture
def s3_cli(tmp_path: Path, s3_server: S3Server) -> Iterator[tuple[Cli, str]]:
    """A shell whose artifact store is a fresh bucket of the test server."""
    bucket = s3_server.bucket()
    shell = Cli(tmp_path)
    shell.env.update(s3_server.env)
    shell.env["PIPETRAIL_ARTIFACTS"] = f"s3://{bucket}/artifacts"
    try:
        yield shell, bucket
    finally:
        shell.cleanup()


def test_a_run_on_s3_is_stored_there_and_reads_back(
    s3_cli: tuple[Cli, str], s3_server: S3Server, flow_file: FlowWriter
) -> None:
    cli, bucket = s3_cli
    file = flow_file(FLOW, "s3_flow")
    done = cli("run", str(file), "-q")
    assert done.returncode == 0, done.stderr + done.stdout
    after_first = set(s3_server.keys(bucket))

    record = cli.show("s3_flow/1")
    assert record["status"] == "completed"
    assert record["code_files"] == ["s3_flow.py"]
    outputs = {
        output["name"]: output for step in record["steps"] for output in step["tasks"][0]["outputs"]
    }
    assert set(outputs) == {"load", "train", "report.txt"}
    expected = {f"artifacts/{o['hash'][:2]}/{o['hash'][2:]}" for o in outputs.values()}
    # The outputs and the code snapshot, each under its content key, and nothing else.
    assert expected < after_first and len(after_first) == len(expected) + 1
    assert not any("tmp" in key.split("/") for key in after_first)

    logs = cli("logs", "s3_flow/1", "load")
    assert logs.returncode == 0 and "loading 1000 rows" in logs.stdout

    read = subprocess.run(
        [sys.executable, "-c", READ_BACK, "s3_flow/1"],
        cwd=cli.cwd,
        env=cli.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert read.returncode == 0, read.stderr
    values = json.loads(read.stdout)
    assert values["total"] == float(sum(range(8000)))
    assert values["train"] == {"mean": 3999.5, "rows": 1000}
    assert values["report"] == "mean 3999.5"
    assert values["code"] is True  # the code snapshot, read back from the bucket

    again = cli("run", str(file), "-q")
    assert again.returncode == 0, again.stderr
    # Same content: no object added, only the empty claims that keep them from a concurrent gc.
    now = set(s3_server.keys(bucket))
    assert {k for k in now if not k.startswith("artifacts/claims/")} == after_first
    claims = now - after_first
    assert claims and all(k.startswith("artifacts/claims/") for k in claims)


def test_a_missing_bucket_is_one_line_and_records_nothing(
    s3_cli: tuple[Cli, str], flow_file: FlowWriter
) -> None:
    cli, _ = s3_cli
    cli.env["PIPETRAIL_ARTIFACTS"] = "s3://pt-missing-bucket/artifacts"
    done = cli("run", str(flow_file(FLOW, "s3_flow")), "-q")
    assert done.returncode == 1, done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "s3://pt-missing-bucket/artifacts" in lines[0]
    assert "the bucket does not exist" in lines[0]
    assert "Traceback" not in done.stderr
    listed = cli("runs", "list", "--json")
    assert listed.returncode == 0 and json.loads(listed.stdout) == []


def test_an_unreachable_endpoint_is_one_line_and_records_nothing(
    s3_cli: tuple[Cli, str], flow_file: FlowWriter
) -> None:
    cli, bucket = s3_cli
    endpoint = f"http://127.0.0.1:{free_port()}"
    cli.env["AWS_ENDPOINT_URL"] = endpoint
    # One attempt, not botocore's retries with back-off; the options go to s3fs as they are.
    cli.env["PIPETRAIL_ARTIFACTS_OPTIONS"] = json.dumps(
        {"config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 2}}
    )
    done = cli("run", str(flow_file(FLOW, "s3_flow")), "-q")
    assert done.returncode == 1, done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"s3://{bucket}/artifacts" in lines[0] and "cannot reach the endpoint" in lines[0]
    assert endpoint in lines[0]
    listed = cli("runs", "list", "--json")
    assert listed.returncode == 0 and json.loads(listed.stdout) == []
