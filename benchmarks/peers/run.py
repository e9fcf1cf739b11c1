"""``make bench-peers``: pipetrail, Kedro and MLflow on the same scenarios, side by side.

Usage: ``python benchmarks/peers/run.py [--quick] [--json PATH] [--only CASE[,CASE]]
[--tools TOOL[,TOOL]] [--keep]``; ``PEERS_QUICK=1`` is ``--quick``.

Creates the peers' pinned virtualenvs under ``.bench-venvs/`` when missing (venvs.py), runs
every case (cases.py) in its own subprocess and fresh project folder, prints a table (figure,
pipetrail, best peer, ratio) and writes ``bench-results/peers.json``. pipetrail runs from the
project's ``.venv`` (this interpreter). Exit status 0 whatever the ratios (a report, not a
gate); 1 when a case crashed or its check failed; 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent
REPO = BENCH.parent
sys.path[:0] = [str(HERE), str(BENCH)]

import cases  # noqa: E402
import table  # noqa: E402
import venvs  # noqa: E402

DEFAULT_JSON = REPO / "bench-results" / "peers.json"
DEFAULT_VENVS = REPO / ".bench-venvs"
CASE_TIMEOUT_S = 1800
#: Environment a case does not inherit: another store, another tracking server, another venv.
DROPPED = ("PIPETRAIL_", "MLFLOW_", "KEDRO_", "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")
NOT_APPLICABLE = (
    "n/a: MLflow has no pipelines (chain, fan-out); Kedro records no runs, params or metrics "
    "(create, list, search, metric points)."
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small workloads (also PEERS_QUICK=1)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"default: {DEFAULT_JSON}")
    parser.add_argument("--venvs", type=Path, default=DEFAULT_VENVS, help="peers' virtualenvs")
    parser.add_argument("--only", action="append", default=[], metavar="CASE", help=_choices())
    parser.add_argument("--tools", action="append", default=[], metavar="TOOL", help="tools")
    parser.add_argument("--keep", action="store_true", help="keep each case's project folder")
    args = parser.parse_args(argv)
    quick = args.quick or os.environ.get("PEERS_QUICK", "") not in ("", "0")
    only = _split(args.only)
    tools = _split(args.tools)
    names = {c.name for c in cases.CASES}
    if only - names:
        parser.error(f"--only {','.join(sorted(only - names))}: no such case; {_choices()}")
    if tools - set(cases.TOOLS):
        parser.error(
            f"--tools {','.join(sorted(tools - set(cases.TOOLS)))}: not one of "
            + ", ".join(cases.TOOLS)
        )
    selected = [
        c for c in cases.CASES if (not only or c.name in only) and (not tools or c.tool in tools)
    ]
    return _drive(selected, quick, args.json, args.venvs, args.keep)


def _choices() -> str:
    return "choose from " + ", ".join(dict.fromkeys(c.name for c in cases.CASES))


def _split(items: list[str]) -> set[str]:
    return {p.strip() for item in items for p in item.split(",") if p.strip()}


def _drive(selected: list[cases.Case], quick: bool, json_path: Path, root: Path, keep: bool) -> int:
    import report

    sizes = cases.sizes(quick)
    pythons = {"pipetrail": Path(sys.executable)}
    installed: dict[str, dict[str, str]] = {
        "pipetrail": venvs.versions(Path(sys.executable), ("pipetrail", "numpy", "sqlalchemy"))
    }
    for tool in dict.fromkeys(c.tool for c in selected):
        if tool in venvs.PEERS:
            peer = venvs.PEERS[tool]
            pythons[tool] = venvs.ensure(peer, root)
            installed[tool] = {
                "pins": " ".join(peer.pins),
                **venvs.versions(pythons[tool], peer.report),
            }
    for tool, found in installed.items():
        shown = ", ".join(f"{k} {v}" for k, v in found.items() if k != "pins")
        print(f"{tool}: {shown}", file=sys.stderr, flush=True)
    values: dict[str, dict[str, float]] = {t: {} for t in pythons}
    outcomes: list[dict[str, Any]] = []
    for case in selected:
        print(f"running {case.tool} {case.name} ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        outcome = _run_case(case, pythons[case.tool], sizes, keep)
        outcome["elapsed_s"] = time.perf_counter() - started
        outcomes.append(outcome)
        values[case.tool].update(outcome.get("figures", {}))
        print(
            f"  {case.tool} {case.name}: {outcome['status']} in {outcome['elapsed_s']:.1f}s"
            + (f": {outcome['error']}" if outcome["status"] != "ok" else ""),
            file=sys.stderr,
            flush=True,
        )
    rows = table.rows(cases.figures(sizes), values)
    title = "pipetrail and its peers, same scenarios, this machine" + (
        " (PEERS_QUICK: small workloads)" if quick else ""
    )
    print()
    table.print_table(rows, title)
    print(NOT_APPLICABLE)
    print(
        "versions: "
        + "; ".join(
            f"{tool} " + ", ".join(f"{k} {v}" for k, v in found.items() if k != "pins")
            for tool, found in installed.items()
        )
    )
    document = {
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "quick": quick,
        "sizes": sizes,
        "machine": report.machine_info(),
        "repo": report.repo_info(REPO),
        "versions": installed,
        "table": rows,
        "cases": outcomes,
    }
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    print(f"wrote {json_path}", file=sys.stderr)
    broken = [f"{o['tool']} {o['case']}" for o in outcomes if o["status"] != "ok"]
    if broken:
        print(f"FAILED: {', '.join(broken)} (see {json_path})", file=sys.stderr)
        return 1
    return 0


def _run_case(case: cases.Case, python: Path, sizes: dict[str, Any], keep: bool) -> dict[str, Any]:
    """Every round of ``case`` in its own fresh project folder; figures are medians of rounds."""
    rounds = sizes[case.rounds] if case.rounds else 1
    results: list[dict[str, Any]] = []
    outcome: dict[str, Any] = {"tool": case.tool, "case": case.name, "status": "ok", "error": ""}
    for _ in range(rounds):
        base = Path(tempfile.mkdtemp(prefix=f"pipetrail-peers-{case.tool}-{case.name}-"))
        try:
            project = _project(base, case, sizes)
            runner = {"script": _script, "whole": _whole, "startup": _startup}[case.kind]
            results.append(runner(case, python, project, sizes))
        except CaseError as exc:
            outcome.update(status="failed", error=str(exc))
            break
        finally:
            if keep:
                print(f"  kept {base}", file=sys.stderr)
            else:
                shutil.rmtree(base, ignore_errors=True)
    keys = dict.fromkeys(k for r in results for k in r["figures"])
    outcome["figures"] = {
        k: statistics.median(r["figures"][k] for r in results if k in r["figures"]) for k in keys
    }
    outcome["rounds"] = results
    return outcome


class CaseError(Exception):
    """A case crashed, timed out or its script's check failed."""


def _project(base: Path, case: cases.Case, sizes: dict[str, Any]) -> Path:
    """A user's project: the script, the kit, pipeline files, committed to a git repository."""
    import flowgen

    project = base / "project"
    project.mkdir()
    shutil.copy(cases.SCRIPTS / "kit.py", project)
    if case.script:
        shutil.copy(cases.SCRIPTS / case.script, project)
    for flow in case.flows:
        if flow == "chain":
            flowgen.write_chain(project, sizes["chain_steps"])
        else:
            flowgen.write_fanout(project, sizes["branches"])
    (project / "sizes.json").write_text(json.dumps(sizes))
    (project / ".gitignore").write_text(
        "__pycache__/\n.pipetrail/\nmlruns/\nmlflow.db\ndata/\nresult.json\n"
    )
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "a user's project"]):
        subprocess.run([*git, *cmd], cwd=project, check=True, capture_output=True)
    return project


def _env(project: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(DROPPED)}
    # Telemetry off for every tool: a network call per command is noise, not the tool's work.
    env.update(
        PIPETRAIL_HOME=str(project / ".pipetrail"),
        DO_NOT_TRACK="1",
        KEDRO_DISABLE_TELEMETRY="true",
        MLFLOW_DISABLE_TELEMETRY="true",
    )
    return env


def _execute(cmd: list[str], project: Path, name: str) -> float:
    """Run ``cmd`` in ``project`` (output to files beside it); its wall time in seconds."""
    logs = project.parent
    with open(logs / f"{name}.out", "ab") as out, open(logs / f"{name}.err", "ab") as err:
        started = time.perf_counter()
        try:
            done = subprocess.run(
                cmd, cwd=project, env=_env(project), stdout=out, stderr=err, timeout=CASE_TIMEOUT_S
            )
        except subprocess.TimeoutExpired:
            raise CaseError(f"{' '.join(cmd)} timed out after {CASE_TIMEOUT_S}s") from None
        wall = time.perf_counter() - started
    if done.returncode != 0:
        tail = (logs / f"{name}.err").read_text(errors="replace").strip().splitlines()[-12:]
        raise CaseError(f"{' '.join(cmd)} exited {done.returncode}: " + " | ".join(tail))
    return wall


def _script(case: cases.Case, python: Path, project: Path, sizes: dict[str, Any]) -> dict[str, Any]:
    """The script, once; the figures it wrote to ``result.json``."""
    _execute([str(python), case.script], project, "script")
    result = project / "result.json"
    if not result.exists():
        raise CaseError(f"{case.script} exited 0 without writing {result.name}")
    loaded: dict[str, Any] = json.loads(result.read_text())
    return loaded


def _fill(cmd: tuple[str, ...], python: Path) -> list[str]:
    return [part.format(python=python, bin=python.parent) for part in cmd]


def _whole(case: cases.Case, python: Path, project: Path, sizes: dict[str, Any]) -> dict[str, Any]:
    """The command, once untimed (creates the store, compiles .pyc), then timed repeats."""
    cmd = _fill(case.command, python)
    first = _execute(cmd, project, "whole")
    walls = [_execute(cmd, project, "whole") for _ in range(sizes["fanout_repeats"])]
    return {
        "figures": {"fanout_whole_s": statistics.median(walls)},
        "details": {"command": cmd, "first_s": first, "walls_s": walls},
    }


def _startup(
    case: cases.Case, python: Path, project: Path, sizes: dict[str, Any]
) -> dict[str, Any]:
    """Fresh interpreters: ``python -c pass``, the import, ``--help``; one untimed each first."""
    statement, program = case.startup
    commands = {
        "python_s": [str(python), "-c", "pass"],
        "import_s": [str(python), "-c", statement],
        "help_s": [str(python.parent / program), "--help"],
    }
    measured = {}
    for key, cmd in commands.items():
        _execute(cmd, project, "startup")
        walls = [_execute(cmd, project, "startup") for _ in range(sizes["startup_repeats"])]
        measured[key] = statistics.median(walls)
    return {
        "figures": {"import_s": measured["import_s"], "help_s": measured["help_s"]},
        "details": {"commands": commands, **measured},
    }


if __name__ == "__main__":
    sys.exit(main())
