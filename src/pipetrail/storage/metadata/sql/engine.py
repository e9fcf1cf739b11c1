"""Engine and connection setup from a URL; SQLite pragmas; the only dialect-aware module."""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Boolean,
    Connection,
    Engine,
    Table,
    bindparam,
    create_engine,
    event,
    literal,
    text,
)
from sqlalchemy.engine import ExceptionContext, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement

from pipetrail.core.query_regex import regex_search
from pipetrail.errors import ConfigError, UsageError
from pipetrail.storage.metadata.sql.types import JsonDoc

__all__ = [
    "SEARCH_TIMEOUT_MS",
    "SEARCH_TIMEOUT_OPTION",
    "WRITE_OPTION",
    "Prepared",
    "begin_sqlite",
    "for_update",
    "insert_ignore",
    "insert_many_fast",
    "insert_once",
    "like_match",
    "listen_for_begin",
    "make_engine",
    "migration_lock",
    "prepared_upsert",
    "regex_match",
    "short",
    "sqlite_path",
    "upsert",
]

#: Execution option that marks a connection as about to write.
WRITE_OPTION = "pipetrail_write"
#: How long a PostgreSQL statement with a regular expression (a search) may run before it is
#: stopped; the execution option :data:`SEARCH_TIMEOUT_OPTION` sets another limit (ms).
SEARCH_TIMEOUT_MS = 10_000
SEARCH_TIMEOUT_OPTION = "pipetrail_search_timeout_ms"
#: Set on a compiled statement that holds a regular expression.
_SEARCH_FLAG = "pipetrail_search"


def make_engine(url: str, *, pool_size: int = 1) -> Engine:
    """An engine for ``url``: SQLite gets WAL, NORMAL sync, foreign keys and a busy timeout.

    On PostgreSQL a process holds at most ``pool_size`` connections: a runner or worker needs
    one (its threads take turns; each holds it for one short transaction), so 50 concurrent
    runs stay within PostgreSQL's default ``max_connections`` of 100. A server asks for more.

    Raises:
        ConfigError: naming the URL when it cannot be parsed or its driver is not installed.
    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(f"cannot read database URL {url!r}: {exc}") from None
    backend = parsed.get_backend_name()
    kwargs: dict[str, Any] = {}
    if backend == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            try:
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(
                    f"cannot create the folder of the SQLite database {database!r}: {exc.strerror}; "
                    "set PIPETRAIL_HOME (or PIPETRAIL_DB) to a place you can write"
                ) from None
        kwargs["connect_args"] = {"timeout": 60, "check_same_thread": False}
        if database in ("", ":memory:"):
            from sqlalchemy.pool import StaticPool

            # One shared connection, or every checkout would see a new empty database.
            kwargs["poolclass"] = StaticPool
    elif backend == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        kwargs.update(pool_pre_ping=True, pool_size=pool_size, max_overflow=0)
    try:
        engine = create_engine(parsed, **kwargs)
    except (NoSuchModuleError, ModuleNotFoundError, ImportError) as exc:
        hint = " (install pipetrail[postgres])" if backend == "postgresql" else ""
        raise ConfigError(f"no driver for database URL {url!r}{hint}: {exc}") from None
    if backend == "sqlite":
        # BEGIN is issued by SqlSession's connections (begin_sqlite), not by an engine-wide
        # "begin" listener: any engine listener puts every statement through event dispatch.
        event.listen(engine, "connect", _sqlite_pragmas)
    elif backend == "postgresql":
        event.listen(engine, "before_cursor_execute", _pg_search_timeout)
        event.listen(engine, "handle_error", _pg_search_stopped)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy manage transactions itself (pysqlite's own BEGIN handling is unreliable).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    # Switching a brand-new file to WAL can report "locked" at once, ignoring the busy timeout,
    # when several processes open it at the same instant; it succeeds a moment later.
    for attempt in range(100):
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == 99:
                raise
            time.sleep(0.05)
    # NORMAL in WAL mode survives an application crash; only power loss can drop the last commit.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=60000")
    cursor.close()
    # SQLite parses `x REGEXP y` but has no implementation: regex_match() relies on this one.
    dbapi_connection.create_function("regexp", 2, _sqlite_regexp, deterministic=True)


def begin_sqlite(conn: Connection, *, write: bool) -> None:
    """Start SQLite's transaction on ``conn`` (the driver leaves it in autocommit mode).

    Writers take the lock up front (IMMEDIATE), so concurrent writers queue on busy_timeout
    instead of failing with "database is locked" when a read transaction upgrades. Readers stay
    DEFERRED (one snapshot for all their statements) and never wait for writers in WAL mode.
    Does nothing on other databases.
    """
    if conn.dialect.name == "sqlite":
        # On the driver's connection: SQLAlchemy's own execution path (events, a result)
        # costs more than the BEGIN; its errors are translated as SQLAlchemy's would be.
        sql = "BEGIN IMMEDIATE" if write else "BEGIN"
        try:
            conn.connection.dbapi_connection.execute(sql)  # type: ignore[union-attr]
        except sqlite3.Error as exc:
            raise DBAPIError.instance(sql, (), exc, sqlite3.Error) from exc


def listen_for_begin(conn: Connection) -> None:
    """Make every transaction SQLAlchemy begins on ``conn`` (Alembic's) a real SQLite one."""
    if conn.dialect.name == "sqlite":
        event.listen(conn, "begin", _sqlite_begin)


def _sqlite_begin(conn: Connection) -> None:
    begin_sqlite(conn, write=bool(conn.get_execution_options().get(WRITE_OPTION)))


def _sqlite_regexp(pattern: str | None, value: str | None) -> bool | None:
    """SQLite's ``value REGEXP pattern``: an RE2 search (linear time, so a pattern cannot stall
    the store the way a backtracking one can); NULL in, NULL out."""
    if pattern is None or value is None:
        return None
    return regex_search(pattern, value)


def regex_match(column: ColumnElement[Any], pattern: str) -> ColumnElement[bool]:
    """``column`` matches the regular expression ``pattern`` somewhere (a search, not anchored).

    ``REGEXP`` (RE2, registered on every SQLite connection) on SQLite, ``~`` (POSIX)
    on PostgreSQL, where the statement runs under a timeout of :data:`SEARCH_TIMEOUT_MS`; the
    pattern is a bound parameter.
    """
    return _RegexMatch(column, literal(pattern))


def like_match(column: ColumnElement[Any], pattern: str) -> ColumnElement[bool]:
    """``column LIKE pattern``, case-sensitive on every store, ``\\`` escaping ``%`` and ``_``.

    PostgreSQL's LIKE already is; SQLite's ignores ASCII case, so there the pattern becomes
    the equivalent (case-sensitive) GLOB. Both patterns are bound parameters.
    """
    return _CaseSensitiveLike(column, literal(pattern), literal(_like_to_glob(pattern)))


def _like_to_glob(pattern: str) -> str:
    wildcards = {"%": "*", "_": "?"}
    out: list[str] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            i += 1
            c = pattern[i]
        elif c in wildcards:
            out.append(wildcards[c])
            i += 1
            continue
        # GLOB has no escape character: a one-character class is literal.
        out.append(f"[{c}]" if c in "*?[" else c)
        i += 1
    return "".join(out)


class _CaseSensitiveLike(FunctionElement[bool]):
    """(column, LIKE pattern, GLOB pattern); compiled per dialect below."""

    type = Boolean()
    inherit_cache = True
    name = "case_sensitive_like"


@compiles(_CaseSensitiveLike)
def _like_default(element: _CaseSensitiveLike, compiler: SQLCompiler, **kw: Any) -> str:
    column, like, _ = (compiler.process(c, **kw) for c in element.clauses)
    return f"({column} LIKE {like} ESCAPE '\\')"


@compiles(_CaseSensitiveLike, "sqlite")
def _like_sqlite(element: _CaseSensitiveLike, compiler: SQLCompiler, **kw: Any) -> str:
    column, _, glob = (compiler.process(c, **kw) for c in element.clauses)
    return f"({column} GLOB {glob})"


class _RegexMatch(FunctionElement[bool]):
    """(column, pattern); compiled per dialect below."""

    type = Boolean()
    inherit_cache = True
    name = "regex_match"


@compiles(_RegexMatch)
def _regex_default(element: _RegexMatch, compiler: SQLCompiler, **kw: Any) -> str:
    column, pattern = (compiler.process(c, **kw) for c in element.clauses)
    return f"({column} REGEXP {pattern})"


@compiles(_RegexMatch, "postgresql")
def _regex_postgresql(element: _RegexMatch, compiler: SQLCompiler, **kw: Any) -> str:
    # The compiled statement is cached with its flag: every execution of it gets the timeout.
    setattr(compiler, _SEARCH_FLAG, True)
    column, pattern = (compiler.process(c, **kw) for c in element.clauses)
    return f"({column} ~ {pattern})"


def _pg_search_timeout(
    conn: Connection, cursor: Any, statement: str, params: Any, context: Any, many: bool
) -> None:
    """Before a search statement: limit it (and the rest of its transaction) in time."""
    if context is not None and getattr(context.compiled, _SEARCH_FLAG, False):
        limit = int(conn.get_execution_options().get(SEARCH_TIMEOUT_OPTION, SEARCH_TIMEOUT_MS))
        cursor.execute(f"SET LOCAL statement_timeout = {limit}")


def _pg_search_stopped(context: ExceptionContext) -> None:
    """A search stopped by its timeout is bad input (a too costly filter), not a store failure.

    Raises:
        UsageError: in place of PostgreSQL's query_canceled, for a search statement.
    """
    execution = context.execution_context
    if execution is None or not getattr(execution.compiled, _SEARCH_FLAG, False):
        return
    if getattr(context.original_exception, "sqlstate", None) != "57014":  # query_canceled
        return
    limit = int(
        context.connection.get_execution_options().get(SEARCH_TIMEOUT_OPTION, SEARCH_TIMEOUT_MS)
        if context.connection is not None
        else SEARCH_TIMEOUT_MS
    )
    raise UsageError(
        f"the search took longer than {limit / 1000:g} s and was stopped: its regular "
        "expressions are too costly over these runs; anchor them (^, $) or narrow the filter"
    ) from context.original_exception


def upsert(
    conn: Connection,
    table: Table,
    rows: Sequence[dict[str, Any]],
    keys: Sequence[str],
    update: Sequence[str] = (),
    where_newer: str | None = None,
    merge: Callable[[Any], dict[str, Any]] | None = None,
) -> None:
    """Insert ``rows``; on a clash of ``keys`` update ``update`` columns (or do nothing).

    Args:
        where_newer: a column; when given, a clashing row is only updated if the new value
            of that column is not older than the stored one.
        merge: given the statement's ``excluded`` (the proposed row), returns column →
            expression for columns that combine old and new (a running minimum, say). A
            module-level function, so that the statement is built once.
    """
    if not rows:
        return
    stmt = _upsert_statement(
        conn.dialect.name, table, tuple(keys), tuple(update), where_newer, merge
    )
    conn.execute(stmt, list(rows))


@functools.lru_cache(maxsize=256)
def _upsert_statement(
    dialect: str,
    table: Table,
    keys: tuple[str, ...],
    update: tuple[str, ...],
    where_newer: str | None,
    merge: Callable[[Any], dict[str, Any]] | None,
) -> Any:
    """An upsert built once per shape (building and keying one costs more than running it on
    SQLite); a ``merge`` made anew per call gets no benefit: give a module-level function."""
    return _build_upsert(dialect, table, keys, update, where_newer, merge)


def _build_upsert(
    dialect: str,
    table: Table,
    keys: Sequence[str],
    update: Sequence[str],
    where_newer: str | None,
    merge: Callable[[Any], dict[str, Any]] | None,
    values: Mapping[str, Any] | None = None,
) -> Any:
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        stmt: Any = pg_insert(table)
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        stmt = sqlite_insert(table)
    if values is not None:
        stmt = stmt.values(dict(values))
    if update or merge:
        condition = None
        if where_newer is not None:
            condition = stmt.excluded[where_newer] >= table.c[where_newer]
        changes: dict[str, Any] = {c: stmt.excluded[c] for c in update}
        if merge is not None:
            changes.update(merge(stmt.excluded))
        return stmt.on_conflict_do_update(index_elements=list(keys), set_=changes, where=condition)
    return stmt.on_conflict_do_nothing(index_elements=list(keys))


def prepared_upsert(
    table: Table,
    columns: Sequence[str],
    keys: Sequence[str],
    merge: Callable[[Any], dict[str, Any]] | None = None,
) -> Callable[[str], Any]:
    """For :class:`Prepared`: :func:`upsert` of ``columns`` (bound by their names), as a function
    of the dialect's name."""

    def build(dialect: str) -> Any:
        values: dict[str, Any] = {c: bindparam(c) for c in columns}
        return _build_upsert(dialect, table, keys, (), None, merge, values)

    return build


def insert_ignore(table: Table, columns: Sequence[str]) -> Callable[[str], Any]:
    """For :class:`Prepared`: ``INSERT`` of ``columns`` (bound by their names) that does nothing
    when the row's key exists."""

    def build(dialect: str) -> Any:
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            stmt: Any = pg_insert(table)
        else:
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            stmt = sqlite_insert(table)
        return stmt.values({c: bindparam(c) for c in columns}).on_conflict_do_nothing()

    return build


def insert_once(conn: Connection, table: Table, row: dict[str, Any], keys: Sequence[str]) -> bool:
    """Insert ``row`` unless one with the same ``keys`` exists; whether this call inserted it.

    Two writers racing for the same keys never both win and the loser's transaction stays
    usable: the clash is resolved by the database (``ON CONFLICT DO NOTHING``), not raised.
    """
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        stmt: Any = pg_insert(table)
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        stmt = sqlite_insert(table)
    # RETURNING, not rowcount: with an implicit RETURNING of the key, psycopg reports -1.
    stmt = stmt.values(**row).on_conflict_do_nothing(index_elements=list(keys))
    return conn.execute(stmt.returning(table.c[keys[0]])).first() is not None


def insert_many_fast(
    conn: Connection, table: Table, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]
) -> None:
    """Insert plain tuples through the driver's ``executemany``, for hot paths.

    SQLAlchemy processes every bound value of every row in Python; for thousands of metric
    points a batch that costs more than the insert itself. Values here must already be what the
    driver takes (numbers, text, None).
    """
    if not rows:
        return
    quote = conn.dialect.identifier_preparer.quote
    marker = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    sql = (
        f"INSERT INTO {quote(table.name)} ({', '.join(quote(c) for c in columns)}) "
        f"VALUES ({', '.join([marker] * len(columns))})"
    )
    conn.exec_driver_sql(sql, list(rows))


class Prepared:
    """A Core statement compiled once per dialect and run on the driver's own cursor.

    For the few statements every task runs (its end, its events, its links): SQLAlchemy's
    per-execution work (event dispatch, cache keys, parameter and result set-up) costs several
    times what SQLite takes to run them. Values go through the same bind processors as Core's,
    so they are stored exactly as Core would store them; driver errors become SQLAlchemy's, so
    callers handle them as any other. Every column the statement sets must be a
    :func:`sqlalchemy.bindparam` given in each row: no Python-side column default is applied.
    """

    def __init__(self, statement: Any | Callable[[str], Any]) -> None:
        # A statement, or a function of the dialect's name making one (an upsert).
        self.statement = statement
        self._compiled: dict[str, tuple[str, list[str] | None, dict[str, Any]]] = {}
        self._results: dict[str, list[Callable[[Any], Any] | None]] = {}

    def _for(self, conn: Connection) -> tuple[str, list[str] | None, dict[str, Any]]:
        dialect = conn.dialect
        known = self._compiled.get(dialect.name)
        if known is None:
            statement = self.statement
            if callable(statement) and not hasattr(statement, "compile"):
                statement = statement(dialect.name)
            compiled = statement.compile(dialect=dialect)
            names = list(compiled.positiontup) if compiled.positional else None
            processors = {}
            for name, bind in compiled.binds.items():
                processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
                if processor is not None:
                    processors[name] = processor
            known = self._compiled[dialect.name] = (str(compiled), names, processors)
            # What a query's columns come back as through Core (a timestamp, not SQLite's text).
            selected = getattr(statement, "selected_columns", None)
            if selected is not None and not getattr(statement, "is_dml", False):
                self._results[dialect.name] = [
                    c.type.dialect_impl(dialect).result_processor(dialect, None) for c in selected
                ]
        return known

    def _rows(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> tuple[str, list[Any]]:
        sql, names, processors = self._for(conn)
        if names is None:  # a driver with named parameters (psycopg)
            if not processors:
                return sql, list(rows)
            return sql, [
                {k: processors[k](v) if k in processors else v for k, v in row.items()}
                for row in rows
            ]
        plan = [(n, processors.get(n)) for n in names]
        if not processors:
            return sql, [tuple([row[n] for n in names]) for row in rows]
        return sql, [tuple([row[n] if p is None else p(row[n]) for n, p in plan]) for row in rows]

    def run(self, conn: Connection, row: Mapping[str, Any]) -> int:
        """Execute with one row of parameters; the rows it changed."""
        sql, params = self._rows(conn, [row])
        cursor = conn.connection.cursor()
        try:
            cursor.execute(sql, params[0])
            return int(cursor.rowcount)
        except conn.dialect.loaded_dbapi.Error as exc:
            raise DBAPIError.instance(sql, params[0], exc, conn.dialect.loaded_dbapi.Error) from exc
        finally:
            cursor.close()

    def scalar(self, conn: Connection, row: Mapping[str, Any]) -> Any:
        """The first column of the first row a query returns (None if none), as the driver
        gives it: for integer and text columns, which no result processor changes."""
        found = self._fetch_one(conn, row)
        return None if found is None else found[0]

    def first(self, conn: Connection, row: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """The first row a query returns (None if none), its values as Core gives them."""
        found = self._fetch_one(conn, row)
        if found is None:
            return None
        results = self._results[conn.dialect.name]
        return tuple(
            v if p is None or v is None else p(v) for v, p in zip(found, results, strict=True)
        )

    def _fetch_one(self, conn: Connection, row: Mapping[str, Any]) -> Any:
        sql, params = self._rows(conn, [row])
        cursor = conn.connection.cursor()
        try:
            cursor.execute(sql, params[0])
            return cursor.fetchone()
        except conn.dialect.loaded_dbapi.Error as exc:
            raise DBAPIError.instance(sql, params[0], exc, conn.dialect.loaded_dbapi.Error) from exc
        finally:
            cursor.close()

    def run_many(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Execute once per row of parameters."""
        if not rows:
            return
        sql, params = self._rows(conn, rows)
        cursor = conn.connection.cursor()
        try:
            cursor.executemany(sql, params)
        except conn.dialect.loaded_dbapi.Error as exc:
            raise DBAPIError.instance(sql, params, exc, conn.dialect.loaded_dbapi.Error) from exc
        finally:
            cursor.close()


def reserve_ids(conn: Connection, table: Table, count: int) -> list[int]:
    """``count`` fresh ids of ``table``'s integer key, for rows the caller inserts with them.

    PostgreSQL takes them from the column's sequence (concurrent writers never clash); SQLite
    counts on from the largest id, safe since its write transaction locks the database.
    """
    if count <= 0:
        return []
    if conn.dialect.name == "postgresql":
        rows = conn.execute(
            text(
                "SELECT nextval(pg_get_serial_sequence(:table, 'id')) FROM generate_series(1, :n)"
            ),
            {"table": table.name, "n": count},
        ).scalars()
        return sorted(int(i) for i in rows)
    start = conn.execute(text(f"SELECT coalesce(max(id), 0) + 1 FROM {table.name}")).scalar_one()
    return list(range(int(start), int(start) + count))


def copy_rows(
    conn: Connection, table: Table, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]
) -> None:
    """Insert many new rows (tuples in ``columns`` order) in the caller's transaction, fast.

    PostgreSQL streams them with ``COPY … FROM STDIN`` (an order of magnitude faster than
    INSERTs); elsewhere they go through SQLAlchemy's ``executemany``. Values are what the
    columns hold in Python: JSON documents as dicts or lists, UTC-aware datetimes.
    """
    if not rows:
        return
    if conn.dialect.name != "postgresql":
        conn.execute(table.insert(), [dict(zip(columns, row, strict=True)) for row in rows])
        return
    from psycopg.types.json import Jsonb

    documents = [i for i, c in enumerate(columns) if isinstance(table.c[c].type, JsonDoc)]
    # Binary COPY: the server parses no text (a third less of its time on numeric rows).
    types = [_pg_type_name(table.c[c].type.compile(dialect=conn.dialect)) for c in columns]
    quote = conn.dialect.identifier_preparer.quote
    sql = (
        f"COPY {quote(table.name)} ({', '.join(quote(c) for c in columns)}) "
        "FROM STDIN (FORMAT BINARY)"
    )
    cursor: Any = conn.connection.cursor()
    try:
        with cursor.copy(sql) as copy:
            copy.set_types(types)
            for row in rows:
                if documents:
                    row = tuple(
                        Jsonb(v) if i in documents and v is not None else v
                        for i, v in enumerate(row)
                    )
                copy.write_row(row)
    finally:
        cursor.close()


def _pg_type_name(compiled: str) -> str:
    """The type name psycopg knows for a column's compiled PostgreSQL type (``VARCHAR(8)``…)."""
    name = compiled.split("(")[0].strip().lower()
    return "double precision" if name == "float" else name


def short(exc: BaseException) -> str:
    """The driver's own first line of an SQLAlchemy error, without the SQL and the doc link."""
    origin = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(origin).splitlines() if line.strip()]
    return lines[0] if lines else type(origin).__name__


def for_update(conn: Connection) -> bool:
    """Whether ``SELECT … FOR UPDATE`` means anything here (SQLite locks the whole database)."""
    return conn.dialect.name == "postgresql"


@contextlib.contextmanager
def migration_lock(conn: Connection) -> Iterator[None]:
    """Hold a lock so that only one process migrates a store at a time."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_lock(726317)"))
        conn.commit()
        try:
            yield  # the caller commits its work before the lock is let go
        finally:
            # A failed migration leaves its transaction aborted; end it so the unlock runs and
            # the original error is the one reported.
            conn.rollback()
            conn.execute(text("SELECT pg_advisory_unlock(726317)"))
            conn.commit()
    else:
        # SQLite: the IMMEDIATE transaction opened by the caller already holds the write lock.
        yield


def sqlite_path(url: str) -> str | None:
    """The database file of a SQLite URL, or None."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    return os.path.abspath(parsed.database)
