"""The queue: events in, runs out, results back - the repository of the claim → execute →
report path (events, executions in flight, their results), over the connector.

    enqueue        an event (jsrt_publish's path, for NOTIFY, scripts and the CLI)
    claim          one round trip: fan due events out into executions, start runs
    claim_leased   the same for the leased path: slots of scripts, runs reserved through them
    mark_and_release  show long runs of local queues as started; give slots back
    start_now      a run outside the queue (HTTP, jsrt exec, the embedded API); start_many
                   for many of them in one statement
    complete_runs  results, console lines, dead letters and cron follow-ups, atomically
    release_runs   give unfinished runs back (shutdown)
    rescue_lost    close runs of processes presumed dead as 'worker lost'
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from consumer import jsontext
from consumer.db import Db, NoDataFound
from consumer.dead_letters import log_letters, record_letters
from consumer.filters import log_skips, skips_of
from consumer.records import Claimed, Finished, Leased, Outcome, Run, StartNow
from consumer.schedules import record_cron_finished
from consumer.sources import Named, Sources
from consumer.sql import q

# A claim fans out no more than this of one tenant's payloads (its oldest event always): its
# events' inputs are written into executions and read back by the same statement, and one
# tenant's large payloads made every claim slow for all (a policy: jsrt_claim_v5 moves rows).
TENANT_BYTES = 1 << 20

# Observers (metrics), called after commit: events fanned out, by source; results recorded
# (the outcomes given, and those actually recorded).
OnDispatched = Callable[[Mapping[str, int]], None]
OnRecorded = Callable[[Sequence[Outcome], Sequence[Finished]], None]


class Queue:
    def __init__(self, db: Db, on_dispatched: list[OnDispatched],
                 on_recorded: list[OnRecorded]) -> None:
        self._db = db
        self._on_dispatched = on_dispatched
        self._on_recorded = on_recorded
        # the sources this process holds: a claim or a start brings each version once at most
        self.sources = Sources()

    # ------------------------------------------------------------- events
    async def enqueue(
        self, tenant_id: UUID | str, event_type: str, payload: Any,
        dedup_key: str | None = None, depth: int = 0, source: str = "publish",
    ) -> UUID:
        event_id: UUID = await self._db.fetchval(
            q("enqueue_event"), str(tenant_id), event_type, payload, dedup_key, depth, source)
        return event_id

    async def tenant_exists(self, tenant_id: UUID) -> bool:
        return bool(await self._db.fetchval(q("tenant_exists"), str(tenant_id)))

    # ------------------------------------------------------------- runs
    async def claim(
        self, daemon_id: str | None, event_limit: int, per_tenant: int, run_limit: int,
        per_script: int, start_pending: bool = True,
    ) -> Claimed:
        """Fan out up to `event_limit` due events into executions (those of scripts with a
        free slot start at once, up to `run_limit`), then, when `start_pending`, start queued
        runs with what is left of `run_limit`: one statement, one round trip, one commit."""
        # random first tenant and first script: none is favoured by its id
        rows = await self._db.fetch(
            q("claim"), daemon_id, event_limit, per_tenant, uuid.uuid4(),
            run_limit, per_script, uuid.uuid4(), start_pending,
        )
        summary = rows[-1]  # the function always ends with its counts
        claimed = Claimed(
            summary["events"], summary["created"], summary["queued"],
            self._runs(rows[:-1], None), summary["more"], summary["waiting"],
        )
        by_source = summary["by_source"]
        if by_source:
            for observe in self._on_dispatched:
                observe(by_source)
        return claimed

    async def claim_leased(
        self, daemon_id: str, event_limit: int, per_tenant: int, slot_limit: int,
        per_script: int, reserve: int, refill: Mapping[UUID, int],
        tenant_after: UUID | None = None, pending_slots: int | None = None,
        tenant_bytes: int = TENANT_BYTES, tenant_slots: int | None = None,
    ) -> Leased:
        """The leased path's round trip (jsrt_claim_v5): reserve up to refill[s] more runs
        for each script s whose slots this daemon holds, take up to `slot_limit` free slots
        (`per_script` at most of each script) with `reserve` runs each, fan out up to
        `event_limit` due events, reserving their runs where there is room. Tenants are
        visited from the first after `tenant_after` (a random one when None), round; of the
        slots, `pending_slots` at most (all when None) go to scripts with pending runs, the
        rest only to the scripts of the events fanned out. Of one tenant's events, no more
        than `tenant_bytes` of payload (its oldest always). Of one tenant's scripts, no more
        than `tenant_slots` slots held by this daemon (None: no such cap)."""
        named = self.sources.named()
        row = await self._db.fetchrow(
            q("claim_leased"), daemon_id, event_limit, per_tenant,
            tenant_after or uuid.uuid4(), slot_limit,
            per_script, uuid.uuid4(), reserve, list(refill), list(refill.values()),
            slot_limit if pending_slots is None else pending_slots, named.scripts,
            named.digests, tenant_bytes, tenant_slots)
        assert row is not None  # the function returns one row
        leased = Leased(
            self._runs(row["runs"], named),
            dict(zip(row["lease_scripts"], row["lease_slots"], strict=True)),
            list(row["lost_scripts"]), row["events"], row["created"], row["queued"],
            row["more"], row["waiting"], row["filtered"] or 0, skips_of(row["filter_errors"]),
        )
        if leased.filter_skips:
            log_skips(leased.filter_skips)
        by_source = row["by_source"]
        if by_source:
            for observe in self._on_dispatched:
                observe(by_source)
        return leased

    async def mark_and_release(
        self, daemon_id: str, started: Mapping[UUID, datetime], released: Mapping[UUID, int],
    ) -> list[UUID]:
        """Show runs of the local queues as started (at their true start); give slots back.
        Returns the scripts whose slots were not given back now (a claim was taking slots of
        them at that moment): to give back again."""
        row = await self._db.fetchrow(q("mark_and_release"), daemon_id, list(started),
                                      list(started.values()), list(released),
                                      list(released.values()))
        return list(row["later"] or []) if row is not None else []

    async def unreserve_runs(self, daemon_id: str, execution_ids: Sequence[UUID]) -> int:
        """Give runs of the local queues that were not started back to the queue."""
        if not execution_ids:
            return 0
        return len(await self._db.fetch(q("unreserve_runs"), daemon_id, list(execution_ids)))

    async def release_leases(self, daemon_id: str) -> int:
        return len(await self._db.fetch(q("release_leases"), daemon_id))

    async def vacuum(self) -> None:
        """VACUUM the run queue's hot tables (vacuum.py)."""
        await self._db.execute(q("vacuum_queue"))

    async def dispatch_events(self, limit: int, per_tenant: int) -> tuple[int, int]:
        """Fan out due events into queued ('pending') executions, starting none."""
        c = await self.claim(None, limit, per_tenant, 0, 0, start_pending=False)
        return c.events, c.created

    async def start_runs(self, daemon_id: str, limit: int, per_script: int) -> list[Run]:
        return (await self.claim(daemon_id, 0, 0, limit, per_script)).started

    async def start_now(self, owner: str, tenant_id: UUID, script_id: UUID, trigger_type: str,
                        trigger_data: Mapping[str, Any], stored_input_json: str) -> Run | None:
        """A run started now, owned by `owner`'s lease, or None when the script is full.
        NoDataFound when the tenant has no runnable script of that id."""
        [(state, run)] = await self.start_many(
            owner, [StartNow(tenant_id, script_id, trigger_type, trigger_data,
                             stored_input_json)])
        if state == "missing":
            raise NoDataFound(f"no runnable script {script_id} in tenant {tenant_id}")
        return run

    async def start_many(self, owner: str, starts: Sequence[StartNow]
                         ) -> list[tuple[str, Run | None]]:
        """Runs started now, one statement for many requests: for each, in order, 'started'
        and its run, 'full' (the script is at its max_concurrent_runs) or 'missing' (no
        runnable script of that id in that tenant)."""
        named = self.sources.named()
        rows = await self._db.fetch(
            q("start_now"), owner, [s.tenant_id for s in starts], [s.script_id for s in starts],
            [s.trigger_type for s in starts],
            [json.dumps(dict(s.trigger_data)) for s in starts],
            [s.stored_input_json for s in starts], named.scripts, named.digests)
        out: list[tuple[str, Run | None]] = [("missing", None)] * len(starts)
        # in the order the function returned them: a version's source comes with its first
        started = [r for r in rows if r["run"] is not None]
        for r in rows:
            out[r["ord"] - 1] = (r["state"], None)
        for r, run in zip(started, self._runs([r["run"] for r in started], named), strict=True):
            out[r["ord"] - 1] = (r["state"], run)
        return out

    def _runs(self, rows: Sequence[Mapping[str, Any]], named: Named | None) -> list[Run]:
        return Run.many_from_rows(rows, self.sources.fill(rows, named))

    async def complete_runs(self, daemon_id: str, outcomes: Sequence[Outcome]) -> list[Finished]:
        """Record results, dead-letter failures and resolve succeeded retries, atomically."""
        if not outcomes:
            return []
        cols = (
            [o.run.execution_id for o in outcomes],
            [o.run.tenant_id for o in outcomes],
            [o.result.status for o in outcomes],
            [o.result.output_json if o.result.status == "completed" else None for o in outcomes],
            [_clean(o.error_text()) for o in outcomes],
            [_metrics_json(o.result.metrics) for o in outcomes],
            [o.started_at for o in outcomes],
            [o.completed_at for o in outcomes],
        )
        if not any(map(_needs_more, outcomes)):
            # the common case, one statement: no BEGIN/COMMIT round trips
            rows = await self._db.fetch(q("complete_runs"), daemon_id, *cols)
            finished = [Finished.from_row(r) for r in rows]
        else:
            finished = await self._complete_with_followups(daemon_id, outcomes, cols)
        for observe in self._on_recorded:
            observe(outcomes, finished)
        return finished

    async def _complete_with_followups(
        self, daemon_id: str, outcomes: Sequence[Outcome], cols: tuple[list[Any], ...]
    ) -> list[Finished]:
        """Results with console lines, dead letters or cron jobs to update: all of it in
        one transaction."""
        retry_at = {o.run.execution_id: o.next_retry_at for o in outcomes}
        async with self._db.transaction() as tx:
            rows = await tx.fetch(q("complete_runs"), daemon_id, *cols)
            mine = {r["id"] for r in rows}  # a run rescued meanwhile keeps the rescuer's record
            logged = [o for o in outcomes if o.result.logs and o.run.execution_id in mine]
            if logged:
                await tx.execute(
                    q("save_logs"),
                    [o.run.execution_id for o in logged],
                    [o.run.tenant_id for o in logged],
                    [_logs_json(o.result.logs) for o in logged],
                )
            finished = [Finished.from_row(r) for r in rows]
            letters = await record_letters(tx, finished, retry_at)
            await record_cron_finished(tx, finished)
        log_letters(letters)  # after the commit: only what really happened
        return finished

    async def release_runs(self, daemon_id: str, execution_ids: Sequence[UUID]) -> int:
        if not execution_ids:
            return 0
        rows = await self._db.fetch(q("release_runs"), daemon_id, list(execution_ids))
        return len(rows)

    async def rescue_lost_runs(
        self, timeout_s: float, retry_at: datetime | Callable[[Finished], datetime],
        now: datetime | None = None,
    ) -> list[Finished]:
        """Close runs of daemons presumed dead as 'worker lost' and dead-letter them.
        `retry_at` is the next retry time, or a function giving it for each lost run (a lost
        retry counts as a failed attempt and backs off like one)."""
        when = retry_at if callable(retry_at) else (lambda _f: retry_at)
        async with self._db.transaction() as tx:
            rows = await tx.fetch(q("rescue_lost_runs"), timeout_s, now)
            finished = [Finished.from_row(r) for r in rows]
            letters = await record_letters(tx, finished,
                                           {f.execution_id: when(f) for f in finished})
            await record_cron_finished(tx, finished)
            await tx.execute(q("forget_dead_daemons"), timeout_s, now)
        log_letters(letters)
        return finished

    async def pending_work(self, now: datetime | None = None) -> bool:
        return bool(await self._db.fetchval(q("pending_work"), now))

    async def snapshot(self) -> Mapping[str, Any]:
        """Queue depth, oldest pending event, runs and dead letters by state (counts only)."""
        row = await self._db.fetchrow(q("metrics_snapshot"))
        assert row is not None  # an aggregate always has its row
        return dict(row)


def _clean(text: str | None) -> str | None:
    return None if text is None else jsontext.clean_text(text)


def _metrics_json(metrics: Mapping[str, int]) -> str:
    return json.dumps({k: int(v) for k, v in metrics.items()})


def _logs_json(lines: Sequence[Mapping[str, Any]]) -> str:
    """Console lines as JSON text: their messages are cleaned by the sandbox already (and
    again here), so nothing a script printed can make the batch unstorable."""
    return json.dumps([{**line, "message": jsontext.clean_text(str(line.get("message", "")))}
                       for line in lines])


def _needs_more(o: Outcome) -> bool:
    """Whether recording this outcome takes more than updating its execution: console
    lines to save, a dead letter to open, count or resolve, a cron job to update."""
    run = o.run
    return bool(
        o.result.logs
        or run.trigger_type == "cron"
        or (run.trigger_type == "event"
            and (o.result.status != "completed" or run.dead_letter_id is not None))
    )
