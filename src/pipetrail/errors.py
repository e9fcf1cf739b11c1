"""The whole pipetrail exception tree.

::

    PipetrailError
    ├── UsageError                      bad input from a person; the CLI exits 2
    │   ├── DefinitionError             a pipeline that cannot be built (cycle, missing input, …)
    │   │   └── CycleError
    │   ├── ParameterError (ValueError) unknown, malformed or ill-typed parameter
    │   ├── QuerySyntaxError            search text that does not parse (points at the token)
    │   ├── PipelineLoadError           a pipeline file or name that cannot be loaded
    │   ├── ConfigError                 a setting with a bad value
    │   └── NotFoundError (LookupError) a run, step or artifact that is not in the store
    ├── StoreError                      the metadata store failed (wraps SQLAlchemy errors)
    │   └── MigrationError
    ├── ArtifactError                   the artifact store failed
    │   ├── SerializationError          an output that no serializer can store
    │   └── IntegrityError              stored bytes whose hash does not match their key
    ├── InvalidTransitionError          a status change the state machine does not allow
    ├── LeaseLostError                  this runner's run was taken from it (reaped as lost)
    ├── StepTimeoutError (TimeoutError) a task ran past its step's timeout
    ├── WorkerLostError                 a worker process died while running a task
    └── TaskCancelledError              a running task was stopped on request

Every message names the object, the bad value and, where there is one, the fix.
Adapters re-raise library errors as these, ``from`` the original.
"""

from __future__ import annotations

__all__ = [
    "ArtifactError",
    "ConfigError",
    "CycleError",
    "DefinitionError",
    "IntegrityError",
    "InvalidTransitionError",
    "LeaseLostError",
    "MigrationError",
    "NotFoundError",
    "ParameterError",
    "PipelineLoadError",
    "PipetrailError",
    "QuerySyntaxError",
    "SerializationError",
    "StepTimeoutError",
    "TickTakenError",
    "StoreError",
    "TaskCancelledError",
    "UsageError",
    "WorkerLostError",
]


class PipetrailError(Exception):
    """Root of every error pipetrail raises on purpose."""


class UsageError(PipetrailError):
    """Bad input from a person: the command line exits with code 2."""


class DefinitionError(UsageError):
    """A pipeline definition that cannot be built or run as written."""


class CycleError(DefinitionError):
    """The steps' inputs form a cycle."""


class ParameterError(UsageError, ValueError):
    """A pipeline parameter that is unknown, malformed or of the wrong type."""


class QuerySyntaxError(UsageError):
    """Filter or order-by text that cannot be parsed; the message points at the token.

    Attributes:
        reason: what is wrong, without the position and the excerpt.
        source: ``"filter"`` or ``"order_by"``.
        text: the whole text that was parsed.
        offset: where the offending token starts (0-based; ``len(text)`` for its end).
    """

    def __init__(self, reason: str, *, source: str, text: str, offset: int) -> None:
        flat = text.replace("\n", " ").replace("\t", " ").replace("\r", " ")
        super().__init__(
            f"{source}: {reason} at position {offset + 1}:\n  {flat}\n  {' ' * offset}^"
        )
        self.reason = reason
        self.source = source
        self.text = text
        self.offset = offset


class PipelineLoadError(UsageError):
    """A pipeline file or pipeline name that cannot be loaded."""


class ConfigError(UsageError):
    """A setting whose value cannot be used."""


class NotFoundError(UsageError, LookupError):
    """A run, step, task or artifact that is not in the store."""


class StoreError(PipetrailError):
    """The metadata store could not do what was asked."""


class MigrationError(StoreError):
    """The metadata store's schema could not be brought up to date."""


class ArtifactError(PipetrailError):
    """The artifact store could not do what was asked."""


class SerializationError(ArtifactError):
    """A value that no registered serializer can store."""


class IntegrityError(ArtifactError):
    """Stored bytes whose content hash differs from the key they are stored under."""


class InvalidTransitionError(PipetrailError):
    """A status change that the state machine does not allow."""


class LeaseLostError(PipetrailError):
    """A write into a run this process no longer holds: the run was reaped as lost meanwhile.

    The process stops driving the run and writes nothing more into it (fencing).
    """

    def __init__(self, message: str, *, run_id: int = 0) -> None:
        super().__init__(message)
        self.run_id = run_id


class TickTakenError(PipetrailError):
    """A trigger's tick has its run already (or was skipped): this run must not be created."""


class StepTimeoutError(PipetrailError, TimeoutError):
    """A task ran longer than its step's ``timeout``."""


class WorkerLostError(PipetrailError):
    """A worker process died (killed, crashed, out of memory) while running a task."""

    def __init__(
        self, message: str, *, pid: int = 0, exitcode: int | None = None, step: str = ""
    ) -> None:
        super().__init__(message)
        self.pid = pid
        self.exitcode = exitcode
        self.step = step


class TaskCancelledError(PipetrailError):
    """A running task was stopped on request (``cancel_task`` or ``shutdown(cancel=True)``)."""

    def __init__(self, message: str, *, pid: int = 0, step: str = "") -> None:
        super().__init__(message)
        self.pid = pid
        self.step = step
