"""Typed settings, read once at the edge from PIPETRAIL_* variables and ``[tool.pipetrail]``."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipetrail.errors import ConfigError

__all__ = ["EXECUTORS", "Settings", "load_settings"]

EXECUTORS = ("process", "inline")


@dataclass(frozen=True)
class Settings:
    """Where the store lives and how runs execute.

    Attributes:
        home: folder for the embedded SQLite database and the artifact folder.
        db_url: SQLAlchemy URL of the metadata store.
        artifacts_url: path or fsspec URL of the artifact store.
        executor: ``process`` (default) or ``inline``.
        max_workers: worker processes of the process executor; None means the CPU count.
    """

    home: Path
    db_url: str
    artifacts_url: str
    executor: str = "process"
    max_workers: int | None = None

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
    return Settings.for_home(
        home,
        **{k: v for k, v in {"db_url": db_text, "artifacts_url": artifacts_text}.items() if v},
        executor=executor,
        max_workers=workers,
    )


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
