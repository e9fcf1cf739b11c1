"""Many runs at once on one store: 20 runner processes, SQLite and PostgreSQL, nothing locked or lost.

Each run is a separate ``pipetrail run`` process on the same store (the inline executor keeps
the process count at one per run); afterwards the store must hold every run, task, metric point
and event exactly once.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from pipetrail.client import Run
from pipetrail.config import Settings
from pipetrail.storage.metadata.base import RunQuery
from pipetrail.storage.metadata.sql.store import SqlMetadataStore
from pipetrail.workspace import Workspace
from tests.conftest import BACKENDS, PG_ADMIN_URL, FlowWriter

RUNS = 20
STEPS = 10
#: Points each step logs: one of "value", and "a" and "b" together.
POINTS_PER_STEP = 3
#: Generous: on 2 cores the 20 processes take about 10 s together.
TIMEOUT_S = 120.0


def _chain_source() -> str:
    steps = [
        """
@pt.step
def s0(seed: int = 0):
    pt.log_metric("value", seed, step=0)
    pt.log_metrics({"a": 0.5, "b": 1.5}, step=0)
    return seed
"""
    ]
    for i in range(1, STEPS):
        steps.append(
            f"""
@pt.step
def s{i}(s{i - 1}):
    pt.log_metric("value", s{i - 1} + 1, step={i})
    pt.log_metrics({{"a": 0.5, "b": 1.5}}, step={i})
    return s{i - 1} + 1
"""
        )
    names = ", ".join(f"s{i}" for i in range(STEPS))
    return "".join(steps) + f"\npipeline = pt.Pipeline('chain10', [{names}])\n"


#: Starts ``pipetrail`` once every process has imported it, at the instant given as argv[1]:
#: the runs then reach the store together instead of one import time apart.
_GATE = (
    "import sys, time\n"
    "import pipetrail.cli.main as cli\n"
    "time.sleep(max(0.0, float(sys.argv.pop(1)) - time.time()))\n"
    "cli.main()\n"
)


@dataclass(frozen=True)
class _Exit:
    seed: int
    code: int
    stdout: str
    stderr: str


def _run_all_at_once(
    file: Path, home: Path, db_url: str | None, *, gate_s: float | None = None
) -> list[_Exit]:
    """Start RUNS ``pipetrail run`` processes on one store together; wait for all of them."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPETRAIL_")}
    env["PIPETRAIL_HOME"] = str(home)
    if db_url is not None:
        env["PIPETRAIL_DB"] = db_url
    args = ["run", str(file), "-q", "--executor", "inline"]
    if gate_s is None:
        prefix = [sys.executable, "-m", "pipetrail.cli"]
    else:
        prefix = [sys.executable, "-c", _GATE, repr(time.time() + gate_s)]
    processes = [
        subprocess.Popen(
            [*prefix, *args, "-p", f"seed={seed}"],
            cwd=file.parent,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in range(RUNS)
    ]
    exits = []
    deadline = time.monotonic() + TIMEOUT_S
    try:
        for seed, process in enumerate(processes):
            out, err = process.communicate(timeout=max(1.0, deadline - time.monotonic()))
            exits.append(_Exit(seed, process.returncode, out, err))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    return exits


def _check_exits(exits: list[_Exit]) -> None:
    failed = [e for e in exits if e.code != 0]
    assert not failed, "\n".join(
        f"run with seed={e.seed} exited {e.code}: {e.stderr.strip() or e.stdout.strip()}"
        for e in failed
    )
    locked = [e for e in exits if "locked" in e.stderr.lower()]
    assert not locked, "\n".join(f"seed={e.seed}: {e.stderr.strip()}" for e in locked)


def _check_store(settings: Settings) -> None:
    """Every run once, complete: its tasks, metric points and events, nothing lost or doubled."""
    workspace = Workspace(settings)
    try:
        store = workspace.store
        runs = store.list_runs(RunQuery(limit=None))
        assert len(runs) == RUNS
        assert {r.status.value for r in runs} == {"completed"}
        assert sorted(r.params["seed"] for r in runs) == list(range(RUNS))
        total_points = 0
        for record in runs:
            seed = record.params["seed"]
            tasks = store.tasks(record.id)
            assert sorted(t.step for t in tasks) == sorted(f"s{i}" for i in range(STEPS)), seed
            assert {t.status.value for t in tasks} == {"completed"}, seed
            assert store.count_metrics(record.id) == STEPS * POINTS_PER_STEP, seed
            total_points += store.count_metrics(record.id)
            events = store.events(record.id)
            assert [e.status for e in events if e.task_id is None] == [
                "initial",
                "running",
                "completed",
            ], seed
            for task in tasks:
                history = [e.status for e in events if e.task_id == task.id]
                assert history == ["initial", "queued", "running", "completed"], (seed, task.step)
            run = Run(record.id, reader=workspace.reader())
            assert [p.value for p in run.metric_history("value")] == [
                float(seed + i) for i in range(STEPS)
            ]
            assert run.data[f"s{STEPS - 1}"] == seed + STEPS - 1
        assert total_points == RUNS * STEPS * POINTS_PER_STEP
    finally:
        workspace.close()


@pytest.fixture(params=BACKENDS)
def store_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """An existing, empty store: SQLite under tmp_path, or this worker's PostgreSQL database."""
    home = tmp_path / "home"
    if request.param == "sqlite":
        Workspace(Settings.for_home(home)).close()  # created and migrated before the runs
        return Settings.for_home(home)
    url: str = request.getfixturevalue("pg_url")
    store = SqlMetadataStore(url)
    try:
        store.delete_everything()
    finally:
        store.close()
    return Settings.for_home(home, db_url=url)


@pytest.fixture
def new_pg_url(worker_id: str) -> Iterator[str]:
    """A PostgreSQL database no store has been opened on yet (no tables), dropped afterwards."""
    name = f"pipetrail_test_new_{worker_id}_{os.getpid()}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=BACKENDS)
def new_store_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """A store that does not exist yet: no SQLite file, or a PostgreSQL database without tables."""
    home = tmp_path / "home"
    if request.param == "sqlite":
        return Settings.for_home(home)
    url: str = request.getfixturevalue("new_pg_url")
    return Settings.for_home(home, db_url=url)


def _db_url(settings: Settings) -> str | None:
    return None if settings.sqlite_file is not None else settings.db_url


@pytest.mark.slow
def test_twenty_runs_at_once_complete_with_nothing_locked_or_lost(
    store_settings: Settings, flow_file: FlowWriter
) -> None:
    file = flow_file(_chain_source(), name="chain10")
    url = _db_url(store_settings)
    with _ConnectionPeak(url) as peak:
        exits = _run_all_at_once(file, store_settings.home, url)
    _check_exits(exits)
    _check_store(store_settings)
    if url is not None:
        # A runner holds one connection (a second only for a moment): 50 runs fit in
        # PostgreSQL's default max_connections of 100 with room for everyone else.
        assert 0 < peak.most <= RUNS * 1.2 + 2, f"{peak.most} connections for {RUNS} runs"


class _ConnectionPeak:
    """The most connections to the store's PostgreSQL database seen while the block runs."""

    def __init__(self, url: str | None) -> None:
        self.url = url
        self.most = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> _ConnectionPeak:
        if self.url is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self.url is not None:
            self._thread.join()

    def _sample(self) -> None:
        assert self.url is not None
        name = self.url.rsplit("/", 1)[1]
        # Autocommit: pg_stat_activity is a snapshot taken once per transaction.
        admin = create_engine(PG_ADMIN_URL, poolclass=NullPool, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                while not self._stop.wait(0.02):
                    count = conn.execute(
                        text("SELECT count(*) FROM pg_stat_activity WHERE datname = :db"),
                        {"db": name},
                    ).scalar_one()
                    self.most = max(self.most, int(count))
        finally:
            admin.dispose()


@pytest.mark.slow
def test_twenty_first_runs_released_together_create_the_store_once(
    new_store_settings: Settings, flow_file: FlowWriter
) -> None:
    """The same on a store that does not exist yet, the runs reaching it in the same instant.

    The first command of a team, a CI matrix or a scheduler often starts many runs at once
    on a new store: each finds no schema, and exactly one may create it while the others wait.
    """
    file = flow_file(_chain_source(), name="chain10")
    # Four seconds is enough for 20 interpreters to import pipetrail on 2 cores.
    exits = _run_all_at_once(file, new_store_settings.home, _db_url(new_store_settings), gate_s=4.0)
    _check_exits(exits)
    _check_store(new_store_settings)
