"""Load a pipeline from ``FILE[:PIPELINE]``: import the file as a module and find the Pipeline."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import sys
import tempfile
import threading
import traceback
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType

from pipetrail.core.hashing import digest_bytes
from pipetrail.dsl import Pipeline
from pipetrail.errors import DefinitionError, PipelineLoadError

__all__ = [
    "ImportOnly",
    "findable",
    "importing",
    "load_pipeline",
    "load_pipeline_file",
    "snapshot_entry",
    "split_target",
    "unpack_snapshot",
]

#: The file in an unpacked code snapshot that says where its files came from.
_ORIGIN = ".pipetrail-origin.json"

_modules: dict[tuple[str, float], ModuleType] = {}
_importing = threading.local()


class ImportOnly(BaseException):
    """Raised by ``pt.run`` called at the top level of a file pipetrail is importing.

    A script that ends with ``pt.run(pipeline)`` and no ``if __name__ == "__main__"`` guard
    would otherwise start a run every time a worker (or ``pipetrail run``) imports it. The
    loader stops the import there: everything defined above the call is in the module.
    """


def importing() -> bool:
    """Whether pipetrail is importing a pipeline file in this thread right now."""
    return bool(getattr(_importing, "active", False))


def split_target(target: str) -> tuple[Path, str | None]:
    """``"flows/iris.py:iris"`` → (Path("flows/iris.py"), "iris")."""
    file, sep, name = target.rpartition(":")
    # A lone "C:\\x.py"-style colon or no colon at all means: no pipeline name given.
    if not sep or not file or "/" in name or "\\" in name or name.endswith(".py"):
        return Path(target), None
    return Path(file), name or None


def load_pipeline(target: str) -> Pipeline:
    """Load the pipeline named by ``FILE[:PIPELINE]``.

    Raises:
        PipelineLoadError: the file is missing or fails to import, or the pipeline is not in it.
        DefinitionError: the pipeline in the file is not valid.
    """
    file, name = split_target(target)
    return load_pipeline_file(file, name)


def load_pipeline_file(file: Path, name: str | None = None) -> Pipeline:
    """Import ``file`` (once per process and version of the file) and return its pipeline.

    The pipeline's ``spec.file`` becomes ``file``: it is the file workers import to find it.
    """
    pipeline = _find(file, name)
    path = str(file.resolve())
    if pipeline.spec.file != path:
        pipeline.spec = dataclasses.replace(pipeline.spec, file=path)
    return pipeline


def findable(pipeline: Pipeline) -> str | None:
    """Why worker processes could not import ``pipeline`` from its file, or None if they can.

    Workers import the pipeline's file and look the pipeline up by name; that fails for a
    pipeline built in a notebook, inside ``if __name__ == "__main__":``, or in a function.
    """
    file = pipeline.spec.file
    if not file or not Path(file).is_file():
        return f"pipeline {pipeline.name!r} was not defined in a file workers can import"
    try:
        found = _find(Path(file), pipeline.name)
    except (PipelineLoadError, DefinitionError) as exc:
        return f"workers would not find it: {exc}"
    if found.version != pipeline.version:
        return f"{file} defines another version of pipeline {pipeline.name!r} at module level"
    return None


def _find(file: Path, name: str | None) -> Pipeline:
    module = _import_file(file)
    found: dict[str, Pipeline] = {}
    for attr, value in vars(module).items():
        if isinstance(value, Pipeline):
            found.setdefault(value.name, value)
            if name is not None and attr == name:
                return value
    if name is not None:
        if name in found:
            return found[name]
        listing = ", ".join(sorted(found)) or "none"
        raise PipelineLoadError(
            f"no pipeline {name!r} in {str(file)!r} (pipelines there: {listing})"
        )
    if len(found) == 1:
        return next(iter(found.values()))
    if not found:
        raise PipelineLoadError(
            f"no pipeline in {str(file)!r}: define one with pt.Pipeline(name, [steps]) "
            "at module level"
        )
    raise PipelineLoadError(
        f"{str(file)!r} defines several pipelines ({', '.join(sorted(found))}); "
        f"pick one with {file}:NAME"
    )


def _import_file(file: Path) -> ModuleType:
    if not file.exists():
        raise PipelineLoadError(f"no such file: {str(file)!r}")
    if not file.is_file() or file.suffix != ".py":
        raise PipelineLoadError(f"not a Python file: {str(file)!r}")
    path = file.resolve()
    key = (str(path), path.stat().st_mtime)
    cached = _modules.get(key)
    if cached is not None:
        return cached
    # Named after the file the submitter imported, also for a copy unpacked from a snapshot:
    # a value pickled on one side (a parameter of a class defined in the file) loads on the other.
    module_name = f"pipetrail_user_{path.stem}_{digest_bytes(_origin_of(path).encode())[:8]}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise PipelineLoadError(f"cannot import {str(file)!r}")
    module = importlib.util.module_from_spec(spec)
    # The file's folder goes on the path so that it can import its neighbours.
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    sys.modules[module_name] = module
    _importing.active = True
    try:
        spec.loader.exec_module(module)
    except ImportOnly:
        pass
    except DefinitionError:
        sys.modules.pop(module_name, None)
        raise
    except SyntaxError as exc:
        sys.modules.pop(module_name, None)
        raise PipelineLoadError(f"{exc.filename}:{exc.lineno}: syntax error: {exc.msg}") from None
    except SystemExit as exc:
        # sys.exit() at import would end the CLI, a worker or the server without a word.
        sys.modules.pop(module_name, None)
        where = _user_frame(exc, str(path))
        raise PipelineLoadError(
            f"importing {str(file)!r} called sys.exit({exc.code!r}){where}; a pipeline file "
            "must not exit when imported (guard script code with: if __name__ == '__main__':)"
        ) from None
    except Exception as exc:
        sys.modules.pop(module_name, None)
        where = _user_frame(exc, str(path))
        raise PipelineLoadError(
            f"importing {str(file)!r} failed{where}: {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        _importing.active = False
    _modules[key] = module
    return module


def snapshot_entry(names: Mapping[str, object], recorded: str) -> str | None:
    """The archive name in a code snapshot of the file recorded as ``recorded`` (a path)."""
    matches = [k for k in names if recorded == k or recorded.endswith("/" + k)]
    return max(matches, key=len) if matches else None


def unpack_snapshot(files: Mapping[str, str], folder: Path, recorded: str) -> Path:
    """Write a code snapshot (``read_archive`` output) to ``folder``, once; the pipeline file's copy.

    ``folder`` is named by the snapshot's content key, so an existing one is complete and is
    used as it is: the files appear under their final name only when all are written, and two
    processes unpacking the same snapshot at once are harmless. The copy remembers ``recorded``
    so that its module gets the name the original had (see ``_import_file``).

    Raises:
        PipelineLoadError: the snapshot lacks the file recorded as the pipeline's.
    """
    entry = snapshot_entry(files, recorded)
    if entry is None:
        raise PipelineLoadError(
            f"the code snapshot has no copy of {recorded!r} (files: {', '.join(sorted(files))})"
        )
    if not folder.is_dir():
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
        for name, text in files.items():
            target = staging / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        root = recorded[: len(recorded) - len(entry)].rstrip("/")
        (staging / _ORIGIN).write_text(json.dumps({"root": root}), encoding="utf-8")
        try:
            os.rename(staging, folder)
        except OSError:  # another process unpacked it first: theirs is the same
            _remove_tree(staging)
            if not folder.is_dir():
                raise
    return folder / entry


def _remove_tree(folder: Path) -> None:
    import shutil

    shutil.rmtree(folder, ignore_errors=True)


def _origin_of(path: Path) -> str:
    """The path ``path`` had where it was recorded: itself, unless it is in an unpacked snapshot."""
    for folder in path.parents:
        marker = folder / _ORIGIN
        if marker.is_file():
            try:
                root = json.loads(marker.read_text(encoding="utf-8"))["root"]
            except (OSError, ValueError, KeyError, TypeError):
                return str(path)
            return f"{root}/{path.relative_to(folder).as_posix()}"
    return str(path)


def _user_frame(exc: BaseException, path: str) -> str:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == path]
    return f" at line {frames[-1].lineno}" if frames else ""
