"""The Dask executor's worker side: what each Dask task runs, and what a worker keeps.

A worker process keeps, per store, the stores and a
:class:`~pipetrail.runtime.executors.pool.ProcessExecutor` of warm child processes: each
attempt runs in a child, so a cancel or a timeout stops it (SIGTERM, then SIGKILL), a child
that dies fails only its attempt, and logs, resources, metrics and lineage are recorded by the
same ``execute_task`` as everywhere. The step code comes from the run's stored code snapshot,
unpacked once per worker host into a folder named by its content key.
"""

from __future__ import annotations

import contextlib
import functools
import json
import multiprocessing
import os
import pickle
import socket
import tempfile
import threading
from collections.abc import Mapping
from concurrent.futures import CancelledError
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipetrail.core.status import TaskStatus
from pipetrail.errors import PipelineLoadError, TaskCancelledError, WorkerLostError
from pipetrail.runtime.task import TaskPayload, TaskServices
from pipetrail.storage.metadata.base import TaskOutcome

if TYPE_CHECKING:
    from pipetrail.runtime.executors.pool import ProcessExecutor

__all__ = [
    "Reply",
    "WorkerStores",
    "close_sides",
    "not_started",
    "payload_name",
    "run_attempt",
    "stop_attempt",
    "warm",
]


# -- what crosses the wire -------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerStores:
    """What a Dask worker needs to open a run's stores; the worker's own environment supplies
    the credentials (``AWS_*``, ``AWS_ENDPOINT_URL``), so none travel with the tasks.

    Attributes:
        db_url: the metadata store's URL (it must reach the same database as the runner).
        artifacts_url: the artifact store (a shared object store for workers on other hosts).
        artifacts_options: fsspec storage options, as JSON (hashable, so stores are shared).
        system_metrics_s: seconds between a task's system metrics samples; 0 turns them off.
    """

    db_url: str
    artifacts_url: str
    artifacts_options: str = "{}"
    system_metrics_s: float = 5.0

    @classmethod
    def of(
        cls,
        db_url: str,
        artifacts_url: str,
        artifacts_options: Mapping[str, Any] | None = None,
        system_metrics_s: float = 5.0,
    ) -> WorkerStores:
        return cls(
            db_url,
            artifacts_url,
            json.dumps(dict(artifacts_options or {}), sort_keys=True),
            system_metrics_s,
        )


@dataclass(frozen=True)
class Reply:
    """How an attempt ended on a worker: its outcome, or why there is none.

    ``kind`` is ``outcome``, ``cancelled``, ``lost`` (the attempt's worker died; this one
    refused to run it again) or ``error`` (something outside user code failed). An exception
    travels pickled only when it unpickles again, and always as text too, so one of a class
    only the worker can import still reads on the runner.
    """

    kind: str
    outcome: TaskOutcome | None = None
    message: str = ""
    type_name: str = ""
    pickled: bytes | None = None
    worker: str = ""


# -- the worker side -------------------------------------------------------------------------


def _child_services(stores: WorkerStores, spool_root: Path, worker: str) -> TaskServices:
    """A child process's stores (built once per child); the runner migrated the schema."""
    from pipetrail.storage.artifacts.cas import ContentAddressedStore
    from pipetrail.storage.artifacts.serializers import default_registry
    from pipetrail.storage.metadata.sql.store import SqlMetadataStore

    return TaskServices(
        SqlMetadataStore(stores.db_url, migrate_schema=False),
        ContentAddressedStore(
            stores.artifacts_url, storage_options=json.loads(stores.artifacts_options)
        ),
        default_registry(),
        spool_root,
        worker=worker,
        system_metrics_s=stores.system_metrics_s,
    )


class _WorkerSide:
    """One Dask worker process's state for one store: services, children, code, running tasks."""

    def __init__(self, stores: WorkerStores, address: str, nthreads: int, local: Path) -> None:
        from pipetrail.runtime.executors.pool import ProcessExecutor

        self.address = address
        self.spool_root = local / "pipetrail-spool"
        self.spool_root.mkdir(parents=True, exist_ok=True)
        self.services = _child_services(stores, self.spool_root, address)
        # Snapshots are shared by the workers of a host: the folder is named by content.
        self.code_root = Path(tempfile.gettempdir()) / f"pipetrail-code-{os.getuid()}"
        _start_fork_server()
        self.children: ProcessExecutor = ProcessExecutor(
            functools.partial(_child_services, stores, self.spool_root, address),
            max_workers=max(1, nthreads),
        )
        self.lock = threading.Lock()
        self.running: set[int] = set()
        #: (code key, recorded pipeline file) → this host's copy of that file.
        self.code: dict[tuple[str, str], Path] = {}
        #: (run id, recorded pipeline file) → the same, without asking the store again.
        self.by_run: dict[tuple[int, str], Path] = {}
        #: Tasks cancelled before they started here: they must not start afterwards.
        self.stopped: set[int] = set()
        #: Tasks asked to stop while here but not yet with a child: grace seconds.
        self.stopping: dict[int, float] = {}

    def run(self, payload: TaskPayload) -> Reply:
        with self.lock:
            if payload.task_id in self.stopped:
                self.stopped.discard(payload.task_id)
                self.stopping.pop(payload.task_id, None)
                return Reply("cancelled", message=not_started(payload), worker=self.address)
            self.running.add(payload.task_id)
        try:
            refused = self._refusal(payload)
            if refused is not None:
                return refused
            local = replace(payload, pipeline_file=str(self._code_file(payload)))
            try:
                future = self.children.submit(local)
                with self.lock:
                    grace = self.stopping.pop(payload.task_id, None)
                if grace is not None:  # stopped between the check above and the hand-over
                    self.children.cancel_task(payload.task_id, grace)
                outcome = future.result()
            except CancelledError:  # stopped while waiting for a free child
                return Reply("cancelled", message=not_started(payload), worker=self.address)
            except (TaskCancelledError, WorkerLostError) as exc:
                # The child was stopped or died: what it spooled here goes into the store now,
                # since the runner cannot reach this host's spool.
                with contextlib.suppress(Exception):
                    _salvage(self.services, payload)
                kind = "cancelled" if isinstance(exc, TaskCancelledError) else "error"
                return _reply_of(exc, kind, self.address, payload)
            return Reply("outcome", outcome=outcome, worker=self.address)
        except PipelineLoadError as exc:
            return _reply_of(
                PipelineLoadError(
                    f"step {payload.step!r} cannot run on Dask worker {self.address}: {exc}"
                ),
                "error",
                self.address,
                payload,
            )
        except Exception as exc:
            return _reply_of(exc, "error", self.address, payload)
        finally:
            with self.lock:
                self.running.discard(payload.task_id)
                self.stopping.pop(payload.task_id, None)

    def _refusal(self, payload: TaskPayload) -> Reply | None:
        """Why this attempt must not run here, if it must not: it started before.

        Dask runs a task again when the worker running it dies; pipetrail runs an attempt once
        (the engine makes a new attempt when the step's retries allow it), so a task row that
        has left ``queued`` means an earlier try of this very attempt was lost.
        """
        task = self.services.store.get_task(payload.task_id)
        if task.status is TaskStatus.QUEUED:
            return None
        where = payload_name(payload)
        if task.status is TaskStatus.RUNNING:
            lost = task.worker or f"the worker on {task.host or 'an unknown host'}"
            return Reply(
                "lost",
                message=f"worker lost: {lost} died while running {where}",
                worker=lost,
            )
        return Reply(
            "error",
            message=f"{where} is already {task.status.value}; an attempt runs once, it is not "
            "run again",
            type_name="PipetrailError",
            worker=self.address,
        )

    def _code_file(self, payload: TaskPayload) -> Path:
        """This host's copy of the pipeline file, from the run's stored code snapshot."""
        recorded = payload.pipeline_file or ""
        known = self.by_run.get((payload.run_id, recorded))
        if known is not None:
            return known  # a run's code snapshot never changes
        file = self._snapshot_file(payload, recorded)
        if len(self.by_run) >= 1024:
            self.by_run.clear()
        self.by_run[(payload.run_id, recorded)] = file
        return file

    def _snapshot_file(self, payload: TaskPayload, recorded: str) -> Path:
        from pipetrail.provenance.code import read_archive
        from pipetrail.runtime.loader import unpack_snapshot

        run = self.services.store.get_run(payload.run_id)
        if run.code_key is None:
            if recorded and Path(recorded).is_file():
                return Path(recorded)  # no snapshot (an old run): the same path, if it is here
            raise PipelineLoadError(
                f"run {run.pathspec} has no stored code snapshot and {recorded!r} is not on "
                "this worker"
            )
        cached = self.code.get((run.code_key, recorded))
        if cached is not None:
            return cached
        folder = self.code_root / run.code_key
        if folder.is_dir():
            file = _existing(folder, recorded)
        else:
            files = read_archive(self.services.cas.get_bytes(run.code_key))
            file = unpack_snapshot(files, folder, recorded)
        self.code[(run.code_key, recorded)] = file
        return file

    def stop(self, task_id: int, grace_s: float) -> bool:
        """Stop the attempt if it runs here (True); else make sure it never starts here."""
        with self.lock:
            if task_id not in self.running:
                self.stopped.add(task_id)
                return False
            self.stopping[task_id] = grace_s
        if self.children.cancel_task(task_id, grace_s):
            with self.lock:
                self.stopping.pop(task_id, None)
        return True

    def close_quietly(self) -> None:
        with contextlib.suppress(Exception):
            self.children.shutdown(cancel=True)
        with contextlib.suppress(Exception):
            self.services.store.close()


def _start_fork_server() -> None:
    """Start this process's fork server with the step children's modules imported, now."""
    from multiprocessing import forkserver

    # The process executor's own preload list: its children start warm the same way.
    from pipetrail.runtime.executors.pool import _PRELOAD

    multiprocessing.get_context("forkserver").set_forkserver_preload(_PRELOAD)
    forkserver.ensure_running()


def _existing(folder: Path, recorded: str) -> Path:
    from pipetrail.runtime.loader import snapshot_entry

    names = {p.relative_to(folder).as_posix(): p for p in folder.rglob("*.py")}
    entry = snapshot_entry(names, recorded)
    if entry is None:
        raise PipelineLoadError(f"the code snapshot in {str(folder)!r} has no copy of {recorded!r}")
    return folder / entry


_sides: dict[WorkerStores, _WorkerSide] = {}
_sides_lock = threading.Lock()
#: Stores a worker keeps open at once (each with its children); idle older ones are closed.
_MAX_SIDES = 4


def _side(stores: WorkerStores, worker: Any = None) -> _WorkerSide:
    from distributed import get_worker

    with _sides_lock:
        side = _sides.get(stores)
        if side is None:
            worker = worker or get_worker()
            _allow_children()
            side = _WorkerSide(
                stores, worker.address, worker.state.nthreads, Path(worker.local_directory)
            )
            _sides[stores] = side
            idle = [k for k, v in _sides.items() if k != stores and not v.running]
            for key in idle[: max(0, len(_sides) - _MAX_SIDES)]:
                _sides.pop(key).close_quietly()
        return side


def _allow_children() -> None:
    """Let this worker process start the children that run steps.

    A worker started by a nanny is a daemonic process, and multiprocessing refuses to start
    children from one (they could outlive it). Step children watch this process and exit the
    moment it is gone (``pool._watch_runner``), so the guard does not apply to them.
    """
    config = multiprocessing.current_process()._config  # type: ignore[attr-defined]
    config.pop("daemon", None)


def warm(stores: WorkerStores, dask_worker: Any = None) -> None:
    """Run on every worker when an executor starts: open the stores and start the fork server
    in the background, so the first step on each worker does not wait for them."""

    def build() -> None:
        with contextlib.suppress(Exception):
            _side(stores, dask_worker)

    threading.Thread(target=build, name="pipetrail-dask-warm", daemon=True).start()


def close_sides() -> None:
    """Run on every worker of a local cluster before it closes: stop the step children now
    (a worker exiting with them still up waits seconds for its exit handlers)."""
    with _sides_lock:
        sides = list(_sides.values())
        _sides.clear()
    for side in sides:
        side.close_quietly()


def run_attempt(payload: TaskPayload, stores: WorkerStores) -> Reply:
    """The function each Dask task runs: one attempt, on this worker."""
    try:
        side = _side(stores)
    except Exception as exc:
        return _reply_of(exc, "error", _worker_address(), payload)
    return side.run(payload)


def stop_attempt(stores: WorkerStores, task_id: int, grace_s: float) -> bool:
    """Run on every worker by ``cancel_task``: stop the attempt if it runs here.

    Only the side of the attempt's stores: task ids are unique within one store only.
    """
    with _sides_lock:
        side = _sides.get(stores)
    return side is not None and side.stop(task_id, grace_s)


def _worker_address() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except Exception:
        return socket.gethostname()


def _salvage(services: TaskServices, payload: TaskPayload) -> None:
    from pipetrail.runtime.spool import salvage

    salvage(services.store, services.spool_root, payload.run_id, payload.task_id)


def _reply_of(exc: BaseException, kind: str, worker: str, payload: TaskPayload) -> Reply:
    pickled: bytes | None
    try:
        pickled = pickle.dumps(exc)
        pickle.loads(pickled)  # a class only this worker can import must not reach the runner
    except Exception:
        pickled = None
    message = str(exc) or f"{type(exc).__name__} while running {payload_name(payload)}"
    return Reply(
        kind, message=message, type_name=type(exc).__name__, pickled=pickled, worker=worker
    )


def payload_name(payload: TaskPayload) -> str:
    """``step 'train' (task 7, attempt 0)``: how messages name an attempt."""
    return f"step {payload.step!r} (task {payload.task_id}, attempt {payload.attempt})"


def not_started(payload: TaskPayload) -> str:
    return f"{payload_name(payload)} was cancelled before it started"
