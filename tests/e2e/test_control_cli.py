"""Control of runs from the command line, for real: cancel, lost runners, retry, limits, timeouts.

Every test drives ``python -m pipetrail.cli`` in subprocesses against a store of its own (a
fresh ``PIPETRAIL_HOME``), starting runners in the background and acting on them from other
processes, as two terminals would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar, cast

import psutil
import pytest

from tests.conftest import FlowWriter

T = TypeVar("T")

pytestmark = pytest.mark.slow

# -- pipelines --------------------------------------------------------------------------------

#: A slow step with a step downstream of it and an independent branch that finishes at once.
#: ``side`` is declared before ``slow`` so that even the inline executor runs it first.
SLOW = """
import time

@pt.step
def start():
    return 1

@pt.step
def side(start):
    return start + 1

@pt.step
def slow(start):
    time.sleep(30)
    return start

@pt.step
def after(slow):
    return slow

pipeline = pt.Pipeline({name!r}, [start, side, slow, after])
"""

#: Each step appends its name to counter.txt when it executes: executions can be counted.
COUNT = """
from pathlib import Path

HERE = Path(__file__).parent


def count(name):
    with open(HERE / "counter.txt", "a") as f:
        f.write(name + "\\n")
"""

#: ``b`` holds (sleeps) while the file ``hold`` exists, so the runner can be killed under it.
LOST = (
    COUNT
    + """
import time

@pt.step
def a():
    count("a")
    return 1

@pt.step
def side(a):
    count("side")
    return a + 1

@pt.step
def b(a):
    count("b")
    if (HERE / "hold").exists():
        time.sleep(60)
    return a + 10

@pt.step
def c(b, side):
    count("c")
    return b + side

pipeline = pt.Pipeline("lost", [a, side, b, c])
"""
)

#: a → b → c where b fails the first time it ever runs; only c reads the parameter k.
CHAIN = (
    COUNT
    + """
@pt.step
def a():
    count("a")
    return 2

@pt.step
def b(a):
    count("b")
    marker = HERE / "b_failed_once"
    if not marker.exists():
        marker.touch()
        raise RuntimeError("flaky b")
    return a * 10

@pt.step
def c(b, k: int = 1):
    count("c")
    return b + k

pipeline = pt.Pipeline("chain", [a, b, c])
"""
)

#: Fails while the file ``broken`` exists next to it.
FLAKY = """
from pathlib import Path

@pt.step
def load():
    return 1

@pt.step
def check(load):
    if (Path(__file__).parent / "broken").exists():
        raise IOError("source unavailable")
    return load

pipeline = pt.Pipeline("flaky", [load, check])
"""

BROKEN = """
@pt.step
def boom():
    raise RuntimeError("always")

pipeline = pt.Pipeline("other", [boom])
"""

QUEUE = """
import time

@pt.step
def work():
    time.sleep(3)
    return 1

pipeline = pt.Pipeline("queue", [work], max_concurrent_runs=1)
"""

STEP_TIMEOUT = """
import time

@pt.step
def quick():
    return 1

@pt.step(timeout="1s", on_timeout={policy!r})
def sleepy(quick, seconds: float = 10.0):
    time.sleep(seconds)
    return quick

@pt.step
def after(sleepy):
    return sleepy

pipeline = pt.Pipeline("timeouts", [quick, sleepy, after])
"""

LONG = """
import time

@pt.step
def long():
    time.sleep(5)
    return 1

pipeline = pt.Pipeline("long", [long])
"""

# -- driving the CLI --------------------------------------------------------------------------


class Cli:
    """``pipetrail`` as typed in terminals that share one store; tracks background runners."""

    def __init__(self, folder: Path) -> None:
        self.cwd = folder
        self.home = folder / "home"
        self.env = {**os.environ, "PIPETRAIL_HOME": str(self.home), "COLUMNS": "200"}
        self.env.pop("PIPETRAIL_DB", None)
        self.spawned: list[subprocess.Popen[str]] = []
        #: Processes that outlived the command that started them, killed at the end too.
        self.strays: list[Any] = []
        self._output: dict[int, tuple[Path, Path]] = {}

    def __call__(self, *args: str, timeout: float = 90.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pipetrail.cli", *args],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def start(self, *args: str) -> subprocess.Popen[str]:
        """Start a command in the background (another terminal); its output goes to files.

        Files, not pipes: worker processes inherit the runner's output, and a pipe held open by
        a worker that outlives its runner would block reading it.
        """
        index = len(self.spawned)
        out, err = self.cwd / f"background-{index}.out", self.cwd / f"background-{index}.err"
        with out.open("w") as stdout, err.open("w") as stderr:
            process = subprocess.Popen(
                [sys.executable, "-m", "pipetrail.cli", *args],
                cwd=self.cwd,
                env=self.env,
                stdout=stdout,
                stderr=stderr,
                text=True,
            )
        self.spawned.append(process)
        self._output[process.pid] = (out, err)
        return process

    def finish(
        self, process: subprocess.Popen[str], within: float, what: str
    ) -> tuple[int, str, str]:
        """Wait for a background command to exit; its exit code, stdout and stderr."""
        try:
            code = process.wait(timeout=within)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{what} did not exit within {within:g} s") from None
        out, err = self._output[process.pid]
        return code, out.read_text(), err.read_text()

    def show(self, run: int | str) -> dict[str, Any]:
        done = self("runs", "show", str(run), "--json")
        assert done.returncode == 0, done.stderr
        record: dict[str, Any] = json.loads(done.stdout)
        return record

    def peek(self, run: int | str) -> dict[str, Any] | None:
        """The run's record, or None while it does not exist yet (for polling)."""
        done = self("runs", "show", str(run), "--json")
        if done.returncode != 0:
            return None
        record: dict[str, Any] = json.loads(done.stdout)
        return record

    def runs(self) -> list[dict[str, Any]]:
        """Every run, oldest first."""
        done = self("runs", "list", "--json", "--limit", "1000")
        assert done.returncode == 0, done.stderr
        runs: list[dict[str, Any]] = json.loads(done.stdout)
        return sorted(runs, key=lambda r: int(r["id"]))

    def background(self) -> str:
        """Each background command: alive or its exit code, and the end of its stderr."""
        lines = []
        for process in self.spawned:
            state = "alive" if process.poll() is None else f"exited {process.returncode}"
            err = self._output[process.pid][1].read_text()[-2000:]
            command = " ".join(map(str, cast(list[str], process.args)[3:]))
            lines.append(f"{command} [{state}]\n{err}")
        return "\n".join(lines)

    def cleanup(self) -> None:
        """Kill every background command still alive, with all its processes."""
        for process in self.spawned:
            if process.poll() is None:
                kill_tree(process.pid)
            process.wait(timeout=30)
        for stray in alive(self.strays):
            stray.kill()
        psutil.wait_procs(self.strays, timeout=10)


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    shell = Cli(tmp_path)
    try:
        yield shell
    finally:
        shell.cleanup()


def kill_tree(pid: int) -> None:
    try:
        root = psutil.Process(pid)
        family = [*root.children(recursive=True), root]
    except psutil.NoSuchProcess:
        return
    for proc in family:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            continue
    psutil.wait_procs(family, timeout=10)


def wait_until(
    what: str,
    check: Callable[[], T | None],
    timeout: float,
    explain: Callable[[], str] | None = None,
) -> T:
    """Poll ``check`` until it returns something true; fail naming ``what`` after ``timeout``.

    ``explain`` adds what was seen (the background commands' output, say) to the failure.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            seen = f"\n{explain()}" if explain else ""
            raise AssertionError(f"gave up after {timeout:g} s waiting for {what}{seen}")
        time.sleep(0.2)


def steps_of(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in record["steps"]}


def step_status(cli: Cli, run: int, step: str, status: str) -> dict[str, Any] | None:
    """The run's record once ``step`` has that status, else None."""
    record = cli.peek(run)
    return record if record and steps_of(record)[step]["status"] == status else None


def executions(folder: Path) -> Counter[str]:
    counter = folder / "counter.txt"
    return Counter(counter.read_text().split()) if counter.exists() else Counter()


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def alive(processes: list[Any]) -> list[Any]:
    """The processes of the list that still exist (zombies count as gone)."""
    living = []
    for proc in processes:
        try:
            if proc.status() != psutil.STATUS_ZOMBIE:
                living.append(proc)
        except psutil.NoSuchProcess:
            continue
    return living


def describe(proc: Any) -> str:
    """``pid: what it runs`` (the ``-c`` code of multiprocessing's helpers, shortened)."""
    try:
        argv: list[str] = proc.cmdline()
    except psutil.NoSuchProcess:
        return f"{proc.pid}: gone"
    code = argv[argv.index("-c") + 1] if "-c" in argv else " ".join(argv)
    return f"{proc.pid}: {code[:60]}"


# -- cancel -----------------------------------------------------------------------------------


@pytest.mark.parametrize("executor", ["process", "inline"])
def test_cancel_a_running_run_from_another_process(
    cli: Cli, flow_file: FlowWriter, executor: str
) -> None:
    file = flow_file(SLOW.format(name="slow"), "slow")
    runner = cli.start("run", str(file), "--executor", executor, "-q")
    wait_until("step 'slow' to be running", lambda: step_status(cli, 1, "slow", "running"), 30)

    began = time.monotonic()
    cancel = cli("runs", "cancel", "1")
    took = time.monotonic() - began
    assert cancel.returncode == 0, cancel.stdout + cancel.stderr
    assert "slow/1: cancelled" in cancel.stdout
    # The issue: a cancel request reaches the runner within 2 seconds.
    assert took < 5, f"runs cancel took {took:.1f} s: the runner did not act on the request"
    code, out, err = cli.finish(runner, 10, "the cancelled runner")
    assert code in (1, 130), (code, out, err)
    assert "slow/1 cancelled" in out

    record = cli.show(1)
    assert record["status"] == "cancelled"
    assert "the runner did not answer" not in (record["error"] or "")
    steps = steps_of(record)
    assert steps["start"]["status"] == "completed"
    assert steps["side"]["status"] == "completed", "an independent branch that ended stays ended"
    assert [t["status"] for t in steps["slow"]["tasks"]] == ["cancelled"]
    assert [t["status"] for t in steps["after"]["tasks"]] == ["cancelled"]
    slow_task = steps["slow"]["tasks"][0]["id"]
    after_task = steps["after"]["tasks"][0]["id"]
    events = record["events"]
    changes = {(e["task_id"], e["previous"], e["status"]) for e in events}
    assert (slow_task, "running", "cancelled") in changes
    assert (after_task, "initial", "cancelled") in changes
    assert (None, "running", "cancelled") in changes
    # The cancel request itself is in the run's history, as an event of its own kind.
    kinds = [e.get("kind") for e in events]
    assert "cancel_requested" in kinds, f"no cancel_requested event; events: {events}"


def test_cancel_all_running_of_one_pipeline(cli: Cli, flow_file: FlowWriter) -> None:
    mine = flow_file(SLOW.format(name="slow_a"), "slow_a")
    other = flow_file(SLOW.format(name="slow_b"), "slow_b")
    runners = [
        cli.start("run", str(mine), "-q"),
        cli.start("run", str(mine), "-q"),
        cli.start("run", str(other), "-q"),
    ]

    seen: list[dict[str, Any]] = []

    def all_running() -> list[dict[str, Any]] | None:
        seen[:] = cli.runs()
        return seen if len(seen) == 3 and all(r["status"] == "running" for r in seen) else None

    def explain() -> str:
        statuses = [(r["pathspec"], r["status"]) for r in seen]
        return f"runs: {statuses}\n{cli.background()}"

    # Three runners start at once on a fresh store and a loaded machine: allow them a minute.
    wait_until("three running runs", all_running, 60, explain)
    began = time.monotonic()
    done = cli("runs", "cancel", "--all-running", "--pipeline", "slow_a")
    took = time.monotonic() - began
    assert done.returncode == 0, done.stdout + done.stderr
    assert took < 8, f"cancelling two runs took {took:.1f} s"

    by_pipeline: dict[str, list[str]] = {}
    for run in cli.runs():
        by_pipeline.setdefault(run["pipeline"], []).append(run["status"])
    assert by_pipeline == {"slow_a": ["cancelled", "cancelled"], "slow_b": ["running"]}
    for run in cli.runs():
        if run["pipeline"] == "slow_a":
            assert f"{run['pathspec']}: cancelled" in done.stdout
    for runner in runners[:2]:
        code, out, err = cli.finish(runner, 10, "a cancelled runner")
        assert code in (1, 130), (code, out, err)
    assert runners[2].poll() is None, "the other pipeline's runner must go on"


# -- a runner killed with SIGKILL -------------------------------------------------------------


def test_sigkilled_runner_is_detected_as_lost_and_resumed(
    cli: Cli, flow_file: FlowWriter, tmp_path: Path
) -> None:
    file = flow_file(LOST, "lost")
    (tmp_path / "hold").touch()
    runner = cli.start("run", str(file), "-q")

    def b_running_side_done() -> bool:
        record = cli.peek(1)
        if record is None:
            return False
        steps = steps_of(record)
        return bool(steps["b"]["status"] == "running" and steps["side"]["status"] == "completed")

    wait_until("b running and side completed", b_running_side_done, 30)
    workers = psutil.Process(runner.pid).children(recursive=True)
    assert workers, "the process executor runs steps in child processes"
    cli.strays.extend(workers)
    runner.kill()
    runner.wait(timeout=10)
    killed_at = time.monotonic()

    # Nothing is left behind: a killed runner's worker processes go too.
    deadline = killed_at + 10
    while alive(workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    survivors = [describe(p) for p in alive(workers)]
    for proc in alive(workers):
        proc.kill()
    psutil.wait_procs(workers, timeout=10)

    def ended() -> dict[str, Any] | None:
        run = cli.runs()[0]
        return run if run["status"] != "running" else None

    lost = wait_until("the lost run to end", ended, max(1.0, killed_at + 30 - time.monotonic()))
    assert lost["status"] == "failed", lost
    record = cli.show(1)
    assert "runner lost" in record["error"]
    steps = steps_of(record)
    assert steps["a"]["status"] == "completed" and steps["side"]["status"] == "completed"
    for name in ("b", "c"):
        assert steps[name]["status"] == "failed", steps[name]
        assert "runner lost" in steps[name]["tasks"][-1]["exception"]
    assert executions(tmp_path) == Counter(a=1, side=1, b=1)

    (tmp_path / "hold").unlink()
    retry = cli("runs", "retry", "1", "-q")
    assert retry.returncode == 0, retry.stdout + retry.stderr
    assert "lost/2 completed" in retry.stdout
    resumed = cli.show(2)
    assert resumed["status"] == "completed"
    assert resumed["origin_pathspec"] == "lost/1"
    assert resumed["trigger"]["kind"] == "retry"
    # Completed steps are reused, not executed again; the rest ran once more.
    assert executions(tmp_path) == Counter(a=1, side=1, b=2, c=1)
    before, after = steps_of(record), steps_of(resumed)
    for name in ("a", "side"):
        hashes = [o["hash"] for o in before[name]["tasks"][-1]["outputs"]]
        assert [o["hash"] for o in after[name]["tasks"][-1]["outputs"]] == hashes
    assert cli.show(1)["status"] == "failed", "the origin run is never modified"

    assert not survivors, f"processes of the SIGKILLed runner still alive after 10 s: {survivors}"


# -- per-pipeline concurrency limit -----------------------------------------------------------


def test_runs_past_the_pipeline_limit_wait_in_order(cli: Cli, flow_file: FlowWriter) -> None:
    file = flow_file(QUEUE, "queue")
    runners = [cli.start("run", str(file), "-q") for _ in range(3)]

    def three_runs() -> list[dict[str, Any]] | None:
        runs = cli.runs()
        return runs if len(runs) == 3 and runs[0]["status"] == "running" else None

    runs = wait_until("three runs, the first running", three_runs, 30)
    assert [r["status"] for r in runs] == ["running", "initial", "initial"], runs

    # A waiting run is cancelled at once: there is nothing to stop.
    began = time.monotonic()
    cancel = cli("runs", "cancel", "3")
    took = time.monotonic() - began
    assert cancel.returncode == 0, cancel.stdout + cancel.stderr
    assert "queue/3: cancelled" in cancel.stdout
    assert took < 3, f"cancelling a waiting run took {took:.1f} s"
    waiting = cli.show(3)
    assert waiting["status"] == "cancelled"
    assert [s["status"] for s in waiting["steps"]] == ["cancelled"]
    assert [r["status"] for r in cli.runs()][:2] != ["running", "running"], "limit exceeded"

    for runner in runners:
        cli.finish(runner, 30, "a runner of the queue pipeline")
    assert [r.returncode for r in runners].count(0) == 2
    first, second, third = cli.runs()
    assert (first["status"], second["status"], third["status"]) == (
        "completed",
        "completed",
        "cancelled",
    )
    started = datetime.fromisoformat(second["started_at"])
    assert started >= datetime.fromisoformat(first["finished_at"]), (first, second)


@pytest.mark.parametrize(
    ("source", "args", "message"),
    [
        (
            QUEUE.replace("max_concurrent_runs=1", "max_concurrent_runs=0"),
            [],
            "max_concurrent_runs must be an integer >= 1",
        ),
        (LONG, ["--timeout", "soon"], "--timeout: cannot read 'soon' as a duration"),
        (
            "@pt.step(retries=-1)\ndef s():\n    return 1\n\npipeline = pt.Pipeline('neg', [s])\n",
            [],
            "retries must be an integer >= 0, got -1",
        ),
    ],
    ids=["max_concurrent_runs=0", "timeout=soon", "retries=-1"],
)
def test_bad_control_settings_exit_2_with_one_line(
    cli: Cli, flow_file: FlowWriter, source: str, args: list[str], message: str
) -> None:
    file = flow_file(source)
    line = one_line_error(cli("run", str(file), *args, timeout=30))
    assert message in line
    assert not cli.home.exists(), "bad input must not create or touch the store"


# -- retry ------------------------------------------------------------------------------------


def test_retry_reuses_completed_steps_and_never_changes_the_origin(
    cli: Cli, flow_file: FlowWriter, tmp_path: Path
) -> None:
    file = flow_file(CHAIN, "chain")
    first = cli("run", str(file), "-q")
    assert first.returncode == 1, first.stdout + first.stderr
    origin = cli.show(1)
    assert origin["status"] == "failed"
    assert [s["status"] for s in origin["steps"]] == ["completed", "failed", "upstream_failed"]
    assert executions(tmp_path) == Counter(a=1, b=1)

    # --dry-run prints the plan and changes nothing.
    dry = cli("runs", "retry", "1", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "retry of chain/1" in dry.stdout
    rows = [
        line.split()[:2]
        for line in dry.stdout.splitlines()
        if line.split()[:1] in (["a"], ["b"], ["c"])
    ]
    assert rows == [["a", "reuse"], ["b", "run"], ["c", "run"]], dry.stdout
    plan = cli("runs", "retry", "1", "--dry-run", "--json")
    assert plan.returncode == 0, plan.stderr
    [only] = json.loads(plan.stdout)
    assert only["origin"] == "chain/1"
    assert [(p["step"], p["action"]) for p in only["plan"]] == [
        ("a", "reuse"),
        ("b", "run"),
        ("c", "run"),
    ]
    assert len(cli.runs()) == 1
    assert executions(tmp_path) == Counter(a=1, b=1)

    # Retry: a is reused, b and c run; the origin keeps what it recorded.
    retry = cli("runs", "retry", "1", "-q")
    assert retry.returncode == 0, retry.stdout + retry.stderr
    assert "chain/2 completed" in retry.stdout
    assert executions(tmp_path) == Counter(a=1, b=2, c=1)
    second = cli.show(2)
    assert second["status"] == "completed"
    assert second["origin_pathspec"] == "chain/1"
    assert cli.show(1) == origin, "the origin run is never modified"

    # --from a: everything runs again.
    again = cli("runs", "retry", "2", "--from", "a", "-q")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "chain/3 completed" in again.stdout
    assert executions(tmp_path) == Counter(a=2, b=3, c=2)
    assert cli.show(3)["origin_pathspec"] == "chain/2"

    # A changed parameter re-runs only the steps that read it (and their downstream).
    changed = cli("runs", "retry", "2", "-p", "k=5", "-q")
    assert changed.returncode == 0, changed.stdout + changed.stderr
    assert "chain/4 completed" in changed.stdout
    assert executions(tmp_path) == Counter(a=2, b=3, c=3)
    fourth = cli.show(4)
    assert fourth["params"]["k"] == 5
    assert fourth["origin_pathspec"] == "chain/2"


def test_retry_of_a_running_or_unknown_run_is_refused(cli: Cli, flow_file: FlowWriter) -> None:
    file = flow_file(SLOW.format(name="slow"), "slow")
    runner = cli.start("run", str(file), "-q")
    wait_until("the run to be running", lambda: step_status(cli, 1, "slow", "running"), 30)

    line = one_line_error(cli("runs", "retry", "1"))
    assert "slow/1 is still running" in line
    assert len(cli.runs()) == 1

    line = one_line_error(cli("runs", "retry", "99"))
    assert "no run with id 99" in line

    cancel = cli("runs", "cancel", "1")
    assert cancel.returncode == 0, cancel.stdout + cancel.stderr
    cli.finish(runner, 30, "the cancelled runner")


def test_batch_retry_of_a_pipelines_failed_runs(
    cli: Cli, flow_file: FlowWriter, tmp_path: Path
) -> None:
    flaky = flow_file(FLAKY, "flaky")
    other = flow_file(BROKEN, "other")
    (tmp_path / "broken").touch()
    for target in (flaky, other, flaky):
        done = cli("run", str(target), "-q")
        assert done.returncode == 1, done.stdout + done.stderr
    (tmp_path / "broken").unlink()
    ok = cli("run", str(flaky), "-q")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # flaky/1, other/2 and flaky/3 failed; flaky/4 completed.

    batch = cli("runs", "retry", "--status", "failed", "--pipeline", "flaky", "-q")
    assert batch.returncode == 0, batch.stdout + batch.stderr
    runs = cli.runs()
    new = runs[4:]
    assert [r["pipeline"] for r in new] == ["flaky", "flaky"], runs
    assert all(r["status"] == "completed" for r in new), new
    origins = sorted(cli.show(r["id"])["origin_pathspec"] for r in new)
    assert origins == ["flaky/1", "flaky/3"]
    assert [r["status"] for r in runs[:4]] == ["failed", "failed", "failed", "completed"]


# -- timeouts ---------------------------------------------------------------------------------


@pytest.mark.parametrize("executor", ["process", "inline"])
def test_step_timeout_policy_failed(cli: Cli, flow_file: FlowWriter, executor: str) -> None:
    file = flow_file(STEP_TIMEOUT.format(policy="failed"), "timeouts")
    began = time.monotonic()
    done = cli("run", str(file), "--executor", executor, "-q")
    took = time.monotonic() - began
    assert done.returncode == 1, done.stdout + done.stderr
    assert took < 8, f"a 1 s step timeout on a 10 s step took {took:.1f} s"
    record = cli.show(1)
    assert record["status"] == "failed"
    steps = steps_of(record)
    [task] = steps["sleepy"]["tasks"]
    assert task["status"] == "failed"
    assert "timeout" in task["exception"]
    assert steps["after"]["status"] == "upstream_failed"
    assert "timeout" in done.stdout


@pytest.mark.parametrize("executor", ["process", "inline"])
def test_step_timeout_policy_cancelled(cli: Cli, flow_file: FlowWriter, executor: str) -> None:
    file = flow_file(STEP_TIMEOUT.format(policy="cancelled"), "timeouts")
    began = time.monotonic()
    done = cli("run", str(file), "--executor", executor, "-q")
    took = time.monotonic() - began
    assert took < 8, f"a 1 s step timeout on a 10 s step took {took:.1f} s"
    assert done.returncode in (1, 130), done.stdout + done.stderr
    record = cli.show(1)
    steps = steps_of(record)
    [task] = steps["sleepy"]["tasks"]
    assert task["status"] == "cancelled"
    assert "timeout" in task["exception"]
    assert steps["after"]["status"] == "cancelled"
    assert record["status"] == "cancelled"


@pytest.mark.parametrize("executor", ["process", "inline"])
def test_step_timeout_policy_warning(cli: Cli, flow_file: FlowWriter, executor: str) -> None:
    file = flow_file(STEP_TIMEOUT.format(policy="warning"), "timeouts")
    done = cli("run", str(file), "-p", "seconds=2", "--executor", executor, "-q")
    assert done.returncode == 0, done.stdout + done.stderr
    record = cli.show(1)
    assert record["status"] == "completed"
    steps = steps_of(record)
    assert steps["sleepy"]["status"] == "completed" and steps["after"]["status"] == "completed"
    sleepy_task = steps["sleepy"]["tasks"][0]["id"]
    breaches = [
        e
        for e in record["events"]
        if e["task_id"] == sleepy_task and "timeout" in (e["message"] or "")
    ]
    assert breaches, f"no event records the timeout breach: {record['events']}"
    assert "policy: warning" in breaches[0]["message"]


@pytest.mark.parametrize("executor", ["process", "inline"])
def test_run_timeout_from_the_command_line(cli: Cli, flow_file: FlowWriter, executor: str) -> None:
    file = flow_file(LONG, "long")
    began = time.monotonic()
    done = cli("run", str(file), "--timeout", "1s", "--executor", executor, "-q")
    took = time.monotonic() - began
    assert done.returncode == 1, done.stdout + done.stderr
    record = cli.show(1)
    assert record["status"] == "failed"
    assert "timeout" in record["error"]
    assert record["duration_s"] < 3, record["duration_s"]
    assert took < 6, f"pipetrail run --timeout 1s took {took:.1f} s"
