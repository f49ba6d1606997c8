"""Frozen records passed between claim, execute and report."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from consumer import jsontext
from consumer.filters import FilterSkip
from consumer.sandbox.types import ExecutionRequest, ExecutionResult, InvalidLimits, Limits


@dataclass(frozen=True, slots=True)
class Run:
    """An execution this process has started (its jsrt_runs row is 'running' and ours)."""

    execution_id: UUID
    tenant_id: UUID
    script_id: UUID
    source: str
    version_id: str
    limits: Limits
    input_json: str  # as the database holds it: passed to V8 as text, never decoded here
    trigger_type: str
    trigger_data: Mapping[str, Any]
    event_id: UUID | None
    dead_letter_id: UUID | None
    depth: int
    # Why this run cannot be started in the sandbox at all (e.g. its script's resource_limits
    # are unusable); it then fails with this line and costs nothing else.
    refusal: str | None = None
    # Who called (HTTP): the script's ctx.auth; never stored (trigger_data names the key id
    # or the JWT subject only).
    auth: Mapping[str, Any] | None = None
    script_name: str | None = None  # for the log lines (operators read names, not ids)

    @classmethod
    def many_from_rows(cls, rows: Sequence[Mapping[str, Any]],
                       sources: Sequence[str | None]) -> list[Run]:
        """`from_row` for each of a claim's rows, with its source (sources.Sources.fill:
        a claim brings each version's source once at most)."""
        return [cls.from_row(row, source) for row, source in zip(rows, sources, strict=True)]

    @classmethod
    def from_row(cls, row: Mapping[str, Any], source: str | None = None) -> Run:
        """A started run as the claim returns it: input and resource_limits come as JSON
        text (the claim casts them), so that no tenant value is decoded on the way. `source`:
        the run's source when the row came without it (None: the row's own)."""
        refusal = None
        try:
            limits = _limits(row["resource_limits"])
        except (InvalidLimits, jsontext.JsonRefused) as exc:
            limits, refusal = Limits(), _invalid("resource_limits", exc)
        try:
            trigger_data = _decoded(row["trigger_data"]) or {}
        except jsontext.JsonRefused as exc:
            trigger_data, refusal = {}, _invalid("trigger_data", exc)
        if not isinstance(trigger_data, Mapping):
            trigger_data, refusal = {}, "invalid trigger_data: a JSON object is needed"
        source = row["source"] if source is None else source
        if source is None:
            # never a guess at which source to run: this run fails, saying why
            source, refusal = "", "internal error: the script's source did not come with the run"
        return cls(
            execution_id=row["execution_id"],
            tenant_id=row["tenant_id"],
            script_id=row["script_id"],
            source=source,
            version_id=row["version_id"],
            limits=limits,
            input_json=row["input"] if row["input"] is not None else "null",
            trigger_type=row["trigger_type"],
            trigger_data=trigger_data,
            event_id=row["event_id"],
            dead_letter_id=row["dead_letter_id"],
            depth=row["depth"] or 0,
            refusal=refusal,
            script_name=row.get("script_name"),
        )

    def request(self) -> ExecutionRequest:
        return ExecutionRequest(
            source=self.source,
            version_id=self.version_id,
            input_json=self.input_json,
            tenant_id=str(self.tenant_id),
            script_id=str(self.script_id),
            execution_id=str(self.execution_id),
            trigger=self.trigger_data,  # decoded jsonb: already JSON values
            limits=self.limits,
            event_depth=self.depth,
            auth=self.auth,
        )

    def refused(self) -> ExecutionResult | None:
        """The result of a run that must not reach the sandbox, or None."""
        if self.refusal is None:
            return None
        return ExecutionResult("failed", error=self.refusal, metrics=dict(NO_METRICS))


NO_METRICS: Mapping[str, int] = {
    "duration_ms": 0, "memory_used_bytes": 0, "api_call_count": 0, "database_query_count": 0,
}


# A script's resource_limits text, as the claim returns it with each of its runs: parsed once
# (Limits is frozen). Only short texts are kept, so that the cache stays small whatever a
# tenant stores; an unusable one raises each time (exceptions are not cached).
_LIMITS_CACHED_TEXT = 512


def _limits(raw: Any) -> Limits:
    if isinstance(raw, str) and len(raw) <= _LIMITS_CACHED_TEXT:
        return _limits_of_text(raw)
    return Limits.from_json(_decoded(raw))


@functools.lru_cache(maxsize=1024)
def _limits_of_text(text: str) -> Limits:
    return Limits.from_json(jsontext.loads(text, "the value"))


def _decoded(raw: Any) -> Any:
    """A column as JSON text (from the claim) or already decoded (other callers)."""
    return jsontext.loads(raw, "the value") if isinstance(raw, str) else raw


def _invalid(column: str, exc: Exception) -> str:
    text = str(exc)
    return text if text.startswith("invalid ") else f"invalid {column}: {text}"


@dataclass(frozen=True, slots=True)
class Claimed:
    """What one claim did: events dispatched, executions created from them (of which
    `queued` wait as 'pending'), the runs started for this daemon; whether more events may
    be due (dispatch stopped at a limit), and whether any run is left waiting."""

    events: int
    created: int
    queued: int
    started: list[Run]
    more: bool = False
    waiting: bool = False


@dataclass(frozen=True, slots=True)
class StartNow:
    """A request for a run started now (HTTP, `jsrt exec`, the embedded API). The input to
    keep is JSON text its caller checked (jsontext.check_text)."""

    tenant_id: UUID
    script_id: UUID
    trigger_type: str
    trigger_data: Mapping[str, Any]
    stored_input_json: str


@dataclass(frozen=True, slots=True)
class Leased:
    """What one claim of the leased path did (jsrt_claim_v2): the runs it reserved for this
    daemon (oldest first within each script), the slots it granted, by script, the scripts the
    daemon asked to refill but holds no slots of any more (rescued, or the script is gone),
    events fanned out and executions created from them (of which `queued` wait as 'pending');
    whether more events may be due, and whether any pending run is left."""

    runs: list[Run]
    granted: dict[UUID, int]
    lost: list[UUID]
    events: int
    created: int
    queued: int
    more: bool = False
    waiting: bool = False
    filtered: int = 0  # (event, script) pairs a payload filter kept from running
    filter_skips: tuple[FilterSkip, ...] = ()  # ... of which the filter could not be evaluated


@dataclass(frozen=True, slots=True)
class Outcome:
    """What came of a run, ready to be recorded."""

    run: Run
    result: ExecutionResult
    next_retry_at: datetime  # used only if the run failed and is dead-lettered or retried
    # When the run really started and ended (None: the database's now, the start kept).
    started_at: datetime | None = None
    completed_at: datetime | None = None

    @property
    def failed(self) -> bool:
        return self.result.status != "completed"

    def chars(self) -> int:
        """What it carries into the statement that records it, in characters: output, error,
        stack, console lines (by their text, and at least 32 each for level and time)."""
        r = self.result
        size = len(r.output_json or "") + len(r.error or "") + len(r.stack or "")
        for line in r.logs:
            message = line.get("message")
            size += 32 + (len(message) if isinstance(message, str) else 0)
        return size

    def error_text(self) -> str | None:
        r = self.result
        if r.error is None:
            return None
        return r.error if not r.stack else f"{r.error}\n{r.stack}"


@dataclass(frozen=True, slots=True)
class Finished:
    """An execution row as recorded (from complete_runs or rescue_lost_runs)."""

    execution_id: UUID
    tenant_id: UUID
    script_id: UUID
    status: str
    error: str | None
    trigger_type: str
    trigger_data: Mapping[str, Any]
    dead_letter_id: UUID | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Finished:
        """trigger_data may come as text; one that cannot be read is taken as empty, so that
        one odd row never stops the recording or the rescue of others."""
        try:
            trigger_data = _decoded(row["trigger_data"]) or {}
        except jsontext.JsonRefused:
            trigger_data = {}
        if not isinstance(trigger_data, Mapping):
            trigger_data = {}
        return cls(row["id"], row["tenant_id"], row["script_id"], row["status"], row["error"],
                   row["trigger_type"], trigger_data, row["dead_letter_id"])


@dataclass(frozen=True, slots=True)
class RawEvent:
    """An event received as a raw NOTIFY payload from another service."""

    tenant_id: UUID
    event_type: str
    payload: Any
    dedup_key: str | None
