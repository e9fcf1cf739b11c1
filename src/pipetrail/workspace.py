"""The composition root: Settings into concrete stores, executors, an engine and a client."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipetrail import client
from pipetrail.config import Settings, load_settings
from pipetrail.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime

    from pipetrail.dsl import Pipeline
    from pipetrail.runtime.engine import Engine, RunObserver
    from pipetrail.runtime.executors.base import Executor
    from pipetrail.runtime.executors.dask import DaskCluster
    from pipetrail.runtime.task import TaskServices
    from pipetrail.scheduling.alerts import AlertCenter
    from pipetrail.scheduling.notify import Notifier
    from pipetrail.scheduling.scheduler import Scheduler, SchedulerOptions
    from pipetrail.storage.artifacts.cas import ContentAddressedStore
    from pipetrail.storage.artifacts.serializers import SerializerRegistry
    from pipetrail.storage.metadata.sql.store import SqlMetadataStore

__all__ = ["Workspace", "build_task_services", "cancel", "open_workspace", "retry", "run"]


class Workspace:
    """One metadata store and one artifact store, opened from Settings.

    Args:
        settings: where the stores are.
        connections: most PostgreSQL connections this process holds (a server wants several).

    Heavy modules (SQLAlchemy, fsspec) are imported here, on first use, not at ``import pipetrail``.
    """

    def __init__(self, settings: Settings, *, connections: int = 1) -> None:
        from pipetrail.storage.metadata.sql.store import SqlMetadataStore

        self.settings = settings
        # One connection for a runner (its threads take turns); a server passes more.
        self.store: SqlMetadataStore = SqlMetadataStore(settings.db_url, pool_size=connections)
        from pipetrail.runtime.recovery import reap_lost_runs

        # Any command that opens the store notices runs whose runner died (SIGKILL, power).
        reap_lost_runs(self.store, self.spool_root)

    @functools.cached_property
    def spool_root(self) -> Path:
        """This host's task spools (metrics and output on their way to the store)."""
        from pipetrail.runtime.spool import default_spool_root

        return default_spool_root(self.settings.home)

    @functools.cached_property
    def cas(self) -> ContentAddressedStore:
        """The artifact store, opened on first use (listing runs never needs it)."""
        from pipetrail.storage.artifacts.cas import ContentAddressedStore

        return ContentAddressedStore(
            self.settings.artifacts_url, storage_options=self.settings.artifacts_options
        )

    @functools.cached_property
    def registry(self) -> SerializerRegistry:
        from pipetrail.storage.artifacts.serializers import default_registry

        return default_registry()

    def services(self) -> TaskServices:
        """The stores this process's tasks write to: one set per workspace, made on first use."""
        return self._services

    @functools.cached_property
    def _services(self) -> TaskServices:
        from pipetrail.runtime.task import TaskServices

        return TaskServices(
            self.store,
            self.cas,
            self.registry,
            self.spool_root,
            system_metrics_s=self.settings.system_metrics_s,
        )

    def executor(self, name: str, pipeline: Pipeline, max_workers: int | None = None) -> Executor:
        """The executor called ``name`` for ``pipeline``.

        Raises:
            ConfigError: an unknown executor name.
        """
        if name == "inline":
            from pipetrail.runtime.executors.inline import InlineExecutor

            return InlineExecutor(self.services(), pipeline)
        if name == "process":
            from pipetrail.runtime.loader import findable

            why = findable(pipeline)
            if why is not None:
                # Nothing for a worker to import (a notebook, a __main__ block): run here.
                print(f"pipetrail: running steps in this process: {why}", file=sys.stderr)
                from pipetrail.runtime.executors.inline import InlineExecutor

                return InlineExecutor(self.services(), pipeline)
            from pipetrail.runtime.executors.pool import ProcessExecutor

            factory = functools.partial(build_task_services, self.settings)
            return ProcessExecutor(factory, max_workers or self.settings.max_workers)
        if name == "dask":
            return self.dask_executor(pipeline, max_workers=max_workers)
        raise ConfigError(f"unknown executor {name!r}; use one of: process, inline, dask")

    def dask_executor(
        self,
        pipeline: Pipeline,
        *,
        max_workers: int | None = None,
        dask_address: str | None = None,
        cluster: DaskCluster | None = None,
    ) -> Executor:
        """A Dask executor on ``cluster``, or on a new connection to ``dask_address`` (by
        default the ``dask_address`` setting; none starts a local cluster of ``max_workers``).

        Raises:
            ConfigError: the scheduler cannot be reached, or the pipeline has no file for
                workers to load its code from.
        """
        from pipetrail.runtime.executors.dask import DaskExecutor, WorkerStores, connect
        from pipetrail.runtime.loader import findable

        s = self.settings
        why = findable(pipeline)
        if why is not None:
            if cluster is not None:
                cluster.close()
            raise ConfigError(f"cannot run on Dask: {why}; define it at module level in a .py file")
        if cluster is None:
            cluster = connect(dask_address or s.dask_address, max_workers or s.max_workers)
        stores = WorkerStores.of(s.db_url, s.artifacts_url, s.artifacts_options, s.system_metrics_s)
        return DaskExecutor(stores, cluster, store=self.store)

    def engine(
        self,
        *,
        executor: str | None = None,
        max_workers: int | None = None,
        observer: RunObserver | None = None,
        dask_address: str | None = None,
    ) -> Engine:
        """An engine whose runs execute on ``executor`` (default: the ``executor`` setting).

        For ``dask`` the scheduler (``dask_address``, else the setting; none starts a local
        cluster) is connected here, before any run is recorded: an unreachable one is a
        ConfigError, not a failed run. Each run's executor closes its connection at its end.
        """
        from pipetrail.config import EXECUTORS
        from pipetrail.runtime.engine import Engine

        name = executor or self.settings.executor
        if name not in EXECUTORS:
            raise ConfigError(f"unknown executor {name!r}; use one of: {', '.join(EXECUTORS)}")
        if name != "dask":
            return Engine(
                self.services(),
                lambda pipeline: self.executor(name, pipeline, max_workers),
                observer,
            )
        from pipetrail.runtime.executors.dask import connect

        address = dask_address or self.settings.dask_address
        first = [connect(address, max_workers or self.settings.max_workers)]

        def dask(pipeline: Pipeline) -> Executor:
            cluster = first.pop() if first else None
            return self.dask_executor(
                pipeline, max_workers=max_workers, dask_address=address, cluster=cluster
            )

        return Engine(self.services(), dask, observer)

    def reader(self) -> client.Reader:
        return client.Reader(self.store, lambda: (self.cas, self.registry))

    @functools.cached_property
    def notifiers(self) -> list[Notifier]:
        """The notifiers alerts go to (settings: PIPETRAIL_ALERTS, [[tool.pipetrail.alerts]])."""
        from pipetrail.scheduling.notify import build_notifiers

        return build_notifiers(self.settings.alerts)

    def alert_center(self) -> AlertCenter:
        from pipetrail.scheduling.alerts import AlertCenter

        return AlertCenter(self.store, self.notifiers)

    def settings_env(self) -> dict[str, str]:
        """These settings as PIPETRAIL_* variables: what a process started for them needs."""
        s = self.settings
        env = {
            "PIPETRAIL_HOME": str(s.home),
            "PIPETRAIL_DB": s.db_url,
            "PIPETRAIL_ARTIFACTS": s.artifacts_url,
            "PIPETRAIL_EXECUTOR": s.executor,
            "PIPETRAIL_ALERTS": json.dumps([dict(a) for a in s.alerts]),
            "PIPETRAIL_URL": s.base_url,
            "PIPETRAIL_SYSTEM_METRICS": f"{s.system_metrics_s:g}",
        }
        if s.artifacts_options:
            env["PIPETRAIL_ARTIFACTS_OPTIONS"] = json.dumps(dict(s.artifacts_options))
        if s.max_workers is not None:
            env["PIPETRAIL_MAX_WORKERS"] = str(s.max_workers)
        if s.dask_address is not None:
            env["PIPETRAIL_DASK_ADDRESS"] = s.dask_address
        return env

    def scheduler(
        self, options: SchedulerOptions | None = None, *, cwd: Path | None = None
    ) -> Scheduler:
        """The scheduling loop over this store: tick runs start as ``pipetrail`` processes
        with these settings, in ``cwd`` (default: the current directory); their launch logs go
        to ``$PIPETRAIL_HOME/scheduler/``."""
        import os

        from pipetrail.runtime.recovery import reap_lost_runs
        from pipetrail.scheduling.launcher import SubprocessLauncher
        from pipetrail.scheduling.scheduler import Scheduler

        launcher = SubprocessLauncher(
            [sys.executable, "-m", "pipetrail.cli"],
            self.settings.home / "scheduler",
            env={**os.environ, **self.settings_env()},
            cwd=cwd or Path.cwd(),
        )
        return Scheduler(
            self.store,
            launcher,
            alerts=self.alert_center(),
            base_url=self.settings.base_url,
            options=options,
            reap=lambda: reap_lost_runs(self.store, self.spool_root),
            retention=self._retention_job(),
        )

    def _retention_job(self) -> Callable[[datetime], str | None] | None:
        """The ``retention`` setting's rules as the scheduler applies them (None: no rules)."""
        if not self.settings.retention:
            return None
        from pipetrail.governance.retention import retention_job

        return retention_job(self.store, self.settings.retention)

    def close(self) -> None:
        self.store.close()


def open_workspace(settings: Settings | None = None, *, connections: int = 1) -> Workspace:
    """Open the stores named by ``settings`` (by default: PIPETRAIL_* and pyproject.toml).

    ``connections``: most PostgreSQL connections of this process (a server serves requests
    side by side; a runner needs one).
    """
    return Workspace(settings or load_settings(), connections=connections)


def build_task_services(settings: Settings) -> TaskServices:
    """A worker process's stores: the same ones, without migrating (the runner did)."""
    from pipetrail.runtime.spool import default_spool_root
    from pipetrail.runtime.task import TaskServices
    from pipetrail.storage.artifacts.cas import ContentAddressedStore
    from pipetrail.storage.artifacts.serializers import default_registry
    from pipetrail.storage.metadata.sql.store import SqlMetadataStore

    return TaskServices(
        SqlMetadataStore(settings.db_url, migrate_schema=False),
        ContentAddressedStore(settings.artifacts_url, storage_options=settings.artifacts_options),
        default_registry(),
        default_spool_root(settings.home),
        system_metrics_s=settings.system_metrics_s,
    )


def run(
    pipeline: Pipeline,
    params: Mapping[str, Any] | None = None,
    *,
    variables: Mapping[str, str] | None = None,
    tags: tuple[str, ...] | list[str] = (),
    executor: str | None = None,
    max_parallel: int | None = None,
    workspace: Workspace | None = None,
) -> client.Run:
    """Run ``pipeline`` and return the recorded run.

    Args:
        pipeline: a ``pt.Pipeline``.
        params: parameter overrides (validated against the steps' declarations).
        variables: runtime variables, readable as ``pt.current.vars``.
        tags: user tags.
        executor: ``process``, ``inline`` or ``dask`` (on the ``dask_address`` setting's
            scheduler, else on a local cluster); the setting's default otherwise.
        max_parallel: most tasks at once.
        workspace: the stores to record into; the configured ones by default.
    """
    from pipetrail.core.ids import validate_user_tags
    from pipetrail.runtime.engine import RunRequest
    from pipetrail.runtime.loader import ImportOnly, importing

    if importing():
        # This file is being imported by pipetrail (a worker, `pipetrail run`): define, don't run.
        raise ImportOnly
    resolved = pipeline.resolve_params(params or {})
    tags = validate_user_tags(tags)
    ws = workspace or _default_workspace()
    engine = ws.engine(executor=executor)
    record = engine.run(
        RunRequest(
            pipeline=pipeline,
            params=resolved,
            variables=dict(variables or {}),
            tags=tuple(tags),
            trigger="api",
            max_parallel=max_parallel,
        )
    )
    # The record as the run ended, not read again.
    return client.Run._of(record, ws.reader())


def retry(
    run: client.Run | str | int,
    *,
    from_step: str | None = None,
    params: Mapping[str, Any] | None = None,
    executor: str | None = None,
    dry_run: bool = False,
    workspace: Workspace | None = None,
) -> client.Run | list[dict[str, Any]]:
    """Run ``run`` again as a new run that reuses what completed; the origin is not changed.

    Args:
        run: a Run, a pathspec (``"iris/42"``) or a run id.
        from_step: re-run this step and everything downstream of it whatever their status.
        params: parameter changes; the steps that read them (and their dependants) re-run.
        executor: ``process``, ``inline`` or ``dask``.
        dry_run: return the plan (each step: reuse or run, and why) and run nothing.
        workspace: the stores; the configured ones by default.
    """
    from pipetrail.core.ids import parse_pathspec
    from pipetrail.runtime.control import describe_plan, retry_request

    ws = workspace or _default_workspace()
    run_id = run.id if isinstance(run, client.Run) else parse_pathspec(str(run)).run_id
    overrides = {
        k: json.dumps(v) if not isinstance(v, str) else v for k, v in (params or {}).items()
    }
    request, plan = retry_request(
        ws.store, ws.store.get_run(run_id), overrides=overrides, from_step=from_step
    )
    if dry_run:
        return describe_plan(plan)
    record = ws.engine(executor=executor).run(request)
    return client.Run(record.id, reader=ws.reader())


def cancel(run: client.Run | str | int, *, workspace: Workspace | None = None) -> client.Run:
    """Cancel a waiting or running run (wherever its runner is) and return it once ended."""
    from pipetrail.core.ids import parse_pathspec
    from pipetrail.runtime.control import cancel_run

    ws = workspace or _default_workspace()
    run_id = run.id if isinstance(run, client.Run) else parse_pathspec(str(run)).run_id
    record = cancel_run(ws.store, ws.store.get_run(run_id))
    return client.Run(record.id, reader=ws.reader())


@functools.cache
def _default_workspace() -> Workspace:
    return open_workspace()


def _default_reader() -> client.Reader:
    return _default_workspace().reader()


client.set_default_reader(_default_reader)
