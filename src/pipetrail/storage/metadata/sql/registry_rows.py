"""Row helpers the registry's mixins share: a model or version by name, an event, an alias move."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, and_, func, insert, select, update

from pipetrail.errors import NotFoundError
from pipetrail.storage.metadata.governance import ModelVersionRecord
from pipetrail.storage.metadata.sql.engine import for_update
from pipetrail.storage.metadata.sql.tables import (
    governance_event,
    model_alias,
    model_version,
    registered_model,
)

__all__ = ["model_row", "move_alias_row", "version_record", "version_row", "write_event"]


def model_row(conn: Connection, name: str, *, lock: bool = False) -> Row[Any]:
    query = select(registered_model).where(registered_model.c.name == name)
    if lock and for_update(conn):
        query = query.with_for_update()
    row = conn.execute(query).first()
    if row is None:
        raise NotFoundError(
            f"no model named {name!r} in the registry; register one with: "
            f"pipetrail models register {name} RUN --artifact NAME"
        )
    return row


def version_row(conn: Connection, model: Row[Any], version: int) -> Row[Any]:
    row = conn.execute(
        select(model_version).where(
            model_version.c.model_id == model.id, model_version.c.version == version
        )
    ).first()
    if row is None:
        latest = conn.execute(
            select(func.max(model_version.c.version)).where(model_version.c.model_id == model.id)
        ).scalar()
        raise NotFoundError(
            f"model {model.name!r} has no version {version}; its versions are 1 to {latest}"
        )
    return row


def version_record(row: Row[Any], model: str, aliases: Sequence[str] = ()) -> ModelVersionRecord:
    return ModelVersionRecord(
        id=row.id,
        model=model,
        version=row.version,
        run_id=row.run_id,
        task_id=row.block_run_id,
        artifact_name=row.artifact_name,
        artifact_key=row.artifact_key,
        description=row.description,
        created_at=row.created_at,
        created_by=row.created_by,
        aliases=tuple(sorted(aliases)),
    )


def write_event(
    conn: Connection,
    at: datetime,
    actor: str,
    action: str,
    *,
    model_id: int | None = None,
    version_id: int | None = None,
    request_id: int | None = None,
    alias: str | None = None,
    run_id: int | None = None,
    message: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    conn.execute(
        insert(governance_event).values(
            at=at,
            actor=actor,
            action=action,
            model_id=model_id,
            version_id=version_id,
            request_id=request_id,
            alias=alias,
            run_id=run_id,
            message=message,
            detail=detail or {},
        )
    )


def move_alias_row(
    conn: Connection,
    model: Row[Any],
    alias: str,
    target: Row[Any] | None,
    actor: str,
    message: str | None,
    at: datetime,
    request_id: int | None = None,
) -> None:
    """Point ``alias`` at ``target`` (None: remove it), with its event."""
    key = and_(model_alias.c.model_id == model.id, model_alias.c.alias == alias)
    query = (
        select(model_alias.c.version_id, model_version.c.version)
        .join(model_version, model_version.c.id == model_alias.c.version_id)
        .where(key)
    )
    if for_update(conn):
        query = query.with_for_update(of=model_alias)
    previous = conn.execute(query).first()
    detail = {"previous": previous.version if previous else None}
    if target is None:
        if previous is None:
            raise NotFoundError(f"model {model.name!r} has no alias {alias!r} to remove")
        conn.execute(model_alias.delete().where(key))
        action, version_id = "alias_removed", None
    else:
        row = {"version_id": target.id, "moved_at": at, "moved_by": actor}
        if previous is None:  # the caller holds the model's row: no one inserts it meanwhile
            conn.execute(insert(model_alias).values(model_id=model.id, alias=alias, **row))
        else:
            conn.execute(update(model_alias).where(key).values(**row))
        action, version_id = "alias_moved", target.id
    write_event(
        conn,
        at,
        actor,
        action,
        model_id=model.id,
        version_id=version_id,
        request_id=request_id,
        alias=alias,
        run_id=target.run_id if target is not None else None,
        message=message,
        detail=detail,
    )
