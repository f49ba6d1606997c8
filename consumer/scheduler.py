"""Cron scheduling: decide what to do with each due job (a pure function of the job and the
clock), then apply the decisions in the transaction that claimed the jobs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Literal
from uuid import UUID

from consumer import cron, log

_LOG = log.get("jsrt.scheduler")

Action = Literal["fire", "replan", "skip", "invalid"]


@dataclass(frozen=True, slots=True)
class DueJob:
    script_id: UUID
    tenant_id: UUID
    cron_expression: str
    timezone: str
    next_run_at: datetime | None  # None: not planned yet ('-infinity')
    is_running: bool

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> DueJob:
        nra: datetime = row["next_run_at"]
        planned = None if nra.year <= 1 else (nra if nra.tzinfo else nra.replace(tzinfo=UTC))
        return cls(row["script_id"], row["tenant_id"], row["cron_expression"],
                   row["timezone"] or "UTC", planned, row["is_running"])


@dataclass(frozen=True, slots=True)
class Decision:
    job: DueJob
    action: Action
    next_run_at: datetime | None = None
    scheduled_for: datetime | None = None
    missed: int = 0
    reason: str | None = None


# Many jobs share a schedule (every minute, every hour in UTC), and a batch is decided at one
# `now`: the same plan is computed once per batch, not once per job (~80 us each).
_next_tick = lru_cache(maxsize=4096)(cron.next_tick)
_plan = lru_cache(maxsize=4096)(cron.plan)


def decide(job: DueJob, now: datetime) -> Decision:
    """fire the latest due tick (folding missed ones into it), plan a new job, skip a tick that
    came while the previous run is still going, or park a job whose schedule is invalid."""
    try:
        if job.next_run_at is None:
            return Decision(job, "replan", _next_tick(job.cron_expression, job.timezone, now))
        p = _plan(job.cron_expression, job.timezone, job.next_run_at, now)
    except cron.CronError as exc:
        return Decision(job, "invalid", reason=str(exc))
    except Exception as exc:  # one odd schedule must never stop the scheduler for everyone
        return Decision(job, "invalid", reason=f"cannot plan: {type(exc).__name__}: {exc}"[:300])
    if job.is_running:
        return Decision(job, "skip", p.next_run_at, p.scheduled_for, p.missed,
                        reason="previous run still going")
    return Decision(job, "fire", p.next_run_at, p.scheduled_for, p.missed)


def log_decisions(decisions: Sequence[Decision], fired: set[UUID]) -> None:
    for d in decisions:
        ids = dict(tenant_id=str(d.job.tenant_id), script_id=str(d.job.script_id))
        if d.action == "fire" and d.job.script_id in fired:
            assert d.scheduled_for is not None
            _LOG.info("cron_fired", scheduled_for=d.scheduled_for.isoformat(),
                      missed_ticks=d.missed, **ids)
            if d.missed:
                _LOG.warning("cron_caught_up", missed_ticks=d.missed,
                             scheduled_for=d.scheduled_for.isoformat(), **ids)
        elif d.action == "fire":
            _LOG.info("cron_tick_already_fired", **ids)
        elif d.action == "skip":
            assert d.scheduled_for is not None
            _LOG.warning("cron_tick_skipped", reason=d.reason,
                         scheduled_for=d.scheduled_for.isoformat(), **ids)
        elif d.action == "invalid":
            _LOG.error("cron_job_invalid", reason=d.reason, cron_expression=d.job.cron_expression,
                       timezone=d.job.timezone, **ids)
