"""current_git reuses a capture while the tree is unchanged, and sees every change that matters."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipetrail.provenance import git_state
from pipetrail.provenance.code import GitInfo, capture_git
from pipetrail.provenance.git_state import current_git
from tests.provenance.test_code import _git, isolated_git, repo, requires_git

__all__ = ["isolated_git", "repo"]  # fixtures, used by name


@requires_git
def test_an_unchanged_tree_is_asked_once(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []

    def counting(path: Path) -> GitInfo | None:
        calls.append(path)
        return capture_git(path)

    monkeypatch.setattr(git_state, "capture_git", counting)
    first = current_git(repo)
    second = current_git(repo)
    assert first == second == capture_git(repo)
    assert first is not None and not first.dirty
    assert len(calls) == 1


@requires_git
def test_every_change_to_the_tree_is_seen(repo: Path) -> None:
    clean = current_git(repo)
    assert clean is not None and not clean.dirty
    (repo / "pipeline.py").write_text("print('changed')\n")
    edited = current_git(repo)
    assert edited == capture_git(repo)
    assert edited is not None and edited.dirty and edited.diff_hash

    _git(repo, "commit", "-q", "-am", "second")
    committed = current_git(repo)
    assert committed == capture_git(repo)
    assert committed is not None and not committed.dirty and committed.commit != clean.commit

    (repo / "pkg").mkdir()
    (repo / "pkg" / "new.py").write_text("x = 1\n")
    untracked = current_git(repo)
    assert untracked == capture_git(repo)
    assert untracked is not None and untracked.dirty

    (repo / "pkg" / "new.py").unlink()
    (repo / "pkg").rmdir()
    again = current_git(repo)
    assert again is not None and not again.dirty

    _git(repo, "checkout", "-q", "-b", "feature")
    branched = current_git(repo)
    assert branched is not None and branched.branch == "feature"


def test_outside_a_repository_there_is_no_git_state(tmp_path: Path, isolated_git: None) -> None:
    assert current_git(tmp_path) is None


@requires_git
def test_a_folder_that_becomes_a_repository_is_seen(tmp_path: Path, isolated_git: None) -> None:
    folder = tmp_path / "work"
    folder.mkdir()
    assert current_git(folder) is None
    _git(folder, "init", "-q", "--initial-branch=main")
    info = current_git(folder)
    assert info is not None and info.branch == "main"
