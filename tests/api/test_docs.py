"""/docs and /redoc work offline: every script, style and icon they load comes from this server."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

_URL = re.compile(
    r"""(?:src|href)\s*=\s*["']([^"']+)["']|url:\s*'([^']+)'|spec-url=["']([^"']+)["']"""
)


@pytest.mark.parametrize(
    ("page", "script"), [("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")]
)
def test_docs_pages_load_only_local_files(client: TestClient, page: str, script: str) -> None:
    response = client.get(page)
    assert response.status_code == 200, response.text
    html = response.text
    assert script in html
    urls = {next(g for g in m.groups() if g) for m in _URL.finditer(html)}
    assert urls, html
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), (page, url)
        assert client.get(url).status_code == 200, (page, url)
    assert "cdn" not in html.lower() and "fonts.googleapis" not in html


def test_docs_assets_are_a_fixed_list(client: TestClient) -> None:
    assert client.get("/docs-assets/swagger-ui.css").headers["content-type"].startswith("text/css")
    for name in ("manifest.json", "..%2F..%2Fserver.py", "uPlot.min.css"):
        assert client.get(f"/docs-assets/{name}").status_code == 404
