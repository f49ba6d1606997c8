"""Dead letters for operators: list, show, retry and discard (the automatic path - letters
written on failure, retried with backoff, resolved on success - lives in store.py and
queries.sql).

Resolved letters are marked, never deleted: jsrt_dead_letter_state.resolution is 'succeeded'
(a retry completed) or 'discarded' (by an operator), with resolved_at. Retention deletes them
later, with the execution they point at.

A manual retry makes a letter due now, whatever its count: a letter with retries left just
jumps the queue (its budget of 3 is unchanged); an exhausted letter is granted exactly one
more attempt (max_retries = retry_count + 1) - if that fails, it is exhausted again. Either
way the attempt is counted in retry_count like any other, and the daemons run it through the
same claim as automatic retries (never twice; not while the script is inactive)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from consumer.errors import NotFound
from consumer.sql import q
from consumer.store import translated

Row = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Filters:
    tenant: UUID | None = None
    script: str | None = None  # id or name
    event_type: str | None = None
    exhausted: bool = False
    since: datetime | None = None
    include_resolved: bool = False
    limit: int | None = None


@dataclass(frozen=True, slots=True)
class Applied:
    """What an operation did: letters changed, and why the others were not."""

    done: list[UUID]
    skipped: dict[UUID, str]


async def list_letters(conn: asyncpg.Connection, f: Filters) -> list[Row]:
    async with translated():
        rows = await conn.fetch(q("dl_list"), f.tenant, f.script, f.event_type, f.exhausted,
                                f.since, f.include_resolved, f.limit)
    return [dict(r) for r in rows]


async def show(conn: asyncpg.Connection, letter_id: UUID, tenant: UUID | None = None) -> Row:
    """The letter, and every attempt with its execution (`attempts`, in order)."""
    async with translated():
        row = await conn.fetchrow(q("dl_show"), letter_id, tenant)
        if row is None:
            where = f" in tenant {tenant}" if tenant else ""
            raise NotFound(f"no dead letter {letter_id}{where}")
        attempts = await conn.fetch(
            q("dl_attempts"), row["tenant_id"], row["script_id"], str(row["id"]),
            str(row["event_id"]) if row["event_id"] else None, row["execution_id"])
    return {**dict(row), "attempts": [dict(a) for a in attempts]}


async def retry(conn: asyncpg.Connection, ids: Sequence[UUID], tenant: UUID | None = None,
                now: datetime | None = None, chunk: int = 100,
                progress: Callable[[int, int], None] | None = None) -> Applied:
    """Make the letters due now (see the module docstring), `chunk` at a time."""
    return await _apply(conn, "dl_retry", ids, tenant, now, chunk, progress)


async def discard(conn: asyncpg.Connection, ids: Sequence[UUID], tenant: UUID | None = None,
                  now: datetime | None = None) -> Applied:
    """Resolve the letters as 'discarded': kept for review, never retried."""
    return await _apply(conn, "dl_discard", ids, tenant, now, max(1, len(ids)), None)


async def _apply(conn: asyncpg.Connection, query: str, ids: Sequence[UUID],
                 tenant: UUID | None, now: datetime | None, chunk: int,
                 progress: Callable[[int, int], None] | None) -> Applied:
    wanted = list(dict.fromkeys(ids))
    done: list[UUID] = []
    async with translated():
        for start in range(0, len(wanted), chunk):
            rows = await conn.fetch(q(query), wanted[start:start + chunk], tenant, now)
            done += [r["dead_letter_id"] for r in rows]
            if progress:
                progress(min(start + chunk, len(wanted)), len(wanted))
        done_set = set(done)
        missed = [i for i in wanted if i not in done_set]
        reasons = {r["id"]: _reason(r) for r in await conn.fetch(q("dl_lookup"), missed, tenant)}
    return Applied(done, {i: reasons.get(i, "not found") for i in missed})


def _reason(row: asyncpg.Record) -> str:
    if row["resolution"]:
        return f"already resolved ({row['resolution']})"
    return "a retry is in flight" if row["in_flight"] else "changed meanwhile"
