"""The model registry and the governance log as rows (RegistryStore).

Every change writes its ``governance_event`` rows in the transaction that makes it; nothing is
updated in place but an alias's pointer and a request's status (the history is the events).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Row, and_, func, insert, select, update

from pipetrail.errors import NotFoundError, UsageError
from pipetrail.storage.metadata.governance import (
    GovernanceEvent,
    ModelRecord,
    ModelVersionRecord,
    NewModelVersion,
)
from pipetrail.storage.metadata.sql.engine import insert_once
from pipetrail.storage.metadata.sql.promotions import PromotionRows
from pipetrail.storage.metadata.sql.registry_rows import (
    model_row,
    move_alias_row,
    version_record,
    version_row,
    write_event,
)
from pipetrail.storage.metadata.sql.session import now, patient
from pipetrail.storage.metadata.sql.tables import (
    block_run,
    governance_event,
    model_alias,
    model_policy,
    model_version,
    registered_model,
)

__all__ = ["ModelRows"]

_EVENT = (
    select(
        governance_event,
        registered_model.c.name.label("model_name"),
        model_version.c.version.label("version_number"),
    )
    .outerjoin(registered_model, registered_model.c.id == governance_event.c.model_id)
    .outerjoin(model_version, model_version.c.id == governance_event.c.version_id)
)


class ModelRows(PromotionRows):
    """Mixed into SqlMetadataStore."""

    # -- models and versions ------------------------------------------------------------------

    @patient("write")
    def register_model_version(self, new: NewModelVersion) -> ModelVersionRecord:
        """Record the next version of ``new.model`` (creating the model at its first version).

        The number is given under a lock on the model's row (the whole database on SQLite),
        so concurrent registrations get consecutive numbers, never the same one.

        Raises:
            NotFoundError: the task is not one of run ``new.run_id``'s.
        """
        at = now()
        with self._write() as conn:
            task = conn.execute(
                select(block_run.c.run_id).where(block_run.c.id == new.task_id)
            ).first()
            if task is None or task.run_id != new.run_id:
                raise NotFoundError(f"run {new.run_id} has no task {new.task_id}")
            insert_once(
                conn,
                registered_model,
                {
                    "name": new.model,
                    "description": new.description,
                    "created_at": at,
                    "created_by": new.actor,
                },
                ["name"],
            )
            model = model_row(conn, new.model, lock=True)
            latest = conn.execute(
                select(func.max(model_version.c.version)).where(
                    model_version.c.model_id == model.id
                )
            ).scalar()
            number = (latest or 0) + 1
            version_id = conn.execute(
                insert(model_version)
                .values(
                    model_id=model.id,
                    version=number,
                    run_id=new.run_id,
                    block_run_id=new.task_id,
                    artifact_name=new.artifact_name,
                    artifact_key=new.artifact_key,
                    description=new.description,
                    created_at=at,
                    created_by=new.actor,
                )
                .returning(model_version.c.id)
            ).scalar_one()
            write_event(
                conn,
                at,
                new.actor,
                "model_registered",
                model_id=model.id,
                version_id=version_id,
                run_id=new.run_id,
                message=new.description,
                detail={
                    "artifact": new.artifact_name,
                    "artifact_key": new.artifact_key,
                    "task_id": new.task_id,
                },
            )
            row = conn.execute(select(model_version).where(model_version.c.id == version_id)).one()
        return version_record(row, new.model)

    def _model_record(self, conn: Connection, model: Row[Any]) -> ModelRecord:
        latest = conn.execute(
            select(func.max(model_version.c.version)).where(model_version.c.model_id == model.id)
        ).scalar()
        aliases = conn.execute(
            select(model_alias.c.alias, model_version.c.version)
            .join(model_version, model_version.c.id == model_alias.c.version_id)
            .where(model_alias.c.model_id == model.id)
            .order_by(model_alias.c.alias)
        ).all()
        policies = conn.execute(
            select(model_policy.c.alias, model_policy.c.approvers)
            .where(model_policy.c.model_id == model.id)
            .order_by(model_policy.c.alias)
        ).all()
        return ModelRecord(
            id=model.id,
            name=model.name,
            description=model.description,
            created_at=model.created_at,
            created_by=model.created_by,
            latest_version=latest,
            aliases={a.alias: a.version for a in aliases},
            policies={p.alias: p.approvers for p in policies},
        )

    @patient("read")
    def get_model(self, name: str) -> ModelRecord:
        """The model called ``name``, with its latest version, aliases and policies."""
        with self._read() as conn:
            return self._model_record(conn, model_row(conn, name))

    @patient("read")
    def list_models(self) -> list[ModelRecord]:
        """Every registered model, by name."""
        with self._read() as conn:
            rows = conn.execute(select(registered_model).order_by(registered_model.c.name)).all()
            return [self._model_record(conn, r) for r in rows]

    def _versions(self, conn: Connection, where: Any) -> list[ModelVersionRecord]:
        rows = conn.execute(
            select(model_version, registered_model.c.name.label("model_name"))
            .join(registered_model, registered_model.c.id == model_version.c.model_id)
            .where(where)
            .order_by(registered_model.c.name, model_version.c.version)
        ).all()
        ids = [r.id for r in rows]
        aliases: dict[int, list[str]] = {}
        for a in conn.execute(
            select(model_alias.c.version_id, model_alias.c.alias).where(
                model_alias.c.version_id.in_(ids)
            )
        ):
            aliases.setdefault(a.version_id, []).append(a.alias)
        return [version_record(r, r.model_name, aliases.get(r.id, ())) for r in rows]

    @patient("read")
    def model_versions(self, name: str) -> list[ModelVersionRecord]:
        """Every version of the model, oldest first, each with the aliases pointing at it."""
        with self._read() as conn:
            model = model_row(conn, name)
            return self._versions(conn, model_version.c.model_id == model.id)

    @patient("read")
    def get_model_version(self, name: str, version: int) -> ModelVersionRecord:
        """Version ``version`` of the model ``name``."""
        with self._read() as conn:
            row = version_row(conn, model_row(conn, name), version)
            return self._versions(conn, model_version.c.id == row.id)[0]

    @patient("read")
    def model_versions_of_runs(self, run_ids: Sequence[int]) -> list[ModelVersionRecord]:
        """The versions registered from any of ``run_ids`` (what retention must keep)."""
        if not run_ids:
            return []
        with self._read() as conn:
            return self._versions(conn, model_version.c.run_id.in_(list(run_ids)))

    # -- policies and aliases ---------------------------------------------------------------------

    @patient("write")
    def set_model_policy(self, name: str, alias: str, approvers: int, actor: str) -> None:
        """Require ``approvers`` approvals to move ``alias`` (0: it moves when promoted)."""
        if approvers < 0:
            raise UsageError(f"approvers must be 0 or more, got {approvers}")
        at = now()
        with self._write() as conn:
            model = model_row(conn, name, lock=True)
            key = and_(model_policy.c.model_id == model.id, model_policy.c.alias == alias)
            previous = conn.execute(select(model_policy.c.approvers).where(key)).scalar()
            row = {"approvers": approvers, "set_at": at, "set_by": actor}
            if previous is None:
                conn.execute(insert(model_policy).values(model_id=model.id, alias=alias, **row))
            else:
                conn.execute(update(model_policy).where(key).values(**row))
            write_event(
                conn,
                at,
                actor,
                "policy_set",
                model_id=model.id,
                alias=alias,
                detail={"approvers": approvers, "previous": previous},
            )

    @patient("write")
    def move_alias(
        self, name: str, alias: str, version: int | None, actor: str, message: str | None
    ) -> None:
        """Point ``alias`` at ``version`` at once (None removes it); an event either way."""
        at = now()
        with self._write() as conn:
            model = model_row(conn, name, lock=True)
            target = None if version is None else version_row(conn, model, version)
            move_alias_row(conn, model, alias, target, actor, message, at)

    # -- the governance log -------------------------------------------------------------------

    @patient("write")
    def record_governance_event(self, event: GovernanceEvent) -> None:
        """Append ``event`` to the log (its ``id`` is ignored; the store gives one).

        ``model`` and ``version``, when set, must name a registered model and version.
        """
        with self._write() as conn:
            model_id = version_id = None
            if event.model is not None:
                model = model_row(conn, event.model)
                model_id = model.id
                if event.version is not None:
                    version_id = version_row(conn, model, event.version).id
            write_event(
                conn,
                event.at,
                event.actor,
                event.action,
                model_id=model_id,
                version_id=version_id,
                request_id=event.request_id,
                alias=event.alias,
                run_id=event.run_id,
                message=event.message,
                detail=dict(event.detail),
            )

    @patient("read")
    def governance_events(
        self,
        *,
        model: str | None = None,
        run_id: int | None = None,
        action: str | None = None,
        limit: int = 1000,
    ) -> list[GovernanceEvent]:
        """The newest ``limit`` events that match, oldest first."""
        with self._read() as conn:
            query = _EVENT
            if model is not None:
                query = query.where(governance_event.c.model_id == model_row(conn, model).id)
            if run_id is not None:
                query = query.where(governance_event.c.run_id == run_id)
            if action is not None:
                query = query.where(governance_event.c.action == action)
            rows = conn.execute(query.order_by(governance_event.c.id.desc()).limit(limit)).all()
        return [
            GovernanceEvent(
                id=r.id,
                at=r.at,
                actor=r.actor,
                action=r.action,
                model=r.model_name,
                version=r.version_number,
                request_id=r.request_id,
                alias=r.alias,
                run_id=r.run_id,
                message=r.message,
                detail=r.detail,
            )
            for r in reversed(rows)
        ]
