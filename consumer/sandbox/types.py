"""Values that cross the executor boundary: what to run, with which limits, and what came of it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from consumer.jsontext import loads_stored

Status = Literal["completed", "failed", "timeout"]

# The seed's defaults for scripts.resource_limits.
DEFAULT_LIMITS: Mapping[str, int] = {
    "max_execution_time_ms": 30000,
    "max_memory_bytes": 67108864,
    "max_concurrent_runs": 5,
    "max_api_calls_per_minute": 60,
    "max_output_size_bytes": 1048576,
}
# Sane maxima: a script may ask for less than these, never more. The one definition of a
# valid limit, used when a script is saved and when a row (however it was written) is run.
LIMIT_MAXIMA: Mapping[str, int] = {
    "max_execution_time_ms": 15 * 60 * 1000,
    "max_memory_bytes": 1 << 30,
    "max_concurrent_runs": 1000,
    "max_api_calls_per_minute": 100_000,
    "max_output_size_bytes": 64 << 20,
}


def limit_problems(limits: Mapping[str, Any]) -> list[str]:
    """Every bad value among the five limits, one line each (missing keys are problems too:
    merge with DEFAULT_LIMITS first)."""
    out = []
    for key, maximum in LIMIT_MAXIMA.items():
        value = limits.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            out.append(f"{key} must be a positive integer (got {_shown(value)})")
        elif value > maximum:
            out.append(f"{key} must be at most {maximum} (got {value})")
    return out


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:40] + "…"


class InvalidLimits(ValueError):
    """A script's resource_limits cannot be used; the message says why, in one line."""


@dataclass(frozen=True, slots=True)
class Limits:
    max_execution_time_ms: int = 30000
    max_memory_bytes: int = 67108864
    max_concurrent_runs: int = 5
    max_api_calls_per_minute: int = 60
    max_output_size_bytes: int = 1048576

    @classmethod
    def from_json(cls, raw: Any) -> Limits:
        """A row's resource_limits, as decoded JSON: missing keys take the seed's defaults,
        unknown keys are ignored, anything else wrong raises InvalidLimits. A row can hold
        whatever SQL wrote into it; a bad one costs its script its runs, nothing more."""
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            raise InvalidLimits(
                f"invalid resource_limits: a JSON object is needed (got {type(raw).__name__})")
        merged = {**DEFAULT_LIMITS, **{k: v for k, v in raw.items() if k in DEFAULT_LIMITS}}
        problems = limit_problems(merged)
        if problems:
            raise InvalidLimits("invalid resource_limits: " + "; ".join(problems))
        return cls(**merged)


@dataclass(frozen=True, slots=True)
class ExecutionRequest:
    source: str
    # Identifies the source text; warm contexts are keyed by (tenant_id, script_id, version_id).
    version_id: str
    # The input as JSON text: it goes to V8 as it came from the database, never decoded here.
    input_json: str
    tenant_id: str
    script_id: str
    execution_id: str
    trigger: Mapping[str, Any]  # {"type": "event"|"cron"|"http"|"manual"|"api", ...}
    limits: Limits = field(default_factory=Limits)
    event_depth: int = 0  # depth of the event chain that led here; ctx.events.publish adds 1
    # Who called, as the script sees it in ctx.auth ({type, key_name | claims}); HTTP only.
    auth: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ExecutionResult:
    status: Status
    # The output as JSON text, as V8 wrote it and as it is stored; `output` decodes it.
    output_json: str | None = None
    error: str | None = None  # one readable line
    stack: str | None = None  # the JS stack, when there is one
    logs: tuple[Mapping[str, Any], ...] = ()  # {"level", "message", "ts"}
    metrics: Mapping[str, int] = field(default_factory=dict)
    # duration_ms, memory_used_bytes, api_call_count, database_query_count
    # When the run really started (its first step) and ended, in time.monotonic() seconds
    # (one clock for the daemon and its workers on a host): what script_executions records as
    # started_at / completed_at. 0.0: it never reached a worker (refused, or the executor
    # failed it), and the caller's own observation stands.
    started: float = 0.0
    finished: float = 0.0

    @property
    def output(self) -> Any:
        """The output decoded (None when there is none); for callers that need the value."""
        return None if self.output_json is None else loads_stored(self.output_json)


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
# The host supplies this to read a tenant's secret (tenant id, name) -> value; it raises
# consumer.secrets.SecretUnavailable with one line when the secret cannot be read.
SecretReader = Callable[[str, str], Awaitable[str]]
# The host supplies this to count an API call against the script's max_api_calls_per_minute
# (across every process sharing the database); False: over the limit, not counted.
ApiLimiter = Callable[[ExecutionRequest, int], Awaitable[bool]]


class DataHost(Protocol):
    """ctx.db and ctx.cache (host calls `db.*`, `cache.*`), supplied by the host: the sandbox
    itself reaches no database."""

    async def call(self, request: ExecutionRequest, op: str, args: Sequence[Any],
                   remaining_s: float) -> Any: ...

    def end(self, execution_id: str) -> None:
        """The execution ended (result, timeout, kill, shutdown): release what it holds."""

    async def aclose(self) -> None:
        """The executor stops: roll back what is open, close what was opened."""
