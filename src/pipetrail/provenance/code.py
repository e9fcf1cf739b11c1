"""Code provenance: source fingerprints, git state and deterministic code archives."""

from __future__ import annotations

import contextlib
import functools
import gzip
import inspect
import io
import os
import posixpath
import re
import subprocess
import tarfile
import textwrap
import threading
import time
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pipetrail.core.fingerprint import fingerprint_source
from pipetrail.core.hashing import digest_json, new_hasher
from pipetrail.errors import ArtifactError, UsageError

__all__ = [
    "GIT_TIMEOUT_S",
    "GitInfo",
    "capture_git",
    "code_archive",
    "function_source",
    "read_archive",
    "source_fingerprint",
    "strip_url_credentials",
]

#: Longest any one git command may run before the git facts are recorded as absent.
GIT_TIMEOUT_S = 10.0

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_SSH_SCHEMES = frozenset({"ssh", "git+ssh", "ssh+git"})
# Pinned so the diff bytes, and so the hash, do not depend on the user's git configuration.
_DIFF_ARGS = (
    "diff",
    "HEAD",
    "--binary",
    "--full-index",
    "--no-color",
    "--no-ext-diff",
    "--no-textconv",
    "--no-renames",
    "--submodule=short",
    "--src-prefix=a/",
    "--dst-prefix=b/",
)


# --- source fingerprints ---------------------------------------------------------------------


def function_source(func: Callable[..., Any]) -> str:
    """The dedented source of ``func``, or a placeholder when Python has none.

    ``functools.partial`` objects and ``functools.wraps`` decorators are unwrapped first. Builtins,
    functions typed into a REPL and other objects without source give
    ``"<source unavailable: module.qualname>"`` instead of raising.

    Args:
        func: A function, method, class, partial or callable object.

    Returns:
        The source text, or the placeholder.
    """
    target = _unwrap(func)
    source = _raw_source(target)
    if source is None:
        return f"<source unavailable: {_describe(target)}>"
    return textwrap.dedent(source)


def source_fingerprint(func: Callable[..., Any]) -> str:
    """A digest of what ``func`` does, insensitive to comments, docstrings and formatting.

    The source is parsed, docstrings are removed and the tree is unparsed again, so comments,
    blank lines, indentation, quoting and line wrapping do not change the digest while any change
    to names, decorators, arguments or statements does. Without source (builtins, REPL
    functions) the digest covers the function's name and, where present, its bytecode.

    Args:
        func: A function, method, class, partial or callable object.

    Returns:
        A hex digest from :func:`pipetrail.core.hashing.digest_bytes`.
    """
    target = _unwrap(func)
    source = _raw_source(target)
    if source is None:
        code = getattr(target, "__code__", None)
        return digest_json(
            {
                "unavailable": _describe(target),
                "code": _code_identity(code) if isinstance(code, types.CodeType) else None,
            }
        )
    return fingerprint_source(source)


def _unwrap(func: Any) -> Any:
    target = func
    while isinstance(target, functools.partial):
        target = target.func
    # A __wrapped__ cycle raises ValueError: fingerprint the outermost object then.
    with contextlib.suppress(ValueError):
        target = inspect.unwrap(target)
    if not (inspect.isroutine(target) or inspect.isclass(target)) and callable(target):
        return type(target)
    return target


def _raw_source(target: Any) -> str | None:
    try:
        return inspect.getsource(target)
    except (OSError, TypeError, IndexError):
        return None


def _describe(target: Any) -> str:
    name = getattr(target, "__qualname__", None) or getattr(target, "__name__", None)
    if isinstance(name, str):
        module = getattr(target, "__module__", None)
        return f"{module}.{name}" if isinstance(module, str) else name
    return _ADDRESS.sub("", repr(target))


def _code_identity(code: types.CodeType) -> dict[str, Any]:
    return {
        "bytecode": code.co_code.hex(),
        "names": list(code.co_names),
        "varnames": list(code.co_varnames),
        "consts": [_const_identity(const) for const in code.co_consts],
    }


def _const_identity(const: object) -> Any:
    if isinstance(const, types.CodeType):
        return _code_identity(const)
    if isinstance(const, tuple):
        return [_const_identity(item) for item in const]
    if isinstance(const, frozenset):  # iteration order depends on the per-process hash seed
        return sorted(repr(item) for item in const)
    return repr(const)


# --- git -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GitInfo:
    """The git state of the working tree a run's code came from.

    Attributes:
        commit: Full id of ``HEAD``; ``None`` before the first commit.
        branch: Current branch; ``None`` on a detached ``HEAD``.
        dirty: Whether ``git status --porcelain`` lists anything (untracked files count).
        diff_hash: Digest of ``git diff HEAD`` (tracked changes only) when dirty and there is a
            commit; ``None`` otherwise.
        remote_url: URL of ``origin`` with credentials removed; ``None`` without an ``origin``.
        repo_root: Absolute path of the working tree's top-level directory.
    """

    commit: str | None
    branch: str | None
    dirty: bool
    diff_hash: str | None
    remote_url: str | None
    repo_root: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form of the git state."""
        return {
            "commit": self.commit,
            "branch": self.branch,
            "dirty": self.dirty,
            "diff_hash": self.diff_hash,
            "remote_url": self.remote_url,
            "repo_root": self.repo_root,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GitInfo:
        """Rebuild git state from :meth:`to_dict` output."""

        def optional(key: str) -> str | None:
            value = data.get(key)
            return None if value is None else str(value)

        return cls(
            commit=optional("commit"),
            branch=optional("branch"),
            dirty=bool(data["dirty"]),
            diff_hash=optional("diff_hash"),
            remote_url=optional("remote_url"),
            repo_root=str(data["repo_root"]),
        )


def capture_git(path: str | os.PathLike[str]) -> GitInfo | None:
    """Capture the git state of the repository containing ``path``.

    Runs three git commands concurrently (top level, ``status --porcelain=v2 --branch``, origin
    URL) and a fourth, ``git diff HEAD``, only when the tree is dirty. Uses
    ``GIT_OPTIONAL_LOCKS=0`` so it never contends with the user's own git commands.

    Args:
        path: A file or directory inside the working tree.

    Returns:
        The git state, or ``None`` when ``path`` is not in a git working tree, git is not
        installed, or a git command fails or exceeds :data:`GIT_TIMEOUT_S`. Never raises.
    """
    try:
        start = Path(path)
        directory = start if start.is_dir() else start.parent
        if not directory.is_dir():
            return None
    except (OSError, ValueError):
        return None
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0", "GIT_TERMINAL_PROMPT": "0"}
    deadline = time.monotonic() + GIT_TIMEOUT_S
    commands = (
        ("rev-parse", "--show-toplevel"),
        ("status", "--porcelain=v2", "--branch", "--untracked-files=normal"),
        ("config", "--get", "remote.origin.url"),
    )
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for command in commands:
            processes.append(_spawn_git(directory, env, *command))
    except OSError:  # git is not installed
        for process in processes:
            process.kill()
            process.communicate()
        return None
    root_out, status_out, remote_out = (_finish(p, deadline) for p in processes)
    if root_out is None or status_out is None:
        return None
    commit, branch, dirty = _parse_status(status_out)
    diff_hash = _hash_diff(directory, env, deadline) if dirty and commit is not None else None
    remote_url = remote_out.strip() if remote_out else ""
    return GitInfo(
        commit=commit,
        branch=branch,
        dirty=dirty,
        diff_hash=diff_hash,
        remote_url=strip_url_credentials(remote_url) if remote_url else None,
        repo_root=root_out.strip(),
    )


def strip_url_credentials(url: str) -> str:
    """``url`` without a password or token.

    ``https://user:token@host/x.git`` becomes ``https://host/x.git``; an ssh user name such as
    ``git`` in ``ssh://git@host/x.git`` or ``git@host:x.git`` is kept, its password is not.

    Args:
        url: A git remote URL or local path.

    Returns:
        The URL with the secret part of its user information removed.
    """
    parts = urlsplit(url)
    if not parts.scheme or "@" not in parts.netloc:
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    if parts.scheme.lower() in _SSH_SCHEMES and userinfo:
        host = f"{userinfo.partition(':')[0]}@{host}"
    return urlunsplit(parts._replace(netloc=host))


def _spawn_git(directory: Path, env: Mapping[str, str], *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["git", "-C", str(directory), *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=dict(env),
    )


def _finish(process: subprocess.Popen[bytes], deadline: float) -> str | None:
    try:
        out, _ = process.communicate(timeout=max(deadline - time.monotonic(), 0.0))
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        return None
    if process.returncode != 0:
        return None
    return out.decode("utf-8", errors="surrogateescape")


def _parse_status(output: str) -> tuple[str | None, str | None, bool]:
    commit = branch = None
    dirty = False
    for line in output.splitlines():
        if line.startswith("# branch.oid "):
            oid = line.removeprefix("# branch.oid ").strip()
            commit = None if oid == "(initial)" else oid
        elif line.startswith("# branch.head "):
            head = line.removeprefix("# branch.head ").strip()
            branch = None if head == "(detached)" else head
        elif line and not line.startswith("#"):
            dirty = True
    return commit, branch, dirty


def _hash_diff(directory: Path, env: Mapping[str, str], deadline: float) -> str | None:
    # Streamed into the hasher: a dirty tree with large binaries must not be held in memory.
    try:
        process = _spawn_git(directory, env, *_DIFF_ARGS)
    except OSError:
        return None
    watchdog = threading.Timer(max(deadline - time.monotonic(), 0.0), process.kill)
    watchdog.daemon = True
    watchdog.start()
    hasher = new_hasher()
    stdout = process.stdout
    try:
        while stdout is not None and (chunk := stdout.read(1 << 16)):
            hasher.update(chunk)
        returncode = process.wait()
    finally:
        watchdog.cancel()
        if stdout is not None:
            stdout.close()
    return str(hasher.hexdigest()) if returncode == 0 else None


# --- code archives ---------------------------------------------------------------------------


def code_archive(
    files: Mapping[str, str | os.PathLike[str]], root: str | os.PathLike[str] | None = None
) -> bytes:
    """A deterministic ``tar.gz`` of ``files``: the same contents always give the same bytes.

    Entries are sorted by name and carry a zero mtime, mode ``0644``, uid/gid ``0`` and no owner
    names; the gzip header has no file name or timestamp.

    Args:
        files: Archive name (a relative POSIX path such as ``"pipelines/train.py"``) → file to read.
        root: Directory that relative file paths are read from; defaults to the working directory.

    Returns:
        The archive bytes.

    Raises:
        UsageError: An archive name that is empty, absolute or climbs out with ``..``, or a file
            that cannot be read.
    """
    base = Path(root) if root is not None else Path.cwd()
    entries = sorted((_check_arcname(name), base / Path(source)) for name, source in files.items())
    names = [name for name, _ in entries]
    if len(set(names)) != len(names):
        duplicate = next(name for name in names if names.count(name) > 1)
        raise UsageError(
            f"Archive name {duplicate!r} is given twice (after normalization); "
            "give each file a distinct archive name."
        )
    buffer = io.BytesIO()
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=9) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT, encoding="utf-8") as tar,
    ):
        for name, source in entries:
            try:
                data = source.read_bytes()
            except OSError as error:
                raise UsageError(
                    f"Cannot read {str(source)!r} for archive entry {name!r}: {error.strerror}; "
                    "check that the file exists and is readable."
                ) from error
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def read_archive(data: bytes) -> dict[str, str]:
    """The files in an archive made by :func:`code_archive`, as archive name → text.

    Args:
        data: Archive bytes.

    Returns:
        Each regular file decoded as UTF-8 (undecodable bytes become U+FFFD), in archive order.

    Raises:
        ArtifactError: ``data`` is not a gzip-compressed tar archive.
    """
    contents: dict[str, str] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz", encoding="utf-8") as tar:
            for member in tar:
                extracted = tar.extractfile(member) if member.isfile() else None
                if extracted is not None:
                    contents[member.name] = extracted.read().decode("utf-8", errors="replace")
    except (tarfile.TarError, OSError, EOFError) as error:
        raise ArtifactError(
            f"Code archive of {len(data)} bytes cannot be read ({error}); "
            "expected the tar.gz bytes produced by code_archive()."
        ) from error
    return contents


def _check_arcname(name: str) -> str:
    normalized = posixpath.normpath(name.replace("\\", "/")) if name else ""
    if (
        not normalized
        or normalized == "."
        or normalized.startswith("/")
        or normalized.split("/")[0] == ".."
    ):
        raise UsageError(
            f"Archive name {name!r} is not a relative path inside the archive; "
            "use a POSIX path such as 'pipelines/train.py'."
        )
    return normalized
