"""Values that cross the executor boundary: what to run, with which limits, and what came of it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Status = Literal["completed", "failed", "timeout"]

# The seed's defaults for scripts.resource_limits.
DEFAULT_LIMITS: Mapping[str, int] = {
    "max_execution_time_ms": 30000,
    "max_memory_bytes": 67108864,
    "max_concurrent_runs": 5,
    "max_api_calls_per_minute": 60,
    "max_output_size_bytes": 1048576,
}


@dataclass(frozen=True, slots=True)
class Limits:
    max_execution_time_ms: int = 30000
    max_memory_bytes: int = 67108864
    max_concurrent_runs: int = 5
    max_api_calls_per_minute: int = 60
    max_output_size_bytes: int = 1048576

    @classmethod
    def from_json(cls, raw: Mapping[str, Any] | None) -> Limits:
        """Missing keys take the seed's defaults; unknown keys are ignored."""
        merged = {**DEFAULT_LIMITS, **{k: v for k, v in (raw or {}).items() if k in DEFAULT_LIMITS}}
        return cls(**{k: int(v) for k, v in merged.items()})


@dataclass(frozen=True, slots=True)
class ExecutionRequest:
    source: str
    # Identifies the source text; warm contexts are keyed by (tenant_id, script_id, version_id).
    version_id: str
    input: Any
    tenant_id: str
    script_id: str
    execution_id: str
    trigger: Mapping[str, Any]  # {"type": "event"|"cron"|"http"|"manual"|"api", ...}
    limits: Limits = field(default_factory=Limits)
    event_depth: int = 0  # depth of the event chain that led here; ctx.events.publish adds 1


@dataclass(frozen=True, slots=True)
class ExecutionResult:
    status: Status
    output: Any = None
    error: str | None = None  # one readable line
    stack: str | None = None  # the JS stack, when there is one
    logs: tuple[Mapping[str, Any], ...] = ()  # {"level", "message", "ts"}
    metrics: Mapping[str, int] = field(default_factory=dict)
    # duration_ms, memory_used_bytes, api_call_count, database_query_count


@dataclass(frozen=True, slots=True)
class PublishRequest:
    """ctx.events.publish(type, payload) from a script: always into the script's own tenant."""

    tenant_id: str
    event_type: str
    payload: Any
    depth: int
    source_execution_id: str


# The host supplies this to let scripts publish through the durable path; returns the event id.
Publisher = Callable[[PublishRequest], Awaitable[str]]
