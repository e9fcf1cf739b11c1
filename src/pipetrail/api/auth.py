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
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import secrets
import threading
import time
import urllib.parse
from dataclasses import dataclass

import anyio.to_thread
from fastapi import Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from pipetrail.api.roles import PUBLIC, RouteIndex, least_role, route_index
from pipetrail.errors import ConfigError, PipetrailError
from pipetrail.governance.identity import hash_token, role_allows
from pipetrail.governance.tokens import SERVER_TOKEN_USER
from pipetrail.storage.metadata.governance import Role, TokenRecord, TokenStore

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

SESSION_COOKIE = "pipetrail_session"
CSRF_HEADER = "X-Pipetrail-CSRF"
SESSION_MAX_AGE_S = 7 * 24 * 3600
#: A token's ``last_used_at`` is written at most this often (seconds) by one server.
TOUCH_EVERY_S = 60.0
_UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
_HASH = re.compile(r"^[0-9a-f]{64}$")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, maybe in brackets) is this machine only."""
    name = host.strip().strip("[]").lower()
    if name in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Identity:
    """How a request proves access, and whom it acts as."""

    kind: str  # "bearer" | "cookie" | "local"
    session: str | None = None
    #: The acting user: a named token's name, SERVER_TOKEN_USER, or None (local mode).
    user: str | None = None
    role: Role = "admin"
    token_id: int | None = None


class AccessPolicy:
    """The rules above, as checks on one request; holds the token and the derived key.

    Args:
        token: the server's access token, or None.
        host: the address the server binds.
        tokens: the store of named tokens (the workspace's store); None: the server's token
            only, as before named tokens.
        recheck_s: how long "the store has no tokens" is believed before it is read again.

    Raises:
        ConfigError: ``host`` is not a loopback address, no token is given and the store has
            no named tokens.
    """

    def __init__(
        self,
        token: str | None,
        host: str,
        tokens: TokenStore | None = None,
        *,
        recheck_s: float = 1.0,
    ) -> None:
        token = token.strip() if token else None
        self.tokens = tokens
        self._recheck_s = recheck_s
        self._named: bool | None = None
        self._named_read_at = 0.0
        if not token and not is_loopback(host) and not self.named:
            raise ConfigError(
                f"binding {host!r} exposes the server beyond this machine: set a token "
                "(PIPETRAIL_TOKEN or --token) or create named tokens (pipetrail tokens "
                "create), or bind 127.0.0.1"
            )
        self.token = token or None
        self.host = host
        if self.token is not None:
            self._key = hmac.new(
                self.token.encode(), b"pipetrail session key v1", hashlib.sha256
            ).digest()
        else:
            self._key = secrets.token_bytes(32)
        self._touch_lock = threading.Lock()
        self._touched: dict[int, float] = {}

    @property
    def named(self) -> bool:
        """Whether the store has named tokens (once it has, it keeps them: a revoked token
        stays a row, and the last admin token cannot be revoked)."""
        if self.tokens is None:
            return False
        if self._named:
            return True
        clock = time.monotonic()
        if self._named is None or clock - self._named_read_at >= self._recheck_s:
            self._named = self.tokens.has_tokens()
            self._named_read_at = clock
        return self._named

    @property
    def token_required(self) -> bool:
        """Whether requests must prove they know a token."""
        return self.token is not None or self.named

    def token_matches(self, given: str) -> bool:
        """Constant-time comparison of ``given`` with the server's token."""
        if self.token is None:
            return True
        return hmac.compare_digest(given.strip().encode(), self.token.encode())

    def _record(self, given: str) -> TokenRecord | None:
        """The named token ``given`` is (active or not), or None."""
        if not given.strip() or not self.named:
            return None
        assert self.tokens is not None  # named says so
        return self.tokens.token_by_hash(hash_token(given.strip()))

    def token_identity(self, given: str, kind: str = "bearer") -> Identity | None:
        """Whom ``given`` lets in: its named token (when active), else the server's token."""
        record = self._record(given)
        if record is not None:
            return _of(record, kind) if record.active else None
        if self.token is not None and self.token_matches(given):
            return Identity(kind, user=SERVER_TOKEN_USER, role="admin")
        return None

    def login(self, given: str) -> str | None:
        """A fresh login cookie value for token ``given``, or None when it lets nobody in."""
        identity = self.token_identity(given)
        if identity is None:
            return None
        if identity.token_id is None:
            return self.new_session()
        return self.new_session(token_hash=hash_token(given.strip()))

    def new_session(self, now: float | None = None, *, token_hash: str | None = None) -> str:
        """A fresh login cookie value: of the server's token, or of the named token whose
        hash is ``token_hash``."""
        issued = str(int(now if now is not None else time.time()))
        nonce = secrets.token_hex(16)
        body = f"{issued}.{nonce}" if token_hash is None else f"{issued}.{token_hash}.{nonce}"
        return f"{body}.{self._mac(body)}"

    def session_valid(self, value: str, now: float | None = None) -> bool:
        """Whether ``value`` is a login cookie this server issued, and not expired."""
        parts = value.split(".")
        if len(parts) not in (3, 4) or not parts[0].isdigit():
            return False
        if len(parts) == 3 and self.token is None:
            return False
        if len(parts) == 4 and not _HASH.match(parts[1]):
            return False
        body, mac = value.rsplit(".", 1)
        if not hmac.compare_digest(mac, self._mac(body)):
            return False
        age = (now if now is not None else time.time()) - int(parts[0])
        return 0 <= age <= SESSION_MAX_AGE_S

    def session_identity(self, value: str) -> Identity | None:
        """Whom a login cookie lets in: nobody once its named token is revoked."""
        if not self.session_valid(value):
            return None
        parts = value.split(".")
        if len(parts) == 3:
            return Identity("cookie", value, user=SERVER_TOKEN_USER, role="admin")
        if not self.named:
            return None
        assert self.tokens is not None
        record = self.tokens.token_by_hash(parts[1])
        if record is None or not record.active:
            return None
        return _of(record, "cookie", value)

    def csrf_token(self, session: str | None) -> str:
        """The CSRF value of a session (or of local mode, for ``session=None``)."""
        return self._mac("csrf:" + (session or "local"))

    def _mac(self, text: str) -> str:
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()

    def identify(self, request: Request) -> Identity | None:
        """How the request proves access, or None when it does not."""
        header = request.headers.get("authorization", "")
        scheme, _, credential = header.partition(" ")
        if scheme.lower() == "bearer" and credential.strip() and self.token_required:
            found = self.token_identity(credential)
            if found is not None:
                return found
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie:
            session = self.session_identity(cookie)
            if session is not None:
                return session
        if not self.token_required:
            return Identity("local")
        return None

    def touch(self, identity: Identity) -> None:
        """Note that a named token was used: its ``last_used_at``, at most once a minute."""
        if identity.token_id is None or self.tokens is None:
            return
        clock = time.monotonic()
        with self._touch_lock:
            last = self._touched.get(identity.token_id)
            if last is not None and clock - last < TOUCH_EVERY_S:
                return
            self._touched[identity.token_id] = clock
        try:
            self.tokens.touch_token(identity.token_id)
        except PipetrailError:
            return  # a store that cannot take the note now does not refuse the request

    def csrf_header_valid(self, request: Request, identity: Identity) -> bool:
        given = request.headers.get(CSRF_HEADER, "")
        return bool(given) and hmac.compare_digest(given, self.csrf_token(identity.session))

    def foreign_host(self, request: Request) -> bool:
        """A browser request addressed to a host name that is not this server's (rebinding)."""
        if self.token_required:
            return False
        browser = "sec-fetch-site" in request.headers or "origin" in request.headers
        if not browser:
            return False
        name = _host_name(request.headers.get("host", ""))
        return not (is_loopback(name) or name == self.host.strip("[]").lower())


def _of(record: TokenRecord, kind: str, session: str | None = None) -> Identity:
    return Identity(kind, session, user=record.name, role=record.role, token_id=record.id)


def cross_site(request: Request) -> bool:
    """Whether an action comes from another site, by Sec-Fetch-Site, Origin or Referer."""
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return True
    own = request.headers.get("host", "").lower()
    origin = request.headers.get("origin")
    if origin is not None:
        return origin == "null" or urllib.parse.urlsplit(origin).netloc.lower() != own
    referer = request.headers.get("referer")
    if referer is not None:
        return urllib.parse.urlsplit(referer).netloc.lower() != own
    return False


def _host_name(host_header: str) -> str:
    text = host_header.strip().lower()
    if text.startswith("["):
        return text[1:].split("]", 1)[0]
    return text.rsplit(":", 1)[0] if text.count(":") == 1 else text


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
