"""``pipetrail models``: register versions, move aliases, and promote through approvals."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import click

from pipetrail.cli.common import NothingRecorded, count, errors, workspace_or_nothing
from pipetrail.errors import NotFoundError

if TYPE_CHECKING:
    from pipetrail.storage.metadata.governance import Role

_REGISTER_HINT = "pipetrail models register NAME RUN --artifact model"
_STATUSES = ("pending", "approved", "rejected", "withdrawn")


@click.group("models")
def models_group() -> None:
    """Register model versions, point aliases at them, and promote them with approvals."""


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


def _shown(at: str | None) -> str:
    if at is None:
        return "-"
    return datetime.fromisoformat(at).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _open(asked: str | None = None) -> Any:
    """The configured workspace, closed when the command ends (a command can run in-process)."""
    workspace = workspace_or_nothing(asked)
    click.get_current_context().call_on_close(workspace.close)
    return workspace


def _workspace(name: str | None = None) -> Any:
    """The store; with none yet a listing is empty and a named model is unknown."""
    try:
        return _open(f"model {name!r}" if name else None)
    except NothingRecorded:
        if name is None:
            return None
        raise NotFoundError(
            f"no model named {name!r}: nothing is registered yet; register one with: "
            + _REGISTER_HINT
        ) from None


def _token() -> str | None:
    return os.environ.get("PIPETRAIL_TOKEN")


def _actor(store: Any) -> str:
    from pipetrail.governance.identity import acting_user

    return str(acting_user(store, _token()))


def _authorized(store: Any, role: Role, action: str) -> str:
    """The acting user, refused unless their token has ``role`` (once the store has tokens)."""
    from pipetrail.governance.identity import authorize

    return str(authorize(store, _token(), role, action=action))


def _table(columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    from rich.table import Table

    from pipetrail.cli.render import console

    table = Table(box=None, header_style="bold")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    console().print(table)


def _aliases(aliases: dict[str, int]) -> str:
    return ", ".join(f"{a}→{v}" for a, v in aliases.items()) or "-"


# -- register ----------------------------------------------------------------------------------


@models_group.command("register")
@click.argument("name")
@click.argument("run", metavar="RUN")
@click.option("--artifact", default="model", show_default=True, help="The output artifact.")
@click.option("--step", default=None, help="The step that outputs it (when several do).")
@click.option("--description", default=None, help="What this version is.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@errors
def models_register(
    name: str, run: str, artifact: str, step: str | None, description: str | None, as_json: bool
) -> None:
    """Register ARTIFACT of RUN (pathspec or id; a task's address picks one task) as the next
    version of model NAME."""
    from pipetrail.governance import registry
    from pipetrail.governance.views import version_json

    registry.check_model_name(name)
    store = _open(f"run {run!r}").store
    record = registry.register(
        store,
        name,
        run,
        artifact=artifact,
        actor=_actor(store),
        step=step,
        description=description,
    )
    if as_json:
        _echo_json(version_json(store, record))
        return
    run_record = store.get_run(record.run_id)
    click.echo(
        f"Registered {record.ref}: artifact {record.artifact_name!r} "
        f"({record.artifact_key[:12]}) of run {run_record.pathspec}"
    )


# -- reading -----------------------------------------------------------------------------------


@models_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@errors
def models_list(as_json: bool) -> None:
    """Every registered model: latest version, aliases, approval policies."""
    from pipetrail.governance.views import model_json

    workspace = _workspace()
    models = [model_json(m) for m in workspace.store.list_models()] if workspace else []
    if as_json:
        _echo_json(models)
        return
    if not models:
        click.echo(f"No models registered yet. Register one with: {_REGISTER_HINT}")
        return
    _table(
        ("NAME", "LATEST", "ALIASES", "POLICIES", "CREATED", "BY"),
        [
            (
                m["name"],
                str(m["latest_version"] or "-"),
                _aliases(m["aliases"]),
                ", ".join(f"{a}: {n} approver(s)" for a, n in m["policies"].items()) or "-",
                _shown(m["created_at"]),
                m["created_by"],
            )
            for m in models
        ],
    )


def _version_rows(versions: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    return [
        (
            str(v["version"]),
            ", ".join(v["aliases"]) or "-",
            v["run"]["pathspec"] or f"{v['run']['id']} (deleted)",
            v["run"]["status"] or "-",
            f"{v['step'] or '-'}.{v['artifact']['name']}",
            v["artifact"]["hash"][:12],
            ", ".join(f"{k}={val:.4g}" for k, val in sorted(v["metrics"].items())) or "-",
            _shown(v["created_at"]),
            v["created_by"],
        )
        for v in versions
    ]


_VERSION_COLUMNS = ("VERSION", "ALIASES", "RUN", "STATUS", "ARTIFACT", "HASH", "METRICS")


@models_group.command("versions")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@errors
def models_versions(name: str, as_json: bool) -> None:
    """Every version of model NAME with its run, status, artifact hash and metrics."""
    from pipetrail.governance.views import version_json

    store = _workspace(name).store
    versions = [version_json(store, v) for v in store.model_versions(name)]
    if as_json:
        _echo_json(versions)
        return
    _table((*_VERSION_COLUMNS, "CREATED", "BY"), _version_rows(versions))


@models_group.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@errors
def models_show(name: str, as_json: bool) -> None:
    """Model NAME: versions, aliases, policies, pending requests and the alias history."""
    from pipetrail.governance.views import model_detail_json

    detail = model_detail_json(_workspace(name).store, name)
    if as_json:
        _echo_json(detail)
        return
    click.echo(
        f"Model {detail['name']}" + (f": {detail['description']}" if detail["description"] else "")
    )
    click.echo(f"  created {_shown(detail['created_at'])} by {detail['created_by']}")
    click.echo(f"  aliases: {_aliases(detail['aliases'])}")
    policies = ", ".join(f"{a} needs {n} approval(s)" for a, n in detail["policies"].items())
    click.echo(f"  policies: {policies or 'none (aliases move when promoted)'}")
    click.echo("")
    _table((*_VERSION_COLUMNS, "CREATED", "BY"), _version_rows(detail["versions"]))
    if detail["pending"]:
        click.echo("\nPending requests")
        _request_table(detail["pending"])
    click.echo("\nAlias history")
    if not detail["alias_history"]:
        click.echo("  (no alias has been set)")
    for e in detail["alias_history"]:
        to = f"→ {e['version']}" if e["action"] == "alias_moved" else "removed"
        was = e["detail"].get("previous")
        why = f": {e['message']}" if e["message"] else ""
        via = f" (request {e['request_id']})" if e["request_id"] else ""
        click.echo(
            f"  {_shown(e['at'])}  {e['alias']} {to} (was {was or '-'}) by {e['actor']}{via}{why}"
        )


# -- policy and promotion ----------------------------------------------------------------------


@models_group.command("policy")
@click.argument("name")
@click.option("--alias", required=True, help="The alias the policy guards.")
@click.option("--approvers", type=count(low=0), required=True, help="Approvals needed (0: none).")
@errors
def models_policy(name: str, alias: str, approvers: int) -> None:
    """Require APPROVERS approvals before ALIAS of model NAME moves (an admin action)."""
    from pipetrail.governance import registry

    store = _workspace(name).store
    actor = _authorized(store, "admin", f"setting the policy of {name}@{alias}")
    registry.set_policy(store, name, alias, approvers, actor=actor)
    if approvers:
        click.echo(f"{name}@{alias} now moves only after {approvers} approval(s)")
    else:
        click.echo(f"{name}@{alias} now moves when promoted, with no approval")


@models_group.command("promote")
@click.argument("name")
@click.argument("version", type=count(low=1))
@click.option("--alias", required=True, help="The alias to point at VERSION.")
@click.option("--reason", default=None, help="Why (kept in the record).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@errors
def models_promote(name: str, version: int, alias: str, reason: str | None, as_json: bool) -> None:
    """Point ALIAS of model NAME at VERSION: at once, or by a request when ALIAS has a policy."""
    from pipetrail.governance import registry
    from pipetrail.governance.views import promotion_json

    store = _workspace(name).store
    done = registry.promote(store, name, version, alias, actor=_actor(store), reason=reason)
    if as_json:
        _echo_json(promotion_json(done))
        return
    if done.request is None:
        was = f" (was {done.previous})" if done.previous is not None else ""
        click.echo(f"{name}@{alias} now points at version {version}{was}")
        return
    r = done.request
    click.echo(
        f"Opened request {r.id}: {name}@{alias} → version {version}, waiting for {r.required} "
        f"approval(s); an approver runs: pipetrail models approve {r.id} --comment ..."
    )


@models_group.command("unalias")
@click.argument("name")
@click.option("--alias", required=True, help="The alias to remove.")
@click.option("--reason", default=None, help="Why (kept in the record).")
@errors
def models_unalias(name: str, alias: str, reason: str | None) -> None:
    """Remove ALIAS of model NAME; the versions stay (an alias with a policy: an admin action)."""
    from pipetrail.governance import registry

    store = _workspace(name).store
    if registry.guarded(store, name, alias):
        actor = _authorized(store, "admin", f"removing {name}@{alias}, which has a policy")
    else:
        actor = _actor(store)
    was = registry.remove_alias(store, name, alias, actor=actor, reason=reason)
    click.echo(f"Removed {name}@{alias} (it pointed at version {was})")


def _decide(
    request_id: int,
    decision: Literal["approved", "rejected", "withdrawn"],
    comment: str | None,
    as_json: bool,
) -> None:
    from pipetrail.governance import registry
    from pipetrail.governance.views import request_json

    try:
        store = _open().store
    except NothingRecorded:
        raise NotFoundError(f"no promotion request {request_id}: nothing is registered") from None
    verb = {"approved": "approve", "rejected": "reject", "withdrawn": "withdraw"}[decision]
    if decision == "withdrawn":
        actor = _actor(store)
    else:
        actor = _authorized(store, "approver", f"{verb} request {request_id}")
    done = registry.decide(store, request_id, decision, actor=actor, comment=comment)
    if as_json:
        _echo_json(request_json(done))
        return
    target = f"{done.model}@{done.alias} → version {done.version}"
    if done.status == "approved":
        click.echo(f"Approved request {done.id}: {target} (the alias moved)")
    elif done.status == "pending":
        approvals = sum(1 for d in done.decisions if d.decision == "approved")
        click.echo(
            f"Approved request {done.id} ({approvals} of {done.required}): {target} waits for "
            "more approvals"
        )
    else:
        click.echo(f"{done.status.capitalize()} request {done.id}: {target} (the alias stays)")


@models_group.command("approve")
@click.argument("request_id", metavar="REQUEST", type=count(low=1))
@click.option("--comment", default=None, help="Why (kept in the record).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@errors
def models_approve(request_id: int, comment: str | None, as_json: bool) -> None:
    """Approve promotion REQUEST (an approver who did not request it)."""
    _decide(request_id, "approved", comment, as_json)


@models_group.command("reject")
@click.argument("request_id", metavar="REQUEST", type=count(low=1))
@click.option("--comment", default=None, help="Why (kept in the record).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@errors
def models_reject(request_id: int, comment: str | None, as_json: bool) -> None:
    """Reject promotion REQUEST, which closes it (an approver who did not request it)."""
    _decide(request_id, "rejected", comment, as_json)


@models_group.command("withdraw")
@click.argument("request_id", metavar="REQUEST", type=count(low=1))
@click.option("--comment", default=None, help="Why (kept in the record).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@errors
def models_withdraw(request_id: int, comment: str | None, as_json: bool) -> None:
    """Withdraw your own pending promotion REQUEST."""
    _decide(request_id, "withdrawn", comment, as_json)


def _request_table(requests: list[dict[str, Any]]) -> None:
    _table(
        ("ID", "MODEL", "ALIAS", "VERSION", "STATUS", "APPROVALS", "REQUESTED", "BY", "REASON"),
        [
            (
                str(r["id"]),
                r["model"],
                r["alias"],
                str(r["version"]),
                r["status"],
                f"{r['approvals']}/{r['required']}",
                _shown(r["requested_at"]),
                r["requested_by"],
                r["reason"] or "-",
            )
            for r in requests
        ],
    )


@models_group.command("requests")
@click.option("--status", type=click.Choice(_STATUSES), default=None, help="Only these.")
@click.option("--model", "model", default=None, help="Only requests for this model.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@errors
def models_requests(status: str | None, model: str | None, as_json: bool) -> None:
    """Promotion requests, oldest first, with their approvals."""
    from pipetrail.governance.views import request_json

    workspace = _workspace(model)
    requests = (
        [request_json(r) for r in workspace.store.promotions(model=model, status=status)]
        if workspace
        else []
    )
    if as_json:
        _echo_json(requests)
        return
    if not requests:
        click.echo("No promotion requests" + (f" {status}" if status else "") + ".")
        return
    _request_table(requests)
