"""The one table of who may do what: route (method and path template) -> the least role it needs.

Roles are ordered (``viewer`` < ``editor`` < ``approver`` < ``admin``) and each includes the ones
before it. A read (GET, HEAD, OPTIONS) needs ``viewer`` unless the table says otherwise; every
other route must be in the table (``tests/api/test_roles.py`` enumerates the app's routes and
fails on one that is not), and one missing anyway needs ``admin``: a route added without a
role is closed, not open. ``public`` routes need no token at all (logging in).

The access middleware (``api/auth.py``) finds the route a request goes to with the app's own
routing, so the role is the one of the handler that would run.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from pipetrail.storage.metadata.governance import Role

__all__ = [
    "GUARDED_ALIAS_ROLES",
    "PUBLIC",
    "READ_METHODS",
    "ROUTE_ROLES",
    "Need",
    "RouteIndex",
    "least_role",
    "route_index",
]

PUBLIC: Literal["public"] = "public"
Need = Role | Literal["public"]
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

ROUTE_ROLES: dict[tuple[str, str], Need] = {
    # Logging in and out: no token needed (the login form checks the one it is given).
    ("GET", "/login"): PUBLIC,
    ("POST", "/login"): PUBLIC,
    ("POST", "/logout"): PUBLIC,
    # Runs: trigger, retry, cancel (tags change over the CLI and Python only, for now).
    ("POST", "/api/pipelines/{name}/runs"): "editor",
    ("POST", "/api/pipeline_runs/retry"): "editor",
    ("POST", "/api/pipeline_runs/cancel"): "editor",
    ("POST", "/api/pipeline_runs/{run_id}/retry"): "editor",
    ("POST", "/api/pipeline_runs/{run_id}/cancel"): "editor",
    # Triggers: define, change, pause, resume, fire, delete (automation of runs).
    ("POST", "/api/triggers"): "editor",
    ("PATCH", "/api/triggers/{name:path}"): "editor",
    ("DELETE", "/api/triggers/{name:path}"): "editor",
    ("POST", "/api/triggers/{name:path}/pause"): "editor",
    ("POST", "/api/triggers/{name:path}/resume"): "editor",
    ("POST", "/api/triggers/{name:path}/runs"): "editor",
    # The model registry: register a version, ask for (or, without a policy, make) a promotion.
    ("POST", "/api/models/{name}/versions"): "editor",
    ("POST", "/api/models/{name}/promotions"): "editor",
    # Removing an alias: an editor's, unless it has a policy (GUARDED_ALIAS_ROLES).
    ("DELETE", "/api/models/{name}/aliases/{alias}"): "editor",
    ("POST", "/api/promotions/{request_id}/withdraw"): "editor",
    # Deciding a promotion.
    ("POST", "/api/promotions/{request_id}/approve"): "approver",
    ("POST", "/api/promotions/{request_id}/reject"): "approver",
    # Administration: policies, tokens, deletion, garbage collection.
    ("PUT", "/api/models/{name}/policies/{alias}"): "admin",
    ("GET", "/api/tokens"): "admin",
    ("POST", "/api/tokens"): "admin",
    ("DELETE", "/api/tokens/{name}"): "admin",
    ("DELETE", "/api/runs/{run_id}"): "admin",
    ("POST", "/api/runs/delete"): "admin",
    ("POST", "/api/gc"): "admin",
}


#: Routes that need more than their entry above when the alias they name has a policy (moving
#: or removing it is then governed): the handler checks this once it knows the alias. Moving a
#: guarded alias goes through a promotion request instead, so only removal is here.
GUARDED_ALIAS_ROLES: dict[tuple[str, str], Role] = {
    ("DELETE", "/api/models/{name}/aliases/{alias}"): "admin",
}


def least_role(method: str, template: str) -> Need | None:
    """The least role route ``method template`` needs: its entry in :data:`ROUTE_ROLES`, else
    ``viewer`` for a read, else None (a route nobody gave a role: the middleware asks admin)."""
    method = method.upper()
    need = ROUTE_ROLES.get((method, template))
    if need is None and method == "HEAD":
        need = ROUTE_ROLES.get(("GET", template))
    if need is not None:
        return need
    return "viewer" if method in READ_METHODS else None


@dataclass(frozen=True)
class _Route:
    regex: re.Pattern[str]
    methods: frozenset[str] | None  # None: any method (a mount)
    template: str


class RouteIndex:
    """The app's routes in matching order, to find the template a request path goes to.

    Args:
        routes: ``(methods, path_regex, template)`` of each route, in the order the app
            matches them (``fastapi.routing.iter_route_contexts(app.routes)``).
    """

    def __init__(self, routes: Iterable[tuple[frozenset[str] | None, re.Pattern[str], str]]):
        self._routes = [_Route(regex, methods, template) for methods, regex, template in routes]

    def routes(self) -> list[tuple[frozenset[str] | None, str]]:
        """``(methods, template)`` of every route, in matching order."""
        return [(r.methods, r.template) for r in self._routes]

    def template(self, method: str, path: str) -> str | None:
        """The template of the route that serves ``method path``; for a path some route has
        under another method only (a 405), that route's; None for no route at all (a 404)."""
        fallback = None
        for route in self._routes:
            if not route.regex.match(path):
                continue
            if route.methods is None or method in route.methods:
                return route.template
            if method == "HEAD" and "GET" in route.methods:
                return route.template
            fallback = fallback or route.template
        return fallback


def route_index(app: Any) -> RouteIndex:
    """The routes of ``app`` (a FastAPI or Starlette app) in the order it matches them."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # FastAPI before included routers were kept lazily: routes are flat
        routes: Any = app.routes
    else:
        routes = iter_route_contexts(app.routes)
    rows = []
    for route in routes:
        regex, path = getattr(route, "path_regex", None), getattr(route, "path", None)
        if regex is None or path is None:
            continue
        methods = getattr(route, "methods", None)
        rows.append((frozenset(methods) if methods else None, regex, path))
    return RouteIndex(rows)
