"""``pipetrail tokens``: named API tokens with roles: create (shown once), list, revoke.

Also the acting user of the commands that act on runs: the owner of ``PIPETRAIL_TOKEN``.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click

from pipetrail.cli.common import EXIT_OK, NothingRecorded, errors, workspace_or_nothing
from pipetrail.storage.metadata.governance import ROLES, TokenRecord

__all__ = ["acting", "env_token", "tokens_group"]

TOKEN_ENV = "PIPETRAIL_TOKEN"


def env_token() -> str | None:
    """The caller's token, from ``PIPETRAIL_TOKEN`` (None when unset or blank)."""
    value = os.environ.get(TOKEN_ENV, "").strip()
    return value or None


def acting(workspace: Any) -> str:
    """Who a command acts as: the owner of ``PIPETRAIL_TOKEN``, else the local user.

    Raises:
        UsageError: ``PIPETRAIL_TOKEN`` is set and is no active token of the store.
    """
    from pipetrail.governance.identity import acting_user

    return acting_user(workspace.store, env_token())


@click.group("tokens")
def tokens_group() -> None:
    """Named API tokens with roles: create (shown once), list and revoke them.

    Roles: viewer (read), editor (trigger, retry, cancel, tag, register, ask for a promotion),
    approver (also approve or reject), admin (also tokens, policies, deletion, gc). Once the
    store has tokens, the server wants one with every request, and creating or revoking
    tokens needs PIPETRAIL_TOKEN set to an admin token.
    """


@tokens_group.command("create")
@click.argument("name")
@click.option(
    "--role", required=True, type=click.Choice(ROLES), help="What the token's user may do."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (with the token).")
@errors
def tokens_create(name: str, role: str, as_json: bool) -> None:
    """Make a token for user NAME and print it, once: the store keeps only its hash."""
    from pipetrail.governance.tokens import create_token, manage_as
    from pipetrail.workspace import open_workspace

    workspace = open_workspace()
    try:
        actor = manage_as(workspace.store, env_token(), f"tokens create {name!r}")
        record, secret = create_token(workspace.store, name, role, actor=actor)
    finally:
        workspace.close()
    if as_json:
        click.echo(json.dumps({**_as_dict(record), "token": secret}, indent=2))
        return
    # The token alone on stdout (TOKEN=$(pipetrail tokens create ...)); the words on stderr.
    click.echo(
        f"token {record.name!r} ({record.role}) created; it is shown only now, keep it:",
        err=True,
    )
    click.echo(secret)


@tokens_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@errors
def tokens_list(as_json: bool) -> None:
    """Every token: name, role, created, last used, revoked (never the token)."""
    try:
        workspace = workspace_or_nothing()
    except NothingRecorded:
        click.echo("[]" if as_json else "no tokens")
        sys.exit(EXIT_OK)
    try:
        records = workspace.store.list_tokens()
    finally:
        workspace.close()
    if as_json:
        click.echo(json.dumps([_as_dict(r) for r in records], indent=2))
        return
    if not records:
        click.echo("no tokens: the server needs none (pipetrail tokens create NAME --role admin)")
        return
    from rich.table import Table

    from pipetrail.cli.render import console

    table = Table(box=None, header_style="bold")
    for column in ("NAME", "ROLE", "CREATED", "BY", "LAST USED", "REVOKED"):
        table.add_column(column)
    for r in records:
        table.add_row(
            r.name,
            r.role,
            _when(r.created_at),
            r.created_by,
            _when(r.last_used_at),
            _when(r.revoked_at),
        )
    console().print(table)


@tokens_group.command("revoke")
@click.argument("name")
@errors
def tokens_revoke(name: str) -> None:
    """Revoke token NAME for good: the server refuses it from its next request."""
    from pipetrail.governance.tokens import manage_as, revoke_token

    workspace = workspace_or_nothing(f"token {name!r}")
    try:
        actor = manage_as(workspace.store, env_token(), f"tokens revoke {name!r}")
        record = revoke_token(workspace.store, name, actor=actor)
    finally:
        workspace.close()
    click.echo(f"token {record.name!r} ({record.role}) revoked")


def _when(at: Any) -> str:
    return at.astimezone().strftime("%Y-%m-%d %H:%M") if at is not None else "-"


def _as_dict(record: TokenRecord) -> dict[str, Any]:
    def iso(at: Any) -> str | None:
        return at.isoformat() if at is not None else None

    return {
        "name": record.name,
        "role": record.role,
        "created_at": iso(record.created_at),
        "created_by": record.created_by,
        "last_used_at": iso(record.last_used_at),
        "revoked_at": iso(record.revoked_at),
        "active": record.active,
    }
