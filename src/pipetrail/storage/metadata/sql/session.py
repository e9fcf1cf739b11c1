"""Connections and transactions for the SQL store, with patience for a store that is briefly away."""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import ParamSpec, TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError

from pipetrail.errors import StoreError
from pipetrail.storage.metadata.sql import migrate
from pipetrail.storage.metadata.sql.engine import WRITE_OPTION, make_engine, short

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


class SqlSession:
    """Owns the engine; hands out read and write connections that speak pipetrail errors.

    Args:
        url: an SQLAlchemy URL.
        migrate_schema: bring the schema to the head revision first (workers skip it).
        write_patience_s: how long a write keeps retrying while the store is unreachable.
        read_patience_s: the same for reads.
    """

    def __init__(
        self,
        url: str,
        *,
        migrate_schema: bool = True,
        write_patience_s: float = 600.0,
        read_patience_s: float = 15.0,
    ) -> None:
        self.url = url
        self.engine: Engine = make_engine(url)
        self.patience = {"write": write_patience_s, "read": read_patience_s}
        #: How many times an operation was retried because the store was unreachable.
        self.outages = 0
        self._local = threading.local()
        if migrate_schema:
            migrate.upgrade(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    def limit_patience(self, seconds: float | None) -> None:
        """Cap how long calls from this thread retry while the store is away (None: no cap).

        A background thread that beats a heartbeat must give up quickly, not outlive its run.
        """
        self._local.patience = seconds

    @contextlib.contextmanager
    def _write(self) -> Iterator[Connection]:
        try:
            with self.engine.connect().execution_options(**{WRITE_OPTION: True}) as conn:
                with conn.begin():
                    yield conn
        except SQLAlchemyError as exc:
            raise StoreError(
                f"metadata store {self._where()} failed to write: {short(exc)}"
            ) from exc

    @contextlib.contextmanager
    def _read(self) -> Iterator[Connection]:
        try:
            with self.engine.connect() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise StoreError(
                f"metadata store {self._where()} failed to read: {short(exc)}"
            ) from exc

    def _where(self) -> str:
        return repr(self.engine.url.render_as_string(hide_password=True))
