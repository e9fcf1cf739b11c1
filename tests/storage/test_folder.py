"""FolderWriter: complete temporary files, linked to final paths that never hold part of them."""

from __future__ import annotations

from pathlib import Path
from typing import IO

import pytest

from pipetrail.errors import ArtifactError
from pipetrail.storage.artifacts.folder import FolderWriter, write_views


def filled(writer: FolderWriter, data: bytes) -> str:
    """A complete temporary file holding ``data``."""
    tmp, _ = writer.write(lambda target, name: write_views(target, [memoryview(data)], name))
    return tmp


@pytest.mark.parametrize("fsync", [False, True])
def test_write_then_commit(tmp_path: Path, fsync: bool) -> None:
    writer = FolderWriter(str(tmp_path / "tmp"), fsync=fsync)
    tmp = filled(writer, b"content")
    assert Path(tmp).parent == tmp_path / "tmp"
    assert Path(tmp).read_bytes() == b"content"
    final = tmp_path / "ab" / "cdef"
    assert not writer.holds(str(final), 7)
    assert writer.commit(tmp, str(final), 7) is False
    assert final.read_bytes() == b"content"
    assert writer.holds(str(final), 7)
    assert not writer.holds(str(final), 8)
    assert list((tmp_path / "tmp").iterdir()) == []


def test_second_commit_of_same_content_adds_nothing(tmp_path: Path) -> None:
    writer = FolderWriter(str(tmp_path / "tmp"), fsync=False)
    final = str(tmp_path / "key")
    first, second = filled(writer, b"same"), filled(writer, b"same")
    assert writer.commit(first, final, 4) is False
    inode = Path(final).stat().st_ino
    assert writer.commit(second, final, 4) is True
    assert Path(final).stat().st_ino == inode  # the first file stays; the second is removed
    assert list((tmp_path / "tmp").iterdir()) == []


def test_commit_replaces_a_truncated_file(tmp_path: Path) -> None:
    writer = FolderWriter(str(tmp_path / "tmp"), fsync=False)
    final = tmp_path / "key"
    final.write_bytes(b"trunc")  # what a crash before the data reached the disk leaves
    assert writer.commit(filled(writer, b"truncated? no"), str(final), 13) is False
    assert final.read_bytes() == b"truncated? no"


def test_fill_raising_leaves_no_file(tmp_path: Path) -> None:
    writer = FolderWriter(str(tmp_path / "tmp"), fsync=False)

    def fill(target: IO[bytes], name: str) -> None:
        target.write(b"partial")
        raise RuntimeError("serializer failed")

    with pytest.raises(RuntimeError, match="serializer failed"):
        writer.write(fill)
    assert list((tmp_path / "tmp").iterdir()) == []


def test_holds_is_false_for_a_folder_and_errors_name_the_path(tmp_path: Path) -> None:
    writer = FolderWriter(str(tmp_path / "tmp"), fsync=False)
    (tmp_path / "folder").mkdir()
    assert not writer.holds(str(tmp_path / "folder"), 4096)
    assert not writer.holds(str(tmp_path / "missing" / "key"), 0)
    (tmp_path / "file").write_bytes(b"")
    assert not writer.holds(str(tmp_path / "file" / "key"), 0)  # a file where a folder should be
    blocked = FolderWriter(str(tmp_path / "file"), fsync=False)
    with pytest.raises(ArtifactError, match=r"could not create temporary artifact file .*file/"):
        filled(blocked, b"x")
