"""The Dask executor: each task attempt is one Dask future, run on a cluster's workers.

:class:`DaskExecutor` turns an attempt into one future keyed by run, step, task index,
attempt and task id, and its small outcome back into the engine's future. Values never travel
through the scheduler: a payload carries artifact references and the outcome carries links,
both a few hundred bytes. What runs on the workers is in ``dask_worker``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
import threading
import time
import uuid
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from pipetrail.core.status import TaskStatus
from pipetrail.errors import ConfigError, PipetrailError, TaskCancelledError, WorkerLostError
from pipetrail.runtime.executors.dask_worker import (
    Reply,
    WorkerStores,
    close_sides,
    not_started,
    payload_name,
    run_attempt,
    stop_attempt,
    warm,
)
from pipetrail.runtime.task import TaskPayload
from pipetrail.storage.metadata.base import MetadataStore, TaskOutcome

__all__ = ["DaskCluster", "DaskExecutor", "WorkerStores", "check_address", "connect"]

#: Seconds to reach a scheduler at an address before giving up (a refused port fails at once).
CONNECT_TIMEOUT_S = 10.0
#: Seconds a cancelled executor waits for its attempts on the cluster to stop and report.
_SHUTDOWN_WAIT_S = 10.0
#: Seconds between the watchdog's looks for attempts whose worker has left the cluster.
_WATCH_S = 1.0

# distributed's API is only partly typed: its client, cluster and futures are Any here.
Client = Any
LocalCluster = Any
DaskFuture = Any


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
                self.client.run(close_sides, on_error="ignore")
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
    try:
        import distributed
    except ImportError:
        raise ConfigError(
            "the dask executor needs Dask distributed, which is not installed; "
            "install it with: pip install 'pipetrail[cluster]'"
        ) from None
    dist: Any = distributed
    if address is None:
        from pipetrail.runtime.executors.pool import main_not_reimported

        with main_not_reimported():  # a script without a __main__ guard is not re-run in them
            cluster = _local_cluster(dist, max_workers)
        try:
            client = dist.Client(cluster, set_as_default=False)
        except BaseException:
            cluster.close()
            raise
        return DaskCluster(client, cluster, str(cluster.scheduler_address))
    _check_reachable(address)
    try:
        client = dist.Client(address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
    except Exception as exc:
        # Refused, timed out, or something else answering there: Dask then fails reading its
        # reply in any way (a MemoryError for an HTTP server's answer), never one to show.
        reason = (
            _reason(exc)
            if isinstance(exc, (OSError, TimeoutError))
            else f"what answers there is not a Dask scheduler: {type(exc).__name__}"
        )
        raise ConfigError(
            f"cannot reach the Dask scheduler at {address!r} ({reason}); start one with "
            "`dask scheduler` or fix --dask-address / PIPETRAIL_DASK_ADDRESS"
        ) from None
    return DaskCluster(client, None, address)


def _local_cluster(dist: Any, max_workers: int | None) -> Any:
    """A LocalCluster of one-thread worker processes on loopback, quiet."""
    return dist.LocalCluster(
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
    defers_start = False
    hands_over = False

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
            cluster.client.run(warm, stores, on_error="ignore")

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
                run_attempt, payload, self._stores, key=key, pure=False, retries=0
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
            return TaskCancelledError(not_started(payload), step=payload.step)
        if status != "finished":
            exc = dask_future.exception()
            return _lost_or_failed(exc, payload)
        reply: Reply = dask_future.result()
        if reply.kind == "outcome" and reply.outcome is not None:
            return reply.outcome
        if reply.kind == "cancelled":
            return TaskCancelledError(reply.message, step=payload.step)
        if reply.kind == "lost":
            return WorkerLostError(reply.message, step=payload.step)
        from pipetrail.runtime.executors.pool import revive_error

        error = revive_error(reply.pickled, reply.type_name, reply.message)
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
                    stop_attempt,
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
