"""The audit report's summary: a reviewer's record-keeping questions, each answered from the
document's own facts, with links (anchors) to where the detail is."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

__all__ = ["QUESTIONS", "summarize", "when"]

#: The questions, by key, in the order the summary asks them.
QUESTIONS = {
    "subject": "What is audited?",
    "data": "Which data was it made from?",
    "code": "Which code made it?",
    "settings": "With which parameters and environment?",
    "approvals": "Who approved it, and when?",
    "reproduction": "Can it be reproduced?",
    "failures": "What failed on the way?",
}


def when(text: Any) -> str:
    """An ISO timestamp of the document as a person reads it: ``2026-12-07 12:54:37 UTC``."""
    if not isinstance(text, str):
        return "-"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return text
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _answer(key: str, answer: str, state: str, links: list[dict[str, str]]) -> dict[str, Any]:
    return {
        "key": key,
        "question": QUESTIONS[key],
        "answer": answer,
        "state": state,
        "links": links,
    }


def _link(label: str, anchor: str) -> dict[str, str]:
    return {"label": label, "href": f"#{anchor}"}


def summarize(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """One answer per question: ``key``, ``question``, ``answer`` (a sentence from the record),
    ``state`` (``ok``, ``attention`` or ``none``) and ``links`` (label, ``#anchor``)."""
    return [
        _subject(doc),
        _data(doc),
        _code(doc),
        _settings(doc),
        _approvals(doc),
        _reproduction(doc),
        _failures(doc),
    ]


def _subject(doc: dict[str, Any]) -> dict[str, Any]:
    subject = doc["subject"]
    runs = doc["runs"]
    upstream = len(runs) - 1
    links = [_link(subject["run"], subject["run_anchor"])]
    if subject["kind"] == "model_version":
        text = (
            f"Model {subject['model']} version {subject['version']}: artifact "
            f"{subject['artifact_name']!r} ({subject['artifact_hash']}) produced by task "
            f"{subject['task']} of run {subject['run']} ({subject['run_status']})"
        )
        links.insert(0, _link("model", "model"))
    else:
        text = f"Run {subject['run']} ({subject['run_status']}), without a registered model"
    text += f"; {upstream} upstream run{'s feed' if upstream != 1 else ' feeds'} it."
    links += [_link(r["pathspec"], r["anchor"]) for r in runs[1:]]
    state = "ok" if subject["run_status"] == "completed" else "attention"
    return _answer("subject", text, state, links)


def _data(doc: dict[str, Any]) -> dict[str, Any]:
    outside: list[str] = []
    crossing: list[str] = []
    links: list[dict[str, str]] = []
    for run in doc["runs"]:
        for step in run["steps"]:
            for item in step["inputs"]:
                if item["kind"] != "external":
                    continue
                where = item["source_uri"] or item["name"]
                if item.get("producers"):
                    crossing.append(
                        f"{item['name']} ({item['hash'][:16]}…) from {', '.join(item['producers'])}"
                    )
                else:
                    outside.append(f"{where} ({item['hash']})")
                links.append(_link(step["pathspec"], step["anchor"]))
    if not outside and not crossing:
        return _answer(
            "data", "No input files are recorded: every step's inputs came from steps.", "none", []
        )
    parts = []
    if outside:
        parts.append("External data read by content hash: " + "; ".join(dict.fromkeys(outside)))
    if crossing:
        parts.append("Upstream runs' outputs: " + "; ".join(dict.fromkeys(crossing)))
    unique = list({item["href"]: item for item in links}.values())
    return _answer("data", ". ".join(parts) + ".", "ok", unique)


def _code(doc: dict[str, Any]) -> dict[str, Any]:
    parts, links, state = [], [], "ok"
    for run in doc["runs"]:
        code = run["code"]
        git = code["git"] or {}
        if git.get("commit"):
            where = f"git {git['commit'][:12]}" + (
                " (dirty working tree)" if git.get("dirty") else ""
            )
            if git.get("dirty"):
                state = "attention"
        else:
            where = "no git commit recorded"
        snap = f"code snapshot {code['snapshot'][:16]}" if code["snapshot"] else "no code snapshot"
        if not code["snapshot"] or code["snapshot_error"]:
            state = "attention"
        parts.append(
            f"{run['pathspec']}: pipeline version {run['pipeline_version']}, {where}, {snap}"
        )
        links.append(_link(run["pathspec"], run["anchor"] + "-code"))
    return _answer("code", "; ".join(parts) + ".", state, links)


def _settings(doc: dict[str, Any]) -> dict[str, Any]:
    run = doc["runs"][0]
    params = ", ".join(f"{k}={v!r}" for k, v in run["params"].items()) or "no parameters"
    env = run["environment"]
    if env and not env.get("missing"):
        where = (
            f"Python {env['python_version']} on {env['platform']}, {env['package_count']} packages"
        )
    else:
        where = "no environment recorded"
    text = f"{run['pathspec']}: {params}; {where}."
    links = [_link(run["pathspec"], run["anchor"])]
    return _answer("settings", text, "ok" if env else "attention", links)


def _approvals(doc: dict[str, Any]) -> dict[str, Any]:
    model = doc["model"]
    if model is None:
        return _answer("approvals", "Not a registered model: no approvals apply.", "none", [])
    number = model["version"]["version"]
    decided, links = [], [_link("approvals", "approvals")]
    for request in model["promotions"]:
        if not request["of_audited_version"]:
            continue
        links.append(_link(f"request {request['id']}", request["anchor"]))
        who = "; ".join(
            f"{d['decision']} by {d['actor']} at {when(d['at'])}"
            + (f" ({d['comment']})" if d["comment"] else "")
            for d in request["decisions"]
        )
        decided.append(
            f"request {request['id']} to point {request['alias']!r} at version {number}, by "
            f"{request['requested_by']} at {when(request['requested_at'])}: {request['status']}"
            + (f" ({who})" if who else "")
        )
    moves = [e for e in model["events"] if e["action"] == "alias_moved" and e["version"] == number]
    moved = "; ".join(
        f"{e['alias']!r} moved here by {e['actor']} at {when(e['at'])}" for e in moves
    )
    if not decided and not moves:
        return _answer("approvals", f"No promotion of version {number} is recorded.", "none", links)
    text = "; ".join([*decided, *([moved] if moved else [])]) + "."
    approved = any(
        r["status"] == "approved" for r in model["promotions"] if r["of_audited_version"]
    )
    return _answer("approvals", text, "ok" if approved or moves else "attention", links)


def _reproduction(doc: dict[str, Any]) -> dict[str, Any]:
    subject_run = doc["runs"][0]
    done = [r for r in doc["reproductions"] if r["origin"] == subject_run["pathspec"]]
    snapshot = bool(subject_run["code"]["snapshot"]) and not subject_run["code"]["snapshot_error"]
    can = (
        "its code snapshot, parameters and environment are recorded"
        if snapshot
        else ("it has no readable code snapshot")
    )
    if not done:
        text = f"Not reproduced yet; {can} (pipetrail runs reproduce {subject_run['pathspec']})."
        return _answer("reproduction", text, "none" if snapshot else "attention", [])
    parts, links = [], []
    for rep in done:
        links.append(_link(rep["reproduction"], rep["anchor"]))
        if rep["matched"]:
            parts.append(f"{rep['reproduction']} matched every output's content hash")
        else:
            what = ", ".join(rep["differed"]) or f"the run ended {rep['status']}"
            parts.append(f"{rep['reproduction']} differed: {what}")
    state = "ok" if all(r["matched"] for r in done) else "attention"
    return _answer("reproduction", "; ".join(parts) + ".", state, links)


def _failures(doc: dict[str, Any]) -> dict[str, Any]:
    parts, links = [], []
    for run in doc["runs"]:
        for step in run["steps"]:
            for attempt in step["attempts"]:
                error = attempt["error"]
                if attempt["status"] != "failed" and error is None:
                    continue
                what = f"{error['type']}: {error['message']}" if error else attempt["status"]
                parts.append(f"{attempt['pathspec']} attempt {attempt['attempt']}: {what}")
                links.append(_link(step["pathspec"], step["anchor"]))
        if run["status"] != "completed":
            parts.append(f"run {run['pathspec']} ended {run['status']}: {run['error'] or ''}")
    if not parts:
        return _answer("failures", "Nothing failed: every attempt completed.", "ok", [])
    unique = list({item["href"]: item for item in links}.values())
    return _answer("failures", "; ".join(parts) + ".", "attention", unique)
