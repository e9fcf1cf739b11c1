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
import sys
import tempfile
import time
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

    # The moto server of the tests (tests/servers.py), started and stopped here.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.servers import S3Server, apply_env, restore_env

    home.mkdir(parents=True, exist_ok=True)
    server = S3Server.start(home)
    endpoint = server.endpoint
    previous = apply_env(server.env)
    try:
        client = server.client()
        bucket = server.bucket()
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
        server.stop()
        restore_env(previous)
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
