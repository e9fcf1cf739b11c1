"""Promotion requests and their decisions as rows: the approval half of the model registry."""

from __future__ import annotations

from typing import Any, Literal

from sqlalchemy import Connection, and_, func, insert, select, true, update

from pipetrail.errors import NotFoundError, UsageError
from pipetrail.storage.metadata.governance import Decision, PromotionRequest, RequestStatus
from pipetrail.storage.metadata.sql.engine import for_update
from pipetrail.storage.metadata.sql.registry_rows import (
    model_row,
    move_alias_row,
    version_row,
    write_event,
)
from pipetrail.storage.metadata.sql.session import SqlSession, now, patient
from pipetrail.storage.metadata.sql.tables import (
    model_version,
    promotion_decision,
    promotion_request,
    registered_model,
)

__all__ = ["PromotionRows"]

_REQUEST = (
    select(
        promotion_request,
        registered_model.c.name.label("model_name"),
        model_version.c.version.label("version_number"),
    )
    .join(registered_model, registered_model.c.id == promotion_request.c.model_id)
    .join(model_version, model_version.c.id == promotion_request.c.version_id)
)


class PromotionRows(SqlSession):
    """Requests to move an alias, decided by approvers; mixed into ModelRows."""

    @patient("write")
    def open_promotion(
        self, name: str, version: int, alias: str, reason: str | None, actor: str, required: int
    ) -> PromotionRequest:
        """Open a request to point ``alias`` at ``version`` once ``required`` approvals are in.

        Raises:
            UsageError: a request for the same version and alias is pending already.
        """
        at = now()
        with self._write() as conn:
            model = model_row(conn, name, lock=True)
            target = version_row(conn, model, version)
            pending = conn.execute(
                select(promotion_request.c.id).where(
                    promotion_request.c.version_id == target.id,
                    promotion_request.c.alias == alias,
                    promotion_request.c.status == "pending",
                )
            ).scalar()
            if pending is not None:
                raise UsageError(
                    f"request {pending} to point {name}@{alias} at version {version} is pending "
                    f"already; approve it with: pipetrail models approve {pending}"
                )
            request_id = conn.execute(
                insert(promotion_request)
                .values(
                    model_id=model.id,
                    version_id=target.id,
                    alias=alias,
                    status="pending",
                    reason=reason,
                    required=required,
                    requested_at=at,
                    requested_by=actor,
                )
                .returning(promotion_request.c.id)
            ).scalar_one()
            write_event(
                conn,
                at,
                actor,
                "promotion_requested",
                model_id=model.id,
                version_id=target.id,
                request_id=request_id,
                alias=alias,
                run_id=target.run_id,
                message=reason,
                detail={"required": required},
            )
            return self._requests(conn, promotion_request.c.id == request_id)[0]

    @patient("write")
    def decide_promotion(
        self,
        request_id: int,
        decision: Literal["approved", "rejected", "withdrawn"],
        actor: str,
        comment: str | None,
    ) -> PromotionRequest:
        """Approve, reject or withdraw a pending request, in one transaction.

        The approval that brings the count to ``required`` closes the request as approved and
        moves the alias; a rejection closes it; a withdrawal closes it with no decision row.

        Raises:
            NotFoundError: no such request.
            UsageError: it is not pending, or ``actor`` decided on it already.
        """
        at = now()
        with self._write() as conn:
            query = select(promotion_request).where(promotion_request.c.id == request_id)
            if for_update(conn):
                query = query.with_for_update()
            request = conn.execute(query).first()
            if request is None:
                raise NotFoundError(f"no promotion request {request_id}")
            if request.status != "pending":
                raise UsageError(
                    f"request {request_id} is {request.status} already (closed at "
                    f"{request.closed_at:%Y-%m-%d %H:%M:%S} UTC); open a new one with "
                    "pipetrail models promote"
                )
            ids = {
                "model_id": request.model_id,
                "version_id": request.version_id,
                "request_id": request_id,
                "alias": request.alias,
            }
            target = conn.execute(
                select(model_version).where(model_version.c.id == request.version_id)
            ).one()
            status: RequestStatus = "pending"
            if decision == "withdrawn":
                status = "withdrawn"
            else:
                earlier = conn.execute(
                    select(promotion_decision.c.decision).where(
                        promotion_decision.c.request_id == request_id,
                        promotion_decision.c.actor == actor,
                    )
                ).scalar()
                if earlier is not None:
                    raise UsageError(f"{actor!r} {earlier} request {request_id} already")
                conn.execute(
                    insert(promotion_decision).values(
                        request_id=request_id,
                        actor=actor,
                        decision=decision,
                        comment=comment,
                        at=at,
                    )
                )
                approvals = conn.execute(
                    select(func.count()).where(
                        promotion_decision.c.request_id == request_id,
                        promotion_decision.c.decision == "approved",
                    )
                ).scalar_one()
                if decision == "rejected":
                    status = "rejected"
                elif approvals >= request.required:
                    status = "approved"
            write_event(
                conn,
                at,
                actor,
                f"promotion_{decision}",
                run_id=target.run_id,
                message=comment,
                detail={"status": status},
                **ids,
            )
            if status != "pending":
                conn.execute(
                    update(promotion_request)
                    .where(promotion_request.c.id == request_id)
                    .values(status=status, closed_at=at)
                )
            if status == "approved":
                # The model's row is the lock every alias move takes: two approvals completing
                # requests for one alias at once move it one after the other.
                query = select(registered_model).where(registered_model.c.id == request.model_id)
                model = conn.execute(query.with_for_update() if for_update(conn) else query).one()
                move_alias_row(conn, model, request.alias, target, actor, comment, at, request_id)
            return self._requests(conn, promotion_request.c.id == request_id)[0]

    def _requests(self, conn: Connection, where: Any) -> list[PromotionRequest]:
        rows = conn.execute(_REQUEST.where(where).order_by(promotion_request.c.id)).all()
        decisions: dict[int, list[Decision]] = {}
        for d in conn.execute(
            select(promotion_decision)
            .where(promotion_decision.c.request_id.in_([r.id for r in rows]))
            .order_by(promotion_decision.c.id)
        ):
            decisions.setdefault(d.request_id, []).append(
                Decision(actor=d.actor, decision=d.decision, comment=d.comment, at=d.at)
            )
        return [
            PromotionRequest(
                id=r.id,
                model=r.model_name,
                version=r.version_number,
                alias=r.alias,
                status=r.status,
                reason=r.reason,
                required=r.required,
                requested_at=r.requested_at,
                requested_by=r.requested_by,
                closed_at=r.closed_at,
                decisions=tuple(decisions.get(r.id, ())),
            )
            for r in rows
        ]

    @patient("read")
    def get_promotion(self, request_id: int) -> PromotionRequest:
        """The request ``request_id`` with its decisions."""
        with self._read() as conn:
            found = self._requests(conn, promotion_request.c.id == request_id)
        if not found:
            raise NotFoundError(f"no promotion request {request_id}")
        return found[0]

    @patient("read")
    def promotions(
        self, *, model: str | None = None, status: RequestStatus | None = None
    ) -> list[PromotionRequest]:
        """Requests, oldest first: of one model, in one status, or all."""
        with self._read() as conn:
            where: list[Any] = []
            if model is not None:
                where.append(promotion_request.c.model_id == model_row(conn, model).id)
            if status is not None:
                where.append(promotion_request.c.status == status)
            return self._requests(conn, and_(true(), *where))
