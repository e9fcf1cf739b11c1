"""Shared fixtures: a real store on SQLite and on PostgreSQL, one database per xdist worker."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from pipetrail.config import Settings
from pipetrail.workspace import Workspace
from tests.servers import S3Server, apply_env, restore_env

#: The PostgreSQL server the suite runs against (trust auth); CI has the same one.
PG_ADMIN_URL = os.environ.get(
    "PIPETRAIL_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
BACKENDS = ["sqlite", "postgresql"]


def _pg_database(worker: str) -> str:
    return f"pipetrail_test_{worker}_{os.getpid()}"


@pytest.fixture(scope="session")
def pg_url(worker_id: str) -> Iterator[str]:
    """A PostgreSQL database of this test worker's own, dropped at the end of the session."""
    name = _pg_database(worker_id)
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=BACKENDS)
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Settings for a fresh store: SQLite under tmp_path, or this worker's PostgreSQL database."""
    if request.param == "sqlite":
        return Settings.for_home(tmp_path / "home")
    url = request.getfixturevalue("pg_url")
    return Settings.for_home(tmp_path / "home", db_url=url)


@pytest.fixture
def workspace(settings: Settings) -> Iterator[Workspace]:
    ws = Workspace(settings)
    # PostgreSQL databases are shared by the tests of one worker: start each test empty.
    if ws.store.engine.dialect.name == "postgresql":
        ws.store.delete_everything()
    try:
        yield ws
    finally:
        ws.close()


@pytest.fixture
def sqlite_workspace(tmp_path: Path) -> Iterator[Workspace]:
    ws = Workspace(Settings.for_home(tmp_path / "home"))
    try:
        yield ws
    finally:
        ws.close()


@pytest.fixture
def flow_file(tmp_path: Path) -> FlowWriter:
    return FlowWriter(tmp_path)


class FlowWriter:
    """Writes pipeline files for tests (the process executor imports them by path)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def __call__(self, source: str, name: str | None = None) -> Path:
        path = self.folder / f"{name or 'flow_' + uuid.uuid4().hex[:8]}.py"
        path.write_text("import pipetrail as pt\n" + source)
        return path


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """moto's S3-compatible server on 127.0.0.1, one per test worker."""
    server = S3Server.start(tmp_path_factory.mktemp("s3"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3_server: S3Server) -> Iterator[dict[str, str]]:
    """The AWS variables that reach the test server, set in this process for the test."""
    previous = apply_env(s3_server.env)
    try:
        yield s3_server.env
    finally:
        restore_env(previous)


@pytest.fixture
def s3_artifacts(s3_server: S3Server, s3_env: dict[str, str]) -> str:
    """An artifact store URL in a fresh bucket of the test server (``s3://bucket/artifacts``)."""
    return f"s3://{s3_server.bucket()}/artifacts"
