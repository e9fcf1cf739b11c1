"""Contract suite for ContentAddressedStore: local folder, fsspec memory, S3 (moto via s3fs)."""

from __future__ import annotations

import array
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import fsspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipetrail.core.hashing import digest_bytes, new_hasher
from pipetrail.errors import ArtifactError, ConfigError, IntegrityError, NotFoundError
from pipetrail.storage.artifacts import cas, digests
from pipetrail.storage.artifacts.cas import ContentAddressedStore, digest_file, digest_tree

MIB = 1024 * 1024

BAD_KEYS = [
    "../../etc/passwd",
    "/etc/passwd",
    "",
    "ab",
    "a" * 63,
    "a" * 65,
    "A" * 64,
    "g" * 64,
    "../" + "a" * 61,
    "aa/" + "a" * 61,
    "a" * 63 + "\n",
]


@pytest.fixture(params=["local", "memory", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ContentAddressedStore]:
    """The same contract, run against each backend."""
    if request.param == "local":
        yield ContentAddressedStore(str(tmp_path / "cas"))
        return
    if request.param == "s3":
        # A fresh bucket per test; the AWS variables reach the server while the test runs.
        request.getfixturevalue("s3_env")
        bucket = request.getfixturevalue("s3_server").bucket()
        yield ContentAddressedStore(f"s3://{bucket}/cas")
        return
    url = f"memory://pipetrail-test-{uuid.uuid4().hex}/cas"
    yield ContentAddressedStore(url)
    fs, root = fsspec.core.url_to_fs(url)
    if fs.exists(root):
        fs.rm(root, recursive=True)


def stored_files(store: ContentAddressedStore) -> dict[str, int]:
    """Every file under the store's root (temporary files included), with its size; not the
    empty claims a remote store writes when a put finds its content stored (see test_claims)."""
    fs, root = fsspec.core.url_to_fs(store.url)
    if not fs.exists(root):
        return {}
    found = fs.find(root, detail=True).items()
    return {path: int(info["size"]) for path, info in found if "/claims/" not in path}


def corrupt(store: ContentAddressedStore, key: str, data: bytes) -> None:
    """Overwrite the bytes stored under ``key`` behind the store's back."""
    fs, path = fsspec.core.url_to_fs(store.path_of(key))
    fs.pipe_file(path, data)


def test_round_trip(store: ContentAddressedStore) -> None:
    data = b"hello, artifacts"
    result = store.put_bytes(data)
    assert result.key == digest_bytes(data)
    assert result.size == len(data)
    assert not result.existed
    assert store.exists(result.key)
    assert store.size(result.key) == len(data)
    assert store.get_bytes(result.key) == data
    assert store.get_bytes(result.key, verify=True) == data
    with store.open(result.key) as fileobj:
        assert fileobj.read() == data


def test_key_is_sharded_under_root(store: ContentAddressedStore) -> None:
    key = store.put_bytes(b"sharded").key
    assert store.path_of(key).endswith(f"/cas/{key[:2]}/{key[2:]}")
    assert [path.rsplit("/", 2)[-2:] for path in stored_files(store)] == [[key[:2], key[2:]]]


def test_empty_content(store: ContentAddressedStore) -> None:
    result = store.put_bytes(b"")
    assert result.key == digest_bytes(b"")
    assert (result.size, store.get_bytes(result.key, verify=True)) == (0, b"")


def test_put_stream_mixes_small_and_large_writes(store: ContentAddressedStore) -> None:
    pieces = [b"x", b"y" * 100, b"z" * (2 * MIB), b"", b"w" * 10, b"v" * (9 * MIB), b"tail"]
    pieces += [bytes([i]) * 1000 for i in range(256)]  # many small writes, coalesced

    def write(fileobj: BinaryIO) -> None:
        for piece in pieces:
            assert fileobj.write(piece) == len(piece)
        assert fileobj.tell() == sum(map(len, pieces))

    result = store.put_stream(write)
    data = b"".join(pieces)
    assert (result.key, result.size) == (digest_bytes(data), len(data))
    assert store.get_bytes(result.key, verify=True) == data


def test_put_stream_accepts_any_buffer(store: ContentAddressedStore) -> None:
    numbers = array.array("d", [1.5, 2.5, 3.5])

    def write(fileobj: BinaryIO) -> None:
        fileobj.write(memoryview(numbers))

    result = store.put_stream(write)
    assert store.get_bytes(result.key) == numbers.tobytes()
    assert result.size == len(numbers.tobytes())


def test_put_file_and_digest_file_agree(
    store: ContentAddressedStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cas, "CHUNK_SIZE", 4096)  # several chunks without a large file
    monkeypatch.setattr(digests, "CHUNK_SIZE", 4096)
    data = bytes(range(256)) * 100 + b"end"
    source = tmp_path / "input.bin"
    source.write_bytes(data)
    result = store.put_file(source)
    assert (result.key, result.size) == (digest_bytes(data), len(data))
    assert digest_file(source) == (result.key, len(data))
    assert store.digest_file(str(source)) == (result.key, len(data))
    assert store.get_bytes(result.key) == data
    assert store.put_file(str(source)).existed


def test_put_file_missing(store: ContentAddressedStore, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match=r"nope\.bin"):
        store.put_file(tmp_path / "nope.bin")


def test_dedupe_adds_no_bytes(store: ContentAddressedStore) -> None:
    data = b"same content" * 100_000
    first = store.put_bytes(data)
    before = stored_files(store)
    second = store.put_bytes(data)
    assert not first.existed
    assert second.existed
    assert second.key == first.key
    assert stored_files(store) == before
    assert len(before) == 1
    assert sum(before.values()) == len(data)


def test_failed_write_leaves_nothing(store: ContentAddressedStore) -> None:
    def write(fileobj: BinaryIO) -> None:
        fileobj.write(b"a" * (3 * MIB))
        fileobj.write(b"partial")
        raise RuntimeError("serializer blew up")

    with pytest.raises(RuntimeError, match="serializer blew up"):
        store.put_stream(write)
    assert stored_files(store) == {}
    assert not store.exists(digest_bytes(b"a" * (3 * MIB) + b"partial"))


def test_interrupted_write_leaves_nothing(store: ContentAddressedStore) -> None:
    def write(fileobj: BinaryIO) -> None:
        fileobj.write(b"b" * 1000)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        store.put_stream(write)
    assert stored_files(store) == {}


def test_verify_detects_corruption(store: ContentAddressedStore) -> None:
    data = b"precious bytes"
    key = store.put_bytes(data).key
    corrupt(store, key, b"Precious bytes")
    assert store.get_bytes(key) == b"Precious bytes"  # unverified reads trust the key
    with pytest.raises(IntegrityError, match=key):
        store.get_bytes(key, verify=True)


def test_truncated_content_is_replaced_on_next_put(store: ContentAddressedStore) -> None:
    data = b"0123456789" * 1000
    key = store.put_bytes(data).key
    corrupt(store, key, data[:10])
    result = store.put_bytes(data)
    assert not result.existed
    assert store.get_bytes(key, verify=True) == data


@pytest.mark.parametrize("key", BAD_KEYS)
def test_bad_keys_are_rejected(store: ContentAddressedStore, key: str) -> None:
    for read in (store.open, store.get_bytes, store.size, store.path_of):
        with pytest.raises(NotFoundError, match="64 lowercase hexadecimal"):
            read(key)
    assert not store.exists(key)


def test_missing_key(store: ContentAddressedStore) -> None:
    key = digest_bytes(b"never stored")
    assert not store.exists(key)
    for read in (store.open, store.get_bytes, store.size):
        with pytest.raises(NotFoundError, match=key):
            read(key)


def test_concurrent_writers_of_same_content(store: ContentAddressedStore) -> None:
    data = b"contended" * (MIB // 4)
    writers = 8
    barrier = threading.Barrier(writers)
    results: list[cas.PutResult] = []
    lock = threading.Lock()

    def put() -> None:
        barrier.wait()
        result = store.put_bytes(data)
        with lock:
            results.append(result)

    threads = [threading.Thread(target=put) for _ in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == writers
    assert {result.key for result in results} == {digest_bytes(data)}
    assert any(not result.existed for result in results)
    assert list(stored_files(store).values()) == [len(data)]
    assert store.get_bytes(results[0].key, verify=True) == data


def test_concurrent_processes_add_one_file(tmp_path: Path) -> None:
    root = tmp_path / "cas"
    code = (
        "import sys\n"
        "from pipetrail.storage.artifacts.cas import ContentAddressedStore\n"
        "result = ContentAddressedStore(sys.argv[1]).put_bytes(b'shared' * 500_000)\n"
        "print(result.key, result.existed)\n"
    )
    processes = [
        subprocess.Popen([sys.executable, "-c", code, str(root)], stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    outputs = [process.communicate(timeout=60)[0].split() for process in processes]
    assert all(process.returncode == 0 for process in processes)
    assert {key for key, _ in outputs} == {digest_bytes(b"shared" * 500_000)}
    assert sorted(existed for _, existed in outputs) == ["False", "True", "True", "True"]
    assert [path.name for path in root.rglob("*") if path.is_file()] == [outputs[0][0][2:]]


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=4096))
def test_round_trip_property(store: ContentAddressedStore, data: bytes) -> None:
    result = store.put_bytes(data)
    assert result.key == digest_bytes(data)
    assert result.size == len(data)
    assert store.get_bytes(result.key, verify=True) == data
    assert store.put_bytes(data).existed


def test_filesystem_errors_are_artifact_errors(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_bytes(b"")
    store = ContentAddressedStore(str(blocker))
    with pytest.raises(ArtifactError, match="not-a-folder") as caught:
        store.put_bytes(b"data")
    assert isinstance(caught.value.__cause__, OSError)


def test_unknown_protocol_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="nosuchfs://"):
        ContentAddressedStore("nosuchfs://bucket")


def test_url_and_local_path(tmp_path: Path) -> None:
    store = ContentAddressedStore(str(tmp_path))
    key = store.put_bytes(b"local").key
    assert store.url == str(tmp_path)
    assert Path(store.path_of(key)).read_bytes() == b"local"
    assert repr(store) == f"ContentAddressedStore({str(tmp_path)!r})"


def test_nothing_is_created_until_first_write(tmp_path: Path) -> None:
    store = ContentAddressedStore(str(tmp_path / "lazy"))
    assert not store.exists(digest_bytes(b""))
    assert not (tmp_path / "lazy").exists()


def test_fsync_store_round_trips(tmp_path: Path) -> None:
    store = ContentAddressedStore(str(tmp_path), fsync=True)
    for data in (b"durable", b"large and durable" * (MIB // 8)):
        result = store.put_bytes(data)
        assert store.get_bytes(result.key, verify=True) == data
        assert store.size(result.key) == len(data)
    assert not any((tmp_path / "tmp").iterdir())


def make_tree(root: Path, files: dict[str, bytes]) -> Path:
    """Write ``files`` (relative path → content) under ``root``, in the order given."""
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return root


TREE = {"a.txt": b"alpha", "sub/b.bin": b"\x00\x01" * 1000, "sub/deeper/c": b"", "z": b"zed"}


def test_digest_tree_is_deterministic(tmp_path: Path) -> None:
    first = make_tree(tmp_path / "one", TREE)
    second = make_tree(tmp_path / "two", dict(reversed(TREE.items())))
    (second / "empty-folder").mkdir()
    digest, size = digest_tree(first)
    assert digest_tree(second) == (digest, size)
    assert size == sum(map(len, TREE.values()))
    assert ContentAddressedStore.digest_tree(str(first)) == (digest, size)


@pytest.mark.parametrize(
    "change",
    [
        {"sub/b.bin": b"\x00\x01" * 999 + b"\x00\x02"},  # one byte
        {"sub/new": b""},  # an added empty file
        {"a.txt": b"alpha "},  # one byte longer
    ],
)
def test_digest_tree_changes_with_content(tmp_path: Path, change: dict[str, bytes]) -> None:
    base = digest_tree(make_tree(tmp_path / "base", TREE))[0]
    assert digest_tree(make_tree(tmp_path / "changed", {**TREE, **change}))[0] != base


def test_digest_tree_changes_with_names(tmp_path: Path) -> None:
    base = digest_tree(make_tree(tmp_path / "base", TREE))[0]
    renamed = {("a2.txt" if name == "a.txt" else name): data for name, data in TREE.items()}
    assert digest_tree(make_tree(tmp_path / "renamed", renamed))[0] != base


def test_digest_tree_needs_a_folder(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="missing"):
        digest_tree(tmp_path / "missing")
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(NotFoundError, match="file"):
        digest_tree(tmp_path / "file")
    with pytest.raises(NotFoundError, match="missing"):
        digest_file(tmp_path / "missing")


def test_put_buffers_stores_their_concatenation(store: ContentAddressedStore) -> None:
    numbers = array.array("d", [0.5, -1.0, 2.25])
    grid = memoryview(bytes(range(24))).cast("B", (4, 6))
    result = store.put_buffers(
        [b"head", bytearray(b"mutable"), numbers, memoryview(b"a-b-c-d")[::2], grid, b""]
    )
    joined = b"head" + b"mutable" + numbers.tobytes() + b"abcd" + bytes(range(24))
    assert (result.key, result.size, result.existed) == (digest_bytes(joined), len(joined), False)
    assert store.get_bytes(result.key, verify=True) == joined
    assert store.put_bytes(joined) == cas.PutResult(result.key, len(joined), existed=True)
    assert store.put_buffers([joined[:5], joined[5:]]).existed
    assert list(stored_files(store).values()) == [len(joined)]


def test_put_buffers_large_content_keeps_its_key(store: ContentAddressedStore) -> None:
    # Large buffers are hashed on several threads: the key must still be the one-pass digest.
    data = bytes(range(256)) * (12 * MIB // 256)
    result = store.put_buffers([memoryview(data)[:5], memoryview(data)[5:]])
    assert result.key == digest_in_small_pieces(data)
    assert store.verify(result.key) == len(data)


def digest_in_small_pieces(data: bytes) -> str:
    """The digest of ``data`` fed to one hasher 4 KiB at a time (no multi-threaded update)."""
    hasher = new_hasher()
    for start in range(0, len(data), 4096):
        hasher.update(data[start : start + 4096])
    return str(hasher.hexdigest())


def block_temporary_files(root: Path) -> None:
    """Make ``<root>/tmp`` a plain file, so any attempt to write a temporary file fails."""
    tmp = root / "tmp"
    if tmp.is_dir():
        for leftover in tmp.iterdir():
            leftover.unlink()
        tmp.rmdir()
    tmp.write_bytes(b"")


def test_stored_content_is_recognised_without_writing(tmp_path: Path) -> None:
    store = ContentAddressedStore(str(tmp_path / "cas"))
    data = b"already stored" * 100_000
    key = store.put_bytes(data).key
    block_temporary_files(tmp_path / "cas")
    assert store.put_bytes(data) == cas.PutResult(key, len(data), existed=True)
    assert store.put_buffers([data[:7], data[7:]]).existed
    with pytest.raises(ArtifactError, match="could not create temporary artifact file"):
        store.put_bytes(b"new content")
    (tmp_path / "cas" / key[:2] / key[2:]).write_bytes(data[:10])  # truncated by a crash
    with pytest.raises(ArtifactError, match="could not create temporary artifact file"):
        store.put_bytes(data)  # a file of the wrong size is not taken for the content


def test_second_store_writes_nothing(store: ContentAddressedStore) -> None:
    data = b"stored once" * 100_000
    key = store.put_bytes(data).key
    # Same size, other bytes, behind the store's back: a store that wrote would overwrite them.
    corrupt(store, key, data.upper())
    assert store.put_bytes(data) == cas.PutResult(key, len(data), existed=True)
    assert store.put_buffers([data[:3], data[3:]]).existed
    assert store.get_bytes(key) == data.upper()
    with pytest.raises(IntegrityError, match=key):
        store.verify(key)  # what catches such damage: verify on read


_FILE_SIZE_LIMIT = """\
import resource, signal, sys
from pipetrail.errors import ArtifactError
from pipetrail.storage.artifacts.cas import ContentAddressedStore

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, (1024 * 1024, 1024 * 1024))
store = ContentAddressedStore(sys.argv[1])
data = b"too big" * (3 * 1024 * 1024 // 7)
for put in (store.put_bytes, lambda d: store.put_stream(lambda out: out.write(d))):
    try:
        put(data)
    except ArtifactError as exc:
        print(exc)
    else:
        print("stored")
"""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX resource limits")
def test_write_failing_midway_leaves_no_object(tmp_path: Path) -> None:
    root = tmp_path / "cas"
    done = subprocess.run(
        [sys.executable, "-c", _FILE_SIZE_LIMIT, str(root)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 2
    assert all(line.startswith("could not write temporary artifact file") for line in lines)
    assert [path for path in root.rglob("*") if path.is_file()] == []


def write_all(out: BinaryIO, data: bytes) -> None:
    out.write(data)


def _aged(store: ContentAddressedStore, keys: list[str]) -> float:
    """A time after every one of ``keys`` was stored and before anything stored from now on
    (as the store reads times: S3 to the second), for ``delete_unclaimed``'s ``before``."""
    if store.local:
        old = time.time() - 7200
        for key in keys:
            os.utime(store.path_of(key), (old, old))
        return old + 1
    stored = time.time()
    time.sleep(2.5 if store.url.startswith("s3://") else 0.05)
    return stored + (1.2 if store.url.startswith("s3://") else 0.02)


def test_a_put_of_stored_content_claims_it_against_removal(store: ContentAddressedStore) -> None:
    again, once = b"old, stored again" * 1000, b"old, stored once" * 1000
    kept, gone = store.put_bytes(again).key, store.put_bytes(once).key
    before = _aged(store, [kept, gone])
    assert store.put_bytes(again).existed  # nothing written, but the object is claimed
    assert store.put_stream(lambda out: write_all(out, again)).existed

    assert store.delete_unclaimed([kept, gone], before=before) == [gone]
    assert store.get_bytes(kept, verify=True) == again and not store.exists(gone)
    assert [name for name, _, _ in store.temporaries()] == [], "nothing left aside"
    assert store.delete_unclaimed([gone], before=before) == [], "already gone"
    with pytest.raises(NotFoundError, match="no artifact with key"):
        store.delete_unclaimed([kept, "not-a-key"], before=before)
    assert store.exists(kept), "a bad key removes nothing"

    later = time.time() + 60
    assert store.expire_claims(later) == (0 if store.local else 2)
    assert store.delete_unclaimed([kept], before=later) == [kept]
    assert stored_files(store) == {} or all("/tmp/" in path for path in stored_files(store))


def test_an_object_moved_aside_by_a_crashed_collection_is_a_temporary(
    store: ContentAddressedStore,
) -> None:
    key = store.put_bytes(b"moved aside, then the collection died").key
    if store.local:
        Path(store.path_of(key)).rename(Path(store.url) / "tmp" / "gc-left")
    else:
        fs, path = fsspec.core.url_to_fs(store.path_of(key))
        fs.mv(path, path.rsplit("/", 2)[0] + "/tmp/gc-left")
    assert [(name, size) for name, size, _ in store.temporaries()] == [("gc-left", 37)]
    assert store.delete_temporary("gc-left")  # (S3 says yes to removing what is gone, too)
    assert list(store.temporaries()) == [] and not store.delete_temporary("../gc-left")


def test_a_listing_never_answers_a_later_check(store: ContentAddressedStore) -> None:
    key = store.put_bytes(b"listed, then removed by another process").key
    assert [k for k, _, _ in store.objects()] == [key]
    other = ContentAddressedStore(store.url)
    assert other.delete(key)
    assert not store.exists(key) and store.modified(key) is None
    assert not store.put_bytes(b"listed, then removed by another process").existed
    assert store.exists(key)
