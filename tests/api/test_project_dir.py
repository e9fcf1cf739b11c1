"""The server imports pipeline files only from its project directory (trigger and retry)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from pipetrail.server import create_app
from pipetrail.workspace import Workspace
from tests.api.conftest import FAILING, chain_source, error_of, record, wait_status
from tests.conftest import FlowWriter

MARKER = "imported_outside.txt"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    folder = tmp_path / "project"
    folder.mkdir()
    return folder


@pytest.fixture
def outside(tmp_path: Path) -> FlowWriter:
    """Writes pipeline files next to the project, not in it; importing one leaves a marker."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    return FlowWriter(folder)


@pytest.fixture
def served(workspace: Workspace, project: Path) -> Iterator[TestClient]:
    app = create_app(workspace, project_dir=project)
    with TestClient(app) as test_client:
        yield test_client
    assert app.state.pipetrail.launcher.wait(30)


def _evil(folder: Path) -> str:
    # Top-level code: importing the file is enough to run it.
    return f"from pathlib import Path\nPath({str(folder / MARKER)!r}).write_text('ran')\n" + (
        chain_source(1)
    )


def test_files_in_the_project_run(served: TestClient, project: Path) -> None:
    inside = FlowWriter(project)(chain_source(1), name="chain_flow")
    for file in (str(inside), "chain_flow.py", "./sub/../chain_flow.py"):
        response = served.post(
            "/api/pipelines/chain/runs",
            json={"file": file, "parameters": {"pause": 0.0}, "executor": "inline"},
        )
        assert response.status_code == 201, (file, response.text)
        run = wait_status(served, response.json()["pipeline_run"]["id"], ("completed",))
        assert run["status"] == "completed"


def test_files_outside_are_refused_alike_and_never_imported(
    served: TestClient, project: Path, outside: FlowWriter, tmp_path: Path
) -> None:
    evil = outside(_evil(outside.folder), name="chain_flow")
    (project / "link.py").symlink_to(evil)
    (project / "linked_dir").symlink_to(outside.folder, target_is_directory=True)
    (project / "notes.txt").write_text(chain_source(1))
    (project / "folder.py").mkdir()
    messages = set()
    for file in (
        str(evil),
        "../elsewhere/chain_flow.py",
        "link.py",
        "linked_dir/chain_flow.py",
        str(project / "missing.py"),
        "missing.py",
        "/etc/passwd",
        "notes.txt",
        "folder.py",
        "~/x.py",
        "",
    ):
        error = error_of(
            served.post("/api/pipelines/chain/runs", json={"file": file, "executor": "inline"}),
            403,
        )
        assert error["type"] == "ForbiddenFileError"
        assert "is not a pipeline file under the server's project directory" in error["message"]
        messages.add(error["message"].replace(repr(file), "<file>"))
    # Missing and outside read the same: nothing tells which paths exist.
    assert len(messages) == 1, messages
    assert not (outside.folder / MARKER).exists()


def test_the_latest_runs_file_must_be_in_the_project_too(
    served: TestClient, workspace: Workspace, project: Path, outside: FlowWriter
) -> None:
    evil = outside(_evil(outside.folder), name="chain_flow")
    (outside.folder / MARKER).unlink(missing_ok=True)
    record(workspace, evil, {"pause": 0.0})  # recorded by the CLI, say, from elsewhere
    (outside.folder / MARKER).unlink()
    error = error_of(served.post("/api/pipelines/chain/runs", json={"executor": "inline"}), 403)
    assert "the latest run of 'chain'" in error["message"]
    assert not (outside.folder / MARKER).exists()


def test_retries_load_only_recorded_files_in_the_project(
    served: TestClient, workspace: Workspace, project: Path, outside: FlowWriter
) -> None:
    foreign = record(workspace, outside(FAILING, name="failing_flow"))
    home = record(workspace, FlowWriter(project)(FAILING, name="failing_flow"))
    assert foreign.status == home.status == "failed"
    error = error_of(served.post(f"/api/pipeline_runs/{foreign.id}/retry", json={}), 403)
    assert error["message"].startswith(f"cannot retry {foreign.pathspec}: its file")
    retried = served.post(
        f"/api/pipeline_runs/{home.id}/retry", json={"parameters": {"fail": False}}
    )
    assert retried.status_code == 201, retried.text
    wait_status(served, retried.json()["pipeline_run"]["id"], ("completed",))
    # In a batch, the foreign run fails alone, with the same answer.
    batch = served.post("/api/pipeline_runs/retry", json={"ids": [foreign.id]}).json()
    assert batch["succeeded"] == 0
    assert batch["results"][0]["error"]["type"] == "ForbiddenFileError"
