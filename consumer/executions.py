"""The execution history's repository: what `jsrt executions` lists and shows, what the web
console lists (filtered, a page at a time) and shows (#18), and the run control of #19:
cancel (consumer/cancel.py stops what a process had taken) and replay (consumer/replay.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from consumer.db import Db
from consumer.errors import NotFound
from consumer.paging import Page, fetch_page
from consumer.sql import q

STATUSES = ("pending", "running", "completed", "failed", "timeout", "cancelled")
TRIGGERS = ("event", "cron", "http", "manual", "api")
REPLAYS_SHOWN = 20
# Replays are looked for among this many of the script's executions started after the
# original (nothing indexes trigger_data.replay_of; the scan stays bounded).
REPLAY_SCAN = 10_000


@dataclass(frozen=True, slots=True)
class ExecutionQuery:
    """The console's filters (empty = any): started in [started_from, started_before)."""

    script_id: UUID | None = None
    script_name: str | None = None
    statuses: tuple[str, ...] = ()
    triggers: tuple[str, ...] = ()
    started_from: datetime | None = None
    started_before: datetime | None = None
    page: int = 1


class Executions:
    def __init__(self, db: Db) -> None:
        self._db = db

    async def search(self, tenant_id: UUID | None, script_id: UUID | None, status: str | None,
                   since: datetime | None, limit: int,
                   script_name: str | None = None) -> list[dict[str, Any]]:
        """Newest first; `script_name` matches that name in every tenant (when no id)."""
        rows = await self._db.fetch(q("executions_list"), tenant_id, script_id, status, since,
                                    limit, script_name)
        return [dict(r) for r in rows]

    async def show(self, execution_id: UUID, tenant_id: UUID | None = None) -> dict[str, Any]:
        row = await self._db.fetchrow(q("execution_show"), execution_id, tenant_id)
        if row is None:
            raise NotFound(f"no execution {execution_id}")
        return dict(row)

    # ------------------------------------------------------------ the console (#18)
    async def page(self, tenant_id: UUID | None, f: ExecutionQuery) -> Page:
        """One page of the matching executions, newest first; `tenant_id` None only for an
        operator looking at every tenant."""
        return await fetch_page(self._db, "console_executions", (
            tenant_id, f.script_id, f.script_name, list(f.statuses) or None,
            list(f.triggers) or None, f.started_from, f.started_before), f.page)

    async def detail(self, execution_id: UUID, tenant_id: UUID | None) -> dict[str, Any]:
        """An execution with its console lines, the version that ran, the execution it
        replays (`replay_of`), its dead letter (`dead_letter_id`) and the executions
        replaying it (`replays`, newest first, among the REPLAY_SCAN executions of its script
        that started after it). NotFound in words that say nothing of other tenants."""
        row = await self._db.fetchrow(q("console_execution"), tenant_id, execution_id)
        if row is None:
            raise NotFound(f"no execution {execution_id}")
        replays = [] if row["status"] in ("pending", "running") else await self._db.fetch(
            q("console_execution_replays"), row["tenant_id"], row["script_id"], str(row["id"]),
            row["started_at"], REPLAY_SCAN, REPLAYS_SHOWN)  # (an unfinished run has none)
        return {**dict(row), "replays": [dict(r) for r in replays]}

    # ------------------------------------------------------------ run control (#19)
    async def cancel(self, ids: Sequence[UUID], by: str,
                     tenant_id: UUID | None = None) -> list[Cancelled]:
        """Cancel these executions (jsrt_cancel): one answer per id, in order."""
        rows = await self._db.fetch(q("executions_cancel"), list(ids), by, tenant_id)
        return [Cancelled(r["execution_id"], r["tenant_id"], r["script_id"], r["outcome"],
                          r["status"], r["was"], r["daemon_id"]) for r in rows]

    async def unfinished(self, script_id: UUID, tenant_id: UUID, status: str | None,
                         limit: int) -> list[UUID]:
        """A script's unfinished executions (of that status), oldest first."""
        rows = await self._db.fetch(q("executions_unfinished"), script_id, tenant_id, status,
                                    limit)
        return [r["execution_id"] for r in rows]

    async def take_cancels(self, owner: str) -> list[tuple[UUID, str]]:
        """The cancelled runs this process had taken (execution id, who cancelled it), each
        handed out once."""
        rows = await self._db.fetch(q("cancels_take"), owner)
        return [(r["execution_id"], r["cancelled_by"]) for r in rows]

    async def replay_candidates(self, ids: Sequence[UUID] | None, script_id: UUID | None,
                                tenant_id: UUID | None, statuses: Sequence[str],
                                since: datetime | None, until: datetime | None,
                                limit: int) -> list[dict[str, Any]]:
        """Finished executions to replay, oldest first, with the source version that ran
        each (original_version) and the script's current one."""
        rows = await self._db.fetch(q("replay_select"), list(ids) if ids is not None else None,
                                    script_id, tenant_id, list(statuses), since, until, limit)
        return [dict(r) for r in rows]

    async def replay(self, originals: Sequence[UUID],
                     versions: Sequence[int | None]) -> dict[UUID, UUID]:
        """New pending executions replaying these (versions[i]: the source version to run,
        None: current); original id → new execution id."""
        rows = await self._db.fetch(q("replay_create"), list(originals), list(versions))
        if rows:
            await self._db.execute(q("wake_daemons"))
        return {r["original"]: r["execution_id"] for r in rows}


@dataclass(frozen=True, slots=True)
class Cancelled:
    """What cancelling one id did: outcome 'cancelled', 'finished' (status says how it had
    ended) or 'missing'; `was` the run's state when cancelled (pending, reserved, running),
    `owner` the process that had taken it."""

    execution_id: UUID
    tenant_id: UUID | None
    script_id: UUID | None
    outcome: str
    status: str | None
    was: str | None
    owner: str | None
