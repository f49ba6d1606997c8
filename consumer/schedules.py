"""The cron jobs' repository: claim the due ones, apply the scheduler's decisions, and record
that a fired run finished. The decisions themselves are pure (scheduler.py, cron.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from uuid import UUID

from consumer.db import Db
from consumer.records import Finished
from consumer.scheduler import Decision, DueJob
from consumer.sql import q


class Schedules:
    def __init__(self, db: Db) -> None:
        self._db = db

    async def schedule_due(
        self, now: datetime, limit: int, decide: Callable[[DueJob, datetime], Decision]
    ) -> tuple[list[Decision], set[UUID]]:
        """Claim due jobs, decide each, apply the decisions: one transaction, so a tick is
        fired by one daemon, once. Returns the decisions and the scripts actually fired."""
        async with self._db.transaction() as tx:
            rows = await tx.fetch(q("cron_due_jobs"), now, limit)
            decisions = [decide(DueJob.from_row(r), now) for r in rows]
            fired = await _apply(tx, decisions)
        return decisions, fired


async def _apply(tx: Db, decisions: Sequence[Decision]) -> set[UUID]:
    fire = [d for d in decisions if d.action == "fire"]
    replan = [d for d in decisions if d.action in ("replan", "skip")]
    invalid = [d for d in decisions if d.action == "invalid"]
    fired: set[UUID] = set()
    if fire:
        rows = await tx.fetch(
            q("cron_fire"),
            [d.job.script_id for d in fire], [d.job.tenant_id for d in fire],
            [d.scheduled_for for d in fire], [d.missed for d in fire],
            [d.scheduled_for.isoformat() if d.scheduled_for else None for d in fire],
            [d.next_run_at for d in fire],
        )
        fired = {r["script_id"] for r in rows if r["is_running"]}
    if replan:
        await tx.execute(
            q("cron_replan"), [d.job.script_id for d in replan],
            [d.job.tenant_id for d in replan], [d.next_run_at for d in replan],
        )
    if invalid:
        await tx.execute(
            q("cron_invalid"), [d.job.script_id for d in invalid],
            [d.job.tenant_id for d in invalid],
        )
    return fired


async def record_cron_finished(tx: Db, finished: Iterable[Finished]) -> None:
    """In the transaction that records the results: a cron run that finished frees its job
    and becomes the job's last status."""
    done = [f for f in finished if f.trigger_type == "cron"]
    if done:
        await tx.execute(
            q("cron_finished"), [f.script_id for f in done], [f.tenant_id for f in done],
            [f.status for f in done],
        )
