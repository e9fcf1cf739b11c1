"""The server's project directory: the only pipeline files a request may make the server import.

Importing a pipeline file runs its code as the server's user. The server therefore loads only
``.py`` files whose real path (symlinks followed) lies under the directory it was started for,
and answers every other path (outside, missing, not a file, not ``.py``) with the same error,
so a request learns nothing about which paths exist.
"""

from __future__ import annotations

from pathlib import Path

from pipetrail.api.errors import ForbiddenFileError

__all__ = ["ProjectDir"]


class ProjectDir:
    """The folder a server serves pipeline files from.

    Args:
        root: the project directory; a relative path is taken from the current directory.
    """

    def __init__(self, root: Path) -> None:
        self.root = root.expanduser().resolve()

    def pipeline_file(self, file: str | Path, *, purpose: str) -> Path:
        """The real path of ``file`` when it is a ``.py`` file under the project directory.

        A relative ``file`` is taken from the project directory.

        Args:
            file: the path as given by the request, or as recorded by an earlier run.
            purpose: what the file was asked for, to start the message ("file", "cannot retry
                iris/3: its pipeline file").

        Raises:
            ForbiddenFileError: the same message whether the path is outside, missing or not a
                pipeline file.
        """
        try:
            path = (self.root / Path(file).expanduser()).resolve()
            allowed = path.is_relative_to(self.root) and path.suffix == ".py" and path.is_file()
        except (OSError, RuntimeError, ValueError):  # a symlink loop, a NUL byte, a bad name
            allowed = False
        if not allowed:
            raise ForbiddenFileError(
                f"{purpose} {str(file)!r} is not a pipeline file under the server's project "
                "directory; the server loads only .py files inside the folder it was started "
                "for (pipetrail ui --project-dir)"
            )
        return path
