"""Typed settings, read once at the edge from PIPETRAIL_* variables and ``[tool.pipetrail]``."""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pipetrail.errors import ConfigError

__all__ = ["DEFAULT_BASE_URL", "EXECUTORS", "Settings", "load_settings"]

EXECUTORS = ("process", "inline", "dask")
#: Seconds between a task's system metrics samples (``system/cpu_percent``…) by default.
DEFAULT_SYSTEM_METRICS_S = 5.0
#: Where ``pipetrail ui`` listens by default; alerts link to pages under it.
DEFAULT_BASE_URL = "http://127.0.0.1:8765"


@dataclass(frozen=True)
class Settings:
    """Where the store lives and how runs execute.

    Attributes:
        home: folder for the embedded SQLite database and the artifact folder.
        db_url: SQLAlchemy URL of the metadata store.
        artifacts_url: path or fsspec URL of the artifact store.
        artifacts_options: fsspec storage options of the artifact store (JSON in
            PIPETRAIL_ARTIFACTS_OPTIONS); credentials usually come the fsspec/s3fs way instead
            (``AWS_*`` variables, ``AWS_ENDPOINT_URL``).
        executor: ``process`` (default), ``inline`` or ``dask``.
        max_workers: worker processes of the process executor (or of the local Dask cluster);
            None means the CPU count.
        dask_address: the Dask scheduler ``executor="dask"`` submits to
            (``tcp://host:8786``); None starts a local cluster for each run.
        system_metrics_s: seconds between a task's system metrics samples (CPU, memory, GPU
            as ``system/...`` metrics); 0 turns them off.
        alerts: the notifiers alerts go to, one validated mapping each (``kind``, ``url``…);
            build them with ``pipetrail.scheduling.notify.build_notifiers``.
        base_url: the dashboard's address, without a trailing slash; alerts link under it.
        retention: the retention rules the scheduler applies, one validated mapping each
            (``older_than``, and ``pipeline``, ``status``, ``keep_last`` when given); read them
            with ``pipetrail.governance.retention.parse_rules``.
    """

    home: Path
    db_url: str
    artifacts_url: str
    artifacts_options: Mapping[str, Any] = field(default_factory=dict)
    executor: str = "process"
    max_workers: int | None = None
    dask_address: str | None = None
    system_metrics_s: float = DEFAULT_SYSTEM_METRICS_S
    alerts: tuple[Mapping[str, Any], ...] = ()
    base_url: str = DEFAULT_BASE_URL
    retention: tuple[Mapping[str, Any], ...] = ()

    @property
    def sqlite_file(self) -> Path | None:
        """The database file when the metadata store is SQLite on disk, else None."""
        prefix = "sqlite:///"
        if not self.db_url.startswith(prefix) or self.db_url.endswith(":memory:"):
            return None
        return Path(self.db_url[len(prefix) :])

    @classmethod
    def for_home(cls, home: Path | str, **overrides: Any) -> Settings:
        """Settings that keep everything under ``home`` (tests and embedded use)."""
        path = Path(home).resolve()
        values: dict[str, Any] = {
            "home": path,
            "db_url": f"sqlite:///{path / 'pipetrail.db'}",
            "artifacts_url": str(path / "artifacts"),
        }
        values.update(overrides)
        return cls(**values)


def load_settings(env: Mapping[str, str] | None = None, cwd: Path | None = None) -> Settings:
    """Build Settings from ``env`` (default ``os.environ``) and the nearest ``pyproject.toml``.

    Environment variables win over the file; relative paths are taken from ``cwd``.

    Raises:
        ConfigError: naming the setting and its bad value.
    """
    env = os.environ if env is None else env
    cwd = cwd or Path.cwd()
    file_values, file_dir = _from_pyproject(cwd)

    def pick(env_name: str, key: str) -> tuple[str | None, Path]:
        if env.get(env_name):
            return env[env_name], cwd
        value = file_values.get(key)
        return (str(value) if value is not None else None), file_dir

    home_text, base = pick("PIPETRAIL_HOME", "home")
    home = (base / (home_text or ".pipetrail")).resolve()
    db_text, _ = pick("PIPETRAIL_DB", "db")
    artifacts_text, artifacts_base = pick("PIPETRAIL_ARTIFACTS", "artifacts")
    if artifacts_text and "://" not in artifacts_text:
        artifacts_text = str((artifacts_base / artifacts_text).resolve())
    executor = (pick("PIPETRAIL_EXECUTOR", "executor")[0] or "process").strip()
    if executor not in EXECUTORS:
        raise ConfigError(f"executor {executor!r} is not one of {', '.join(EXECUTORS)}")
    workers_text = pick("PIPETRAIL_MAX_WORKERS", "max_workers")[0]
    workers = None
    if workers_text:
        try:
            workers = int(workers_text)
            if workers < 1:
                raise ValueError
        except ValueError:
            raise ConfigError(
                f"max_workers must be a positive integer, got {workers_text!r}"
            ) from None
    base_url = _base_url(env, file_values)
    return Settings.for_home(
        home,
        **{k: v for k, v in {"db_url": db_text, "artifacts_url": artifacts_text}.items() if v},
        artifacts_options=_artifacts_options(env, file_values, file_dir),
        executor=executor,
        max_workers=workers,
        dask_address=_dask_address(pick("PIPETRAIL_DASK_ADDRESS", "dask_address")[0]),
        system_metrics_s=_seconds(
            pick("PIPETRAIL_SYSTEM_METRICS", "system_metrics")[0], "system_metrics"
        ),
        alerts=_alerts(env, file_values, file_dir),
        base_url=base_url,
        retention=_retention(env, file_values, file_dir),
    )


def _base_url(env: Mapping[str, str], file_values: Mapping[str, Any]) -> str:
    if env.get("PIPETRAIL_URL"):
        text, source = env["PIPETRAIL_URL"], "PIPETRAIL_URL"
    elif file_values.get("url") is not None:
        text, source = file_values["url"], "url in [tool.pipetrail]"
    else:
        return DEFAULT_BASE_URL
    value = text.strip().rstrip("/") if isinstance(text, str) else ""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - a bad port raises only when read
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"{source} {text!r} is not an http:// or https:// address; "
            f"give the dashboard's address, e.g. {DEFAULT_BASE_URL!r}"
        )
    return value


def _artifacts_options(
    env: Mapping[str, str], file_values: Mapping[str, Any], file_dir: Path
) -> dict[str, Any]:
    """fsspec storage options: PIPETRAIL_ARTIFACTS_OPTIONS (a JSON object), else the table
    ``artifacts_options`` in ``[tool.pipetrail]``."""
    text = env.get("PIPETRAIL_ARTIFACTS_OPTIONS", "")
    if not text.strip():
        value = file_values.get("artifacts_options")
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ConfigError(
                f"artifacts_options in [tool.pipetrail] of {str(file_dir / 'pyproject.toml')!r} "
                f"must be a table of fsspec storage options, got {type(value).__name__}"
            )
        return dict(value)
    try:
        parsed: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"PIPETRAIL_ARTIFACTS_OPTIONS is not valid JSON: {exc.msg} at character "
            f"{exc.pos + 1}; expected an object of fsspec storage options, "
            'e.g. {"client_kwargs": {"region_name": "eu-west-1"}}'
        ) from None
    if not isinstance(parsed, dict):
        raise ConfigError(
            "PIPETRAIL_ARTIFACTS_OPTIONS must be a JSON object of fsspec storage options, "
            f"got {type(parsed).__name__}"
        )
    return parsed


def _dask_address(text: str | None) -> str | None:
    """PIPETRAIL_DASK_ADDRESS: a Dask scheduler address such as ``tcp://10.0.0.5:8786``."""
    if not text or not text.strip():
        return None
    value = text.strip()
    scheme, sep, rest = value.partition("://")
    if not sep or not rest or scheme not in ("tcp", "tls", "ws", "wss", "inproc", "ucx"):
        raise ConfigError(
            f"dask_address {text!r} is not a Dask scheduler address; "
            "give one such as 'tcp://127.0.0.1:8786'"
        )
    return value


def _seconds(text: str | None, name: str) -> float:
    """A number of seconds >= 0 (0 turns the thing off); the default when unset."""
    if text is None or not str(text).strip():
        return DEFAULT_SYSTEM_METRICS_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise ConfigError(f"{name} must be a number of seconds (0 turns it off), got {text!r}")
    return value


def _alerts(
    env: Mapping[str, str], file_values: Mapping[str, Any], file_dir: Path
) -> tuple[Mapping[str, Any], ...]:
    """The notifiers of PIPETRAIL_ALERTS (a JSON list) or else ``[[tool.pipetrail.alerts]]``.

    Each is built once here, so a typo fails at start and not when the first alert is due.
    """
    text = env.get("PIPETRAIL_ALERTS", "")
    if text.strip():
        source = "PIPETRAIL_ALERTS"
        try:
            raw: Any = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"PIPETRAIL_ALERTS is not valid JSON: {exc.msg} at line {exc.lineno} "
                f"column {exc.colno} (character {exc.pos + 1}); expected a list of notifiers, "
                'e.g. [{"kind": "webhook", "url": "https://..."}]'
            ) from None
        what = "a JSON list of notifier objects"
    elif "alerts" in file_values:
        source = f"[[tool.pipetrail.alerts]] in {str(file_dir / 'pyproject.toml')!r}"
        raw = file_values["alerts"]
        what = "an array of tables, one [[tool.pipetrail.alerts]] per notifier"
    else:
        return ()
    if not isinstance(raw, list):
        raise ConfigError(f"{source} must be {what}, got {type(raw).__name__}")
    # Only here: the notifiers' mail and HTTP modules cost import time nobody else should pay.
    from pipetrail.scheduling.notify import build_notifiers

    try:
        build_notifiers(raw, env=env)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    # Plain dicts, not read-only proxies: Settings is pickled into worker processes.
    return tuple(dict(entry) for entry in raw)


def _retention(
    env: Mapping[str, str], file_values: Mapping[str, Any], file_dir: Path
) -> tuple[Mapping[str, Any], ...]:
    """The retention rules of PIPETRAIL_RETENTION (a JSON list) or else
    ``[[tool.pipetrail.retention]]``, each checked here so a typo fails at start."""
    text = env.get("PIPETRAIL_RETENTION", "")
    if text.strip():
        source = "PIPETRAIL_RETENTION"
        try:
            raw: Any = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"PIPETRAIL_RETENTION is not valid JSON: {exc.msg} at line {exc.lineno} "
                f"column {exc.colno} (character {exc.pos + 1}); expected a list of rules, "
                'e.g. [{"older_than": "90d", "status": ["failed"]}]'
            ) from None
    elif "retention" in file_values:
        source = f"[[tool.pipetrail.retention]] in {str(file_dir / 'pyproject.toml')!r}"
        raw = file_values["retention"]
    else:
        return ()
    from pipetrail.governance.retention import parse_rules

    parse_rules(raw, source)
    # Plain dicts, not read-only proxies: Settings is pickled into worker processes.
    return tuple(dict(entry) for entry in raw)


def _from_pyproject(cwd: Path) -> tuple[dict[str, Any], Path]:
    for folder in [cwd, *cwd.parents]:
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            try:
                data = tomllib.loads(candidate.read_text())
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise ConfigError(f"cannot read {str(candidate)!r}: {exc}") from None
            section = data.get("tool", {}).get("pipetrail", {})
            if not isinstance(section, dict):
                raise ConfigError(f"[tool.pipetrail] in {str(candidate)!r} must be a table")
            return section, folder
    return {}, cwd
