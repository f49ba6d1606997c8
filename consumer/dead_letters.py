"""Dead letters for operators: list, show, retry and discard (the automatic path - letters
written on failure, retried with backoff, resolved on success - is recorded by the queue
through record_letters below, in the transaction that records the results).

Resolved letters are marked, never deleted: jsrt_dead_letter_state.resolution is 'succeeded'
(a retry completed) or 'discarded' (by an operator), with resolved_at. Retention deletes them
later, with the execution they point at.

A manual retry makes a letter due now, whatever its count: a letter with retries left just
jumps the queue (its budget of 3 is unchanged); an exhausted letter is granted exactly one
more attempt (max_retries = retry_count + 1) - if that fails, it is exhausted again. Either
way the attempt is counted in retry_count like any other, and the daemons run it through the
same claim as automatic retries (never twice; not while the script is inactive)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from consumer import log
from consumer.db import Db
from consumer.errors import NotFound
from consumer.paging import Page, fetch_page
from consumer.records import Finished
from consumer.sql import q

_LOG = log.get("jsrt.dead_letters")

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


# A letter's state, as dead_letters.sql computes it.
STATES = ("scheduled", "waiting_for_script", "in_flight", "exhausted", "succeeded", "discarded")
UNRESOLVED = ("scheduled", "waiting_for_script", "in_flight", "exhausted")
# What a retry can act on now (dl_retry leaves resolved and in-flight letters alone).
RETRIABLE = ("scheduled", "waiting_for_script", "exhausted")
# A bulk retry from the console acts on at most this many letters (the newest matching);
# what is left matches again afterwards, for another round.
BULK_RETRY_MAX = 1000


@dataclass(frozen=True, slots=True)
class LetterQuery:
    """The console's filters (empty = any): created in [created_from, created_before),
    `error` a substring of the error, in any case."""

    script_id: UUID | None = None
    script_name: str | None = None
    states: tuple[str, ...] = ()
    event_type: str | None = None
    created_from: datetime | None = None
    created_before: datetime | None = None
    error: str | None = None
    page: int = 1

    def args(self) -> tuple[Any, ...]:
        return (self.script_id, self.script_name, list(self.states) or None, self.event_type,
                self.created_from, self.created_before, self.error)


@dataclass(frozen=True, slots=True)
class BulkRetry:
    """What a bulk retry of a filtered set would do: `total` letters can be retried now (at
    most MATCH_CAP counted), `ids` the first BULK_RETRY_MAX of them, newest first."""

    total: int
    ids: list[UUID]

    @property
    def more(self) -> bool:
        """Not every retriable letter of the set is taken this round."""
        return self.total > len(self.ids)


@dataclass(frozen=True, slots=True)
class Applied:
    """What an operation did: letters changed, and why the others were not."""

    done: list[UUID]
    skipped: dict[UUID, str]


class DeadLetters:
    """The dead-letter repository: operators' operations and the daemons' retry claim."""

    def __init__(self, db: Db) -> None:
        self._db = db

    async def search(self, f: Filters) -> list[Row]:
        rows = await self._db.fetch(q("dl_list"), f.tenant, f.script, f.event_type,
                                    f.exhausted, f.since, f.include_resolved, f.limit)
        return [dict(r) for r in rows]

    async def show(self, letter_id: UUID, tenant: UUID | None = None) -> Row:
        """The letter, and every attempt with its execution (`attempts`, in order)."""
        row = await self._db.fetchrow(q("dl_show"), letter_id, tenant)
        if row is None:
            where = f" in tenant {tenant}" if tenant else ""
            raise NotFound(f"no dead letter {letter_id}{where}")
        attempts = await self._db.fetch(
            q("dl_attempts"), row["tenant_id"], row["script_id"], str(row["id"]),
            str(row["event_id"]) if row["event_id"] else None, row["execution_id"])
        return {**dict(row), "attempts": [dict(a) for a in attempts]}

    async def retry(self, ids: Sequence[UUID], tenant: UUID | None = None,
                    now: datetime | None = None, chunk: int = 100,
                    progress: Callable[[int, int], None] | None = None,
                    version: str | None = None) -> Applied:
        """Make the letters due now (see the module docstring), `chunk` at a time; with
        `version` 'original', their retries run the source version each letter recorded,
        with 'current' the script's current source (None: as before)."""
        return await self._apply("dl_retry", ids, tenant, now, chunk, progress, version)

    async def discard(self, ids: Sequence[UUID], tenant: UUID | None = None,
                      now: datetime | None = None) -> Applied:
        """Resolve the letters as 'discarded': kept for review, never retried."""
        return await self._apply("dl_discard", ids, tenant, now, max(1, len(ids)), None)

    # ------------------------------------------------------------ the console (#18)
    async def page(self, tenant: UUID | None, f: LetterQuery) -> Page:
        """One page of the matching letters, newest first; `tenant` None only for an
        operator looking at every tenant."""
        return await fetch_page(self._db, "console_dead_letters", (tenant, *f.args()), f.page)

    async def bulk_candidates(self, tenant: UUID | None, f: LetterQuery,
                              limit: int = BULK_RETRY_MAX) -> BulkRetry:
        """The letters of this filtered set that a retry can act on now (its states narrowed
        to RETRIABLE), in the tenant given: the count a confirmation shows, and the ids."""
        states = tuple(s for s in (f.states or STATES) if s in RETRIABLE)
        if not states:
            return BulkRetry(0, [])
        narrowed = LetterQuery(f.script_id, f.script_name, states, f.event_type,
                               f.created_from, f.created_before, f.error)
        found = await fetch_page(self._db, "console_dead_letters", (tenant, *narrowed.args()),
                                 1, max(1, limit))
        return BulkRetry(found.total, [r["id"] for r in found.rows][:limit])

    async def bulk_retry(self, tenant: UUID | None, f: LetterQuery,
                         now: datetime | None = None) -> tuple[BulkRetry, Applied]:
        """Retry the filtered set as bulk_candidates computes it now (the set may have moved
        since a confirmation counted it), in the tenant given."""
        candidates = await self.bulk_candidates(tenant, f)
        return candidates, await self.retry(candidates.ids, tenant, now)

    async def claim_retries(self, limit: int, now: datetime | None = None) -> int:
        """Due letters of active scripts become pending executions (the daemons' poll)."""
        return len(await self._db.fetch(q("claim_retries"), limit, now))

    async def _apply(self, query: str, ids: Sequence[UUID], tenant: UUID | None,
                     now: datetime | None, chunk: int,
                     progress: Callable[[int, int], None] | None, *extra: Any) -> Applied:
        wanted = list(dict.fromkeys(ids))
        done: list[UUID] = []
        for start in range(0, len(wanted), chunk):
            rows = await self._db.fetch(q(query), wanted[start:start + chunk], tenant, now, *extra)
            done += [r["dead_letter_id"] for r in rows]
            if progress:
                progress(min(start + chunk, len(wanted)), len(wanted))
        done_set = set(done)
        missed = [i for i in wanted if i not in done_set]
        reasons = {r["id"]: _reason(r)
                   for r in await self._db.fetch(q("dl_lookup"), missed, tenant)}
        return Applied(done, {i: reasons.get(i, "not found") for i in missed})


def _reason(row: Mapping[str, Any]) -> str:
    if row["resolution"]:
        return f"already resolved ({row['resolution']})"
    return "a retry is in flight" if row["in_flight"] else "changed meanwhile"


# ---------------------------------------------------------------- recorded with the results
@dataclass(frozen=True, slots=True)
class Letter:
    """What recording did to one dead letter, for its log line."""

    event: str  # dead_letter_created | dead_letter_exhausted | dead_letter_resolved
    dead_letter_id: UUID
    run: Finished  # the execution that made the change
    retry_count: int  # retries used, the one just recorded included


async def record_letters(
    tx: Db, finished: Iterable[Finished], retry_at: dict[UUID, datetime]
) -> list[Letter]:
    """In the transaction that records the results: failures of event runs become dead
    letters (or count against theirs); a retry that completed resolves its letter. Returns
    the letters created, exhausted and resolved."""
    events = [f for f in finished if f.trigger_type == "event"]
    new = [f for f in events if f.status != "completed" and f.dead_letter_id is None]
    again = [f for f in events if f.status != "completed" and f.dead_letter_id is not None]
    fixed = [f for f in events if f.status == "completed" and f.dead_letter_id is not None]
    letters: list[Letter] = []
    if new:
        by_execution = {f.execution_id: f for f in new}
        rows = await tx.fetch(
            q("dead_letter_new"),
            [f.execution_id for f in new], [f.tenant_id for f in new],
            [f.error or f.status for f in new],
            [retry_at[f.execution_id] for f in new],
        )
        letters += [Letter("dead_letter_created", r["dead_letter_id"],
                           by_execution[r["execution_id"]], 0)
                    for r in rows]
    if again:
        by_letter = {f.dead_letter_id: f for f in again}
        rows = await tx.fetch(
            q("dead_letter_retry_failed"),
            [f.dead_letter_id for f in again], [f.tenant_id for f in again],
            [f.execution_id for f in again], [f.error or f.status for f in again],
            [retry_at[f.execution_id] for f in again],
        )
        letters += [Letter("dead_letter_exhausted", r["dead_letter_id"],
                           by_letter[r["dead_letter_id"]], r["retry_count"])
                    for r in rows if r["exhausted"]]
    if fixed:
        by_letter = {f.dead_letter_id: f for f in fixed}
        rows = await tx.fetch(
            q("dead_letter_resolved"),
            [f.dead_letter_id for f in fixed], [f.tenant_id for f in fixed],
            [f.execution_id for f in fixed],
        )
        letters += [Letter("dead_letter_resolved", r["dead_letter_id"],
                           by_letter[r["dead_letter_id"]], r["retry_count"] + 1) for r in rows]
    return letters


_LETTER_LEVELS = {"dead_letter_created": "warning", "dead_letter_exhausted": "error",
                  "dead_letter_resolved": "info"}


def log_letters(letters: Sequence[Letter]) -> None:
    """One line per letter created (warning), exhausted (error: no retries left, an operator
    must look) or resolved by a retry that completed (info): the lines operators alert on."""
    for letter in letters:
        f = letter.run
        getattr(_LOG, _LETTER_LEVELS[letter.event])(
            letter.event, tenant_id=str(f.tenant_id), script_id=str(f.script_id),
            dead_letter_id=str(letter.dead_letter_id), execution_id=str(f.execution_id),
            retry_count=letter.retry_count)
