"""Settings for going beyond one machine: artifact store options, the Dask scheduler, telemetry."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipetrail.config import DEFAULT_SYSTEM_METRICS_S, load_settings
from pipetrail.errors import ConfigError
from pipetrail.workspace import Workspace


def test_cluster_settings_come_from_the_environment(tmp_path: Path) -> None:
    settings = load_settings(
        {
            "PIPETRAIL_ARTIFACTS_OPTIONS": '{"anon": false, "client_kwargs": {"region_name": "x"}}',
            "PIPETRAIL_DASK_ADDRESS": " tcp://127.0.0.1:8786 ",
            "PIPETRAIL_SYSTEM_METRICS": "2.5",
        },
        tmp_path,
    )
    assert settings.artifacts_options == {"anon": False, "client_kwargs": {"region_name": "x"}}
    assert settings.dask_address == "tcp://127.0.0.1:8786"
    assert settings.system_metrics_s == 2.5


def test_cluster_settings_come_from_pyproject(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.pipetrail]\ndask_address = "tls://scheduler:8786"\nsystem_metrics = 0\n'
    )
    settings = load_settings({}, tmp_path)
    assert settings.dask_address == "tls://scheduler:8786"
    assert settings.system_metrics_s == 0
    assert settings.artifacts_options == {}


def test_artifacts_options_as_a_pyproject_table(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.pipetrail]\nartifacts_options = {client_kwargs = {region_name = "eu-west-1"}}\n'
    )
    settings = load_settings({}, tmp_path)
    assert settings.artifacts_options == {"client_kwargs": {"region_name": "eu-west-1"}}
    # The variable wins over the file.
    assert load_settings(
        {"PIPETRAIL_ARTIFACTS_OPTIONS": '{"anon": true}'}, tmp_path
    ).artifacts_options == {"anon": True}


def test_artifacts_options_in_pyproject_must_be_a_table(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.pipetrail]\nartifacts_options = "anon"\n')
    with pytest.raises(ConfigError, match=r"artifacts_options in \[tool.pipetrail\].*table"):
        load_settings({}, tmp_path)


def test_defaults(tmp_path: Path) -> None:
    settings = load_settings({}, tmp_path)
    assert settings.dask_address is None
    assert settings.system_metrics_s == DEFAULT_SYSTEM_METRICS_S


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PIPETRAIL_ARTIFACTS_OPTIONS": "{"}, "PIPETRAIL_ARTIFACTS_OPTIONS is not valid JSON"),
        ({"PIPETRAIL_ARTIFACTS_OPTIONS": "[1]"}, "must be a JSON object"),
        ({"PIPETRAIL_DASK_ADDRESS": "localhost:8786"}, "not a Dask scheduler address"),
        ({"PIPETRAIL_DASK_ADDRESS": "tcp://"}, "not a Dask scheduler address"),
        ({"PIPETRAIL_SYSTEM_METRICS": "-1"}, "system_metrics must be a number of seconds"),
        ({"PIPETRAIL_SYSTEM_METRICS": "nan"}, "system_metrics must be a number of seconds"),
        ({"PIPETRAIL_SYSTEM_METRICS": "often"}, "got 'often'"),
    ],
)
def test_bad_values_name_the_setting(tmp_path: Path, env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(env, tmp_path)


def test_settings_reach_processes_started_for_them(tmp_path: Path) -> None:
    """The scheduler starts runs as processes: they must see the same cluster settings."""
    env = {
        "PIPETRAIL_HOME": str(tmp_path / "home"),
        "PIPETRAIL_ARTIFACTS_OPTIONS": '{"anon": true}',
        "PIPETRAIL_DASK_ADDRESS": "tcp://127.0.0.1:8786",
        "PIPETRAIL_SYSTEM_METRICS": "1",
    }
    workspace = Workspace(load_settings(env, tmp_path))
    try:
        again = load_settings(workspace.settings_env(), tmp_path)
    finally:
        workspace.close()
    assert again == workspace.settings
