"""Bounded fault injection: kill, pause and crowd real runners, then count what was lost.

Usage: ``python benchmarks/soak.py [--trials N] [--concurrent N] [--backends sqlite,postgresql]``.

Scenarios, each on SQLite and on PostgreSQL (this machine's server, a database of its own):

- ``kill-runner``: SIGKILL the runner at a random moment while a step logs points as fast as it
  can (the process executor: its workers must exit by themselves).
- ``kill-worker``: SIGKILL the worker running that step; the step's retry must finish the run.
- ``kill-group``: SIGKILL the runner and its workers at once.
- ``pause-runner``: SIGSTOP the runner, take its run from it (as a reaper on another host
  would), SIGCONT: it must stop and write nothing more.
- ``concurrent``: N runs at once, every record and point checked.

Per scenario it prints trials, records lost (tasks that were completed in the store before the
fault and are not afterwards; runs or points missing from concurrent runs), points lost (points
whose ``log_metric`` call had returned but are not in the store), runs left running after the
reaper, and retries that failed. Exit status 1 if anything was lost.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PG_ADMIN = os.environ.get("PIPETRAIL_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")

FLOW = """
import os, struct, time
from pathlib import Path
import pipetrail as pt

HERE = Path(__file__).parent

@pt.step
def prepare():
    return list(range(100))

@pt.step(retries=2)
def firehose(prepare, points: int = 60000):
    fd = os.open(HERE / f"returned-{pt.current.run_id}-{pt.current.attempt}", os.O_RDWR | os.O_CREAT)
    (HERE / "started").touch()
    for i in range(points):
        pt.log_metric("x", i, step=i)
        os.pwrite(fd, struct.pack("<q", i + 1), 0)
        if i % 2000 == 0:
            print("at", i, flush=True)
            time.sleep(0.01)
    while (HERE / "hold").exists():
        time.sleep(0.05)
    return len(prepare)

@pt.step
def report(firehose):
    return {"n": firehose}

pipeline = pt.Pipeline("soak", [prepare, firehose, report])
"""


@dataclass
class Tally:
    trials: int = 0
    records_lost: int = 0
    points_lost: int = 0
    left_running: int = 0
    retries_failed: int = 0
    notes: list[str] = field(default_factory=list)


class Store:
    """A store of the soak's own: a folder, and a database on PostgreSQL."""

    def __init__(self, backend: str, folder: Path) -> None:
        self.backend = backend
        self.folder = folder
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PIPETRAIL_")}
        self.env["PIPETRAIL_HOME"] = str(folder / "home")
        self.url: str | None = None
        if backend == "postgresql":
            from sqlalchemy import create_engine, text

            name = f"pipetrail_soak_{os.getpid()}"
            admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            admin.dispose()
            self.url = PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
            self.env["PIPETRAIL_DB"] = self.url
        (folder / "flow.py").write_text(FLOW)

    def workspace(self) -> Any:
        from pipetrail.config import Settings
        from pipetrail.workspace import Workspace

        home = Path(self.env["PIPETRAIL_HOME"])
        settings = Settings.for_home(home, **({"db_url": self.url} if self.url else {}))
        return Workspace(settings)

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        log = open(self.folder / "runner.log", "ab")  # noqa: SIM115 - the child owns it
        return subprocess.Popen(
            [sys.executable, "-m", "pipetrail.cli", *args],
            cwd=self.folder,
            env=self.env,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pipetrail.cli", *args],
            cwd=self.folder,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    def drop(self) -> None:
        if self.url is None:
            return
        from sqlalchemy import create_engine, text

        admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(
                text(f'DROP DATABASE IF EXISTS "{self.url.rsplit("/", 1)[1]}" WITH (FORCE)')
            )
        admin.dispose()


def _wait(what: str, check: Any, timeout: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise RuntimeError(f"soak: gave up waiting for {what}")


def _returned(folder: Path, run_id: int) -> int:
    """Points whose log_metric call returned, over every attempt of the run."""
    total = 0
    for path in folder.glob(f"returned-{run_id}-*"):
        data = path.read_bytes()
        total += struct.unpack("<q", data[:8])[0] if len(data) >= 8 else 0
    return total


def _family(pid: int) -> list[Any]:
    import psutil

    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _latest_run(ws: Any) -> Any:
    from pipetrail.storage.metadata.base import RunQuery

    runs = ws.store.list_runs(RunQuery(pipeline="soak", limit=1))
    return runs[0] if runs else None


def _completed_tasks(ws: Any, run_id: int) -> set[int]:
    return {t.id for t in ws.store.tasks(run_id) if t.status.value == "completed"}


def fault_trial(store: Store, kind: str, tally: Tally, rng: random.Random) -> None:
    """One run, one fault at a random moment, then reap, count and retry."""
    from pipetrail.runtime.recovery import reap_lost_runs

    ws = store.workspace()
    try:
        for path in store.folder.glob("started"):
            path.unlink()
        runner = store.start("run", "flow.py", "-q")
        _wait("the step to start", lambda: (store.folder / "started").exists())
        time.sleep(rng.uniform(0.05, 1.5))
        run = _latest_run(ws)
        before = _completed_tasks(ws, run.id)
        family = _family(runner.pid)
        if kind == "kill-runner":
            os.kill(runner.pid, signal.SIGKILL)
        elif kind == "kill-group":
            for proc in family:
                with _quiet():
                    proc.kill()
        elif kind == "kill-worker":
            workers = [p for p in family[1:] if "fork" not in " ".join(p.cmdline())[-40:]]
            running = [t for t in ws.store.tasks(run.id) if t.status.value == "running" and t.pid]
            target = running[0].pid if running else (workers[0].pid if workers else runner.pid)
            os.kill(target, signal.SIGKILL)
        runner.wait(timeout=300) if kind == "kill-worker" else runner.wait(timeout=30)
        if kind != "kill-worker":
            _wait(
                "the lost run to be reaped",
                lambda: (
                    reap_lost_runs(ws.store, ws.spool_root) is not None
                    and ws.store.get_run(run.id).status.value not in ("initial", "running")
                ),
                60,
            )
        record = ws.store.get_run(run.id)
        if record.status.value in ("initial", "running"):
            tally.left_running += 1
        lost = before - _completed_tasks(ws, run.id)
        tally.records_lost += len(lost)
        stored = len(ws.store.metric_history(run.id, "x"))
        returned = _returned(store.folder, run.id)
        # A point whose call returned just before the kill may be stored while its counter
        # write was not: stored may exceed returned by one per attempt, never fall short.
        tally.points_lost += max(0, returned - stored)
        if kind == "kill-worker":
            if record.status.value != "completed":
                tally.retries_failed += 1
                tally.notes.append(f"run {record.pathspec} ended {record.status.value}")
        else:
            retry = store.cli("runs", "retry", record.pathspec, "-q")
            if retry.returncode != 0:
                tally.retries_failed += 1
                tally.notes.append(f"retry of {record.pathspec}: {retry.stderr.strip()[-200:]}")
        tally.trials += 1
    finally:
        ws.close()


def pause_trial(store: Store, tally: Tally, rng: random.Random) -> None:
    """SIGSTOP the runner, take its run from it, SIGCONT: it must stop and write nothing."""
    (store.folder / "hold").touch()
    ws = store.workspace()
    try:
        for path in store.folder.glob("started"):
            path.unlink()
        runner = store.start("run", "flow.py", "-q")
        _wait("the step to start", lambda: (store.folder / "started").exists())
        time.sleep(rng.uniform(0.05, 1.0))
        run = _latest_run(ws)
        os.kill(runner.pid, signal.SIGSTOP)
        before = _completed_tasks(ws, run.id)
        ws.store.mark_lost(run.id, "runner lost: taken over by the soak")
        events = len(ws.store.events(run.id))
        points = len(ws.store.metric_history(run.id, "x"))
        (store.folder / "hold").unlink()
        os.kill(runner.pid, signal.SIGCONT)
        code = runner.wait(timeout=120)
        time.sleep(0.5)  # its workers, if any survived, would write now
        if code != 1:
            tally.notes.append(f"fenced runner exited {code}")
        wrote = len(ws.store.events(run.id)) - events
        wrote += len(ws.store.metric_history(run.id, "x")) - points
        if wrote:
            tally.records_lost += wrote  # rows written into a run the runner no longer held
            tally.notes.append(f"fenced runner wrote {wrote} rows")
        tally.records_lost += len(before - _completed_tasks(ws, run.id))
        retry = store.cli("runs", "retry", run.pathspec, "-q")
        if retry.returncode != 0:
            tally.retries_failed += 1
        tally.trials += 1
    finally:
        ws.close()
        (store.folder / "hold").unlink(missing_ok=True)


def concurrent_trial(store: Store, count: int, tally: Tally) -> None:
    """``count`` runs at once; every run completes with every point."""
    ws = store.workspace()
    try:
        runners = [
            store.start("run", "flow.py", "-q", "--executor", "inline", "-p", "points=3000")
            for _ in range(count)
        ]
        codes = [r.wait(timeout=600) for r in runners]
        from pipetrail.storage.metadata.base import RunQuery

        runs = ws.store.list_runs(RunQuery(pipeline="soak", limit=count))
        tally.records_lost += count - sum(1 for r in runs if r.status.value == "completed")
        tally.left_running += sum(1 for r in runs if r.status.value in ("initial", "running"))
        for r in runs:
            tally.points_lost += max(0, 3000 - len(ws.store.metric_history(r.id, "x")))
        if any(codes):
            tally.notes.append(f"exit codes {sorted(set(codes))}")
        tally.trials += count
    finally:
        ws.close()


class _quiet:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4, help="trials per fault scenario")
    parser.add_argument("--concurrent", type=int, default=10, help="runs at once")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    if args.trials < 1 or args.concurrent < 1:
        parser.error("--trials and --concurrent must be at least 1")
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    rows: list[tuple[str, str, Tally]] = []
    started = time.monotonic()
    for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
        for scenario in ("kill-runner", "kill-worker", "kill-group", "pause-runner", "concurrent"):
            tally = Tally()
            with tempfile.TemporaryDirectory(prefix="pipetrail-soak-") as tmp:
                store = Store(backend, Path(tmp))
                try:
                    if scenario == "concurrent":
                        concurrent_trial(store, args.concurrent, tally)
                    else:
                        for _ in range(args.trials):
                            if scenario == "pause-runner":
                                pause_trial(store, tally, rng)
                            else:
                                fault_trial(store, scenario, tally, rng)
                except Exception as exc:
                    tally.notes.append(f"crashed: {type(exc).__name__}: {exc}")
                finally:
                    store.drop()
            rows.append((backend, scenario, tally))
            print(f"  {backend:10} {scenario:13} done", file=sys.stderr, flush=True)
    header = (
        "backend",
        "scenario",
        "trials",
        "records lost",
        "points lost",
        "left running",
        "retries failed",
    )
    print(f"pipetrail soak (seed {seed}, {time.monotonic() - started:.0f} s)")
    print("  ".join(f"{h:>14}" for h in header))
    bad = False
    for backend, scenario, t in rows:
        values = (
            backend,
            scenario,
            t.trials,
            t.records_lost,
            t.points_lost,
            t.left_running,
            t.retries_failed,
        )
        print("  ".join(f"{v!s:>14}" for v in values))
        for note in t.notes:
            print(f"{'':>16}note: {note}")
        bad = bad or bool(t.records_lost or t.points_lost or t.left_running or t.retries_failed)
        bad = bad or any(n.startswith("crashed") for n in t.notes)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
