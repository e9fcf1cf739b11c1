"""Tests for source fingerprints, git capture and code archives."""

from __future__ import annotations

import functools
import importlib.util
import itertools
import shutil
import subprocess
import tempfile
import textwrap
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipetrail.core.hashing import digest_bytes
from pipetrail.errors import ArtifactError, UsageError
from pipetrail.provenance.code import (
    GitInfo,
    capture_git,
    code_archive,
    function_source,
    read_archive,
    source_fingerprint,
    strip_url_credentials,
)

_module_ids = itertools.count()


def _load(tmp_path: Path, source: str) -> ModuleType:
    name = f"fingerprint_sample_{next(_module_ids)}"
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fingerprint_of(tmp_path: Path, source: str, attribute: str = "process") -> str:
    func: Callable[..., Any] = getattr(_load(tmp_path, source), attribute)
    return source_fingerprint(func)


PLAIN = """
def process(values, factor=2):
    total = 0
    for v in values:
        total += v * factor
    return total
"""

REFORMATTED = '''
import math  # module-level code is not part of the function


def process(
    values,
    factor = 2,
):
    """Sum the scaled values.

    The docstring is documentation, not logic.
    """
    # keep a running total

    total = 0
    for v in values:   # every value
        total += (v * factor)

    return total
'''


# --- fingerprints ----------------------------------------------------------------------------


def test_fingerprint_ignores_comments_docstrings_and_formatting(tmp_path: Path) -> None:
    assert _fingerprint_of(tmp_path, PLAIN) == _fingerprint_of(tmp_path, REFORMATTED)


@pytest.mark.parametrize(
    "changed",
    [
        PLAIN.replace("v * factor", "v * factor + 1"),
        PLAIN.replace("factor=2", "factor=3"),
        PLAIN.replace("return total", "return -total"),
        "import functools\n\n@functools.cache" + PLAIN,
    ],
    ids=["expression", "default", "return", "decorator"],
)
def test_fingerprint_changes_when_logic_changes(tmp_path: Path, changed: str) -> None:
    assert _fingerprint_of(tmp_path, changed) != _fingerprint_of(tmp_path, PLAIN)


def test_fingerprint_of_a_method_ignores_its_indentation(tmp_path: Path) -> None:
    module = _load(
        tmp_path,
        """
        class Steps:
            def process(self, values):
                '''Docs.'''
                text = '''
        a multi-line string less indented than the method
        '''
                return [v for v in values if v], text
        """,
    )
    top_level = _load(
        tmp_path,
        """
        def process(self, values):
            text = '''
        a multi-line string less indented than the method
        '''
            return [v for v in values if v], text
        """,
    )

    assert source_fingerprint(module.Steps.process) == source_fingerprint(top_level.process)
    assert source_fingerprint(module.Steps().process) == source_fingerprint(module.Steps.process)


def test_function_source_is_the_dedented_raw_source(tmp_path: Path) -> None:
    module = _load(tmp_path, "class Steps:\n    def run(self):  # note\n        return 1\n")

    assert function_source(module.Steps.run) == "def run(self):  # note\n    return 1\n"


def test_decorated_and_partial_functions_are_unwrapped(tmp_path: Path) -> None:
    module = _load(
        tmp_path,
        """
        import functools

        def traced(func):
            @functools.wraps(func)
            def wrapper(*args):
                return func(*args)
            return wrapper

        def process(values, factor=2):
            return [v * factor for v in values]

        @traced
        def traced_process(values):
            return values
        """,
    )

    assert source_fingerprint(functools.partial(module.process, factor=3)) == source_fingerprint(
        module.process
    )
    assert function_source(functools.partial(module.process, [1])).startswith("def process(")
    assert function_source(module.traced_process).startswith("@traced\ndef traced_process(")


def test_callable_objects_are_fingerprinted_by_their_class(tmp_path: Path) -> None:
    module = _load(tmp_path, "class Scale:\n    def __call__(self, x):\n        return x * 2\n")

    assert source_fingerprint(module.Scale()) == source_fingerprint(module.Scale)


def test_lambdas_inside_a_multi_line_call_are_fingerprinted(tmp_path: Path) -> None:
    # inspect.getsource gives just "double=lambda x: x * factor)": a fragment that does not parse.
    template = """
    HANDLERS = dict(first=1,
                    double=lambda x: x * {factor}){comment}
    """
    bare = _load(tmp_path, template.format(factor=2, comment=""))
    commented = _load(tmp_path, template.format(factor=2, comment="  # doubles"))
    tripled = _load(tmp_path, template.format(factor=3, comment=""))

    assert source_fingerprint(bare.HANDLERS["double"]) == source_fingerprint(
        commented.HANDLERS["double"]
    )
    assert source_fingerprint(bare.HANDLERS["double"]) != source_fingerprint(
        tripled.HANDLERS["double"]
    )
    assert "lambda x: x * 2" in function_source(bare.HANDLERS["double"])


def test_builtins_get_a_placeholder_and_a_stable_fingerprint() -> None:
    assert function_source(len) == "<source unavailable: builtins.len>"
    assert source_fingerprint(len) == source_fingerprint(len)
    assert source_fingerprint(len) != source_fingerprint(abs)


def test_functions_without_source_are_fingerprinted_by_bytecode() -> None:
    namespace: dict[str, Any] = {}
    exec("def f(x):\n    return x + 1\n", namespace)
    exec("def g(x):\n    return x + 2\n", namespace)
    again: dict[str, Any] = {}
    exec("def f(x):\n    return x + 1\n", again)

    assert function_source(namespace["f"]) == "<source unavailable: f>"
    assert source_fingerprint(namespace["f"]) == source_fingerprint(again["f"])
    assert source_fingerprint(namespace["f"]) != source_fingerprint(namespace["g"])


# --- git -------------------------------------------------------------------------------------

requires_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def _git(repo: Path, *args: str) -> str:
    completed = subprocess.run(
        ["git", "-c", "user.email=test@example.com", "-c", "user.name=Test", *args],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
    )
    return completed.stdout.strip()


@pytest.fixture
def isolated_git(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # The machine's git configuration must not leak in, nor a repository above tmp_path.
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "no-gitconfig"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))


@pytest.fixture
def repo(tmp_path: Path, isolated_git: None) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    _git(root, "init", "-q", "--initial-branch=main")
    (root / "pipeline.py").write_text("print('hello')\n")
    _git(root, "add", "pipeline.py")
    _git(root, "commit", "-q", "-m", "first")
    return root


@requires_git
def test_capture_git_in_a_clean_repository(repo: Path) -> None:
    info = capture_git(repo)

    assert info == GitInfo(
        commit=_git(repo, "rev-parse", "HEAD"),
        branch="main",
        dirty=False,
        diff_hash=None,
        remote_url=None,
        repo_root=str(repo.resolve()),
    )


@requires_git
def test_capture_git_from_a_file_in_a_subdirectory(repo: Path) -> None:
    (repo / "pkg").mkdir()
    (repo / "pkg" / "steps.py").write_text("x = 1\n")
    _git(repo, "add", "pkg")
    _git(repo, "commit", "-q", "-m", "second")

    info = capture_git(repo / "pkg" / "steps.py")

    assert info is not None
    assert info.repo_root == str(repo.resolve())
    assert info.commit == _git(repo, "rev-parse", "HEAD")


@requires_git
def test_a_modified_file_makes_the_tree_dirty_with_a_diff_hash(repo: Path) -> None:
    (repo / "pipeline.py").write_text("print('changed')\n")

    first = capture_git(repo)
    second = capture_git(repo)
    (repo / "pipeline.py").write_text("print('changed again')\n")
    third = capture_git(repo)

    assert first is not None and second is not None and third is not None
    assert first.dirty
    assert first.diff_hash is not None
    assert first.diff_hash == second.diff_hash
    assert third.diff_hash != first.diff_hash
    assert first.commit == _git(repo, "rev-parse", "HEAD")


@requires_git
def test_an_untracked_file_makes_the_tree_dirty(repo: Path) -> None:
    (repo / "notes.txt").write_text("scratch\n")

    info = capture_git(repo)

    assert info is not None
    assert info.dirty
    assert info.diff_hash == digest_bytes(b"")  # untracked contents are not hashed


@requires_git
def test_a_detached_head_has_no_branch(repo: Path) -> None:
    _git(repo, "checkout", "-q", "--detach")

    info = capture_git(repo)

    assert info is not None
    assert info.branch is None
    assert info.commit == _git(repo, "rev-parse", "HEAD")


@requires_git
def test_a_repository_without_commits(tmp_path: Path, isolated_git: None) -> None:
    _git(tmp_path, "init", "-q", "--initial-branch=trunk")
    (tmp_path / "new.py").write_text("")

    info = capture_git(tmp_path)

    assert info is not None
    assert (info.commit, info.branch, info.dirty, info.diff_hash) == (None, "trunk", True, None)


@requires_git
def test_the_origin_url_is_recorded_without_credentials(repo: Path) -> None:
    _git(repo, "remote", "add", "origin", "https://alice:s3cret@example.com/team/pipes.git")

    info = capture_git(repo)

    assert info is not None
    assert info.remote_url == "https://example.com/team/pipes.git"


@requires_git
def test_git_info_round_trips(repo: Path) -> None:
    (repo / "pipeline.py").write_text("print('changed')\n")
    info = capture_git(repo)

    assert info is not None
    assert GitInfo.from_dict(info.to_dict()) == info


@requires_git
def test_outside_a_repository_there_is_no_git_info(tmp_path: Path, isolated_git: None) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()

    assert capture_git(plain) is None
    assert capture_git(tmp_path / "missing" / "file.py") is None


def test_without_git_installed_there_is_no_git_info(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))

    assert capture_git(Path(__file__)) is None


@pytest.mark.parametrize(
    ("url", "stripped"),
    [
        ("https://alice:s3cret@example.com/x.git", "https://example.com/x.git"),
        ("https://ghp_token@github.com/o/r.git", "https://github.com/o/r.git"),
        ("https://example.com:8443/x.git", "https://example.com:8443/x.git"),
        ("ssh://git:pw@example.com:2222/x.git", "ssh://git@example.com:2222/x.git"),
        ("ssh://git@example.com/x.git", "ssh://git@example.com/x.git"),
        ("git@github.com:o/r.git", "git@github.com:o/r.git"),
        ("/srv/git/r.git", "/srv/git/r.git"),
        ("file:///srv/git/r.git", "file:///srv/git/r.git"),
    ],
)
def test_strip_url_credentials(url: str, stripped: str) -> None:
    assert strip_url_credentials(url) == stripped


# --- archives --------------------------------------------------------------------------------


def _write_files(root: Path, contents: dict[str, str]) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for index, (name, text) in enumerate(contents.items()):
        path = root / f"file{index}"
        path.write_bytes(text.encode())
        files[name] = path
    return files


def test_archive_bytes_are_deterministic(tmp_path: Path) -> None:
    files = _write_files(tmp_path, {"pipeline.py": "a = 1\n", "steps/train.py": "b = 2\n"})

    first = code_archive(files)
    for offset, path in enumerate(files.values()):
        path.touch()
        path.chmod(0o600 + offset)
    second = code_archive(dict(reversed(files.items())))

    assert first == second
    assert read_archive(first) == {"pipeline.py": "a = 1\n", "steps/train.py": "b = 2\n"}
    assert list(read_archive(first)) == ["pipeline.py", "steps/train.py"]


def test_archive_changes_when_a_file_changes(tmp_path: Path) -> None:
    files = _write_files(tmp_path, {"pipeline.py": "a = 1\n"})
    before = code_archive(files)
    files["pipeline.py"].write_text("a = 2\n")

    assert code_archive(files) != before


def test_relative_paths_are_read_from_root(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "flow.py").write_text("flow = 1\n")

    data = code_archive({"flow.py": Path("src/flow.py")}, root=tmp_path)

    assert read_archive(data) == {"flow.py": "flow = 1\n"}


@pytest.mark.parametrize("name", ["", ".", "/etc/passwd", "../outside.py", "a/../../b.py"])
def test_archive_names_must_stay_inside_the_archive(tmp_path: Path, name: str) -> None:
    files = _write_files(tmp_path, {name: "x"})

    with pytest.raises(UsageError, match="relative path"):
        code_archive(files)


def test_duplicate_archive_names_are_rejected(tmp_path: Path) -> None:
    files = _write_files(tmp_path, {"a/b.py": "1", "a/./b.py": "2"})

    with pytest.raises(UsageError, match="given twice"):
        code_archive(files)


def test_an_unreadable_file_names_the_entry(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"'flow\.py'"):
        code_archive({"flow.py": tmp_path / "missing.py"})


def test_reading_bytes_that_are_not_an_archive_fails_clearly() -> None:
    with pytest.raises(ArtifactError, match="code_archive"):
        read_archive(b"not a tarball")


@given(
    st.dictionaries(
        st.from_regex(r"[a-z_]{1,8}(/[a-z_]{1,8}){0,2}\.py", fullmatch=True),
        st.text(max_size=200),
        max_size=6,
    )
)
def test_archive_round_trips_any_text(contents: dict[str, str]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        files = _write_files(Path(directory), contents)
        data = code_archive(files)

        assert read_archive(data) == contents
        assert code_archive(files) == data
