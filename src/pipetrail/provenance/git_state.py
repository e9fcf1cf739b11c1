"""The git state of a run's repository, captured once per process and re-checked cheaply.

``capture_git`` runs three git processes (and a fourth when the tree is dirty): about 10 ms of
wall time per run. A script that records thousands of runs from an unchanged tree pays that
once here: the answer is kept with the status (size, change time) of everything that could
change it (the repository's HEAD, index and refs, every tracked file and its folder), and given
again while all of those are unchanged. Taking those stats costs a few microseconds a file; a
repository with more than :data:`MAX_WATCHED` tracked files is asked every time instead.
"""

from __future__ import annotations

import os
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from pipetrail.provenance.code import GitInfo, capture_git

__all__ = ["MAX_WATCHED", "current_git"]

#: Most tracked files whose status is checked instead of asking git.
MAX_WATCHED = 20_000

Fingerprint = tuple[tuple[int, int, int] | None, ...]


@dataclass(frozen=True)
class _Known:
    watched: tuple[str, ...]
    fingerprint: Fingerprint
    info: GitInfo | None


_known: dict[str, _Known] = {}
_lock = threading.Lock()


def current_git(path: str | os.PathLike[str]) -> GitInfo | None:
    """:func:`capture_git` of ``path``, reused while nothing it depends on has changed."""
    directory = Path(path)
    key = str(directory)
    with _lock:
        known = _known.get(key)
    if known is not None and _fingerprint(known.watched) == known.fingerprint:
        return known.info
    watched = _watched(directory)
    if watched is None:
        return capture_git(directory)
    # Taken before git is asked: a change made while it runs shows on the next check.
    fingerprint = _fingerprint(watched)
    info = None if watched[0] == "" else capture_git(directory)
    with _lock:
        _known[key] = _Known(watched, fingerprint, info)
    return info


def _fingerprint(paths: tuple[str, ...]) -> Fingerprint:
    out: list[tuple[int, int, int] | None] = []
    for p in paths:
        try:
            st = os.stat(p)
        except OSError:
            out.append(None)
            continue
        out.append((st.st_mtime_ns, st.st_ctime_ns, st.st_size))
    return tuple(out)


def _watched(directory: Path) -> tuple[str, ...] | None:
    """What could change the answer for ``directory``'s repository; None when too much.

    Outside a repository: the folder and those above it (a ``git init`` changes one of them),
    with nothing to ask git.
    """
    try:
        inside = subprocess.run(
            ["git", "-C", str(directory), "rev-parse", "--is-inside-work-tree"],
            capture_output=True,
            text=True,
            timeout=10,
            env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"},
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if inside.returncode != 0 or inside.stdout.strip() != "true":
        resolved = directory.resolve()
        return ("", *(str(p) for p in (resolved, *resolved.parents)))
    try:
        listed = subprocess.run(
            ["git", "-C", str(directory), "rev-parse", "--show-toplevel", "--absolute-git-dir"],
            capture_output=True,
            text=True,
            timeout=10,
            env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"},
            check=True,
        ).stdout.split("\n")
        root, git_dir = Path(listed[0]), Path(listed[1])
        files = subprocess.run(
            [
                "git",
                "-C",
                str(root),
                "ls-files",
                "-z",
                "--cached",
                "--others",
                "--exclude-standard",
            ],
            capture_output=True,
            timeout=10,
            env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"},
            check=True,
        ).stdout.split(b"\0")
    except (OSError, subprocess.SubprocessError, IndexError):
        return None
    names = [os.fsdecode(f) for f in files if f]
    if len(names) > MAX_WATCHED:
        return None
    watched = {str(git_dir / n) for n in ("HEAD", "index", "packed-refs", "config")}
    try:
        head = (git_dir / "HEAD").read_text().strip()
    except OSError:
        return None
    if head.startswith("ref: "):
        watched.add(str(git_dir / head.removeprefix("ref: ")))
    folders = {str(root)}
    for name in names:
        path = root / name
        watched.add(str(path))
        folders.update(str(parent) for parent in path.parents if root in parent.parents)
    return tuple(sorted(watched | folders))
