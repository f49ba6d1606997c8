"""Frozen records passed between claim, execute and report."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from consumer.sandbox.types import ExecutionRequest, ExecutionResult, Limits


@dataclass(frozen=True, slots=True)
class Run:
    """An execution this daemon has started (its jsrt_runs row is 'running' and ours)."""

    execution_id: UUID
    tenant_id: UUID
    script_id: UUID
    source: str
    version_id: str
    limits: Limits
    input: Any
    trigger_type: str
    trigger_data: Mapping[str, Any]
    event_id: UUID | None
    dead_letter_id: UUID | None
    depth: int

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Run:
        return cls(
            execution_id=row["execution_id"],
            tenant_id=row["tenant_id"],
            script_id=row["script_id"],
            source=row["source"],
            version_id=row["version_id"],
            limits=Limits.from_json(row["resource_limits"]),
            input=row["input"],
            trigger_type=row["trigger_type"],
            trigger_data=row["trigger_data"] or {},
            event_id=row["event_id"],
            dead_letter_id=row["dead_letter_id"],
            depth=row["depth"],
        )

    def request(self) -> ExecutionRequest:
        return ExecutionRequest(
            source=self.source,
            version_id=self.version_id,
            input=self.input,
            tenant_id=str(self.tenant_id),
            script_id=str(self.script_id),
            execution_id=str(self.execution_id),
            trigger=self.trigger_data,  # decoded jsonb: already JSON values
            limits=self.limits,
            event_depth=self.depth,
        )


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
class Outcome:
    """What came of a run, ready to be recorded."""

    run: Run
    result: ExecutionResult
    next_retry_at: datetime  # used only if the run failed and is dead-lettered or retried

    @property
    def failed(self) -> bool:
        return self.result.status != "completed"

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
    input: Any
    dead_letter_id: UUID | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Finished:
        return cls(row["id"], row["tenant_id"], row["script_id"], row["status"], row["error"],
                   row["trigger_type"], row["trigger_data"] or {}, row["input"],
                   row["dead_letter_id"])


@dataclass(frozen=True, slots=True)
class RawEvent:
    """An event received as a raw NOTIFY payload from another service."""

    tenant_id: UUID
    event_type: str
    payload: Any
    dedup_key: str | None
