"""Alert notifiers and the dashboard address, read from PIPETRAIL_* and pyproject.toml."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import pytest

from pipetrail.config import DEFAULT_BASE_URL, Settings, load_settings
from pipetrail.errors import ConfigError
from pipetrail.scheduling.notify import build_notifiers

WEBHOOK = {"kind": "webhook", "url": "https://hooks.example.org/pipetrail"}

PYPROJECT = """\
[tool.pipetrail]
url = "https://pipetrail.example.org/"

[[tool.pipetrail.alerts]]
kind = "slack"
name = "team"
url = "https://hooks.slack.example/services/T/B/x"
events = ["run_failed", "run_recovered"]

[[tool.pipetrail.alerts]]
kind = "email"
host = "mail.example.org"
port = 587
starttls = true
from = "pipetrail@example.org"
to = ["ops@example.org"]
username = "pipetrail"
password_env = "SMTP_PASSWORD"
"""


def _load(tmp_path: Path, env: dict[str, str], pyproject: str | None = None) -> Settings:
    if pyproject is not None:
        (tmp_path / "pyproject.toml").write_text(pyproject)
    return load_settings(env=env, cwd=tmp_path)


def test_defaults_have_no_alerts_and_the_local_dashboard(tmp_path: Path) -> None:
    for settings in (_load(tmp_path, {}), Settings.for_home(tmp_path)):
        assert settings.alerts == ()
        assert settings.base_url == DEFAULT_BASE_URL == "http://127.0.0.1:8765"


def test_alerts_from_the_environment_are_kept_as_given(tmp_path: Path) -> None:
    entries = [WEBHOOK, {"kind": "slack", "url": "https://h/x", "pipelines": ["train"]}]
    settings = _load(tmp_path, {"PIPETRAIL_ALERTS": json.dumps(entries)})
    assert [dict(entry) for entry in settings.alerts] == entries
    assert [n.name for n in build_notifiers(settings.alerts)] == ["webhook-1", "slack-2"]


def test_alerts_and_url_from_pyproject(tmp_path: Path) -> None:
    settings = _load(tmp_path, {"SMTP_PASSWORD": "pw"}, PYPROJECT)
    assert [entry["kind"] for entry in settings.alerts] == ["slack", "email"]
    assert settings.alerts[1]["to"] == ["ops@example.org"]
    assert settings.base_url == "https://pipetrail.example.org"
    built = build_notifiers(settings.alerts, env={"SMTP_PASSWORD": "pw"})
    assert [(n.kind, n.name) for n in built] == [("slack", "team"), ("email", "email-2")]


def test_the_environment_wins_over_pyproject(tmp_path: Path) -> None:
    env = {
        "PIPETRAIL_ALERTS": json.dumps([WEBHOOK]),
        "PIPETRAIL_URL": "http://10.0.0.5:8080/pipetrail/",
    }
    settings = _load(tmp_path, env, PYPROJECT)
    assert [entry["kind"] for entry in settings.alerts] == ["webhook"]
    assert settings.base_url == "http://10.0.0.5:8080/pipetrail"


def test_an_empty_list_in_the_environment_turns_the_file_alerts_off(tmp_path: Path) -> None:
    assert _load(tmp_path, {"PIPETRAIL_ALERTS": "[]"}, PYPROJECT).alerts == ()


def test_settings_with_alerts_survive_pickling(tmp_path: Path) -> None:
    # Worker processes receive the Settings pickled.
    settings = _load(tmp_path, {"PIPETRAIL_ALERTS": json.dumps([WEBHOOK])})
    assert pickle.loads(pickle.dumps(settings)) == settings


BAD: list[tuple[str, dict[str, str], str | None, list[str]]] = [
    # (what, env, pyproject, every fragment the one-line message must contain)
    (
        "bad JSON",
        {"PIPETRAIL_ALERTS": '[{"kind": "webhook",, }]'},
        None,
        ["PIPETRAIL_ALERTS is not valid JSON", "line 1 column 21", "character 21"],
    ),
    (
        "JSON object, not a list",
        {"PIPETRAIL_ALERTS": json.dumps(WEBHOOK)},
        None,
        ["PIPETRAIL_ALERTS must be a JSON list", "got dict"],
    ),
    (
        "typo in an environment entry",
        {"PIPETRAIL_ALERTS": json.dumps([{**WEBHOOK, "evnts": ["run_failed"]}])},
        None,
        ["PIPETRAIL_ALERTS: alerts entry 1", "unknown key 'evnts'", "'events'"],
    ),
    (
        "unknown event in pyproject",
        {},
        '[[tool.pipetrail.alerts]]\nkind = "webhook"\nurl = "http://h/"\nevents = ["failed"]\n',
        ["[[tool.pipetrail.alerts]] in", "pyproject.toml", "alerts entry 1", "'failed'"],
    ),
    (
        "alerts as a table, not an array of tables",
        {},
        '[tool.pipetrail.alerts]\nkind = "webhook"\n',
        ["[[tool.pipetrail.alerts]]", "must be an array of tables", "got dict"],
    ),
    (
        "password_env not in the environment given",
        {},
        PYPROJECT,
        ["alerts entry 2 ('email-2')", "password_env names 'SMTP_PASSWORD'", "not set"],
    ),
    (
        "missing host in the second entry",
        {"PIPETRAIL_ALERTS": json.dumps([WEBHOOK, {"kind": "email", "to": "a@b"}])},
        None,
        ["alerts entry 2", "host is missing"],
    ),
    (
        "url without a scheme",
        {"PIPETRAIL_URL": "pipetrail.example.org"},
        None,
        ["PIPETRAIL_URL 'pipetrail.example.org'", "http:// or https://"],
    ),
    (
        "url in the file that is not text",
        {},
        "[tool.pipetrail]\nurl = 8765\n",
        ["url in [tool.pipetrail] 8765", "http:// or https://"],
    ),
    (
        "url with a bad port",
        {"PIPETRAIL_URL": "http://127.0.0.1:99999"},
        None,
        ["PIPETRAIL_URL 'http://127.0.0.1:99999'"],
    ),
]


@pytest.mark.parametrize(("what", "env", "pyproject", "fragments"), BAD, ids=[b[0] for b in BAD])
def test_bad_alert_settings_fail_at_load_naming_the_source_and_field(
    tmp_path: Path, what: str, env: dict[str, str], pyproject: str | None, fragments: list[str]
) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, env, pyproject)
    text = str(caught.value)
    assert "\n" not in text
    for fragment in fragments:
        assert fragment in text, (what, text)


def test_for_home_takes_alerts_and_base_url(tmp_path: Path) -> None:
    alerts: tuple[dict[str, Any], ...] = (WEBHOOK,)
    settings = Settings.for_home(tmp_path, alerts=alerts, base_url="https://pt.example.org")
    assert settings.alerts == alerts and settings.base_url == "https://pt.example.org"
