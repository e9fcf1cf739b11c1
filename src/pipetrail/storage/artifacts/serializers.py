"""Type → serializer registry: JSON, NumPy, Parquet, raw bytes, and a joblib / pickle fallback."""

from __future__ import annotations

import functools
import importlib.util
import io
import json
import math
import pickle
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol, TypeGuard, runtime_checkable

from pipetrail.errors import ArtifactError, SerializationError
from pipetrail.storage.artifacts.cas import ContentAddressedStore

__all__ = [
    "BufferSerializer",
    "BytesSerializer",
    "JoblibSerializer",
    "JsonSerializer",
    "NpySerializer",
    "ParquetSerializer",
    "PickleSerializer",
    "Serializer",
    "SerializerRegistry",
    "StoredValue",
    "default_registry",
    "dump_to_store",
    "load_from_store",
    "type_name",
]

# Deeper or longer values than these are left to pickle rather than checked for JSON.
_MAX_JSON_DEPTH = 200
_MAX_JSON_INT_BITS = 13_000  # ~3,900 digits: below the interpreter's int-to-str limit

# Schema metadata key for a DatetimeIndex / TimedeltaIndex freq, which Parquet does not keep.
_FREQ_KEY = b"pipetrail.index_freq"

# Inferred dtypes of object columns, and of column labels, that survive a Parquet round trip.
_PARQUET_OBJECT_KINDS = frozenset({"string", "bytes", "empty"})
_PARQUET_LABEL_KINDS = frozenset({"string", "integer", "floating", "empty"})


class Serializer(Protocol):
    """Turns values of some types into bytes and back.

    Attributes:
        name: Unique name, recorded beside each artifact so it can be loaded again.
        content_type: Media type of the bytes, e.g. ``"application/json"``.
        extension: File extension for exported copies, with its dot, e.g. ``".json"``.
    """

    name: str
    content_type: str
    extension: str

    def can_serialize(self, obj: Any) -> bool:
        """Whether ``obj`` round-trips exactly through this serializer."""
        ...

    def dump(self, obj: Any, fileobj: BinaryIO) -> None:
        """Write ``obj`` to the write-only binary ``fileobj``."""
        ...

    def load(self, fileobj: BinaryIO) -> Any:
        """Read back a value written by :meth:`dump` from the binary ``fileobj``."""
        ...


@runtime_checkable
class BufferSerializer(Serializer, Protocol):
    """A serializer that can also hand over a value's bytes as buffers instead of writing them.

    :func:`dump_to_store` passes them to :meth:`ContentAddressedStore.put_buffers`, which hashes
    them before writing anything, so a value that is already stored costs one hash.
    """

    def buffers(self, obj: Any) -> list[memoryview] | None:
        """The bytes :meth:`dump` writes, as views (of ``obj``'s own memory where it can); None
        when they can only be written by :meth:`dump`."""
        ...


class JsonSerializer:
    """Plain data: None, bool, int, finite float, str, and lists and str-keyed dicts of them.

    Only exact built-in types qualify, so everything comes back as it went in: tuples, subclasses
    (``numpy.float64``, enums, ``OrderedDict``) and non-finite floats go to a later serializer.
    Dict order is kept.
    """

    name = "json"
    content_type = "application/json"
    extension = ".json"

    def can_serialize(self, obj: Any) -> bool:
        """Whether ``obj`` is plain data that JSON returns unchanged."""
        return _is_plain(obj, 0, set())

    def dump(self, obj: Any, fileobj: BinaryIO) -> None:
        """Write ``obj`` as compact ASCII JSON."""
        fileobj.write(self.buffers(obj)[0])

    def buffers(self, obj: Any) -> list[memoryview]:
        """The compact ASCII JSON text of ``obj``, encoded."""
        text = json.dumps(obj, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
        return [memoryview(text.encode("ascii"))]

    def load(self, fileobj: BinaryIO) -> Any:
        """Parse JSON."""
        return json.loads(fileobj.read())


class NpySerializer:
    """A ``numpy.ndarray`` (not a subclass, no Python objects) in ``.npy`` format, without pickle."""

    name = "npy"
    content_type = "application/x-npy"
    extension = ".npy"

    def can_serialize(self, obj: Any) -> bool:
        """Whether ``obj`` is a plain ndarray whose dtype holds no Python objects."""
        numpy = sys.modules.get("numpy")
        if numpy is None or type(obj) is not numpy.ndarray:
            return False
        # Non-legacy dtypes (numpy 2's StringDType) would need pickle, like object arrays.
        return not obj.dtype.hasobject and getattr(type(obj.dtype), "_legacy", True) is True

    def dump(self, obj: Any, fileobj: BinaryIO) -> None:
        """Write ``obj`` in ``.npy`` format, the same bytes as ``numpy.save``."""
        import numpy as np

        views = self.buffers(obj)
        if views is None:
            np.lib.format.write_array(fileobj, obj, allow_pickle=False)
            return
        for view in views:
            fileobj.write(view)

    def buffers(self, obj: Any) -> list[memoryview] | None:
        """The ``.npy`` header and the array's own memory (no copy), for a C- or
        Fortran-contiguous array that is not structured; None for others.

        Strided arrays need a copy anyway, and structured ones may need a newer header version,
        so those are left to ``numpy.lib.format.write_array`` in :meth:`dump`.
        """
        import numpy as np

        contiguous = obj.flags.c_contiguous or obj.flags.f_contiguous
        if not contiguous or obj.dtype.names is not None:
            return None
        fields = np.lib.format.header_data_from_array_1_0(obj)
        header = io.BytesIO()
        try:
            np.lib.format.write_array_header_1_0(header, fields)
        except ValueError:  # header too long for version 1.0
            np.lib.format.write_array_header_2_0(header, fields)
        return [header.getbuffer(), memoryview(obj.ravel(order="K").view(np.uint8))]

    def load(self, fileobj: BinaryIO) -> Any:
        """Read an ``.npy`` array, refusing pickled content."""
        import numpy as np

        return np.lib.format.read_array(fileobj, allow_pickle=False)


class ParquetSerializer:
    """A ``pandas.DataFrame`` as Parquet via pyarrow, index (and its ``freq``) included.

    Only frames that round-trip exactly qualify: unique, single-typed column labels and columns of
    numeric, boolean, datetime, timedelta, categorical, string, bytes or pandas extension dtypes.
    Complex numbers, sparse columns and object columns of other values go to a later serializer.
    """

    name = "parquet"
    content_type = "application/vnd.apache.parquet"
    extension = ".parquet"

    def can_serialize(self, obj: Any) -> bool:
        """Whether ``obj`` is a DataFrame that Parquet returns unchanged, with pyarrow installed."""
        pandas = sys.modules.get("pandas")
        if pandas is None or type(obj) is not pandas.DataFrame or not _importable("pyarrow"):
            return False
        return _frame_fits_parquet(obj)

    def dump(self, obj: Any, fileobj: BinaryIO) -> None:
        """Write ``obj`` as a Parquet file."""
        import pandas as pd
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(obj, preserve_index=None)
        index = obj.index
        if isinstance(index, pd.DatetimeIndex | pd.TimedeltaIndex) and index.freqstr:
            metadata = {**(table.schema.metadata or {}), _FREQ_KEY: index.freqstr.encode()}
            table = table.replace_schema_metadata(metadata)
        pq.write_table(table, fileobj)

    def load(self, fileobj: BinaryIO) -> Any:
        """Read a Parquet file into a DataFrame; ``fileobj`` must be seekable."""
        import pyarrow.parquet as pq

        table = pq.read_table(fileobj)
        frame = table.to_pandas()
        freq = (table.schema.metadata or {}).get(_FREQ_KEY)
        if freq is not None:
            frame.index = type(frame.index)(frame.index, freq=freq.decode())
        return frame


class BytesSerializer:
    """Raw ``bytes`` or ``bytearray``, stored as is; both load as ``bytes``."""

    name = "bytes"
    content_type = "application/octet-stream"
    extension = ".bin"

    def can_serialize(self, obj: Any) -> bool:
        """Whether ``obj`` is ``bytes`` or ``bytearray``."""
        return type(obj) is bytes or type(obj) is bytearray

    def dump(self, obj: Any, fileobj: BinaryIO) -> None:
        """Write the bytes."""
        fileobj.write(obj)

    def buffers(self, obj: Any) -> list[memoryview]:
        """The bytes themselves, not copied."""
        return [memoryview(obj)]

    def load(self, fileobj: BinaryIO) -> bytes:
        """Read the bytes."""
        return fileobj.read()


class JoblibSerializer:
    """Anything picklable (models, estimators, tuples, sets, …) via ``joblib``, when installed."""

    name = "joblib"
    content_type = "application/x-joblib"
    extension = ".joblib"

    def can_serialize(self, obj: Any) -> bool:
        """True whenever joblib is installed: picklability is only known by trying."""
        return _importable("joblib")

    def dump(self, obj: Any, fileobj: BinaryIO) -> None:
        """Pickle ``obj`` with joblib, which writes large arrays efficiently."""
        import joblib

        joblib.dump(obj, fileobj)

    def load(self, fileobj: BinaryIO) -> Any:
        """Unpickle with joblib; only load artifacts from a store you trust."""
        import joblib

        return joblib.load(fileobj)


class PickleSerializer:
    """Anything picklable via the standard library; the last resort when joblib is missing."""

    name = "pickle"
    content_type = "application/x-python-pickle"
    extension = ".pkl"

    def can_serialize(self, obj: Any) -> bool:
        """Always True: picklability is only known by trying."""
        return True

    def dump(self, obj: Any, fileobj: BinaryIO) -> None:
        """Pickle ``obj`` with the highest protocol."""
        pickle.dump(obj, fileobj, protocol=pickle.HIGHEST_PROTOCOL)

    def load(self, fileobj: BinaryIO) -> Any:
        """Unpickle; only load artifacts from a store you trust."""
        return pickle.load(fileobj)


class SerializerRegistry:
    """Serializers in priority order: a value goes to the first that can serialize it.

    Args:
        serializers: Initial serializers, highest priority first.
    """

    def __init__(self, serializers: Iterable[Serializer] = ()) -> None:
        self._serializers: list[Serializer] = []
        for serializer in serializers:
            self.register(serializer)

    @property
    def names(self) -> tuple[str, ...]:
        """Registered serializer names, highest priority first."""
        return tuple(serializer.name for serializer in self._serializers)

    def register(self, serializer: Serializer, first: bool = False) -> None:
        """Add ``serializer`` at the lowest priority, or the highest when ``first`` is set.

        A serializer with the same name as a registered one replaces it, keeping its place unless
        ``first`` is set.
        """
        names = self.names
        if serializer.name in names:
            position = names.index(serializer.name)
            if not first:
                self._serializers[position] = serializer
                return
            del self._serializers[position]
        if first:
            self._serializers.insert(0, serializer)
        else:
            self._serializers.append(serializer)

    def get(self, name: str) -> Serializer:
        """The serializer called ``name``.

        Raises:
            SerializationError: No serializer has that name.
        """
        for serializer in self._serializers:
            if serializer.name == name:
                return serializer
        raise SerializationError(
            f"no serializer named {name!r} (registered: {', '.join(self.names) or 'none'}); "
            f"register it with SerializerRegistry.register before loading"
        )

    def for_object(self, obj: Any) -> Serializer:
        """The highest-priority serializer that can serialize ``obj``.

        Raises:
            SerializationError: None of them can.
        """
        for serializer in self._serializers:
            if serializer.can_serialize(obj):
                return serializer
        raise SerializationError(
            f"cannot serialize value of type {type_name(obj)!r}: no registered serializer accepts "
            f"it (tried: {', '.join(self.names) or 'none'}); register one for this type"
        )


def default_registry() -> SerializerRegistry:
    """A new registry of the built-ins: json, npy, parquet, bytes, joblib, then pickle."""
    return SerializerRegistry(
        [
            JsonSerializer(),
            NpySerializer(),
            ParquetSerializer(),
            BytesSerializer(),
            JoblibSerializer(),
            PickleSerializer(),
        ]
    )


@dataclass(frozen=True)
class StoredValue:
    """A value written to the artifact store, with what is needed to load it back.

    Attributes:
        key: Content key in the store.
        size: Number of bytes stored.
        serializer: Name of the serializer that wrote it.
        content_type: Media type of the bytes.
        type_name: Type of the original value, e.g. ``"numpy.ndarray"``.
        existed: True when identical bytes were already stored.
    """

    key: str
    size: int
    serializer: str
    content_type: str
    type_name: str
    existed: bool


def dump_to_store(
    store: ContentAddressedStore, obj: Any, registry: SerializerRegistry | None = None
) -> StoredValue:
    """Serialize ``obj`` with the first serializer that accepts it, streaming into ``store``.

    A :class:`BufferSerializer`'s buffers go to :meth:`ContentAddressedStore.put_buffers` (hashed
    before anything is written, so a value already stored is not written again); any other
    serializer writes to :meth:`ContentAddressedStore.put_stream`.

    Args:
        store: Where the bytes go.
        obj: The value.
        registry: Serializers to choose from; the built-ins by default.

    Raises:
        SerializationError: No serializer accepts ``obj``, or the chosen one failed on it.
        ArtifactError: The store failed.
    """
    registry = default_registry() if registry is None else registry
    serializer = registry.for_object(obj)

    def write(fileobj: BinaryIO) -> None:
        serializer.dump(obj, fileobj)

    try:
        views = serializer.buffers(obj) if _gives_buffers(serializer) else None
        result = store.put_stream(write) if views is None else store.put_buffers(views)
    except ArtifactError:
        raise
    except Exception as exc:
        raise SerializationError(
            f"cannot serialize value of type {type_name(obj)!r} with the {serializer.name!r} "
            f"serializer: {exc}; return a picklable value or register a serializer for its type"
        ) from exc
    return StoredValue(
        key=result.key,
        size=result.size,
        serializer=serializer.name,
        content_type=serializer.content_type,
        type_name=type_name(obj),
        existed=result.existed,
    )


#: Serializer class -> whether it is a BufferSerializer: checking a runtime protocol costs
#: tens of microseconds a call, more than storing a small value.
_BUFFERED: dict[type, bool] = {}


def _gives_buffers(serializer: Serializer) -> TypeGuard[BufferSerializer]:
    kind = type(serializer)
    known = _BUFFERED.get(kind)
    if known is None:
        known = _BUFFERED[kind] = isinstance(serializer, BufferSerializer)
    return known


def load_from_store(
    store: ContentAddressedStore,
    key: str,
    serializer_name: str,
    registry: SerializerRegistry | None = None,
    *,
    verify: bool = False,
) -> Any:
    """Load the value stored under ``key`` with the serializer that wrote it.

    Args:
        store: Where the bytes are.
        key: Content key.
        serializer_name: :attr:`StoredValue.serializer` recorded when it was stored.
        registry: Serializers to choose from; the built-ins by default.
        verify: Check the content's hash (streaming, not in memory) before loading it.

    Raises:
        NotFoundError: Nothing is stored under ``key``.
        IntegrityError: ``verify`` is set and the bytes do not match ``key``.
        SerializationError: No serializer has that name, or it could not load the bytes.
    """
    registry = default_registry() if registry is None else registry
    serializer = registry.get(serializer_name)
    fileobj = store.open_verified(key) if verify else store.open(key)
    with fileobj:
        try:
            return serializer.load(fileobj)
        except ArtifactError:
            raise
        except Exception as exc:
            raise SerializationError(
                f"cannot load artifact {key!r} with the {serializer_name!r} serializer: {exc}"
            ) from exc


def type_name(obj: Any) -> str:
    """``"module.QualName"`` of ``obj``'s type, by its public module where one re-exports it.

    ``pandas.core.frame.DataFrame`` becomes ``"pandas.DataFrame"``; ``{}`` gives
    ``"builtins.dict"``. Only already-imported modules are consulted.
    """
    kind = type(obj)
    module = str(getattr(kind, "__module__", None) or "builtins")
    qualname = str(getattr(kind, "__qualname__", kind.__name__))
    parts = module.split(".")
    for end in range(1, len(parts)):
        public = ".".join(parts[:end])
        if _lookup(sys.modules.get(public), qualname) is kind:
            return f"{public}.{qualname}"
    return f"{module}.{qualname}"


def _lookup(module: Any, qualname: str) -> Any:
    if module is None:
        return None
    # vars(), not getattr(): a module-level __getattr__ may import or warn.
    first, *rest = qualname.split(".")
    found = vars(module).get(first)
    for part in rest:
        found = getattr(found, part, None)
    return found


def _is_plain(value: Any, depth: int, ancestors: set[int]) -> bool:
    kind = type(value)
    if value is None or kind is bool or kind is str:
        return True
    if kind is int:
        return bool(value.bit_length() <= _MAX_JSON_INT_BITS)
    if kind is float:
        return math.isfinite(value)
    if kind is not list and kind is not dict:
        return False
    if depth >= _MAX_JSON_DEPTH or id(value) in ancestors:
        return False  # too deep for a quick check, or a cycle JSON cannot encode
    ancestors.add(id(value))
    try:
        if kind is list:
            return all(_is_plain(item, depth + 1, ancestors) for item in value)
        return all(type(k) is str and _is_plain(v, depth + 1, ancestors) for k, v in value.items())
    finally:
        ancestors.discard(id(value))


@functools.cache
def _importable(module: str) -> bool:
    return module in sys.modules or importlib.util.find_spec(module) is not None


def _frame_fits_parquet(frame: Any) -> bool:
    import pandas as pd

    columns = frame.columns
    if not columns.is_unique:
        return False
    label_levels = [columns.get_level_values(i) for i in range(columns.nlevels)]
    if any(
        pd.api.types.infer_dtype(level, skipna=True) not in _PARQUET_LABEL_KINDS
        for level in label_levels
    ):
        return False
    index = frame.index
    index_levels = [index.get_level_values(i) for i in range(index.nlevels)]
    values = [column for _, column in frame.items()]
    return all(_values_fit_parquet(v) for v in [*index_levels, *values])


def _values_fit_parquet(values: Any) -> bool:
    import numpy as np
    import pandas as pd

    dtype = values.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        return _values_fit_parquet(dtype.categories)
    if isinstance(dtype, pd.SparseDtype):
        return False
    if not isinstance(dtype, np.dtype):
        return True  # pandas extension dtypes: nullable, string, tz-aware, period, interval, arrow
    if dtype.kind == "O":
        return pd.api.types.infer_dtype(values, skipna=True) in _PARQUET_OBJECT_KINDS
    return dtype.kind in "biufmM"
