"""Tests for the serializer registry and storing values through it."""

from __future__ import annotations

import collections
import copy
import enum
import io
import math
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import fsspec
import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipetrail.core.hashing import digest_bytes
from pipetrail.errors import ArtifactError, IntegrityError, SerializationError
from pipetrail.storage.artifacts.cas import ContentAddressedStore
from pipetrail.storage.artifacts.serializers import (
    BufferSerializer,
    JsonSerializer,
    NpySerializer,
    PickleSerializer,
    SerializerRegistry,
    default_registry,
    dump_to_store,
    load_from_store,
    type_name,
)


@dataclass
class Model:
    """Stands in for a fitted estimator: plain attributes and an array."""

    name: str
    weights: np.ndarray[Any, Any]
    params: dict[str, float] = field(default_factory=dict)


class Color(enum.IntEnum):
    RED = 1


class TupleSerializer:
    """A custom serializer for tuples of strings, for registry tests."""

    name = "tuple-lines"
    content_type = "text/plain"
    extension = ".txt"

    def can_serialize(self, obj: Any) -> bool:
        return type(obj) is tuple and all(type(item) is str for item in obj)

    def dump(self, obj: Any, fileobj: BinaryIO) -> None:
        fileobj.write("\n".join(obj).encode())

    def load(self, fileobj: BinaryIO) -> Any:
        return tuple(fileobj.read().decode().split("\n"))


@pytest.fixture(params=["local", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ContentAddressedStore]:
    """A store on each backend."""
    if request.param == "local":
        yield ContentAddressedStore(str(tmp_path / "cas"))
        return
    url = f"memory://pipetrail-test-{uuid.uuid4().hex}/cas"
    yield ContentAddressedStore(url)
    fs, root = fsspec.core.url_to_fs(url)
    if fs.exists(root):
        fs.rm(root, recursive=True)


def round_trip(store: ContentAddressedStore, value: Any, serializer: str) -> Any:
    """Store ``value``, check which serializer took it, and load it back."""
    stored = dump_to_store(store, value, default_registry())
    assert stored.serializer == serializer
    assert stored.size == store.size(stored.key)
    return load_from_store(store, stored.key, stored.serializer)


def frames() -> dict[str, pd.DataFrame]:
    """DataFrames that Parquet must return unchanged, index included."""
    return {
        "named string index": pd.DataFrame(
            {"a": [1, 2, 3], "b": [0.5, 1.5, np.nan], "c": ["x", None, "z"]},
            index=pd.Index(["r1", "r2", "r3"], name="row"),
        ),
        "shifted range index": pd.DataFrame({"a": [1, 2]}, index=pd.RangeIndex(10, 14, 2)),
        "multi index": pd.DataFrame(
            {"v": [1.0, 2.0]},
            index=pd.MultiIndex.from_tuples([(1, "a"), (2, "b")], names=["i", "j"]),
        ),
        "daily index with freq": pd.DataFrame(
            {"v": [1, 2, 3]}, index=pd.date_range("2024-01-01", periods=3, freq="D", name="day")
        ),
        "typed columns": pd.DataFrame(
            {
                "cat": pd.Categorical(["lo", "hi"]),
                "when": pd.date_range("2024-01-01", periods=2, tz="UTC"),
                "nullable": pd.array([1, None], dtype="Int64"),
                "flag": [True, False],
                "small": np.array([1, 2], dtype=np.uint8),
                "raw": [b"\x00", b"\x01"],
            }
        ),
        "integer labels": pd.DataFrame([[1, 2]], columns=[10, 20]),
        "empty": pd.DataFrame(),
    }


@pytest.mark.parametrize(
    "array",
    [
        np.arange(12, dtype=np.float64).reshape(3, 4) / 7,
        np.arange(-6, 6, dtype=np.int32).reshape(4, 3),
        np.asfortranarray(np.arange(6.0).reshape(2, 3)),
        np.arange(20)[::3],
        np.array(3.5),
        np.empty((0, 4)),
        np.array([(1, 2.5)], dtype=[("id", "i4"), ("score", "f8")]),
        np.array(["2024-01-01", "2024-06-30"], dtype="datetime64[D]"),
        np.array([True, False]),
        np.array(["text", "más"]),
    ],
    ids=[
        "float-2d",
        "int-2d",
        "fortran",
        "strided",
        "0d",
        "empty",
        "struct",
        "datetime",
        "bool",
        "U",
    ],
)
def test_numpy_round_trip(store: ContentAddressedStore, array: np.ndarray[Any, Any]) -> None:
    loaded = round_trip(store, array, "npy")
    assert loaded.dtype == array.dtype
    assert loaded.shape == array.shape
    np.testing.assert_array_equal(loaded, array)


@pytest.mark.parametrize("name", list(frames()))
def test_dataframe_round_trip(store: ContentAddressedStore, name: str) -> None:
    frame = frames()[name]
    pd.testing.assert_frame_equal(round_trip(store, frame, "parquet"), frame)


@pytest.mark.parametrize(
    "value",
    [
        {"a": 1, "b": [1.5, None, True, "x"], "nested": {"deep": [[], {}]}},
        [1, 2.0, -0.0, 10**100, "ünïcode", "\ud800", False],
        "just a string",
        None,
        {"z": 1, "a": 2},
    ],
)
def test_json_round_trip(store: ContentAddressedStore, value: Any) -> None:
    loaded = round_trip(store, value, "json")
    assert loaded == value
    assert repr(loaded) == repr(value)  # same types and the same dict order


@pytest.mark.parametrize("value", [b"\x00raw\xff", bytearray(b"mutable")])
def test_bytes_round_trip(store: ContentAddressedStore, value: bytes | bytearray) -> None:
    assert round_trip(store, value, "bytes") == bytes(value)


@pytest.mark.parametrize(
    "value",
    [
        (1, "two", 3.0),
        {"point": (1, 2)},
        {1: "int key"},
        {1, 2, 3},
        float("nan"),
        [float("inf")],
        collections.OrderedDict(a=1),
        Color.RED,
        np.float64(1.5),
        np.array([{"a": 1}, None], dtype=object),
        pd.Series([1, 2], name="s"),
        pd.DataFrame({"mixed": [1, "a"]}),
        pd.DataFrame({"z": [1 + 2j]}),
        10**5000,
    ],
    ids=lambda value: type_name(value),
)
def test_other_values_go_to_joblib(store: ContentAddressedStore, value: Any) -> None:
    loaded = round_trip(store, value, "joblib")
    assert type(loaded) is type(value)
    if isinstance(value, pd.DataFrame):
        pd.testing.assert_frame_equal(loaded, value)
    elif isinstance(value, pd.Series):
        pd.testing.assert_series_equal(loaded, value)
    elif isinstance(value, np.ndarray):
        np.testing.assert_array_equal(loaded, value)
    elif value != value:  # NaN
        assert math.isnan(loaded)
    else:
        assert loaded == value


def test_model_like_object_via_joblib(store: ContentAddressedStore) -> None:
    model = Model("ridge", np.linspace(0, 1, 5), {"alpha": 0.1})
    loaded = round_trip(store, model, "joblib")
    assert isinstance(loaded, Model)
    assert (loaded.name, loaded.params) == (model.name, model.params)
    np.testing.assert_array_equal(loaded.weights, model.weights)


def test_cyclic_and_deep_lists_are_not_json() -> None:
    cyclic: list[Any] = [1]
    cyclic.append(cyclic)
    deep: list[Any] = []
    for _ in range(500):
        deep = [deep]
    json_serializer = JsonSerializer()
    assert not json_serializer.can_serialize(cyclic)
    assert not json_serializer.can_serialize(deep)
    assert json_serializer.can_serialize([[[]]])


@pytest.mark.parametrize(
    ("value", "kind"),
    [(lambda x: x, "function"), ((i for i in range(3)), "generator")],
    ids=["lambda", "generator"],
)
def test_unpicklable_values(store: ContentAddressedStore, value: Any, kind: str) -> None:
    with pytest.raises(
        SerializationError, match=f"cannot serialize value of type 'builtins.{kind}'"
    ):
        dump_to_store(store, value)
    fs, root = fsspec.core.url_to_fs(store.url)
    assert not fs.exists(root) or fs.find(root) == []


def test_same_value_is_stored_once(store: ContentAddressedStore) -> None:
    array = np.arange(1000.0)
    first = dump_to_store(store, array)
    second = dump_to_store(store, array.copy())
    assert (first.existed, second.existed) == (False, True)
    assert second.key == first.key
    assert (first.type_name, first.content_type) == ("numpy.ndarray", "application/x-npy")


def test_load_verify(store: ContentAddressedStore) -> None:
    stored = dump_to_store(store, {"a": 1})
    assert load_from_store(store, stored.key, "json", verify=True) == {"a": 1}
    fs, path = fsspec.core.url_to_fs(store.path_of(stored.key))
    fs.pipe_file(path, b'{"a":2}')
    with pytest.raises(IntegrityError, match=stored.key):
        load_from_store(store, stored.key, "json", verify=True)


def test_load_failure_is_a_serialization_error(store: ContentAddressedStore) -> None:
    key = store.put_bytes(b"not json at all").key
    with pytest.raises(SerializationError, match=f"cannot load artifact '{key}' with the 'json'"):
        load_from_store(store, key, "json")


def test_pickle_serializer_round_trip(store: ContentAddressedStore) -> None:
    registry = SerializerRegistry([JsonSerializer(), PickleSerializer()])
    value = ({"a"}, (1, 2))
    stored = dump_to_store(store, value, registry)
    assert stored.serializer == "pickle"
    assert load_from_store(store, stored.key, "pickle", registry) == value


def test_default_priority() -> None:
    registry = default_registry()
    assert registry.names == ("json", "npy", "parquet", "bytes", "joblib", "pickle")
    cases: dict[str, Any] = {
        "json": {"a": [1]},
        "npy": np.zeros(3),
        "parquet": pd.DataFrame({"a": [1]}),
        "bytes": b"x",
        "joblib": (1,),
    }
    for name, value in cases.items():
        assert registry.for_object(value).name == name


def test_register_first_takes_priority() -> None:
    registry = default_registry()
    registry.register(TupleSerializer())
    assert registry.for_object(("a", "b")).name == "joblib"
    registry.register(TupleSerializer(), first=True)
    assert registry.names[0] == "tuple-lines"
    assert registry.names.count("tuple-lines") == 1
    assert registry.for_object(("a", "b")).name == "tuple-lines"
    assert registry.for_object((1, 2)).name == "joblib"


def test_register_same_name_replaces_in_place() -> None:
    registry = default_registry()
    replacement = JsonSerializer()
    registry.register(replacement)
    assert registry.names == default_registry().names
    assert registry.get("json") is replacement


def test_default_registries_are_independent() -> None:
    registry = default_registry()
    registry.register(TupleSerializer(), first=True)
    assert "tuple-lines" not in default_registry().names


def test_custom_serializer_through_store(store: ContentAddressedStore) -> None:
    registry = default_registry()
    registry.register(TupleSerializer(), first=True)
    stored = dump_to_store(store, ("x", "y"), registry)
    assert (stored.serializer, stored.content_type) == ("tuple-lines", "text/plain")
    assert store.get_bytes(stored.key) == b"x\ny"
    assert load_from_store(store, stored.key, "tuple-lines", registry) == ("x", "y")


def test_no_serializer_accepts() -> None:
    registry = SerializerRegistry([JsonSerializer()])
    with pytest.raises(SerializationError, match=r"'builtins\.tuple'.*tried: json"):
        registry.for_object((1,))


def test_unknown_serializer_name() -> None:
    with pytest.raises(SerializationError, match="no serializer named 'yaml'"):
        default_registry().get("yaml")


def test_type_name() -> None:
    def generator() -> Iterator[int]:
        yield 1

    assert type_name({}) == "builtins.dict"
    assert type_name(np.zeros(1)) == "numpy.ndarray"
    assert type_name(pd.DataFrame()) == "pandas.DataFrame"
    assert type_name(np.random.default_rng()) == "numpy.random.Generator"
    assert type_name(generator()) == "builtins.generator"
    assert type_name(Model("m", np.zeros(1))) == f"{__name__}.Model"
    assert type_name(TupleSerializer) == "builtins.type"


@pytest.mark.parametrize(
    "module",
    ["pipetrail.storage.artifacts.cas", "pipetrail.storage.artifacts.serializers"],
)
def test_import_is_light(module: str) -> None:
    heavy = ["numpy", "pandas", "pyarrow", "joblib"]
    code = (
        f"import sys, {module} as m\n"
        "from pipetrail.storage.artifacts.serializers import default_registry\n"
        "default_registry().for_object({'a': (1,)})\n"
        f"loaded = [name for name in {heavy!r} if name in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=30,
)


@given(value=json_values)
def test_json_property(value: Any) -> None:
    serializer = JsonSerializer()
    assert default_registry().for_object(value).name == "json"
    buffer = io.BytesIO()
    serializer.dump(value, buffer)
    buffer.seek(0)
    loaded = serializer.load(buffer)
    assert loaded == value
    assert repr(loaded) == repr(value)


@pytest.mark.parametrize(
    ("array", "key"),
    [
        (np.arange(1000.0), "7fd89ccacd1dab4fa3bad21a0d3035ddadd790927d60520bea74da01c3245e4c"),
        (
            np.asfortranarray(np.arange(6.0).reshape(2, 3)),
            "67b0abc83269c2eb2a8206fab01f250711df9cc54a463c4aae4595de2b3866d7",
        ),
        (np.arange(20)[::3], "c10e9e4dcd33db5d64a689b69e3a142b096cc73d1457e53bc508e6184d7ab6d1"),
        (np.array(3.5), "815ba2d3c89e4938582f98c8d007ea222d5451734b9bb126b6f9de99c6a22a56"),
        (
            np.array([(1, 2.5)], dtype=[("id", "i4"), ("score", "f8")]),
            "28fd25bd77d56089c71b666092dade17f989e24c412cb9114a25f6cadbf33957",
        ),
        (np.empty((0, 4)), "63f33de69e926fe221e2e84c1e16ee799587ea885aab7160a13398b7715f500e"),
        (
            np.arange(2**21, dtype=np.float64),  # 16 MiB: hashed on several threads
            "d4f8bd567a5445a013e55ac43dc610e6a1c6906ea4861017c84c788223755f73",
        ),
        (
            np.asfortranarray(np.arange(2**21, dtype=np.int64).reshape(1024, 2048)),
            "c55ac723e23c52f7eeb0790e34579d5d7c4b03d5884b6fd6eb090982696505a3",
        ),
    ],
    ids=["float", "fortran", "strided", "0d", "struct", "empty", "16mib", "16mib-fortran"],
)
def test_known_arrays_keep_their_keys(
    store: ContentAddressedStore, array: np.ndarray[Any, Any], key: str
) -> None:
    # Keys recorded before arrays were hashed from their buffers: every store's old keys hold.
    saved = io.BytesIO()
    np.save(saved, array, allow_pickle=False)
    stored = dump_to_store(store, array)
    assert (stored.key, stored.size) == (key, len(saved.getvalue()))
    assert stored.key == digest_bytes(saved.getvalue())
    assert store.get_bytes(key, verify=True) == saved.getvalue()


def test_npy_buffers_are_the_npy_file_without_a_copy() -> None:
    serializer = NpySerializer()
    for array in [
        np.arange(12, dtype=np.float64).reshape(3, 4) / 7,
        np.asfortranarray(np.arange(6.0).reshape(2, 3)),
        np.array(["text", "más"]),
        np.array(["2024-01-01"], dtype="datetime64[D]"),
        np.zeros((0, 3), dtype=np.int16),
    ]:
        views = serializer.buffers(array)
        assert views is not None
        saved = io.BytesIO()
        np.save(saved, array, allow_pickle=False)
        assert b"".join(views) == saved.getvalue()
        if array.size:
            assert np.shares_memory(np.frombuffer(views[-1], dtype=np.uint8), array)
    assert serializer.buffers(np.arange(20)[::3]) is None
    assert serializer.buffers(np.array([(1, 2.5)], dtype=[("id", "i4"), ("x", "f8")])) is None


class LinesSerializer(TupleSerializer):
    """The tuple serializer handing over its bytes as buffers."""

    name = "buffer-lines"

    def buffers(self, obj: Any) -> list[memoryview]:
        return [memoryview("\n".join(obj).encode())]


def test_values_already_stored_are_not_written_again(tmp_path: Path) -> None:
    store = ContentAddressedStore(str(tmp_path / "cas"))
    registry = default_registry()
    registry.register(LinesSerializer(), first=True)
    assert isinstance(registry.get("buffer-lines"), BufferSerializer)
    values: list[Any] = [np.arange(100_000.0), b"raw bytes", {"json": [1, 2]}, ("a", "b")]
    first = [dump_to_store(store, value, registry) for value in values]
    joblib_first = dump_to_store(store, (1, 2), registry)
    # Without a folder for temporary files only a store that writes nothing can succeed.
    (tmp_path / "cas" / "tmp").rmdir()
    (tmp_path / "cas" / "tmp").write_bytes(b"")
    again = [dump_to_store(store, copy.deepcopy(value), registry) for value in values]
    assert [(s.key, s.existed) for s in again] == [(s.key, True) for s in first]
    assert [s.serializer for s in again] == ["npy", "bytes", "json", "buffer-lines"]
    with pytest.raises(ArtifactError, match="temporary artifact file"):
        dump_to_store(store, (1, 2), registry)  # joblib streams: it has to write to find its key
    assert load_from_store(store, joblib_first.key, "joblib", registry) == (1, 2)
