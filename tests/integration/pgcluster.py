"""A throwaway PostgreSQL cluster on a free port, which tests may stop and start at will."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

__all__ = ["PgCluster", "find_pg_bin"]

#: Where Debian and Ubuntu put the server binaries; PATH is searched first.
_PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"


def find_pg_bin() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``, or None when PostgreSQL is not installed."""
    found = shutil.which("initdb")
    if found is not None and shutil.which("pg_ctl", path=str(Path(found).parent)):
        return Path(found).resolve().parent
    for folder in sorted(Path("/").glob(_PG_BIN_GLOB.lstrip("/")), reverse=True):
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PgCluster:
    """A PostgreSQL cluster in a temporary folder under /tmp, with trust authentication.

    initdb refuses to run as root, so as root every server command runs as the ``postgres``
    OS user, and the folder (outside pytest's tmp_path, which that user may not be able to
    reach) belongs to it.

    Args:
        bin_dir: the folder holding ``initdb`` and ``pg_ctl``.
    """

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.port = _free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="pipetrail-pg-", dir="/tmp"))
        self.data = self.folder / "data"
        self.log = self.folder / "server.log"
        self._owner: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            self._owner = pwd.getpwnam("postgres")
            os.chown(self.folder, self._owner.pw_uid, self._owner.pw_gid)
        self.folder.chmod(0o700)

    @property
    def url(self) -> str:
        """The SQLAlchemy URL of the ``postgres`` database."""
        return self.url_for("postgres")

    def url_for(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def init(self) -> None:
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",
        )

    def start(self) -> None:
        # fsync off: the cluster is thrown away, and only clean restarts are tested.
        options = f"-k {self.folder} -p {self.port} -h 127.0.0.1 -c fsync=off"
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            options,
            "-w",
            "-t",
            "30",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop")

    def outage(
        self, seconds: float, on_down: Callable[[], None] | None = None
    ) -> tuple[datetime, datetime]:
        """Stop the server (closing every connection), stay down ``seconds``, start again.

        ``on_down`` is called once the server is down (to tell a step it may go on).

        Returns:
            When the server was down (stopped) and when it began to start again: nothing
            could be written between the two.
        """
        self.stop("fast")
        down = datetime.now(UTC)
        if on_down is not None:
            on_down()
        time.sleep(seconds)
        starting = datetime.now(UTC)
        self.start()
        return down, starting

    def create_database(self, name: str) -> str:
        """Create database ``name`` and return its URL."""
        from sqlalchemy import create_engine, text

        admin = create_engine(self.url, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        finally:
            admin.dispose()
        return self.url_for(name)

    def destroy(self) -> None:
        """Stop the server if it runs (immediately: nothing in it is kept) and delete the folder."""
        try:
            pid_file = self.data / "postmaster.pid"
            if pid_file.exists():
                try:
                    self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
                except (RuntimeError, subprocess.TimeoutExpired):
                    # pg_ctl could not stop it: end the postmaster (its children follow) directly.
                    with contextlib.suppress(OSError, ValueError, IndexError):
                        os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def _run(self, program: str, *args: str) -> None:
        command: Sequence[str] = [str(self.bin_dir / program), *args]
        if self._owner is not None:
            command = ["runuser", "-u", self._owner.pw_name, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(
                f"{program} {' '.join(args)} exited with {done.returncode}:\n"
                f"{done.stdout}{done.stderr}\nserver log:\n{log}"
            )
