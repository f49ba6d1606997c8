"""The console's overview (#18): what the runtime is doing now, for one tenant or (an operator)
every tenant - executions per minute by status over the last hour, queue depth and the oldest
pending event, runs pending and running, dead letters by state, and the live processes with
the memory their heartbeats record (jsrt_daemons.memory, written by lease.memory_report).

Every number is the tenant's own when a tenant is given: the queries of console_runs.sql filter
on it, and a tenant sees only the processes serving its runs, without their host or pid."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from consumer.db import Db
from consumer.dead_letters import STATES
from consumer.sql import q

WINDOW_MINUTES = 60
RUNNING_SHOWN = 20

Row = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Minute:
    start: datetime
    counts: dict[str, int]  # by status; statuses with none are absent

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True, slots=True)
class Snapshot:
    at: datetime
    minutes: list[Minute]  # WINDOW_MINUTES of them, oldest first; the last one is in progress
    pending_events: int
    oldest_pending_at: datetime | None
    pending_runs: int
    running_runs: int
    running: list[Row]  # the runs in progress, longest running first (RUNNING_SHOWN at most)
    letters: dict[str, int]  # by state, every state of dead_letters.STATES present
    workers: list[Row]

    @property
    def oldest_pending_age_s(self) -> float | None:
        if self.oldest_pending_at is None:
            return None
        return max(0.0, (self.at - self.oldest_pending_at).total_seconds())


def window(now: datetime) -> tuple[datetime, datetime]:
    """The minutes shown: WINDOW_MINUTES whole minutes ending with the one in progress."""
    current = now.replace(second=0, microsecond=0)
    return current - timedelta(minutes=WINDOW_MINUTES - 1), current + timedelta(minutes=1)


class Overview:
    def __init__(self, db: Db) -> None:
        self._db = db

    async def snapshot(self, tenant: UUID | None, now: datetime | None = None,
                       live_within_s: float = 30.0) -> Snapshot:
        """`tenant` None only for an operator looking at every tenant; processes whose
        heartbeat is older than `live_within_s` are not shown."""
        now = now or datetime.now(UTC)
        start, end = window(now)
        per_minute = await self._db.fetch(q("console_minutes"), tenant, start, end)
        numbers = await self._db.fetchrow(q("console_numbers"), tenant)
        assert numbers is not None  # an aggregate: always one row
        running = await self._db.fetch(q("console_running"), tenant, RUNNING_SHOWN)
        states = await self._db.fetch(q("console_letter_states"), tenant)
        workers = await self._db.fetch(q("console_workers"), tenant, live_within_s)
        return Snapshot(
            now, _minutes(start, per_minute), int(numbers["pending_events"]),
            numbers["oldest_pending_at"], int(numbers["pending_runs"]),
            int(numbers["running_runs"]), [dict(r) for r in running],
            {s: 0 for s in STATES} | {r["state"]: r["n"] for r in states},
            [dict(w) for w in workers])


def _minutes(start: datetime, rows: list[Any]) -> list[Minute]:
    counts: dict[datetime, dict[str, int]] = {}
    for r in rows:
        counts.setdefault(r["minute"], {})[r["status"]] = r["n"]
    slots = [start + timedelta(minutes=i) for i in range(WINDOW_MINUTES)]
    return [Minute(m, counts.get(m, {})) for m in slots]
