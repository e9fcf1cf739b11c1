"""The Dask executor: each task attempt is one Dask future, run on a cluster's workers.

The submitting side (:class:`DaskExecutor`) turns an attempt into one future keyed by run,
step, task index, attempt and task id, and its small outcome back into the engine's future.
Values never travel through the scheduler: a payload carries artifact references and the
outcome carries links, both a few hundred bytes.

The worker side (``_run_attempt``) keeps, per worker process and per store, the stores and a
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
import logging
import multiprocessing
import os
import pickle
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pipetrail.core.status import TaskStatus
from pipetrail.errors import (
    ConfigError,
    PipelineLoadError,
    PipetrailError,
    TaskCancelledError,
    WorkerLostError,
)
from pipetrail.runtime.task import TaskPayload, TaskServices
from pipetrail.storage.metadata.base import MetadataStore, TaskOutcome

if TYPE_CHECKING:
    from pipetrail.runtime.executors.pool import ProcessExecutor

# distributed's API is only partly typed: its client, cluster and futures are Any here.
Client = Any
LocalCluster = Any
DaskFuture = Any

__all__ = ["DaskCluster", "DaskExecutor", "WorkerStores", "check_address", "connect"]

#: Seconds to reach a scheduler at an address before giving up (a refused port fails at once).
CONNECT_TIMEOUT_S = 10.0
#: Seconds a cancelled executor waits for its attempts on the cluster to stop and report.
_SHUTDOWN_WAIT_S = 10.0
#: Seconds between the watchdog's looks for attempts whose worker has left the cluster.
_WATCH_S = 1.0

log = logging.getLogger(__name__)


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
class _Reply:
    """How an attempt ended on a worker: its outcome, or why there is none.

    ``kind`` is ``outcome``, ``cancelled``, ``lost`` (the attempt's worker died; this one
    refused to run it again) or ``error`` (something outside user code failed). Exceptions are
    sent as text, so a worker's exception classes never have to unpickle on the runner.
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

    def run(self, payload: TaskPayload) -> _Reply:
        with self.lock:
            if payload.task_id in self.stopped:
                self.stopped.discard(payload.task_id)
                self.stopping.pop(payload.task_id, None)
                return _Reply("cancelled", message=_not_started(payload), worker=self.address)
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
                return _Reply("cancelled", message=_not_started(payload), worker=self.address)
            except (TaskCancelledError, WorkerLostError) as exc:
                # The child was stopped or died: what it spooled here goes into the store now,
                # since the runner cannot reach this host's spool.
                with contextlib.suppress(Exception):
                    _salvage(self.services, payload)
                kind = "cancelled" if isinstance(exc, TaskCancelledError) else "error"
                return _reply_of(exc, kind, self.address, payload)
            return _Reply("outcome", outcome=outcome, worker=self.address)
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

    def _refusal(self, payload: TaskPayload) -> _Reply | None:
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
            return _Reply(
                "lost",
                message=f"worker lost: {lost} died while running {where}",
                worker=lost,
            )
        return _Reply(
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


def _warm(stores: WorkerStores, dask_worker: Any = None) -> None:
    """Run on every worker when an executor starts: open the stores and start the fork server
    in the background, so the first step on each worker does not wait for them."""

    def warm() -> None:
        with contextlib.suppress(Exception):
            _side(stores, dask_worker)

    threading.Thread(target=warm, name="pipetrail-dask-warm", daemon=True).start()


def _close_sides() -> None:
    """Run on every worker of a local cluster before it closes: stop the step children now
    (a worker exiting with them still up waits seconds for its exit handlers)."""
    with _sides_lock:
        sides = list(_sides.values())
        _sides.clear()
    for side in sides:
        side.close_quietly()


def _run_attempt(payload: TaskPayload, stores: WorkerStores) -> _Reply:
    """The function each Dask task runs: one attempt, on this worker."""
    try:
        side = _side(stores)
    except Exception as exc:
        return _reply_of(exc, "error", _worker_address(), payload)
    return side.run(payload)


def _stop_attempt(stores: WorkerStores, task_id: int, grace_s: float) -> bool:
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


def _reply_of(exc: BaseException, kind: str, worker: str, payload: TaskPayload) -> _Reply:
    pickled: bytes | None
    try:
        pickled = pickle.dumps(exc)
        pickle.loads(pickled)  # a class only this worker can import must not reach the runner
    except Exception:
        pickled = None
    message = str(exc) or f"{type(exc).__name__} while running {payload_name(payload)}"
    return _Reply(
        kind, message=message, type_name=type(exc).__name__, pickled=pickled, worker=worker
    )


def payload_name(payload: TaskPayload) -> str:
    """``step 'train' (task 7, attempt 0)``: how messages name an attempt."""
    return f"step {payload.step!r} (task {payload.task_id}, attempt {payload.attempt})"


def _not_started(payload: TaskPayload) -> str:
    return f"{payload_name(payload)} was cancelled before it started"


# -- the submitting side ---------------------------------------------------------------------


class DaskCluster:
    """A client of a Dask cluster, and the local cluster behind it when pipetrail started one."""

    def __init__(self, client: Client, local: LocalCluster | None, address: str) -> None:
        self.client = client
        self.local = local
        self.address = address
        self._closed = False

    @property
    def threads(self) -> int:
        """Task slots on the cluster now (its workers' threads), at least 1."""
        with contextlib.suppress(Exception):
            workers = self.client.scheduler_info(n_workers=-1)["workers"]
            return max(1, sum(int(w.get("nthreads", 1)) for w in workers.values()))
        return 1

    def close(self) -> None:
        """Close the client, and the cluster only when pipetrail started it."""
        if self._closed:
            return
        self._closed = True
        if self.local is not None:
            with contextlib.suppress(Exception):
                self.client.run(_close_sides, on_error="ignore")
        with contextlib.suppress(Exception):
            self.client.close()
        if self.local is not None:
            with contextlib.suppress(Exception):
                self.local.close()


def connect(address: str | None, max_workers: int | None = None) -> DaskCluster:
    """Connect to the scheduler at ``address``, or start a local cluster when it is None.

    The local cluster has ``max_workers`` worker processes (the CPU count by default) of one
    thread each, no dashboard and quiet logs; it is closed with the returned object.

    Raises:
        ConfigError: the address is not one, or no scheduler answers there.
    """
    import distributed

    dist: Any = distributed
    if address is None:
        cluster = dist.LocalCluster(
            n_workers=max_workers or os.cpu_count() or 2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            # The scheduler's HTTP server (metrics, health) starts even without a dashboard:
            # on a free loopback port, not on 8787, which another cluster may hold.
            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
            host="127.0.0.1",
            silence_logs=logging.ERROR,
        )
        try:
            client = dist.Client(cluster, set_as_default=False)
        except BaseException:
            cluster.close()
            raise
        return DaskCluster(client, cluster, str(cluster.scheduler_address))
    _check_reachable(address)
    try:
        client = dist.Client(address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise ConfigError(
            f"cannot reach the Dask scheduler at {address!r} ({_reason(exc)}); start one with "
            "`dask scheduler` or fix --dask-address / PIPETRAIL_DASK_ADDRESS"
        ) from None
    return DaskCluster(client, None, address)


def check_address(address: str) -> tuple[str, int] | None:
    """Check that ``address`` is a Dask scheduler address; its (host, port) for tcp and tls.

    Raises:
        ConfigError: it is not one (no scheme, an unknown scheme, no host or port).
    """
    scheme, _, rest = address.partition("://")
    if scheme not in ("tcp", "tls", "ws", "wss", "ucx", "inproc") or not rest:
        raise ConfigError(
            f"--dask-address {address!r} is not a Dask scheduler address; "
            "give one such as 'tcp://127.0.0.1:8786'"
        )
    if scheme not in ("tcp", "tls"):
        return None
    try:
        parts = urlsplit(f"//{rest}")
        host, port = parts.hostname, parts.port
    except ValueError:
        host, port = None, None
    if not host or port is None:
        raise ConfigError(
            f"--dask-address {address!r} needs a host and a port, such as 'tcp://127.0.0.1:8786'"
        )
    return host, port


def _check_reachable(address: str) -> None:
    """Fail at once on a tcp address nobody listens at (Dask itself retries for its timeout)."""
    where = check_address(address)
    if where is None:
        return
    try:
        with socket.create_connection(where, timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        raise ConfigError(
            f"cannot reach the Dask scheduler at {address!r} ({_reason(exc)}); start one with "
            "`dask scheduler` or fix --dask-address / PIPETRAIL_DASK_ADDRESS"
        ) from None


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return str(text).splitlines()[0]


@dataclass(eq=False)
class _Flight:
    payload: TaskPayload
    future: Future[TaskOutcome]
    dask: DaskFuture
    cancelling: bool = False
    done: threading.Event = field(default_factory=threading.Event)


class DaskExecutor:
    """Runs task attempts on a Dask cluster, one future per attempt.

    Args:
        stores: what workers open to record the attempts (the runner's stores).
        cluster: the connection from :func:`connect`; closed at ``shutdown`` when ``owned``.
        owned: whether this executor closes ``cluster`` at shutdown.
        store: the runner's metadata store; with it, an attempt whose worker has left the
            cluster fails as lost at once, even when no worker is left for Dask to re-run it on
            (Dask would wait for one). Without it, the re-run reports the loss.
    """

    name = "dask"

    def __init__(
        self,
        stores: WorkerStores,
        cluster: DaskCluster,
        *,
        owned: bool = True,
        store: MetadataStore | None = None,
    ) -> None:
        self._stores = stores
        self._cluster = cluster
        self._owned = owned
        self._store = store
        self._lock = threading.Lock()
        self._flights: dict[int, _Flight] = {}
        self._closing = False
        self._token = uuid.uuid4().hex[:8]
        self._stop = threading.Event()
        self._watchdog: threading.Thread | None = None
        self.max_workers = cluster.threads
        with contextlib.suppress(Exception):
            cluster.client.run(_warm, stores, on_error="ignore")

    def submit(self, payload: TaskPayload) -> Future[TaskOutcome]:
        """Send one attempt to the cluster; the future resolves to its outcome.

        It fails with :class:`WorkerLostError` when the attempt's worker died, with
        :class:`TaskCancelledError` when ``cancel_task`` stopped it, and with the worker's
        error when something outside user code failed (the pipeline cannot be imported there).

        Raises:
            RuntimeError: the executor was shut down.
        """
        future: Future[TaskOutcome] = Future()
        future.set_running_or_notify_cancel()
        key = (
            f"pipetrail-{payload.pipeline}-run{payload.run_id}-{payload.step}"
            f"-{payload.task_index}-a{payload.attempt}-t{payload.task_id}-{self._token}"
        )
        with self._lock:
            if self._closing:
                raise RuntimeError(
                    f"cannot submit step {payload.step!r}: the Dask executor was shut down"
                )
            dask_future = self._cluster.client.submit(
                _run_attempt, payload, self._stores, key=key, pure=False, retries=0
            )
            flight = _Flight(payload, future, dask_future)
            self._flights[payload.task_id] = flight
            if self._watchdog is None and self._store is not None:
                self._watchdog = threading.Thread(
                    target=self._watch, name="pipetrail-dask-watchdog", daemon=True
                )
                self._watchdog.start()
        dask_future.add_done_callback(functools.partial(self._settle, flight))
        return future

    def _resolve(self, flight: _Flight, value: TaskOutcome | BaseException) -> None:
        """Settle the engine's future once (the callback and the watchdog may both try)."""
        with self._lock:
            if self._flights.get(flight.payload.task_id) is flight:
                del self._flights[flight.payload.task_id]
            if not flight.future.done():
                if isinstance(value, TaskOutcome):
                    flight.future.set_result(value)
                else:
                    flight.future.set_exception(value)
        flight.done.set()

    def _watch(self) -> None:
        """Every second: fail the attempts that were running on a worker no longer there."""
        while not self._stop.wait(_WATCH_S):
            with self._lock:
                flights = {t: f for t, f in self._flights.items() if not f.cancelling}
            if not flights or self._store is None:
                continue
            try:
                alive = set(self._cluster.client.scheduler_info(n_workers=-1)["workers"])
                rows = self._store.get_tasks(list(flights))
            except Exception:  # the scheduler or the store is away: the next round tries
                continue
            for row in rows:
                if row.status is not TaskStatus.RUNNING or not row.worker or row.worker in alive:
                    continue
                flight = flights[row.id]
                self._resolve(
                    flight,
                    WorkerLostError(
                        f"worker lost: {row.worker} died while running "
                        f"{payload_name(flight.payload)}",
                        step=flight.payload.step,
                    ),
                )
                # Settled first, so the cancel's callback finds nothing left to say. Should Dask
                # run it again meanwhile, that run is refused (the row is not queued).
                with contextlib.suppress(Exception):
                    flight.dask.cancel()

    def _settle(self, flight: _Flight, dask_future: DaskFuture) -> None:
        """Hand the attempt's ending to the engine and release its Dask future (callback thread)."""
        try:
            value = self._ending(flight, dask_future)
        except BaseException as exc:  # a bug here must not leave the engine waiting
            value = PipetrailError(f"{payload_name(flight.payload)}: {type(exc).__name__}: {exc}")
        finally:
            # The outcome is with the engine now: a worker lost later must not run it again.
            with contextlib.suppress(Exception):
                dask_future.release()
        self._resolve(flight, value)

    def _ending(self, flight: _Flight, dask_future: DaskFuture) -> TaskOutcome | BaseException:
        payload = flight.payload
        status = dask_future.status
        if status == "cancelled" or (status != "finished" and flight.cancelling):
            return TaskCancelledError(_not_started(payload), step=payload.step)
        if status != "finished":
            exc = dask_future.exception()
            return _lost_or_failed(exc, payload)
        reply: _Reply = dask_future.result()
        if reply.kind == "outcome" and reply.outcome is not None:
            return reply.outcome
        if reply.kind == "cancelled":
            return TaskCancelledError(reply.message, step=payload.step)
        if reply.kind == "lost":
            return WorkerLostError(reply.message, step=payload.step)
        error: Exception | None = None
        if reply.pickled is not None:
            with contextlib.suppress(Exception):
                loaded = pickle.loads(reply.pickled)
                if isinstance(loaded, Exception):
                    error = loaded
        if error is None:
            error = PipetrailError(f"{reply.type_name}: {reply.message}")
        if isinstance(error, WorkerLostError):
            # The child process running the step died on the worker.
            return WorkerLostError(
                f"{error} on Dask worker {reply.worker}",
                pid=error.pid,
                exitcode=error.exitcode,
                step=payload.step,
            )
        error.add_note(f"raised on Dask worker {reply.worker}")
        return error

    def cancel_task(self, task_id: int, grace_s: float = 5.0) -> bool:
        """Stop task ``task_id`` wherever it is on the cluster.

        A running attempt's child process gets SIGTERM, then SIGKILL after ``grace_s``; the
        future fails with :class:`TaskCancelledError` once it has stopped. An attempt still
        waiting in the scheduler is cancelled there.

        Returns:
            True when this executor holds the task (queued or running), False otherwise.
        """
        with self._lock:
            flight = self._flights.get(task_id)
            if flight is None:
                return False
            first = not flight.cancelling
            flight.cancelling = True
        if first:
            self._stop_on_cluster([flight], grace_s)
        return True

    def _stop_on_cluster(self, flights: list[_Flight], grace_s: float) -> None:
        client = self._cluster.client
        for flight in flights:
            try:
                found = client.run(
                    _stop_attempt,
                    self._stores,
                    flight.payload.task_id,
                    grace_s,
                    on_error="ignore",
                )
            except Exception:
                found = {}
            if not any(found.values()):
                # Not running on any worker (still in the scheduler's queue): drop it there.
                with contextlib.suppress(Exception):
                    flight.dask.cancel()

    def running(self) -> dict[int, str]:
        """Task id → Dask key, for every attempt sent and not yet ended."""
        with self._lock:
            return {t: str(f.dask.key) for t, f in self._flights.items()}

    def shutdown(self, *, cancel: bool = False) -> None:
        """Stop using the cluster; safe to call more than once.

        Args:
            cancel: False waits for the attempts on the cluster to end. True stops them
                (their futures fail with :class:`TaskCancelledError`) and waits for that.
        """
        with self._lock:
            if self._closing and not self._flights:
                self._close()
                return
            self._closing = True
            flights = list(self._flights.values())
            if cancel:
                for flight in flights:
                    flight.cancelling = True
        if cancel and flights:
            self._stop_on_cluster(flights, 1.0)
        deadline = time.monotonic() + _SHUTDOWN_WAIT_S if cancel else None
        for flight in flights:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not flight.done.wait(timeout):
                with contextlib.suppress(Exception):
                    flight.dask.cancel()
                self._resolve(
                    flight,
                    TaskCancelledError(
                        f"{payload_name(flight.payload)} did not stop on the cluster in "
                        f"{_SHUTDOWN_WAIT_S:g} s; its result will be ignored",
                        step=flight.payload.step,
                    ),
                )
        self._close()

    def _close(self) -> None:
        self._stop.set()
        if self._owned:
            self._cluster.close()


def _lost_or_failed(exc: BaseException | None, payload: TaskPayload) -> BaseException:
    from distributed.scheduler import KilledWorker

    if isinstance(exc, KilledWorker):
        last = getattr(exc.last_worker, "address", exc.last_worker)
        return WorkerLostError(
            f"worker lost: {last} died while running {payload_name(payload)} (and every worker "
            "Dask tried after it)",
            step=payload.step,
        )
    if exc is None:
        return PipetrailError(f"{payload_name(payload)} ended on the cluster without a result")
    if isinstance(exc, Exception):
        return exc
    return PipetrailError(f"{type(exc).__name__}: {exc}")
