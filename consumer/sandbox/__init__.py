"""The V8 sandbox: tenants' JavaScript runs in supervised worker processes, never in the daemon."""

from consumer.sandbox.errors import ExecutorClosed, SandboxError
from consumer.sandbox.executor import Executor, ExecutorStats, WorkerStats
from consumer.sandbox.types import (
    DEFAULT_LIMITS,
    ExecutionRequest,
    ExecutionResult,
    Limits,
    Publisher,
    PublishRequest,
    Status,
)

__all__ = [
    "DEFAULT_LIMITS",
    "ExecutionRequest",
    "ExecutionResult",
    "Executor",
    "ExecutorClosed",
    "ExecutorStats",
    "Limits",
    "PublishRequest",
    "Publisher",
    "SandboxError",
    "Status",
    "WorkerStats",
]
