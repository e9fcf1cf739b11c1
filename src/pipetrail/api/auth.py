"""Who may use the server: a token, a login cookie, CSRF tokens and cross-site checks.

Two modes, chosen by ``create_app(..., token=..., host=...)``:

Local mode (no token)
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

Token mode (``token`` given; required off loopback)
    Every request needs ``Authorization: Bearer <token>`` or the login cookie; without either
    the API answers 401 (JSON envelope, ``WWW-Authenticate: Bearer``) and pages redirect to
    ``/login?next=...``. ``GET /login`` shows a form; ``POST /login`` with the right token sets
    the cookie ``pipetrail_session`` (HttpOnly, SameSite=Strict, Path=/, Secure over https,
    seven days). The cookie is stateless: ``<issued>.<nonce>.<mac>``, an HMAC-SHA256 under a key
    derived from the token, so it survives restarts and dies when the token changes.

    Actions: a bearer request is not forgeable by another site and passes. A cookie request
    must also carry ``X-Pipetrail-CSRF`` equal to ``HMAC(key, "csrf:" + cookie)``, and pass the
    cross-site check above. ``/login`` and ``/logout`` are protected by the cross-site check.

Pages get the CSRF value as ``request.state.csrf_token`` (put it in
``<meta name="pipetrail-csrf" content="...">`` and send it back in the ``X-Pipetrail-CSRF``
header of every fetch that acts), and ``request.state.auth`` says how the request was let in:
``"bearer"``, ``"cookie"`` or ``"local"``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import html
import ipaddress
import secrets
import time
import urllib.parse
from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from pipetrail.errors import ConfigError

__all__ = [
    "CSRF_HEADER",
    "SESSION_COOKIE",
    "SESSION_MAX_AGE_S",
    "AccessMiddleware",
    "AccessPolicy",
    "cross_site",
    "is_loopback",
    "login_router",
]

SESSION_COOKIE = "pipetrail_session"
CSRF_HEADER = "X-Pipetrail-CSRF"
SESSION_MAX_AGE_S = 7 * 24 * 3600
_UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_OPEN_PATHS = frozenset({"/login", "/logout"})
_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
_MAX_FORM_BYTES = 16 * 1024


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
class _Identity:
    kind: str  # "bearer" | "cookie" | "local"
    session: str | None = None


class AccessPolicy:
    """The rules above, as checks on one request; holds the token and the derived key.

    Args:
        token: the access token, or None for local mode.
        host: the address the server binds.

    Raises:
        ConfigError: ``host`` is not a loopback address and no token is given.
    """

    def __init__(self, token: str | None, host: str) -> None:
        token = token.strip() if token else None
        if not token and not is_loopback(host):
            raise ConfigError(
                f"binding {host!r} exposes the server beyond this machine: set a token "
                "(PIPETRAIL_TOKEN or --token), or bind 127.0.0.1"
            )
        self.token = token or None
        self.host = host
        if self.token is not None:
            self._key = hmac.new(
                self.token.encode(), b"pipetrail session key v1", hashlib.sha256
            ).digest()
        else:
            self._key = secrets.token_bytes(32)

    @property
    def token_required(self) -> bool:
        """Whether requests must prove they know the token."""
        return self.token is not None

    def token_matches(self, given: str) -> bool:
        """Constant-time comparison of ``given`` with the token."""
        if self.token is None:
            return True
        return hmac.compare_digest(given.strip().encode(), self.token.encode())

    def new_session(self, now: float | None = None) -> str:
        """A fresh login cookie value."""
        issued = str(int(now if now is not None else time.time()))
        nonce = secrets.token_hex(16)
        return f"{issued}.{nonce}.{self._mac(f'{issued}.{nonce}')}"

    def session_valid(self, value: str, now: float | None = None) -> bool:
        """Whether ``value`` is a login cookie this token issued, and not expired."""
        parts = value.split(".")
        if self.token is None or len(parts) != 3 or not parts[0].isdigit():
            return False
        issued, nonce, mac = parts
        if not hmac.compare_digest(mac, self._mac(f"{issued}.{nonce}")):
            return False
        age = (now if now is not None else time.time()) - int(issued)
        return 0 <= age <= SESSION_MAX_AGE_S

    def csrf_token(self, session: str | None) -> str:
        """The CSRF value of a session (or of local mode, for ``session=None``)."""
        return self._mac("csrf:" + (session or "local"))

    def _mac(self, text: str) -> str:
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()

    def identify(self, request: Request) -> _Identity | None:
        """How the request proves access, or None when it does not."""
        header = request.headers.get("authorization", "")
        scheme, _, credential = header.partition(" ")
        bearer = scheme.lower() == "bearer" and bool(credential) and self.token is not None
        if bearer and self.token_matches(credential):
            return _Identity("bearer")
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie and self.session_valid(cookie):
            return _Identity("cookie", cookie)
        if self.token is None:
            return _Identity("local")
        return None

    def csrf_header_valid(self, request: Request, identity: _Identity) -> bool:
        given = request.headers.get(CSRF_HEADER, "")
        return bool(given) and hmac.compare_digest(given, self.csrf_token(identity.session))

    def foreign_host(self, request: Request) -> bool:
        """A browser request addressed to a host name that is not this server's (rebinding)."""
        if self.token is not None:
            return False
        browser = "sec-fetch-site" in request.headers or "origin" in request.headers
        if not browser:
            return False
        name = _host_name(request.headers.get("host", ""))
        return not (is_loopback(name) or name == self.host.strip("[]").lower())


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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        refusal = self._refusal(request)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)

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
        identity = policy.identify(request)
        unsafe = request.method in _UNSAFE
        if path in _OPEN_PATHS:
            if unsafe and cross_site(request):
                return _refuse(403, "ForbiddenError", "cross-site login or logout refused")
            _set_state(request, policy, identity)
            return None
        if identity is None:
            if _is_api(path) or request.method not in ("GET", "HEAD"):
                return _refuse(
                    401,
                    "AuthenticationError",
                    "this server needs a token: send 'Authorization: Bearer <token>' "
                    "(PIPETRAIL_TOKEN) or log in at /login",
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
        _set_state(request, policy, identity)
        return None


def _set_state(request: Request, policy: AccessPolicy, identity: _Identity | None) -> None:
    state = request.scope.setdefault("state", {})
    state["csrf_token"] = policy.csrf_token(identity.session if identity else None)
    state["auth"] = identity.kind if identity else None
    state["token_required"] = policy.token_required


def _refuse(
    status: int, type_name: str, message: str, headers: dict[str, str] | None = None
) -> Response:
    return JSONResponse(
        {"error": {"type": type_name, "message": message}}, status_code=status, headers=headers
    )


# -- the login page -----------------------------------------------------------------------------


def login_router(policy: AccessPolicy) -> APIRouter:
    """``GET /login`` (the form), ``POST /login`` (sets the cookie), ``POST /logout``."""
    router = APIRouter(include_in_schema=False)

    @router.get("/login")
    def login_form(request: Request, next: str = "/") -> Response:
        if not policy.token_required:
            return RedirectResponse(_safe_next(next), status_code=303)
        return HTMLResponse(_login_page(_safe_next(next), None))

    @router.post("/login")
    async def login(request: Request) -> Response:
        body = await _read_form(request)
        target = _safe_next(body.get("next", "/"))
        if not policy.token_matches(body.get("token", "")):
            await asyncio.sleep(0.25)  # a little friction for guessing
            return HTMLResponse(_login_page(target, "That token is not right."), status_code=401)
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            policy.new_session(),
            max_age=SESSION_MAX_AGE_S,
            path="/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    @router.post("/logout")
    def logout() -> Response:
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
        return response

    return router


async def _read_form(request: Request) -> dict[str, str]:
    data = b""
    async for chunk in request.stream():
        data += chunk
        if len(data) > _MAX_FORM_BYTES:
            break
    fields = urllib.parse.parse_qs(data[:_MAX_FORM_BYTES].decode("utf-8", "replace"))
    return {k: v[0] for k, v in fields.items() if v}


def _safe_next(target: str) -> str:
    """Only a path on this server: never ``//evil.example`` or a full URL."""
    if (
        not target.startswith("/")
        or target.startswith("//")
        or target.startswith("/\\")
        or any(ord(c) < 32 for c in target)
    ):
        return "/"
    return target


def _login_page(target: str, problem: str | None) -> str:
    message = f"<p class='problem'>{html.escape(problem)}</p>" if problem else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>pipetrail: log in</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font-family: system-ui, sans-serif; background: #f5f6f8; display: grid;
       place-items: center; min-height: 100vh; margin: 0; color: #1d2330; }}
form {{ background: #fff; padding: 2rem 2.5rem; border-radius: 10px;
       box-shadow: 0 2px 12px rgba(0,0,0,.08); min-width: 20rem; }}
h1 {{ font-size: 1.25rem; margin: 0 0 1rem; }}
label {{ display: block; margin-bottom: .4rem; font-size: .9rem; }}
input[type=password] {{ width: 100%; box-sizing: border-box; padding: .5rem; font-size: 1rem;
       border: 1px solid #c8ccd4; border-radius: 6px; }}
button {{ margin-top: 1rem; padding: .5rem 1.2rem; font-size: 1rem; border: 0;
       border-radius: 6px; background: #2f5bd3; color: #fff; cursor: pointer; }}
.problem {{ color: #b42318; }}
</style></head>
<body><form method="post" action="/login">
<h1>pipetrail</h1>{message}
<label for="token">Access token (PIPETRAIL_TOKEN)</label>
<input id="token" name="token" type="password" autocomplete="current-password" autofocus required>
<input type="hidden" name="next" value="{html.escape(target, quote=True)}">
<button type="submit">Log in</button>
</form></body></html>"""
