"""pipetrail errors → HTTP status and the JSON error envelope: the one table, and its handlers.

Every error response has the body ``{"error": {"type": ..., "message": ..., "details": ...}}``.
Bad input is a 4xx naming what was wrong; a 5xx means the server or its store failed.
Paths outside ``/api`` (dashboard pages) get the same status with a small HTML page instead.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Sequence
from typing import Any, cast

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from pipetrail.api.schemas import ErrorEnvelope
from pipetrail.errors import (
    ArtifactError,
    ConfigError,
    DefinitionError,
    IntegrityError,
    InvalidTransitionError,
    NotFoundError,
    ParameterError,
    PipelineLoadError,
    PipetrailError,
    StoreError,
    UsageError,
)

__all__ = [
    "ERROR_RESPONSES",
    "STATUS_OF",
    "ApiError",
    "ForbiddenFileError",
    "error_body",
    "error_response",
    "install_error_handlers",
    "status_of",
]

log = logging.getLogger("pipetrail.api")


class ForbiddenFileError(UsageError):
    """A pipeline file the server will not import: not a ``.py`` file under its project
    directory (missing files get the same answer). Only the server raises it."""


#: The one table: the most specific class in an exception's MRO decides its status.
STATUS_OF: dict[type[BaseException], int] = {
    NotFoundError: 404,
    ForbiddenFileError: 403,
    InvalidTransitionError: 409,
    ParameterError: 422,
    DefinitionError: 422,
    PipelineLoadError: 422,
    ConfigError: 400,
    UsageError: 422,
    StoreError: 503,
    IntegrityError: 500,
    ArtifactError: 503,
    PipetrailError: 500,
}

#: Names used in the envelope for errors raised by the HTTP layer itself.
_HTTP_TYPES = {
    400: "BadRequestError",
    401: "AuthenticationError",
    403: "ForbiddenError",
    404: "NotFoundError",
    405: "MethodNotAllowedError",
    409: "ConflictError",
    415: "UnsupportedMediaTypeError",
    422: "ValidationError",
}

_ENVELOPE: dict[str, Any] = {"model": ErrorEnvelope}

#: Documented error responses of every API route (the OpenAPI spec lists them).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {**_ENVELOPE, "description": "A setting or request that cannot be used."},
    401: {**_ENVELOPE, "description": "No valid token or login cookie."},
    403: {
        **_ENVELOPE,
        "description": "A cross-site or unprotected action, or a pipeline file outside the "
        "server's project directory, was refused.",
    },
    404: {**_ENVELOPE, "description": "No such pipeline, run, block run or artifact."},
    409: {**_ENVELOPE, "description": "The run is not in a status that allows this."},
    422: {**_ENVELOPE, "description": "Invalid parameters, filter or body."},
    503: {**_ENVELOPE, "description": "The metadata or artifact store is unavailable."},
}


class ApiError(Exception):
    """An error found by the API layer itself (a bad cursor), with its status and type name."""

    def __init__(self, status: int, type_name: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.type_name = type_name
        self.message = message


def status_of(exc: BaseException) -> int:
    """The HTTP status of a pipetrail error, from :data:`STATUS_OF`."""
    for kind in type(exc).__mro__:
        if kind in STATUS_OF:
            return STATUS_OF[kind]
    return 500


def error_body(exc: BaseException) -> dict[str, Any]:
    """The ``error`` object for ``exc``: its class name and message."""
    if isinstance(exc, ApiError):
        return {"type": exc.type_name, "message": exc.message}
    return {"type": type(exc).__name__, "message": str(exc) or type(exc).__name__}


def error_response(
    request: Request,
    status: int,
    type_name: str,
    message: str,
    *,
    details: Sequence[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """The envelope as JSON for the API, or a minimal HTML page for a browser on a page path."""
    if _wants_html(request):
        page = (
            "<!doctype html><html><head><meta charset='utf-8'><title>pipetrail: "
            f"{status}</title></head><body><h1>{status} {html.escape(type_name)}</h1>"
            f"<p>{html.escape(message)}</p><p><a href='/'>pipetrail</a></p></body></html>"
        )
        return HTMLResponse(page, status_code=status, headers=headers)
    body: dict[str, Any] = {"type": type_name, "message": message}
    if details is not None:
        body["details"] = list(details)
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def _wants_html(request: Request) -> bool:
    path = request.url.path
    if path.startswith("/api/") or path == "/api" or path == "/openapi.json":
        return False
    return "text/html" in request.headers.get("accept", "")


def install_error_handlers(app: FastAPI) -> None:
    """Route pipetrail errors, HTTP errors and validation errors through the envelope."""

    async def on_pipetrail(request: Request, exc: Exception) -> Response:
        status = status_of(exc)
        if status >= 500:
            log.error("%s %s failed: %s", request.method, request.url.path, exc, exc_info=exc)
        body = error_body(exc)
        return error_response(request, status, body["type"], body["message"])

    async def on_api(request: Request, exc: Exception) -> Response:
        error = cast(ApiError, exc)
        return error_response(request, error.status, error.type_name, error.message)

    async def on_http(request: Request, exc: Exception) -> Response:
        error = cast(StarletteHTTPException, exc)
        type_name = _HTTP_TYPES.get(error.status_code, "HTTPError")
        message = error.detail if isinstance(error.detail, str) else str(error.detail)
        return error_response(
            request, error.status_code, type_name, message, headers=dict(error.headers or {})
        )

    async def on_validation(request: Request, exc: Exception) -> Response:
        details = [_detail(e) for e in cast(RequestValidationError, exc).errors()]
        summary = "; ".join(f"{'.'.join(str(p) for p in d['loc'])}: {d['msg']}" for d in details)
        return error_response(
            request, 422, "ValidationError", f"invalid request: {summary}", details=details
        )

    app.add_exception_handler(PipetrailError, on_pipetrail)
    app.add_exception_handler(ApiError, on_api)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_validation)


def _detail(error: Any) -> dict[str, Any]:
    loc = [p if isinstance(p, int) else str(p) for p in error.get("loc", ())]
    return {"loc": loc, "msg": str(error.get("msg", "")), "type": str(error.get("type", ""))}
