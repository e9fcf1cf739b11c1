"""Bring a store's schema to the head revision with Alembic; a fast check when it already is."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import InterfaceError, OperationalError, SQLAlchemyError

from pipetrail.errors import MigrationError, StoreError
from pipetrail.storage.metadata.sql.engine import (
    WRITE_OPTION,
    listen_for_begin,
    migration_lock,
    short,
)

__all__ = ["HEAD_REVISION", "current_revision", "upgrade"]

#: The newest migration; a test checks it against Alembic's own view of the version tree.
HEAD_REVISION = "0009"
_SCRIPTS = Path(__file__).parent / "migrations"


def current_revision(engine: Engine) -> str | None:
    """The revision the store is at, or None for an empty database."""
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        row = conn.execute(text("SELECT version_num FROM alembic_version")).first()
        return None if row is None else str(row[0])


def upgrade(engine: Engine) -> None:
    """Migrate to ``HEAD_REVISION``; skips Alembic entirely when already there.

    Raises:
        MigrationError: naming the database when the schema cannot be brought up to date.
    """
    where = engine.url.render_as_string(hide_password=True)
    try:
        revision = current_revision(engine)
    except (OperationalError, InterfaceError) as exc:
        raise StoreError(
            f"cannot connect to the metadata store at {where!r}: {short(exc)}"
        ) from exc
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot read the metadata store at {where!r}: {short(exc)}") from exc
    if revision == HEAD_REVISION:
        return
    try:
        # Alembic is imported only here: most commands never need it.
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(_SCRIPTS))
        with engine.connect().execution_options(**{WRITE_OPTION: True}) as conn:
            listen_for_begin(conn)
            with migration_lock(conn):
                config.attributes["connection"] = conn
                command.upgrade(config, "head")
                conn.commit()
    except SQLAlchemyError as exc:
        raise MigrationError(
            f"cannot migrate the metadata store at {where!r}: {short(exc)}"
        ) from exc
