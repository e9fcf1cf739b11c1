"""Who may use the server: a token, a login cookie, CSRF tokens and cross-site checks.

Two modes, chosen by ``create_app(..., token=..., host=...)`` and by whether the store has
named tokens:

Local mode (no token, no named tokens)
    Allowed only when the server is bound to a loopback address (``127.0.0.1``, ``::1``,
    ``localhost``); ``create_app`` raises ConfigError otherwise. Every local process may read,
    as with the CLI. Two browser attacks remain, and are refused with 403:

    * cross-site actions: a page on another site (or another local server on another port)
      posting to ``http://127.0.0.1:8765/api/...``. An unsafe request (POST, PUT, PATCH,
      DELETE) is refused when ``Sec-Fetch-Site`` says ``cross-site`` or ``same-site``, or when
      its ``Origin`` (or, lacking one, its ``Referer``) names another host than the ``Host``
      header. A request that carries the page's ``X-Pipetrail-CSRF`` header passes: browsers
      never send custom headers cross-site without a CORS preflight, which this server never
      grants. Scripts (curl, httpx) send none of these headers and pass.
    * DNS rebinding: a browser request (one with ``Sec-Fetch-Site`` or ``Origin``) whose
      ``Host`` is not a loopback name or the bound address is refused, so a hostile name
      pointed at 127.0.0.1 cannot read the API from its own origin.

Token mode (``token`` given, or the store has named tokens; one is required off loopback)
    Every request needs ``Authorization: Bearer <token>`` or the login cookie; without either
    (or with a token that is unknown or revoked) the API answers 401 (JSON envelope,
    ``WWW-Authenticate: Bearer``) and pages redirect to ``/login?next=...``. ``GET /login``
    shows a form; ``POST /login`` with a valid token sets the cookie ``pipetrail_session``
    (HttpOnly, SameSite=Strict, Path=/, Secure over https, seven days). The cookie is
    stateless, an HMAC-SHA256 under a key derived from the server's token (a random key of this
    process when it has none: sessions then end with a restart): ``<issued>.<nonce>.<mac>`` for
    the server's token, ``<issued>.<token hash>.<nonce>.<mac>`` for a named token, so a named
    session dies with its token's revocation.

    Actions: a bearer request is not forgeable by another site and passes. A cookie request
    must also carry ``X-Pipetrail-CSRF`` equal to ``HMAC(key, "csrf:" + cookie)``, and pass the
    cross-site check above. ``/login`` and ``/logout`` are protected by the cross-site check.

Named tokens and roles
    Once the store has named tokens (``pipetrail tokens create``), each request acts as its
    token's user with its token's role, and a route its role does not allow (``api/roles.py``,
    the one table) is refused with 403 naming the role needed, before its handler runs: a
    refused action writes nothing. Tokens are looked up in the store on every request (an
    indexed read of their hash), so a revocation takes effect on the next request; whether
    the store has tokens at all is re-read at most once a second. A token's ``last_used_at``
    is written at most once a minute. The server's single token stays valid beside them: it
    acts as user ``admin`` with the admin role (unless it is itself a named token of the store:
    then it is that token, with its role). Local mode (no server token, no named tokens) lets
    every local process act, as the server's user, with every role.

Pages get the CSRF value as ``request.state.csrf_token`` (put it in
``<meta name="pipetrail-csrf" content="...">`` and send it back in the ``X-Pipetrail-CSRF``
header of every fetch that acts); ``request.state.auth`` says how the request was let in
(``"bearer"``, ``"cookie"`` or ``"local"``), ``request.state.actor`` and ``request.state.role``
whom it acts as (``actor`` is None in local mode: the server's user).

This module is the middleware that applies the rules; who a request is (tokens, the login
cookie, CSRF values) is ``api/policy.py``, where it comes from (loopback, cross-site) is
``api/origins.py``. Their public names are importable from here as before.
"""

from __future__ import annotations

import urllib.parse

import anyio.to_thread
from fastapi import Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from pipetrail.api.origins import cross_site, is_loopback
from pipetrail.api.policy import (
    CSRF_HEADER,
    SESSION_COOKIE,
    SESSION_MAX_AGE_S,
    TOUCH_EVERY_S,
    AccessPolicy,
    Identity,
)
from pipetrail.api.roles import PUBLIC, RouteIndex, least_role, route_index
from pipetrail.governance.identity import role_allows
from pipetrail.storage.metadata.governance import Role

__all__ = [
    "CSRF_HEADER",
    "SESSION_COOKIE",
    "SESSION_MAX_AGE_S",
    "TOUCH_EVERY_S",
    "AccessMiddleware",
    "AccessPolicy",
    "Identity",
    "cross_site",
    "is_loopback",
]

_UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _is_api(path: str) -> bool:
    return path == "/api" or path.startswith("/api/") or path == "/openapi.json"


class AccessMiddleware:
    """ASGI middleware applying an :class:`AccessPolicy` to every HTTP request."""

    def __init__(self, app: ASGIApp, policy: AccessPolicy) -> None:
        self.app = app
        self.policy = policy
        self._index: tuple[int, int, RouteIndex] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        # Named tokens are read from the store: off the event loop.
        refusal = await anyio.to_thread.run_sync(self._refusal, request)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _template(self, scope: Scope) -> str | None:
        app = scope.get("app")
        routes = getattr(app, "routes", None)
        if routes is None:
            return None
        key = (id(app), len(routes))
        if self._index is None or self._index[:2] != key:
            self._index = (*key, route_index(app))
        path = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root + "/"):
            path = path[len(root) :]
        return self._index[2].template(scope["method"], path)

    def _refusal(self, request: Request) -> Response | None:
        policy = self.policy
        path = request.url.path
        if policy.foreign_host(request):
            return _refuse(
                403,
                "ForbiddenError",
                f"host {request.headers.get('host', '')!r} is not this server's address; "
                "open it as http://127.0.0.1:<port>",
            )
        unsafe = request.method in _UNSAFE
        template = self._template(request.scope)
        need = least_role(request.method, template or "")
        if need == PUBLIC:
            if unsafe and cross_site(request):
                return _refuse(403, "ForbiddenError", "cross-site login or logout refused")
            _set_state(request, policy, policy.identify(request))
            return None
        identity = policy.identify(request)
        if identity is None:
            if _is_api(path) or request.method not in ("GET", "HEAD"):
                return _refuse(
                    401,
                    "AuthenticationError",
                    "this server needs a valid token: send 'Authorization: Bearer <token>' "
                    "(PIPETRAIL_TOKEN) or log in at /login; a revoked token is refused",
                    headers={"WWW-Authenticate": 'Bearer realm="pipetrail"'},
                )
            target = path + (f"?{request.url.query}" if request.url.query else "")
            query = urllib.parse.urlencode({"next": target})
            return RedirectResponse(f"/login?{query}", status_code=303)
        if unsafe and identity.kind != "bearer":
            has_csrf = policy.csrf_header_valid(request, identity)
            if identity.kind == "cookie" and not has_csrf:
                return _refuse(
                    403,
                    "ForbiddenError",
                    f"actions with the login cookie need the {CSRF_HEADER} header "
                    "(the dashboard sends it; scripts should use the bearer token)",
                )
            # A login session must also come from this site; in local mode the header alone
            # (which no other site can send) vouches for the request.
            checked = identity.kind == "cookie" or not has_csrf
            if checked and cross_site(request):
                return _refuse(
                    403, "ForbiddenError", "cross-site request refused: actions come from this site"
                )
        # A route nobody gave a role (it is not in api/roles.py) is for admins only.
        needed: Role = need or "admin"
        if not role_allows(identity.role, needed):
            route = f"{request.method} {template or path}"
            return _refuse(
                403,
                "ForbiddenError",
                f"{route} needs the {needed} role; token {identity.user!r} has the "
                f"{identity.role} role",
            )
        policy.touch(identity)
        _set_state(request, policy, identity)
        return None


def _set_state(request: Request, policy: AccessPolicy, identity: Identity | None) -> None:
    state = request.scope.setdefault("state", {})
    state["csrf_token"] = policy.csrf_token(identity.session if identity else None)
    state["auth"] = identity.kind if identity else None
    state["token_required"] = policy.token_required
    state["actor"] = identity.user if identity else None
    state["role"] = identity.role if identity else None


def _refuse(
    status: int, type_name: str, message: str, headers: dict[str, str] | None = None
) -> Response:
    return JSONResponse(
        {"error": {"type": type_name, "message": message}}, status_code=status, headers=headers
    )
