"""Artifacts on S3, against moto's real server on 127.0.0.1 through s3fs.

Safe writes (nothing under a final key until complete, no temporary objects, no litter after a
failure, racing writers harmless), reads that stream in ranges (the store, REST downloads and
previews), one clear error per broken setting, and PIPETRAIL_ARTIFACTS_OPTIONS reaching s3fs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import tracemalloc
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

import numpy as np
import pytest
import uvicorn

import pipetrail as pt
from pipetrail.api import previews
from pipetrail.api.previews import preview
from pipetrail.client import Artifact, Reader, Run
from pipetrail.config import Settings, load_settings
from pipetrail.core.hashing import digest_bytes
from pipetrail.core.model import ArtifactLink, ArtifactRecord
from pipetrail.errors import ArtifactError, IntegrityError, NotFoundError
from pipetrail.runtime.loader import load_pipeline_file
from pipetrail.server import create_app
from pipetrail.storage.artifacts.cas import ContentAddressedStore
from pipetrail.storage.artifacts.serializers import (
    default_registry,
    dump_to_store,
    load_from_store,
)
from pipetrail.storage.metadata.base import MetadataStore
from pipetrail.workspace import Workspace
from tests.conftest import FlowWriter
from tests.servers import S3Server, apply_env, free_port, restore_env

MIB = 1024 * 1024


@dataclass
class Bucket:
    """A fresh bucket of the test server, a store on it and the store's local spool folder."""

    server: S3Server
    name: str
    store: ContentAddressedStore
    spool: Path

    @property
    def url(self) -> str:
        return f"s3://{self.name}/artifacts"

    def keys(self) -> list[str]:
        return sorted(self.server.keys(self.name))

    def final_key(self, key: str) -> str:
        return f"artifacts/{key[:2]}/{key[2:]}"

    def pending_uploads(self) -> list[Any]:
        found = self.server.client().list_multipart_uploads(Bucket=self.name)
        return list(found.get("Uploads", []))


@pytest.fixture
def bucket(s3_server: S3Server, s3_env: dict[str, str], tmp_path: Path) -> Bucket:
    name = s3_server.bucket()
    spool = tmp_path / "spool"
    spool.mkdir()
    store = ContentAddressedStore(f"s3://{name}/artifacts", spool_dir=spool)
    return Bucket(s3_server, name, store, spool)


def chunks_of(data: bytes, size: int = MIB) -> Callable[[BinaryIO], None]:
    def write(fileobj: BinaryIO) -> None:
        for start in range(0, len(data), size):
            fileobj.write(data[start : start + size])

    return write


# -- writes ------------------------------------------------------------------------------------


def test_content_goes_straight_to_its_key_and_is_stored_once(bucket: Bucket) -> None:
    small = b"small artifact"
    large = os.urandom(3 * MIB) * 4  # over the 8 MiB kept in memory: spooled to a local file
    spilled: list[list[str]] = []

    def write_large(fileobj: BinaryIO) -> None:
        chunks_of(large)(fileobj)
        spilled.append(os.listdir(bucket.spool))

    first_small = bucket.store.put_bytes(small)
    first_large = bucket.store.put_stream(write_large)
    assert not first_small.existed and not first_large.existed
    assert first_large.size == len(large) and first_large.key == digest_bytes(large)
    assert len(spilled[0]) == 1  # the large one waited on local disk, not in memory
    assert bucket.keys() == sorted(
        [bucket.final_key(first_small.key), bucket.final_key(first_large.key)]
    )  # no temporary objects, nothing but the two final keys
    assert os.listdir(bucket.spool) == []

    again_small = bucket.store.put_bytes(small)
    again_large = bucket.store.put_stream(chunks_of(large))
    assert again_small.existed and again_large.existed
    assert (again_small.key, again_large.key) == (first_small.key, first_large.key)
    # Nothing uploaded again; each put of stored content leaves an empty claim, which keeps
    # its object from a garbage collection running at the same time.
    stored = bucket.keys()
    content = [k for k in stored if "/claims/" not in k]
    claims = [k.split("/")[-2] for k in stored if "/claims/" in k]
    assert len(content) == 2 and sorted(claims) == sorted([first_small.key, first_large.key])
    assert bucket.store.get_bytes(first_large.key, verify=True) == large
    assert bucket.store.size(first_large.key) == len(large)
    assert bucket.store.exists(first_small.key)
    assert bucket.store.path_of(first_small.key) == f"s3://{bucket.name}/" + bucket.final_key(
        first_small.key
    )


def test_writer_failing_mid_stream_leaves_no_object_and_no_litter(bucket: Bucket) -> None:
    for size in (2 * MIB, 12 * MIB):  # failing while in memory, and after spilling to disk

        def write(fileobj: BinaryIO, size: int = size) -> None:
            fileobj.write(b"x" * size)
            raise RuntimeError("serializer blew up")

        with pytest.raises(RuntimeError, match="serializer blew up"):
            bucket.store.put_stream(write)
    assert bucket.keys() == []
    assert bucket.pending_uploads() == []
    assert os.listdir(bucket.spool) == []


def test_upload_failing_leaves_no_object_and_no_litter(bucket: Bucket) -> None:
    """The bucket vanishes while the content is being written: the upload itself fails."""

    def write(fileobj: BinaryIO) -> None:
        fileobj.write(b"y" * (10 * MIB))
        bucket.server.client().delete_bucket(Bucket=bucket.name)

    with pytest.raises(ArtifactError, match="bucket does not exist") as caught:
        bucket.store.put_stream(write)
    assert bucket.url in str(caught.value)
    assert os.listdir(bucket.spool) == []
    bucket.server.client().create_bucket(Bucket=bucket.name)
    assert bucket.keys() == []


def test_threads_writing_the_same_content_at_once(bucket: Bucket) -> None:
    data = os.urandom(MIB) * 10
    barrier = threading.Barrier(6)
    results: list[Any] = []

    def put() -> None:
        barrier.wait()
        results.append(bucket.store.put_stream(chunks_of(data)))

    threads = [threading.Thread(target=put) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {result.key for result in results} == {digest_bytes(data)}
    assert any(not result.existed for result in results)
    assert bucket.keys() == [bucket.final_key(digest_bytes(data))]
    assert bucket.store.get_bytes(digest_bytes(data), verify=True) == data


def test_processes_writing_the_same_content_at_once(bucket: Bucket) -> None:
    code = (
        "import sys, time\n"
        "from pipetrail.storage.artifacts.cas import ContentAddressedStore\n"
        "data = bytes(range(256)) * (40 * 1024 * 10)\n"  # 10 MiB: spooled to disk first
        "store = ContentAddressedStore(sys.argv[1])\n"
        "while time.time() < float(sys.argv[2]):\n"
        "    time.sleep(0.005)\n"
        "result = store.put_bytes(data)\n"
        "print(result.key, result.existed)\n"
    )
    start_at = str(time.time() + 3)  # all three are past their imports by then
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", code, bucket.url, start_at], stdout=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    outputs = [process.communicate(timeout=120)[0].split() for process in processes]
    assert all(process.returncode == 0 for process in processes)
    data = bytes(range(256)) * (40 * 1024 * 10)
    assert {key for key, _ in outputs} == {digest_bytes(data)}
    assert bucket.keys() == [bucket.final_key(digest_bytes(data))]
    assert bucket.pending_uploads() == []
    assert bucket.store.get_bytes(digest_bytes(data), verify=True) == data


# -- reads -------------------------------------------------------------------------------------


def peak_allocated(action: Callable[[], object]) -> int:
    """Most bytes Python held at once (every thread: s3fs reads in its own) during ``action``."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        action()
        return tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


def test_open_reads_a_large_object_in_ranges(bucket: Bucket) -> None:
    data = os.urandom(MIB) * 64
    key = bucket.store.put_stream(chunks_of(data)).key
    seen: list[int] = []

    def read() -> None:
        with bucket.store.open(key) as fileobj:
            while chunk := fileobj.read(MIB):
                seen.append(len(chunk))

    peak = peak_allocated(read)
    assert sum(seen) == len(data)
    # A few read blocks (CHUNK_SIZE each) at most, whatever the size of the object.
    assert peak < 32 * MIB, f"reading 64 MiB held {peak / MIB:.1f} MiB at once"
    assert peak_allocated(lambda: bucket.store.verify(key)) < 32 * MIB


def test_verified_loads_stream_and_catch_corruption(bucket: Bucket) -> None:
    array = np.arange(3 * MIB, dtype=np.float64)  # 24 MiB
    stored = dump_to_store(bucket.store, array)
    loaded = load_from_store(bucket.store, stored.key, stored.serializer, verify=True)
    assert np.array_equal(loaded, array)
    assert os.listdir(bucket.spool) == []  # the verified copy is gone once loaded

    small = dump_to_store(bucket.store, {"a": 1})
    bucket.server.client().put_object(
        Bucket=bucket.name, Key=bucket.final_key(small.key), Body=b'{"a":2}'
    )
    assert load_from_store(bucket.store, small.key, small.serializer) == {"a": 2}  # unchecked
    with pytest.raises(IntegrityError, match=small.key):
        load_from_store(bucket.store, small.key, small.serializer, verify=True)
    with pytest.raises(IntegrityError, match=small.key):
        bucket.store.verify(small.key)


def test_missing_key_is_not_found(bucket: Bucket) -> None:
    key = digest_bytes(b"never stored")
    assert not bucket.store.exists(key)
    for read in (bucket.store.open, bucket.store.get_bytes, bucket.store.size):
        with pytest.raises(NotFoundError, match=key):
            read(key)


# -- previews read only the head ---------------------------------------------------------------


def artifacts_reader(store: ContentAddressedStore) -> Reader:
    # A preview reads artifacts only, never the metadata store.
    return Reader(cast(MetadataStore, None), lambda: (store, default_registry()))


def link_to(store: ContentAddressedStore, value: Any) -> ArtifactLink:
    stored = dump_to_store(store, value)
    record = ArtifactRecord(
        stored.key, stored.size, stored.serializer, stored.content_type, stored.type_name
    )
    return ArtifactLink(1, 1, "output", "value", "output", record)


ARRAYS: dict[str, Callable[[], Any]] = {
    "scalar": lambda: np.array(3.5),
    "empty": lambda: np.zeros((0, 4)),
    "vector": lambda: np.arange(50),
    "matrix": lambda: np.arange(30 * 40, dtype=np.int32).reshape(30, 40),
    "fortran": lambda: np.asfortranarray(np.arange(30 * 40.0).reshape(30, 40)),
    "cube": lambda: np.arange(3 * 25 * 4, dtype=np.int16).reshape(3, 25, 4),
    "fortran-cube": lambda: np.asfortranarray(np.arange(22 * 3 * 25).reshape(22, 3, 25)),
    "records": lambda: np.array([(1, 2.0), (3, 4.0)], dtype=[("a", "i4"), ("b", "f8")]),
    "big-endian": lambda: np.arange(40, dtype=">f8").reshape(2, 20),
    "booleans": lambda: np.arange(60).reshape(3, 20) % 3 == 0,
}


@pytest.mark.parametrize("shape", ARRAYS, ids=list(ARRAYS))
def test_array_preview_reads_the_head_like_the_full_load(bucket: Bucket, shape: str) -> None:
    array = ARRAYS[shape]()
    reader = artifacts_reader(bucket.store)
    link = link_to(bucket.store, array)
    shown = preview(reader, link, 20)
    sample = tuple(slice(0, 20) for _ in array.shape)
    expected = array[sample].tolist() if array.shape else array.tolist()
    assert shown["preview_error"] is None
    assert shown["type"] == "array"
    assert shown["shape"] == list(array.shape)
    assert shown["sample_data"] == json.loads(json.dumps(expected))
    assert shown["truncated"] == any(n > 20 for n in array.shape)


def test_previews_of_large_values_read_a_little(
    bucket: Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pandas as pd

    # The same rules at a smaller scale: values over 4 MiB count as large here (32 MiB in use).
    monkeypatch.setattr(previews, "LOAD_LIMIT_BYTES", 4 * MIB)
    reader = artifacts_reader(bucket.store)
    array = np.arange(8 * MIB, dtype=np.float64).reshape(-1, 1024)  # 64 MiB: always read in part
    # 16 MiB, random so that it stays over the limit once compressed
    frame = pd.DataFrame({"x": np.arange(MIB), "y": np.random.default_rng(0).random(MIB)})
    values = (array, frame, list(range(MIB)), tuple(range(MIB)))  # the last is pickled
    links = [link_to(bucket.store, value) for value in values]
    del array, frame, values
    shown: list[dict[str, Any]] = []
    peak = peak_allocated(lambda: shown.extend(preview(reader, link, 5) for link in links))
    assert peak < 12 * MIB, f"previews held {peak / MIB:.1f} MiB at once"
    head, table, listing, pickled = shown
    assert head["shape"] == [8192, 1024] and head["sample_data"][1] == [
        1024.0 + i for i in range(5)
    ]
    assert table["type"] == "table" and table["shape"] == [MIB, 2]
    assert [row["x"] for row in table["sample_data"]["rows"]] == [0, 1, 2, 3, 4]
    assert table["truncated"]
    assert listing["type"] == "text" and listing["sample_data"].startswith("[0,1,2,3,")
    assert listing["truncated"]
    assert pickled["type"] == "object" and "too large to preview" in pickled["preview_error"]


# -- errors name the store ---------------------------------------------------------------------


def test_missing_bucket_is_one_clear_error(s3_server: S3Server, s3_env: dict[str, str]) -> None:
    url = "s3://pt-no-such-bucket/artifacts"
    store = ContentAddressedStore(url)
    key = digest_bytes(b"anything")
    for action in (
        lambda: store.put_bytes(b"anything"),
        lambda: store.exists(key),
        lambda: store.open(key),
        lambda: store.get_bytes(key),
        lambda: store.size(key),
    ):
        with pytest.raises(ArtifactError) as caught:
            action()
        message = str(caught.value)
        assert url in message and "the bucket does not exist" in message
        assert "\n" not in message


def test_unreachable_endpoint_is_one_clear_error(s3_env: dict[str, str]) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    store = ContentAddressedStore(
        "s3://bucket/artifacts",
        storage_options={
            "endpoint_url": endpoint,
            "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 2},
        },
    )
    with pytest.raises(ArtifactError, match="cannot reach the endpoint") as caught:
        store.put_bytes(b"data")
    assert "s3://bucket/artifacts" in str(caught.value) and endpoint in str(caught.value)
    with pytest.raises(ArtifactError, match="cannot reach the endpoint"):
        store.exists(digest_bytes(b"data"))


@pytest.fixture(scope="module")
def s3_server_with_auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A second moto server that checks credentials (moto's IAM: only its own keys pass)."""
    # Its first request (the start-up probe) goes unchecked, every later one is checked.
    previous = apply_env({"INITIAL_NO_AUTH_ACTION_COUNT": "1"})
    try:
        server = S3Server.start(tmp_path_factory.mktemp("s3auth"))
    finally:
        restore_env(previous)
    try:
        yield server
    finally:
        server.stop()


def test_bad_credentials_are_one_clear_error(
    s3_server_with_auth: S3Server, s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server_with_auth.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG1")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    store = ContentAddressedStore("s3://some-bucket/artifacts")
    for action in (lambda: store.put_bytes(b"data"), lambda: store.get_bytes(digest_bytes(b"d"))):
        with pytest.raises(ArtifactError, match="access denied") as caught:
            action()
        assert "s3://some-bucket/artifacts" in str(caught.value)
        assert "AWS_ACCESS_KEY_ID" in str(caught.value)


def test_artifacts_options_reach_s3fs(
    s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no AWS variables at all, the endpoint and keys come from the JSON options alone."""
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    name = s3_server.bucket()
    options = {"endpoint_url": s3_server.endpoint, "key": "testing", "secret": "testing"}
    settings = load_settings(
        env={
            "PIPETRAIL_HOME": str(tmp_path / "home"),
            "PIPETRAIL_ARTIFACTS": f"s3://{name}/artifacts",
            "PIPETRAIL_ARTIFACTS_OPTIONS": json.dumps(options),
        },
        cwd=tmp_path,
    )
    workspace = Workspace(settings)
    try:
        key = workspace.cas.put_bytes(b"through the options").key
        assert s3_server.keys(name) == [f"artifacts/{key[:2]}/{key[2:]}"]
        assert workspace.cas.get_bytes(key) == b"through the options"
    finally:
        workspace.close()


# -- a run on S3, read back through the client and over REST ----------------------------------

BIG_FLOW = """
import numpy as np

@pt.step
def make(rows: int = 8192):
    print("making", rows, "rows")
    return np.arange(rows * 1024, dtype=np.float64).reshape(rows, 1024)

@pt.step
def total(make):
    return float(make[:, 0].sum())

pipeline = pt.Pipeline("big", [make, total])
"""


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=60) as response:
        return json.loads(response.read())


def array_key(run: Run) -> str:
    task = run["make"].task
    assert task is not None
    output = task.outputs["make"]
    assert isinstance(output, Artifact)
    return output.hash


@dataclass
class Served:
    workspace: Workspace
    run: Run
    base: str
    bucket: str
    s3: S3Server


@pytest.fixture
def served(
    s3_server: S3Server, s3_env: dict[str, str], tmp_path: Path, flow_file: FlowWriter
) -> Iterator[Served]:
    """A 64 MiB array recorded by a run on S3, and the real server (uvicorn) serving it."""
    name = s3_server.bucket()
    settings = Settings.for_home(tmp_path / "home", artifacts_url=f"s3://{name}/artifacts")
    workspace = Workspace(settings)
    pipeline = load_pipeline_file(flow_file(BIG_FLOW, name="big_flow"))
    run = pt.run(pipeline, executor="inline", workspace=workspace)
    assert isinstance(run, Run)
    port = free_port()
    app = create_app(workspace, project_dir=tmp_path)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield Served(workspace, run, base, name, s3_server)
    finally:
        server.should_exit = True
        thread.join(30)
        workspace.close()


def test_run_on_s3_reads_back_and_downloads_stream(served: Served) -> None:
    run, workspace = served.run, served.workspace
    assert run.successful
    assert run.data.total == float(sum(range(0, 8192 * 1024, 1024)))
    key = array_key(run)
    in_bucket = set(served.s3.keys(served.bucket))
    code_key = workspace.store.get_run(run.id).code_key
    assert code_key is not None
    assert {f"artifacts/{k[:2]}/{k[2:]}" for k in (key, code_key)} <= in_bucket
    assert not any("/tmp/" in item for item in in_bucket)

    received: list[int] = []

    def download() -> None:
        with urllib.request.urlopen(f"{served.base}/api/artifacts/{key}", timeout=60) as response:
            assert response.status == 200
            assert int(response.headers["content-length"]) == 8192 * 1024 * 8 + 128
            while chunk := response.read(MIB):
                received.append(len(chunk))

    peak = peak_allocated(download)
    assert sum(received) == 8192 * 1024 * 8 + 128  # the array and its .npy header
    assert peak < 32 * MIB, f"serving 64 MiB held {peak / MIB:.1f} MiB at once"

    tasks = get_json(f"{served.base}/api/pipeline_runs/{run.id}/block_runs")["block_runs"]
    make = next(item for item in tasks if item["step"] == "make")
    previews = get_json(f"{served.base}/api/block_runs/{make['id']}/outputs?sample_count=3")
    (shown,) = previews["outputs"]
    assert shown["shape"] == [8192, 1024]
    assert shown["sample_data"] == [
        [0.0, 1.0, 2.0],
        [1024.0, 1025.0, 1026.0],
        [2048.0, 2049.0, 2050.0],
    ]


def test_store_errors_over_rest_name_the_store(served: Served) -> None:
    key = array_key(served.run)
    client = served.s3.client()
    for item in served.s3.keys(served.bucket):
        client.delete_object(Bucket=served.bucket, Key=item)
    client.delete_bucket(Bucket=served.bucket)
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(f"{served.base}/api/artifacts/{key}", timeout=60)
    assert caught.value.code == 503
    message = caught.value.read().decode()
    assert f"s3://{served.bucket}/artifacts" in message and "bucket does not exist" in message
