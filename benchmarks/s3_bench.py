"""A 200 MB NumPy array as a step output on S3 (moto's server, started here): store, dedupe, read.

The run's artifact store is ``s3://<bucket>/artifacts`` on a moto server this scenario starts on
127.0.0.1 and stops at the end. The same array is stored twice as the output of a one-step
pipeline (inline executor; the step returns an array built before the clock starts, so what is
timed is pipetrail's: serialize, hash, spool, upload or dedupe, record) and read back through
``run.data``. moto keeps objects in its own Python process, so the MB/s are this machine's
moto, not S3's; the bytes added by the second run are the figure that must hold anywhere.
"""

from __future__ import annotations

import glob
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scenarios import Outcome, Sizes

FLOW = """
import pipetrail as pt

ARRAY = None  # set by the bench before each run

@pt.step
def make():
    return ARRAY

pipeline = pt.Pipeline("s3_array", [make])
"""

_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_moto(log: Path) -> tuple[subprocess.Popen[bytes], str]:

    port = _free_port()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("moto_server")),
                "-H",
                "127.0.0.1",
                "-p",
                str(port),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    endpoint = f"http://127.0.0.1:{port}"
    client = _client(endpoint)
    deadline = time.monotonic() + 30
    while True:
        try:
            client.list_buckets()
            return process, endpoint
        except Exception:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"moto_server did not start: {log.read_text()}") from None
            time.sleep(0.1)


def _objects(client: Any, bucket: str) -> dict[str, int]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return {item["Key"]: int(item["Size"]) for page in pages for item in page.get("Contents", [])}


def _spool_files() -> set[str]:
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "pipetrail-*.part")))


def artifact_s3(home: Path, sizes: Sizes) -> Outcome:
    import numpy as np
    from scenarios import MB, Figure, Outcome, VerificationError, _load

    import pipetrail as pt
    from pipetrail.client import Run
    from pipetrail.config import Settings
    from pipetrail.workspace import Workspace

    home.mkdir(parents=True, exist_ok=True)
    previous = {name: os.environ.get(name) for name in [*_ENV, "AWS_ENDPOINT_URL"]}
    process, endpoint = _start_moto(home / "moto.log")
    os.environ.update({**_ENV, "AWS_ENDPOINT_URL": endpoint})
    try:
        client = _client(endpoint)
        bucket = f"bench-{uuid.uuid4().hex[:8]}"
        client.create_bucket(Bucket=bucket)
        flow = home / "s3_array.py"
        flow.write_text(FLOW)
        pipeline = _load(flow, "s3_array")
        module = next(
            m
            for m in list(sys.modules.values())
            if getattr(m, "__file__", None) and Path(m.__file__ or "").resolve() == flow.resolve()
        )
        array = np.random.default_rng(0).random(sizes.array_mb * MB // 8)
        module.ARRAY = array  # type: ignore[attr-defined]
        array_bytes = array.nbytes
        settings = Settings.for_home(home / "store", artifacts_url=f"s3://{bucket}/artifacts")
        ws = Workspace(settings)
        spool_before = _spool_files()
        try:
            added: list[int] = []
            walls: list[float] = []
            runs: list[Run] = []
            for _ in range(2):
                before = sum(_objects(client, bucket).values())
                started = time.perf_counter()
                run = pt.run(pipeline, executor="inline", workspace=ws)
                walls.append(time.perf_counter() - started)
                assert isinstance(run, Run)
                if not run.successful:
                    raise VerificationError(f"run {run.pathspec} did not complete: {run.status}")
                runs.append(run)
                added.append(sum(_objects(client, bucket).values()) - before)
            keys = [_output_key(run) for run in runs]
            if keys[0] != keys[1]:
                raise VerificationError(f"same array stored under two keys: {keys}")
            objects = _objects(client, bucket)
            final = f"artifacts/{keys[0][:2]}/{keys[0][2:]}"
            if final not in objects or any("/tmp/" in key for key in objects):
                raise VerificationError(f"unexpected objects in the bucket: {sorted(objects)}")
            leftovers = _spool_files() - spool_before
            if leftovers:
                raise VerificationError(f"spool files left behind: {sorted(leftovers)}")
            reread = Run(runs[0].pathspec, reader=ws.reader())
            started = time.perf_counter()
            loaded = reread.data.make
            load_s = time.perf_counter() - started
            if not np.array_equal(loaded, array):
                raise VerificationError("the array read back from S3 differs from the one stored")
            del loaded
        finally:
            ws.close()
            module.ARRAY = None  # type: ignore[attr-defined]
    finally:
        process.terminate()
        process.wait(timeout=30)
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    mb = array_bytes / MB
    note = f"{mb:.0f} MB float64 as a step output, pt.run wall, moto {endpoint}"
    return Outcome(
        [
            Figure("artifact_200mb_s3.first_store", mb / walls[0], "MB/s", note=note),
            Figure(
                "artifact_200mb_s3.second_store",
                mb / walls[1],
                "MB/s",
                note="same array again: serialize + hash into the spool, HEAD, no upload",
            ),
            Figure(
                "artifact_200mb_s3.second_store_added",
                float(added[1]),
                "bytes",
                "==",
                0,
                "bytes added to the bucket by the second run",
            ),
            Figure(
                "artifact_200mb_s3.first_store_added",
                float(added[0]),
                "bytes",
                note="the .npy and the code snapshot",
            ),
            Figure(
                "artifact_200mb_s3.load", mb / load_s, "MB/s", note="run.data from S3, no verify"
            ),
        ],
        {"walls_s": walls, "added_bytes": added, "load_s": load_s, "key": keys[0]},
    )


def _output_key(run: Any) -> str:
    task = run["make"].task
    return str(task.outputs["make"].hash)


def _client(endpoint: str) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=_ENV["AWS_SECRET_ACCESS_KEY"],
        region_name=_ENV["AWS_DEFAULT_REGION"],
    )
