"""Connections and transactions for the SQL store, with patience for a store that is briefly away."""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import ParamSpec, TypeVar

from sqlalchemy import Connection, Engine, bindparam, select
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError

from pipetrail.errors import LeaseLostError, StoreError
from pipetrail.storage.metadata.sql import migrate
from pipetrail.storage.metadata.sql.engine import (
    WRITE_OPTION,
    Prepared,
    begin_sqlite,
    for_update,
    make_engine,
    short,
)
from pipetrail.storage.metadata.sql.tables import pipeline_run

__all__ = ["SqlSession", "now", "patient"]

P = ParamSpec("P")
T = TypeVar("T")


def now() -> datetime:
    return datetime.now(UTC)


def _transient(exc: BaseException | None) -> bool:
    """Whether a failure may go away by itself: a lost connection, a restarting server, a lock."""
    if isinstance(exc, (OperationalError, InterfaceError)):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


def patient(kind: str) -> Callable[[Callable[P, T]], Callable[P, T]]:
    """Retry a store method while the store is unreachable, up to the store's patience.

    ``kind`` is ``"write"`` or ``"read"``: runs must not die because PostgreSQL restarted, so
    writes wait long; a person reading runs should get an answer (or an error) soon.
    """

    def decorate(method: Callable[P, T]) -> Callable[P, T]:
        @functools.wraps(method)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            session: SqlSession = args[0]  # type: ignore[assignment]
            limit = getattr(session._local, "patience", None)
            deadline = time.monotonic() + (session.patience[kind] if limit is None else limit)
            delay = 0.05
            while True:
                try:
                    return method(*args, **kwargs)
                except StoreError as exc:
                    if not _transient(exc.__cause__) or time.monotonic() + delay > deadline:
                        raise
                    session.outages += 1
                    time.sleep(delay)
                    delay = min(delay * 2, 2.0)

        return wrapper

    return decorate


_LEASE_OF = select(pipeline_run.c.lease).where(pipeline_run.c.id == bindparam("run_id"))
_LEASE = Prepared(_LEASE_OF)
_LEASE_LOCKED = Prepared(_LEASE_OF.with_for_update(read=True, key_share=True))


class SqlSession:
    """Owns the engine; hands out read and write connections that speak pipetrail errors.

    Args:
        url: an SQLAlchemy URL.
        migrate_schema: bring the schema to the head revision first (workers skip it).
        write_patience_s: how long a write keeps retrying while the store is unreachable.
        read_patience_s: the same for reads.
        pool_size: most connections this process holds on PostgreSQL (one for a runner).
    """

    def __init__(
        self,
        url: str,
        *,
        migrate_schema: bool = True,
        write_patience_s: float = 600.0,
        read_patience_s: float = 15.0,
        pool_size: int = 1,
    ) -> None:
        self.url = url
        self.engine: Engine = make_engine(url, pool_size=pool_size)
        self.patience = {"write": write_patience_s, "read": read_patience_s}
        #: How many times an operation was retried because the store was unreachable.
        self.outages = 0
        self._local = threading.local()
        #: Run id → the lease this process holds on it; writes into a held run are fenced.
        self._held: dict[int, int] = {}
        if migrate_schema:
            migrate.upgrade(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    def limit_patience(self, seconds: float | None) -> None:
        """Cap how long calls from this thread retry while the store is away (None: no cap).

        A background thread that beats a heartbeat must give up quickly, not outlive its run.
        """
        self._local.patience = seconds

    def hold(self, run_id: int, lease: int) -> None:
        """Fence this process's writes into run ``run_id`` with ``lease``.

        Once the run's lease moves on (it was reaped as lost and may be retried elsewhere),
        every write into it from here raises :class:`LeaseLostError` and writes nothing.
        """
        self._held[run_id] = lease

    def release(self, run_id: int) -> None:
        self._held.pop(run_id, None)

    def _check_lease(self, conn: Connection, run_id: int, current: int | None = None) -> None:
        """Inside a write: raise LeaseLostError when this process's lease on the run is stale."""
        held = self._held.get(run_id)
        if held is None:
            return
        if current is None or for_update(conn):
            # On PostgreSQL with a key-share lock until this write commits: taking the run
            # (mark_lost, FOR UPDATE) waits for it, and a write that starts later sees the new
            # lease. Row updates such as the heartbeat do not conflict with it.
            query = _LEASE_LOCKED if for_update(conn) else _LEASE
            current = query.scalar(conn, {"run_id": run_id})
        if current != held:
            raise LeaseLostError(
                f"run {run_id} was taken from this process (reaped as lost, lease {held} is now "
                f"{current}); it writes nothing more into it",
                run_id=run_id,
            )

    @contextlib.contextmanager
    def _write(self) -> Iterator[Connection]:
        try:
            with self.engine.connect().execution_options(**{WRITE_OPTION: True}) as conn:
                with conn.begin():
                    begin_sqlite(conn, write=True)
                    yield conn
        except SQLAlchemyError as exc:
            raise StoreError(
                f"metadata store {self._where()} failed to write: {short(exc)}"
            ) from exc

    @contextlib.contextmanager
    def _read(self) -> Iterator[Connection]:
        try:
            with self.engine.connect() as conn:
                begin_sqlite(conn, write=False)
                yield conn
        except SQLAlchemyError as exc:
            raise StoreError(
                f"metadata store {self._where()} failed to read: {short(exc)}"
            ) from exc

    def _where(self) -> str:
        return repr(self.engine.url.render_as_string(hide_password=True))
