"""Declarative tables of the metadata store, with a constraint naming convention; used only in sql/."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from pipetrail.storage.metadata.sql.types import BigId, EpochTime, JsonDoc, UtcDateTime

__all__ = [
    "api_token",
    "artifact",
    "artifact_link",
    "block_run",
    "environment",
    "governance_event",
    "latest_metric",
    "log_chunk",
    "metadata",
    "metric_block",
    "model_alias",
    "model_policy",
    "model_version",
    "pipeline",
    "pipeline_run",
    "pipeline_version",
    "promotion_decision",
    "promotion_request",
    "registered_model",
    "run_event",
    "run_param",
    "run_stats",
    "run_tag",
    "alert",
    "scheduler_cursor",
    "scheduler_instance",
    "trigger",
    "trigger_tick",
]

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

pipeline = Table(
    "pipeline",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("created_at", UtcDateTime, nullable=False),
)

pipeline_version = Table(
    "pipeline_version",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("pipeline_id", Integer, ForeignKey("pipeline.id"), nullable=False),
    Column("version", String(64), nullable=False),
    # The version ignores comments; the DAG as it ran (with its exact source) is kept per content.
    Column("dag_hash", String(64), nullable=False),
    Column("dag", JsonDoc, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    UniqueConstraint("pipeline_id", "dag_hash"),
    Index(None, "pipeline_id", "version"),
)

environment = Table(
    "environment",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("hash", String(64), nullable=False, unique=True),
    Column("data", JsonDoc, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
)

pipeline_run = Table(
    "pipeline_run",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("pipeline_id", Integer, ForeignKey("pipeline.id"), nullable=False),
    Column("version_id", Integer, ForeignKey("pipeline_version.id"), nullable=False),
    Column("status", String(32), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("started_at", UtcDateTime),
    Column("finished_at", UtcDateTime),
    Column("duration_s", Float),
    Column("user", String(200), nullable=False),
    Column("host", String(255), nullable=False),
    Column("trigger", String(32), nullable=False),
    Column("origin_run_id", Integer, ForeignKey("pipeline_run.id")),
    Column("params", JsonDoc, nullable=False),
    Column("param_types", JsonDoc, nullable=False),
    Column("variables", JsonDoc, nullable=False),
    Column("git", JsonDoc),
    Column("code_key", String(64)),
    Column("environment_id", Integer, ForeignKey("environment.id")),
    Column("error", Text),
    Column("heartbeat_at", UtcDateTime),
    Column("cancel_requested_at", UtcDateTime),
    Column("cancel_reason", Text),
    Column("timeout_s", Float),
    Column("runner_host", String(255)),
    Column("runner_pid", Integer),
    # The runner's lease: a generation number, moved on when the run is taken from its runner
    # (reaped as lost). A runner holding an older lease finds out on its next write and stops.
    Column("lease", Integer, nullable=False, default=1),
    # What started it when a trigger did (``trigger`` holds the kind), and its SLA.
    Column("trigger_name", String(200)),
    Column("scheduled_at", UtcDateTime),
    Column("upstream_run_id", Integer, ForeignKey("pipeline_run.id")),
    Column("sla_due_at", UtcDateTime),
    Column("sla_state", String(8)),
    Column("sla_missed_at", UtcDateTime),
    Index(None, "pipeline_id", "created_at"),
    # A pipeline's runs newest first (the default order, keyset pages on id) without a sort.
    Index(None, "pipeline_id", "id"),
    Index(None, "trigger_name", "created_at"),
    Index(None, "sla_state", "sla_due_at"),
    Index(None, "finished_at"),
    Index(None, "status", "created_at"),
    Index(None, "created_at"),
)

# Runs per pipeline and status, and the durations of those that ended, kept in the same
# transaction as every status change: the headline numbers of a million runs are a sum over a
# few rows, not a scan. Rows are changed in (pipeline_id, status) order, so writers never deadlock.
run_stats = Table(
    "run_stats",
    metadata,
    Column("pipeline_id", Integer, ForeignKey("pipeline.id"), primary_key=True),
    Column("status", String(32), primary_key=True),
    Column("runs", BigId, nullable=False),
    Column("duration_sum", Float, nullable=False),
    Column("duration_count", BigId, nullable=False),
)

run_param = Table(
    "run_param",
    metadata,
    Column("run_id", Integer, ForeignKey("pipeline_run.id"), primary_key=True),
    Column("key", String(500), primary_key=True),
    Column("type", String(16), nullable=False),
    Column("value_num", Float),
    Column("value_text", Text),
    Index(None, "key", "value_num"),
)

run_tag = Table(
    "run_tag",
    metadata,
    Column("run_id", Integer, ForeignKey("pipeline_run.id"), primary_key=True),
    Column("tag", String(500), primary_key=True),
    Column("system", Boolean, nullable=False),
    Index(None, "tag"),
)

block_run = Table(
    "block_run",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", Integer, ForeignKey("pipeline_run.id"), nullable=False),
    Column("step", String(200), nullable=False),
    Column("task_index", Integer, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("status", String(32), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("started_at", UtcDateTime),
    Column("finished_at", UtcDateTime),
    Column("duration_s", Float),
    Column("cpu_time_s", Float),
    Column("peak_memory_bytes", BigId),
    Column("gpu_peak_memory_bytes", BigId),
    # Seconds of GPU time (utilisation times wall time, summed over devices), where measured.
    Column("gpu_time_s", Float),
    Column("exception_type", String(500)),
    Column("exception_message", Text),
    Column("traceback", Text),
    Column("failed_upstream", String(200)),
    Column("reused_from_task_id", Integer, ForeignKey("block_run.id")),
    Column("allowed_failure", Boolean, nullable=False, default=False),
    Column("note", Text),
    Column("host", String(255)),
    Column("pid", Integer),
    # The executor's worker it ran on when that is more than a host (a Dask worker's address).
    Column("worker", String(255)),
    # Bytes of the task's record spool (metric points) already in the store; recovery of a
    # task whose process died drains the spool from here.
    Column("spool_offset", BigId, nullable=False, default=0),
    UniqueConstraint("run_id", "step", "task_index", "attempt"),
)

# A task's captured stdout/stderr, appended in chunks while it runs: the chunk at each byte
# offset of the stream is written once, so a drain repeated after a crash adds nothing twice.
log_chunk = Table(
    "log_chunk",
    metadata,
    Column("block_run_id", Integer, ForeignKey("block_run.id"), primary_key=True),
    Column("stream", String(8), primary_key=True),
    Column("byte_offset", BigId, primary_key=True),
    Column("size", Integer, nullable=False),
    Column("text", Text, nullable=False),
)

run_event = Table(
    "run_event",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("run_id", Integer, ForeignKey("pipeline_run.id"), nullable=False),
    Column("block_run_id", Integer, ForeignKey("block_run.id")),
    Column("kind", String(16), nullable=False, default="status"),
    Column("status", String(32), nullable=False),
    Column("previous", String(32)),
    Column("at", UtcDateTime, nullable=False),
    Column("message", Text),
    # Who caused it, when a person did (a cancel, a retry, a tag over REST): a token's user or
    # the local user.
    Column("actor", String(200)),
    Index(None, "run_id", "id"),
)

# A task's metric points, one block per series (run, task, name) per write: a drain of 10,000
# points of 10 series writes 10 rows. The points are packed little-endian arrays (float64 values
# and times, int64 steps, a byte per point that has no step); ``points.py`` packs and reads
# them, and says how the positions put a write's series back in the order they were logged.
metric_block = Table(
    "metric_block",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("run_id", Integer, ForeignKey("pipeline_run.id"), nullable=False),
    Column("block_run_id", Integer, ForeignKey("block_run.id"), nullable=False),
    Column("name", String(250), nullable=False),
    Column("points", Integer, nullable=False),
    # Of the block's first and last point as logged (not the least and greatest).
    Column("first_step", BigId),
    Column("last_step", BigId),
    Column("first_time", EpochTime, nullable=False),
    Column("last_time", EpochTime, nullable=False),
    # Where the points sit among the write's: first + stride * i, or the positions packed
    # (uint32) when they follow no stride.
    Column("first_position", Integer, nullable=False),
    Column("position_stride", Integer),
    Column("position_data", LargeBinary),
    Column("value_data", LargeBinary, nullable=False),
    # None when no point has a step; step_missing None when every point has one.
    Column("step_data", LargeBinary),
    Column("step_missing", LargeBinary),
    Column("time_data", LargeBinary, nullable=False),
    Index(None, "run_id", "name", "id"),
)

latest_metric = Table(
    "latest_metric",
    metadata,
    Column("run_id", Integer, ForeignKey("pipeline_run.id"), primary_key=True),
    Column("name", String(250), primary_key=True),
    Column("value", Float, nullable=False),
    Column("step", BigId),
    Column("timestamp", EpochTime, nullable=False),
    Column("block_run_id", Integer, ForeignKey("block_run.id"), nullable=False),
    # Over the whole history, so min(...)/max(...) in a search is an index lookup too.
    Column("min_value", Float, nullable=False),
    Column("max_value", Float, nullable=False),
    # (name, value, run_id): a search ordered by a metric walks it in order (ties newest first).
    Index(None, "name", "value", "run_id"),
)

artifact = Table(
    "artifact",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("size", BigId, nullable=False),
    Column("serializer", String(32), nullable=False),
    Column("content_type", String(100), nullable=False),
    Column("type_name", String(300), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
)

artifact_link = Table(
    "artifact_link",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("run_id", Integer, ForeignKey("pipeline_run.id"), nullable=False),
    Column("block_run_id", Integer, ForeignKey("block_run.id"), nullable=False),
    Column("direction", String(8), nullable=False),
    Column("name", String(300), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("artifact_key", String(64), ForeignKey("artifact.key"), nullable=False),
    Column("source_uri", Text),
    Column("producer_block_run_id", Integer, ForeignKey("block_run.id")),
    Index(None, "artifact_key"),
    Index(None, "block_run_id"),
    Index(None, "run_id"),
)

# A trigger: what to run (a pipeline file and name, as ``pipetrail run`` takes them), when
# (its kind and schedule fields) and how (params, variables, tags, timeout, SLA, overlap).
trigger = Table(
    "trigger",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("pipeline_file", Text, nullable=False),
    Column("pipeline_name", String(200)),
    Column("kind", String(16), nullable=False),
    Column("cron", String(200)),
    Column("interval_s", Float),
    Column("start_at", UtcDateTime),
    Column("end_at", UtcDateTime),
    Column("once_at", UtcDateTime),
    Column("after_pipeline", String(200)),
    Column("after_on", String(16)),
    Column("timezone", String(64), nullable=False),
    Column("params", JsonDoc, nullable=False),
    Column("variables", JsonDoc, nullable=False),
    Column("tags", JsonDoc, nullable=False),
    Column("timeout_s", Float),
    Column("on_timeout", String(16)),
    Column("sla_s", Float),
    Column("max_concurrent", Integer),
    Column("overlap", String(8), nullable=False),
    Column("catchup", String(8), nullable=False),
    Column("paused", Boolean, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    # Ticks before this are not missed (set on create, resume and a change of schedule).
    Column("active_since", UtcDateTime),
)

# One row per tick a scheduler claimed: the unique (trigger, scheduled time) pair is what
# makes a tick start at most one run, whatever number of schedulers share the store.
trigger_tick = Table(
    "trigger_tick",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("trigger_id", Integer, ForeignKey("trigger.id"), nullable=False),
    Column("scheduled_at", UtcDateTime, nullable=False),
    Column("claimed_at", UtcDateTime, nullable=False),
    Column("run_id", Integer, ForeignKey("pipeline_run.id")),
    Column("skip_reason", Text),
    # For ``after``: the upstream run that ended (one tick per upstream run).
    Column("cause_run_id", Integer, ForeignKey("pipeline_run.id")),
    # Who is starting its run (a scheduler, then the runner it spawned) and how many times.
    Column("launcher_host", String(255)),
    Column("launcher_pid", Integer),
    Column("launches", Integer, nullable=False, default=0),
    # What the scheduler decided on the way (catch-up, overlap), for ``triggers show``.
    Column("note", Text),
    UniqueConstraint("trigger_id", "scheduled_at"),
    UniqueConstraint("trigger_id", "cause_run_id"),
)
# The open ticks (no run, no reason yet), read on every scheduler pass: a partial index keeps
# that read small however many settled ticks a year of schedules leaves behind.
_OPEN_TICK = text("run_id IS NULL AND skip_reason IS NULL")
Index(
    "ix_trigger_tick_open",
    trigger_tick.c.trigger_id,
    sqlite_where=_OPEN_TICK,
    postgresql_where=_OPEN_TICK,
)

# The alert outbox: one row per (event, notifier), delivered with retries by a scheduler.
alert = Table(
    "alert",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("dedup_key", String(300), nullable=False, unique=True),
    Column("event", String(32), nullable=False),
    Column("notifier", String(200), nullable=False),
    Column("run_id", Integer, ForeignKey("pipeline_run.id")),
    Column("trigger_name", String(200)),
    Column("payload", JsonDoc, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UtcDateTime, nullable=False),
    Column("claimed_until", UtcDateTime),
    Column("delivered_at", UtcDateTime),
    Column("failed_at", UtcDateTime),
    Column("last_error", Text),
    Index(None, "delivered_at", "failed_at", "next_attempt_at"),
    Index(None, "run_id"),
    Index(None, "trigger_name", "created_at"),
)

# Where a scheduler's scans have got to (e.g. the runs that ended), shared by all schedulers.
scheduler_cursor = Table(
    "scheduler_cursor",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("at", UtcDateTime, nullable=False),
)

# The schedulers that run against this store, with their heartbeats (the dashboard shows them).
scheduler_instance = Table(
    "scheduler_instance",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", UtcDateTime, nullable=False),
    Column("heartbeat_at", UtcDateTime, nullable=False),
    Column("stopped_at", UtcDateTime),
)

# The model registry: a named model, its numbered versions (each bound to the content hash of
# the artifact a task produced), the aliases pointing at one version at a time, the approval
# policy of an alias, and promotion requests with their decisions. Nothing here is updated in
# place but an alias's pointer; every change is also a governance_event.
registered_model = Table(
    "registered_model",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("description", Text),
    Column("created_at", UtcDateTime, nullable=False),
    Column("created_by", String(200), nullable=False),
)

model_version = Table(
    "model_version",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model_id", Integer, ForeignKey("registered_model.id"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("run_id", Integer, ForeignKey("pipeline_run.id"), nullable=False),
    Column("block_run_id", Integer, ForeignKey("block_run.id"), nullable=False),
    Column("artifact_name", String(300), nullable=False),
    Column("artifact_key", String(64), ForeignKey("artifact.key"), nullable=False),
    Column("description", Text),
    Column("created_at", UtcDateTime, nullable=False),
    Column("created_by", String(200), nullable=False),
    UniqueConstraint("model_id", "version"),
    Index(None, "run_id"),
    Index(None, "artifact_key"),
)

model_alias = Table(
    "model_alias",
    metadata,
    Column("model_id", Integer, ForeignKey("registered_model.id"), primary_key=True),
    Column("alias", String(100), primary_key=True),
    Column("version_id", Integer, ForeignKey("model_version.id"), nullable=False),
    Column("moved_at", UtcDateTime, nullable=False),
    Column("moved_by", String(200), nullable=False),
)

model_policy = Table(
    "model_policy",
    metadata,
    Column("model_id", Integer, ForeignKey("registered_model.id"), primary_key=True),
    Column("alias", String(100), primary_key=True),
    Column("approvers", Integer, nullable=False),
    Column("set_at", UtcDateTime, nullable=False),
    Column("set_by", String(200), nullable=False),
)

promotion_request = Table(
    "promotion_request",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model_id", Integer, ForeignKey("registered_model.id"), nullable=False),
    Column("version_id", Integer, ForeignKey("model_version.id"), nullable=False),
    Column("alias", String(100), nullable=False),
    # pending, approved, rejected, withdrawn
    Column("status", String(16), nullable=False),
    Column("reason", Text),
    Column("required", Integer, nullable=False),
    Column("requested_at", UtcDateTime, nullable=False),
    Column("requested_by", String(200), nullable=False),
    Column("closed_at", UtcDateTime),
    Index(None, "status", "id"),
    Index(None, "model_id", "id"),
)

promotion_decision = Table(
    "promotion_decision",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("request_id", Integer, ForeignKey("promotion_request.id"), nullable=False),
    Column("actor", String(200), nullable=False),
    # approved or rejected
    Column("decision", String(16), nullable=False),
    Column("comment", Text),
    Column("at", UtcDateTime, nullable=False),
    UniqueConstraint("request_id", "actor"),
)

# Who did what, when and why, for everything governed: model registrations, requests,
# decisions and alias moves, policies, tokens, run deletions and garbage collection. Append
# only. run_id has no foreign key: the event of a run's deletion outlives the run.
governance_event = Table(
    "governance_event",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("at", UtcDateTime, nullable=False),
    Column("actor", String(200), nullable=False),
    Column("action", String(32), nullable=False),
    Column("model_id", Integer, ForeignKey("registered_model.id")),
    Column("version_id", Integer, ForeignKey("model_version.id")),
    Column("request_id", Integer, ForeignKey("promotion_request.id")),
    Column("alias", String(100)),
    Column("run_id", Integer),
    Column("message", Text),
    Column("detail", JsonDoc, nullable=False),
    Index(None, "model_id", "id"),
    Index(None, "action", "at"),
    Index(None, "run_id"),
)

# Named API tokens: the store keeps a SHA-256 of each token, never the token.
api_token = Table(
    "api_token",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("role", String(16), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("revoked_at", UtcDateTime),
    Column("last_used_at", UtcDateTime),
)
