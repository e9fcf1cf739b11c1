"""Run pipetrail's benchmark scenarios, print a PASS/MISS table and write bench-results JSON.

Usage: ``python benchmarks/run.py [--quick] [--scale] [--json PATH] [--only NAME[,NAME]]
[--profile DIR]``; ``--scale`` adds the scenarios that take minutes (a million runs).

Each scenario runs in its own Python subprocess with a fresh temporary pipetrail home, so
process pools, import caches and memory never leak between scenarios. Exit status is 0 even
when figures miss their targets (this is a report); 1 when a scenario crashed or a
verification failed; 2 for bad arguments.
"""

# Only the standard library at module level: the process executor's forkserver re-runs this
# file as ``__mp_main__`` in every worker it starts, and that must stay cheap.
from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_JSON = REPO / "bench-results" / "latest.json"
NAMES = (
    "chain20_inline",
    "chain20_process",
    "chain20_dask",
    "fanout100_inline",
    "fanout100_process",
    "metrics_100k",
    "metrics_batched",
    "artifact_200mb",
    "artifact_200mb_s3",
    "import_time",
    "run_record_read",
    "search_10k",
    "list_page_10k",
    "reads",
    "growth",
    "scheduler",
    "pg_million",
)
#: Scenarios that take minutes (seeding a million runs): run only with --scale or --only.
SCALE = ("pg_million",)
SCENARIO_TIMEOUT_S = 1800


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and either run one scenario (worker mode) or drive them all."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny workloads (seconds in total)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"default: {DEFAULT_JSON}")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help="scenario name or glob; repeat or comma-separate (choices: " + ", ".join(NAMES) + ")",
    )
    parser.add_argument(
        "--profile", type=Path, metavar="DIR", help="write a cProfile <scenario>.prof per scenario"
    )
    parser.add_argument(
        "--scale", action="store_true", help="also the scale scenarios (" + ", ".join(SCALE) + ")"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return _worker(args.worker, args.result, args.quick, args.profile)
    selected = _select(args.only, args.scale)
    if not selected:
        parser.error(
            f"--only {','.join(args.only)} matches no scenario; choose from {', '.join(NAMES)}"
        )
    return _drive(selected, args.quick, args.json, args.profile)


def _select(patterns: list[str], scale: bool = False) -> list[str]:
    wanted = [p.strip() for item in patterns for p in item.split(",") if p.strip()]
    if not wanted:
        return [n for n in NAMES if scale or n not in SCALE]
    return [n for n in NAMES if any(fnmatch.fnmatchcase(n, p) for p in wanted)]


def _drive(selected: list[str], quick: bool, json_path: Path, profile: Path | None) -> int:
    import report

    results: dict[str, dict[str, Any]] = {}
    for name in selected:
        print(f"running {name}{' (quick)' if quick else ''} ...", file=sys.stderr, flush=True)
        results[name] = _spawn(name, quick, profile)
        print(
            f"  {name}: {results[name]['status']} in {results[name]['elapsed_s']:.1f}s",
            file=sys.stderr,
            flush=True,
        )
    document = {
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "quick": quick,
        "machine": report.machine_info(),
        "repo": report.repo_info(REPO),
        "scenarios": results,
    }
    title = "pipetrail benchmarks" + (" (--quick: small workloads)" if quick else "")
    report.print_table(results, title)
    _print_import_offenders(results)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    print(f"wrote {json_path}", file=sys.stderr)
    broken = [n for n, r in results.items() if r["status"] != "ok"]
    if broken:
        print(
            f"FAILED: {', '.join(broken)} (see the error column and {json_path})", file=sys.stderr
        )
        return 1
    return 0


def _spawn(name: str, quick: bool, profile: Path | None) -> dict[str, Any]:
    """Run one scenario in a fresh interpreter, with its own pipetrail home as cwd."""
    home = Path(tempfile.mkdtemp(prefix=f"pipetrail-bench-{name}-"))
    result_file = home / "result.json"
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        name,
        "--result",
        str(result_file),
    ]
    if quick:
        cmd.append("--quick")
    if profile is not None:
        cmd += ["--profile", str(profile.resolve())]
    env = {**os.environ, "PIPETRAIL_HOME": str(home / "store"), "PYTHONUNBUFFERED": "1"}
    started = time.perf_counter()
    try:
        done = subprocess.run(
            cmd, cwd=home, env=env, capture_output=True, text=True, timeout=SCENARIO_TIMEOUT_S
        )
        elapsed = time.perf_counter() - started
        if result_file.exists():
            result: dict[str, Any] = json.loads(result_file.read_text())
        else:
            tail = (done.stderr or done.stdout)[-2000:]
            result = {"status": "crashed", "error": f"exit {done.returncode}: {tail}"}
        if done.returncode != 0 and result.get("status") == "ok":
            result = {**result, "status": "crashed", "error": f"exit {done.returncode}"}
    except subprocess.TimeoutExpired:
        elapsed = time.perf_counter() - started
        result = {"status": "crashed", "error": f"timed out after {SCENARIO_TIMEOUT_S}s"}
    finally:
        shutil.rmtree(home, ignore_errors=True)
    result["elapsed_s"] = elapsed
    result.setdefault("figures", [])
    return result


def _worker(name: str, result_file: Path | None, quick: bool, profile: Path | None) -> int:
    """Run scenario ``name`` here (cwd is its fresh home) and write its result as JSON."""
    sys.path.insert(0, str(HERE))
    import scenarios

    if name not in scenarios.SCENARIOS or result_file is None:
        print(f"unknown scenario {name!r} or no --result", file=sys.stderr)
        return 2
    home = Path.cwd()
    sizes = scenarios.Sizes.pick(quick)
    result: dict[str, Any]
    try:
        if profile is not None:
            import cProfile

            profile.mkdir(parents=True, exist_ok=True)
            profiler = cProfile.Profile()
            outcome = profiler.runcall(scenarios.SCENARIOS[name], home, sizes)
            profiler.dump_stats(str(profile / f"{name}.prof"))
        else:
            outcome = scenarios.SCENARIOS[name](home, sizes)
        result = {
            "status": "ok",
            "error": "",
            "figures": [f.to_dict() for f in outcome.figures],
            "details": outcome.details,
            "sizes": vars(sizes),
        }
    except scenarios.VerificationError as exc:
        result = {
            "status": "verification-failed",
            "error": str(exc),
            "traceback": traceback.format_exc(),
        }
    except Exception as exc:
        result = {
            "status": "crashed",
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(),
        }
    result_file.write_text(json.dumps(result, indent=2, default=str))
    if result["status"] != "ok":
        print(result["traceback"], file=sys.stderr)
        return 1
    return 0


def _print_import_offenders(results: dict[str, dict[str, Any]]) -> None:
    details = results.get("import_time", {}).get("details")
    if not details:
        return
    for label, key in (("import pipetrail", "import_top"), ("pipetrail --help", "help_top")):
        top = details[key]
        packages = ", ".join(f"{k} {v:.0f}" for k, v in list(top["packages_self_ms"].items())[:8])
        print(
            f"-X importtime, {label}: {top['total_ms']:.0f} ms; self time by package (ms): {packages}"
        )


if __name__ == "__main__":
    sys.exit(main())
