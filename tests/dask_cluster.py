"""A real Dask cluster the tests start themselves: ``dask scheduler`` and ``dask worker``
processes on 127.0.0.1, whose working directory is not the tests' folder (they cannot read
the submitter's files, only what the store gives them)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.servers import S3Server, free_port

__all__ = ["DaskTestCluster", "dask_cluster"]

#: Seconds a scheduler or worker gets to come up (a loaded machine is slow to import dask).
_START_S = 60.0


@dataclass
class _Process:
    name: str
    address: str
    process: subprocess.Popen[bytes]
    log: Path


@dataclass
class DaskTestCluster:
    """One scheduler and its workers (``--no-nanny``: the process started is the worker)."""

    folder: Path
    env: dict[str, str]
    scheduler: _Process
    workers: list[_Process] = field(default_factory=list)
    _count: int = 0

    @property
    def address(self) -> str:
        return self.scheduler.address

    @classmethod
    def start(cls, folder: Path, env: dict[str, str], workers: int = 2) -> DaskTestCluster:
        folder.mkdir(parents=True, exist_ok=True)
        port = free_port()
        scheduler = _spawn(
            "scheduler",
            [
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-dashboard",
                # Its HTTP server (health, metrics) starts anyway: not on 8787, maybe taken.
                "--dashboard-address",
                "127.0.0.1:0",
            ],
            f"tcp://127.0.0.1:{port}",
            folder,
            env,
        )
        cluster = cls(folder, env, scheduler)
        try:
            for _ in range(workers):
                cluster.add_worker(wait=False)
            cluster.wait_for(len(cluster.workers))
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def add_worker(self, *, wait: bool = True) -> str:
        """Start one more worker (one thread); its address."""
        self._count += 1
        port = free_port()
        address = f"tcp://127.0.0.1:{port}"
        name = f"worker-{self._count}"
        local = self.folder / name
        local.mkdir(exist_ok=True)
        worker = _spawn(
            name,
            [
                "worker",
                self.address,
                "--host",
                "127.0.0.1",
                "--worker-port",
                str(port),
                "--nthreads",
                "1",
                "--no-nanny",
                "--no-dashboard",
                "--dashboard-address",
                "127.0.0.1:0",
                "--name",
                name,
                "--local-directory",
                str(local),
            ],
            address,
            local,
            self.env,
        )
        self.workers.append(worker)
        if wait:
            self.wait_for(len(self.workers))
        return address

    def addresses(self) -> set[str]:
        return {w.address for w in self.workers}

    def task_keys(self) -> list[str]:
        """The keys of every task the scheduler still holds."""
        from distributed import Client

        client: Any = Client(self.address, timeout=_START_S, set_as_default=False)  # type: ignore[no-untyped-call]
        with client:
            # A lambda travels by value: the scheduler cannot import this module.
            keys = client.run_on_scheduler(
                lambda dask_scheduler: list(map(str, dask_scheduler.tasks))
            )
            return [str(k) for k in keys]

    def kill(self, address: str) -> None:
        """SIGKILL the worker at ``address`` and wait until the scheduler has let it go."""
        worker = next(w for w in self.workers if w.address == address)
        worker.process.send_signal(signal.SIGKILL)
        worker.process.wait()
        self.workers.remove(worker)
        self.wait_for(len(self.workers))

    def wait_for(self, count: int) -> None:
        """Until exactly the workers started are registered with the scheduler."""
        from distributed import Client

        deadline = time.monotonic() + _START_S
        client: Any = Client(self.address, timeout=_START_S, set_as_default=False)  # type: ignore[no-untyped-call]
        with client:
            while True:
                known = set(client.scheduler_info(n_workers=-1)["workers"])
                if known == self.addresses() and len(known) == count:
                    return
                for worker in self.workers:
                    if worker.process.poll() is not None:
                        raise RuntimeError(
                            f"dask {worker.name} exited: {worker.log.read_text()[-2000:]}"
                        )
                if time.monotonic() > deadline:
                    raise RuntimeError(f"workers {self.addresses()} did not register: {known}")
                time.sleep(0.1)

    def stop(self) -> None:
        for item in [*self.workers, self.scheduler]:
            if item.process.poll() is None:
                item.process.terminate()
        for item in [*self.workers, self.scheduler]:
            try:
                item.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                item.process.kill()
                item.process.wait()


def _spawn(name: str, args: list[str], address: str, cwd: Path, env: dict[str, str]) -> _Process:
    log = cwd / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(Path(sys.executable).with_name("dask")), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
        )
    return _Process(name, address, process, log)


def _worker_env(s3: S3Server, home: Path) -> dict[str, str]:
    """The workers' environment: the S3 server's variables, a home of their own, and nothing
    that points at the tests' folder (no PYTHONPATH)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPETRAIL_", "PYTHON"))}
    env.update(s3.env)
    env["PIPETRAIL_HOME"] = str(home)
    return env


@pytest.fixture(scope="session")
def dask_cluster(
    s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DaskTestCluster]:
    """A ``dask scheduler`` and two ``dask worker`` processes on 127.0.0.1, one per session."""
    folder = tmp_path_factory.mktemp("dask")
    cluster = DaskTestCluster.start(folder / "cluster", _worker_env(s3_server, folder / "home"))
    try:
        yield cluster
    finally:
        cluster.stop()
