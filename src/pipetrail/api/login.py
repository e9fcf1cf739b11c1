"""The login page: ``GET /login`` (the form), ``POST /login`` (a token in, the session cookie
out), ``POST /logout``. The rules of the cookie are in ``api/auth.py``."""

from __future__ import annotations

import asyncio
import html
import urllib.parse

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from pipetrail.api.auth import SESSION_COOKIE, SESSION_MAX_AGE_S, AccessPolicy

__all__ = ["login_router"]

_MAX_FORM_BYTES = 16 * 1024


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
        session = await asyncio.to_thread(policy.login, body.get("token", ""))
        if session is None:
            await asyncio.sleep(0.25)  # a little friction for guessing
            return HTMLResponse(_login_page(target, "That token is not right."), status_code=401)
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            session,
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
<label for="token">Your token (PIPETRAIL_TOKEN)</label>
<input id="token" name="token" type="password" autocomplete="current-password" autofocus required>
<input type="hidden" name="next" value="{html.escape(target, quote=True)}">
<button type="submit">Log in</button>
</form></body></html>"""
