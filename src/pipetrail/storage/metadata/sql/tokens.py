"""Named API tokens as rows (TokenStore); their creation and revocation go to the governance log
in the same transaction."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Connection, Row, func, insert, select, update

from pipetrail.errors import NotFoundError, UsageError
from pipetrail.storage.metadata.governance import ROLES, Role, TokenRecord
from pipetrail.storage.metadata.sql.engine import insert_once
from pipetrail.storage.metadata.sql.session import SqlSession, now, patient
from pipetrail.storage.metadata.sql.tables import api_token, governance_event

__all__ = ["LAST_USED_EVERY", "TokenRows"]

#: ``last_used_at`` moves at most this often per token: a request does not write each time.
LAST_USED_EVERY = timedelta(minutes=1)


def _record(row: Row[Any]) -> TokenRecord:
    return TokenRecord(
        id=row.id,
        name=row.name,
        role=cast(Role, row.role),
        created_at=row.created_at,
        created_by=row.created_by,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
    )


class TokenRows(SqlSession):
    """Mixed into SqlMetadataStore."""

    @patient("write")
    def create_token(self, name: str, role: Role, token_hash: str, actor: str) -> TokenRecord:
        """Store a token of user ``name`` (only its hash) and log ``token_created``.

        Raises:
            UsageError: ``role`` is not a role, ``name`` is empty, or a token named ``name``
                exists (revoked ones too: a name is never reused, so the record of who did
                what stays unambiguous).
        """
        if role not in ROLES:
            raise UsageError(f"role {role!r} is not one of: {', '.join(ROLES)}")
        if not name.strip():
            raise UsageError("a token needs a name (the user it stands for)")
        at = now()
        row = {
            "name": name,
            "role": role,
            "token_hash": token_hash,
            "created_at": at,
            "created_by": actor,
        }
        with self._write() as conn:
            if not insert_once(conn, api_token, row, ["name"]):
                raise UsageError(
                    f"a token named {name!r} exists already (names are not reused, revoked "
                    "ones included); pick another name"
                )
            stored = conn.execute(select(api_token).where(api_token.c.name == name)).one()
            _log(conn, at, actor, "token_created", name, role)
        return _record(stored)

    @patient("read")
    def token_by_hash(self, token_hash: str) -> TokenRecord | None:
        """The token whose hash is ``token_hash`` (active or revoked), or None."""
        with self._read() as conn:
            row = conn.execute(
                select(api_token).where(api_token.c.token_hash == token_hash)
            ).first()
        return None if row is None else _record(row)

    @patient("read")
    def list_tokens(self) -> list[TokenRecord]:
        """Every token, revoked ones included, in creation order."""
        with self._read() as conn:
            rows = conn.execute(select(api_token).order_by(api_token.c.id)).all()
        return [_record(r) for r in rows]

    @patient("write")
    def revoke_token(self, name: str, actor: str) -> TokenRecord:
        """Revoke token ``name`` for good and log ``token_revoked``.

        Raises:
            NotFoundError: no token of that name.
            UsageError: it is revoked already, or it is the last active admin token (with none
                left, nobody could create or revoke tokens any more).
        """
        with self._write() as conn:
            row = conn.execute(select(api_token).where(api_token.c.name == name)).first()
            if row is None:
                raise NotFoundError(f"no token named {name!r}; see: pipetrail tokens list")
            if row.revoked_at is not None:
                raise UsageError(f"token {name!r} was revoked already at {row.revoked_at}")
            if row.role == "admin" and self._active_admins(conn) <= 1:
                raise UsageError(
                    f"token {name!r} is the last active admin token; create another admin "
                    "token first (pipetrail tokens create NAME --role admin)"
                )
            at = now()
            conn.execute(update(api_token).where(api_token.c.id == row.id).values(revoked_at=at))
            _log(conn, at, actor, "token_revoked", name, row.role)
            stored = conn.execute(select(api_token).where(api_token.c.id == row.id)).one()
        return _record(stored)

    @patient("read")
    def has_tokens(self) -> bool:
        """Whether a token was ever created here (revoked ones count: revoking every token does
        not open the server to everyone again)."""
        with self._read() as conn:
            return conn.execute(select(api_token.c.id).limit(1)).first() is not None

    @patient("write")
    def touch_token(self, token_id: int, at: datetime | None = None) -> bool:
        """Set the token's ``last_used_at`` to ``at`` (now) unless it was set less than
        :data:`LAST_USED_EVERY` before; whether it wrote."""
        at = at or now()
        with self._write() as conn:
            result = conn.execute(
                update(api_token)
                .where(
                    api_token.c.id == token_id,
                    (api_token.c.last_used_at.is_(None))
                    | (api_token.c.last_used_at <= at - LAST_USED_EVERY),
                )
                .values(last_used_at=at)
            )
        return bool(result.rowcount)

    def _active_admins(self, conn: Connection) -> int:
        query = select(func.count()).where(
            api_token.c.role == "admin", api_token.c.revoked_at.is_(None)
        )
        return int(conn.execute(query).scalar_one())


def _log(conn: Connection, at: datetime, actor: str, action: str, name: str, role: str) -> None:
    conn.execute(
        insert(governance_event),
        {
            "at": at,
            "actor": actor,
            "action": action,
            "message": f"token {name!r} ({role})",
            "detail": {"token": name, "role": role},
        },
    )
