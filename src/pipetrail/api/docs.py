"""``/docs`` (Swagger UI) and ``/redoc`` with their scripts served by this server, not a CDN.

The scripts are vendored from npm into the package (``web/build.mjs``, run by ``make``), next
to the dashboard's own. When they were not built, the pages say so; the API itself does not
depend on them.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, Response

from pipetrail.api.errors import ApiError

__all__ = ["ASSETS", "docs_router"]

_STATIC = Path(__file__).resolve().parent.parent / "dashboard" / "static"
#: The files the docs pages load, by the name they are served under ``/docs-assets/``.
ASSETS = {
    "swagger-ui-bundle.js": _STATIC / "vendor" / "swagger-ui-bundle.js",
    "swagger-ui.css": _STATIC / "vendor" / "swagger-ui.css",
    "redoc.standalone.js": _STATIC / "vendor" / "redoc.standalone.js",
    "favicon.svg": _STATIC / "favicon.svg",
}
_PREFIX = "/docs-assets"
_MISSING = (
    "<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head><body>"
    "<h1>{title}</h1><p>The scripts of this page are not built into this installation "
    "(<code>{name}</code> is missing): run <code>make</code> in a checkout, or read the "
    "spec at <a href='{spec}'>{spec}</a>.</p></body></html>"
)


def docs_router(openapi_url: str, title: str) -> APIRouter:
    """Routes for ``/docs``, ``/redoc`` and the files they load (``/docs-assets/{name}``)."""
    router = APIRouter(include_in_schema=False)

    def missing(page: str, names: tuple[str, ...]) -> HTMLResponse | None:
        absent = next((n for n in names if not ASSETS[n].is_file()), None)
        if absent is None:
            return None
        html = _MISSING.format(title=f"{title} - {page}", name=absent, spec=openapi_url)
        return HTMLResponse(html, status_code=200)

    @router.get("/docs")
    def swagger_ui() -> HTMLResponse:
        return missing("Swagger UI", ("swagger-ui-bundle.js", "swagger-ui.css")) or (
            get_swagger_ui_html(
                openapi_url=openapi_url,
                title=f"{title} - Swagger UI",
                swagger_js_url=f"{_PREFIX}/swagger-ui-bundle.js",
                swagger_css_url=f"{_PREFIX}/swagger-ui.css",
                swagger_favicon_url=f"{_PREFIX}/favicon.svg",
            )
        )

    @router.get("/redoc")
    def redoc() -> HTMLResponse:
        return missing("ReDoc", ("redoc.standalone.js",)) or get_redoc_html(
            openapi_url=openapi_url,
            title=f"{title} - ReDoc",
            redoc_js_url=f"{_PREFIX}/redoc.standalone.js",
            redoc_favicon_url=f"{_PREFIX}/favicon.svg",
            with_google_fonts=False,
        )

    @router.get(_PREFIX + "/{name}")
    def asset(name: str) -> Response:
        path = ASSETS.get(name)
        if path is None or not path.is_file():
            raise ApiError(404, "NotFoundError", f"no docs asset {name!r}")
        return FileResponse(
            path,
            headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"},
        )

    return router
