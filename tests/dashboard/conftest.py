"""Browser fixtures: the real server on a free loopback port, Debian's Chromium via Playwright.

No browser is downloaded: Playwright drives ``/usr/bin/chromium`` (``make test`` installs it).
Each test gets its own store (``sqlite_workspace``), server and browser context; one Chromium
serves the whole session. Screenshots go to ``test-output/screenshots/``.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI
from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright

from pipetrail.workspace import Workspace

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-output" / "screenshots"


def _app(workspace: Workspace, project_dir: Path) -> tuple[FastAPI, bool]:
    """The real server when the API is there; else the dashboard alone (actions skipped)."""
    try:
        from pipetrail.server import create_app
    except ImportError:  # pragma: no cover - only while the API is being written
        from pipetrail.dashboard import create_router

        app = FastAPI()
        app.include_router(create_router(workspace))
        return app, False
    return create_app(workspace, project_dir=project_dir), True


@dataclass
class LiveServer:
    """A uvicorn server in a thread of this process, on its own socket."""

    url: str
    workspace: Workspace
    has_api: bool
    _server: uvicorn.Server = field(repr=False)
    _thread: threading.Thread = field(repr=False)

    def require_api(self) -> None:
        if not self.has_api:  # pragma: no cover - only while the API is being written
            pytest.skip("pipetrail.server (the REST API) is not there yet")

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(15)


@pytest.fixture
def server(sqlite_workspace: Workspace, tmp_path: Path) -> Iterator[LiveServer]:
    # The server may import the pipeline files tests write (flow_file writes into tmp_path).
    app, has_api = _app(sqlite_workspace, tmp_path)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", ws="none", lifespan="on")
    instance = uvicorn.Server(config)
    thread = threading.Thread(
        target=instance.run, kwargs={"sockets": [sock]}, name="dashboard-test-server", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 10
    while not instance.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start within 10 s")
        time.sleep(0.02)
    live = LiveServer(f"http://127.0.0.1:{port}", sqlite_workspace, has_api, instance, thread)
    try:
        yield live
    finally:
        live.stop()
        sock.close()


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():  # pragma: no cover - make test installs it
        pytest.skip("browser tests need Debian's chromium: apt-get install -y chromium")
    with sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh browser context; any script error on a page fails the test."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(10_000)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(f"script error: {exc}"))

    def console(message: ConsoleMessage) -> None:
        # A missing asset of our own is a bug; failed API calls are the tests' business.
        if message.type == "error" and "/static/" in (message.location.get("url") or ""):
            errors.append(f"console: {message.text}")

    tab.on("console", console)
    try:
        yield tab
    finally:
        context.close()
    assert not errors, errors


@pytest.fixture
def screenshot() -> Callable[[Page, str], Path]:
    """``screenshot(page, "runs-list")`` saves the whole page as test-output/screenshots/…png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def take(page: Page, name: str, **options: Any) -> Path:
        path = SCREENSHOTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True, **options)
        return path

    return take
