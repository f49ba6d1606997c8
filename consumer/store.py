"""The store seam: every database operation the runtime performs, by name.

Driver errors are translated here: a lost or refused connection becomes StoreUnavailable
(the loops back off and carry on), anything else a StoreError."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit
from uuid import UUID

import asyncpg

from consumer import jsontext, log
from consumer.errors import StoreError, StoreUnavailable
from consumer.records import Claimed, Finished, Outcome, Run
from consumer.scheduler import Decision, DueJob
from consumer.sql import q

_LOG = log.get("jsrt.store")


class SchemaMissing(StoreError):
    """The database has no jsruntime schema (or an older one): run `jsrt migrate up`."""


_UNAVAILABLE = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    # a connection broken mid-query can leave its protocol state confused: seen when the
    # server shuts down under a transaction and the pool then resets the connection
    asyncpg.InternalClientError,
    ConnectionError,
    OSError,
    TimeoutError,
)


@asynccontextmanager
async def translated() -> AsyncIterator[None]:
    try:
        yield
    except _UNAVAILABLE as exc:
        raise StoreUnavailable(f"database unavailable: {type(exc).__name__}: {exc}") from exc
    except asyncpg.PostgresError as exc:
        raise store_error(exc) from exc
    except jsontext.JsonRefused as exc:  # a stored value our decoder will not take
        raise StoreError(f"database value refused: {exc}") from exc


def store_error(exc: asyncpg.PostgresError) -> StoreError:
    """A database error as one line; a missing table or function says what to do."""
    if isinstance(exc, asyncpg.UndefinedTableError | asyncpg.UndefinedFunctionError):
        first = str(exc).splitlines()[0]  # not the driver's hint about type casts
        return SchemaMissing(f"database error: {first}: the jsruntime schema is missing or "
                             "out of date here; run `jsrt migrate up`")
    return StoreError(f"database error: {exc}")


def unreachable(dsn: str, exc: BaseException) -> StoreUnavailable:
    """A failed connection attempt, naming where it went and what to check (an OSError of
    the driver says neither, e.g. `[Errno 2] No such file or directory` for a socket)."""
    where = _target(dsn)
    if isinstance(exc, FileNotFoundError | ConnectionRefusedError):
        reason = "no server is listening there"
    elif isinstance(exc, OSError) and exc.strerror:
        reason = exc.strerror.lower()
    else:
        reason = str(exc) or type(exc).__name__
    hint = "is PostgreSQL running there, and is DATABASE_URL right?"
    if "/.jsrt/" in where or where.endswith("/.jsrt"):
        hint = "the embedded server runs only while `make run` (`jsrt dev`) does"
    return StoreUnavailable(f"cannot reach the database at {where}: {reason}; {hint}")


def _target(dsn: str) -> str:
    """host:port or the socket directory of a DSN, never its password."""
    try:
        parts = urlsplit(dsn)
        query = parse_qs(parts.query)
        host = (query.get("host") or [parts.hostname or ""])[0] or "localhost"
        port = (query.get("port") or [str(parts.port or 5432)])[0]
    except ValueError:
        return "DATABASE_URL"
    return f"the socket in {host}" if host.startswith("/") else f"{host}:{port}"


async def _init_connection(conn: asyncpg.Connection) -> None:
    # Decoding never recurses without bound (a value nested too deeply is an error of its
    # own). Hot paths do not decode tenant JSON at all: they select it as text.
    for typ in ("jsonb", "json"):
        await conn.set_type_codec(typ, encoder=_encode_json, decoder=jsontext.loads_stored,
                                  schema="pg_catalog")


def _encode_json(value: Any) -> str:
    return json.dumps(value, allow_nan=False)


async def _keep_session(conn: asyncpg.Connection) -> None:
    """The pool's reset on release. asyncpg still rolls back an open transaction; its default
    reset would add a round trip (RESET ALL, UNLISTEN, unlock all) to every operation, for
    session state that the store never sets: no SET, no LISTEN, only transaction-scoped
    advisory locks. (The listener and the migrator use connections of their own.)"""


async def connect(dsn: str, application_name: str = "jsrt") -> asyncpg.Connection:
    """A single connection with the store's codecs (used by listeners and the CLI)."""
    conn = await asyncpg.connect(dsn, server_settings={"application_name": application_name})
    try:
        await _init_connection(conn)
    except BaseException:  # an error or a cancellation: nobody else will ever close it
        conn.terminate()
        raise
    return conn


@asynccontextmanager
async def connection(dsn: str, application_name: str = "jsrt") -> AsyncIterator[asyncpg.Connection]:
    """`connect`, closed on the way out (one-shot commands)."""
    try:
        conn = await connect(dsn, application_name)
    except OSError as exc:
        raise unreachable(dsn, exc) from exc
    try:
        yield conn
    finally:
        await conn.close()


class Store:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        # Observers (metrics), called after commit: events fanned out, by source; results
        # recorded (the outcomes given, and those actually recorded).
        self.on_dispatched: list[Callable[[Mapping[str, int]], None]] = []
        self.on_recorded: list[Callable[[Sequence[Outcome], Sequence[Finished]], None]] = []

    @classmethod
    async def open(cls, dsn: str, min_size: int = 2, max_size: int = 10) -> Store:
        async with translated():
            try:
                pool = await asyncpg.create_pool(
                    dsn, min_size=min_size, max_size=max_size, init=_init_connection,
                    reset=_keep_session, server_settings={"application_name": "jsrt"},
                )
            except OSError as exc:
                raise unreachable(dsn, exc) from exc
        return cls(pool)

    async def close(self) -> None:
        await self._pool.close()

    @property
    def pool(self) -> asyncpg.Pool:
        return self._pool

    # ------------------------------------------------------------- daemons
    async def register_daemon(self, daemon_id: str, hostname: str, pid: int) -> None:
        async with translated():
            await self._pool.execute(q("register_daemon"), daemon_id, hostname, pid)

    async def heartbeat(self, daemon_id: str) -> None:
        async with translated():
            await self._pool.execute(q("heartbeat"), daemon_id)

    async def unregister_daemon(self, daemon_id: str) -> None:
        async with translated():
            await self._pool.execute(q("unregister_daemon"), daemon_id)

    # ------------------------------------------------------------- events
    async def enqueue(
        self, tenant_id: UUID | str, event_type: str, payload: Any,
        dedup_key: str | None = None, depth: int = 0, source: str = "publish",
    ) -> UUID:
        async with translated():
            event_id: UUID = await self._pool.fetchval(
                q("enqueue_event"), str(tenant_id), event_type, payload, dedup_key, depth, source
            )
        return event_id

    async def tenant_exists(self, tenant_id: UUID) -> bool:
        async with translated():
            return bool(await self._pool.fetchval(q("tenant_exists"), str(tenant_id)))

    async def claim(
        self, daemon_id: str | None, event_limit: int, per_tenant: int, run_limit: int,
        per_script: int, start_pending: bool = True,
    ) -> Claimed:
        """Fan out up to `event_limit` due events into executions (those of scripts with a
        free slot start at once, up to `run_limit`), then, when `start_pending`, start queued
        runs with what is left of `run_limit`: one statement, one round trip, one commit."""
        async with translated():
            # random first tenant and first script: none is favoured by its id
            rows = await self._pool.fetch(
                q("claim"), daemon_id, event_limit, per_tenant, uuid.uuid4(),
                run_limit, per_script, uuid.uuid4(), start_pending,
            )
        summary = rows[-1]  # the function always ends with its counts
        claimed = Claimed(
            summary["events"], summary["created"], summary["queued"],
            [Run.from_row(r) for r in rows[:-1]], summary["more"], summary["waiting"],
        )
        by_source = summary["by_source"]
        if by_source:
            for observe in self.on_dispatched:
                observe(by_source)
        return claimed

    async def dispatch_events(self, limit: int, per_tenant: int) -> tuple[int, int]:
        """Fan out due events into queued ('pending') executions, starting none."""
        c = await self.claim(None, limit, per_tenant, 0, 0, start_pending=False)
        return c.events, c.created

    async def start_runs(self, daemon_id: str, limit: int, per_script: int) -> list[Run]:
        return (await self.claim(daemon_id, 0, 0, limit, per_script)).started

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
        )
        if not any(map(_needs_more, outcomes)):
            # the common case, one statement: no BEGIN/COMMIT round trips
            async with translated():
                rows = await self._pool.fetch(q("complete_runs"), daemon_id, *cols)
            finished = [Finished.from_row(r) for r in rows]
        else:
            finished = await self._complete_with_followups(daemon_id, outcomes, cols)
        for observe in self.on_recorded:
            observe(outcomes, finished)
        return finished

    async def _complete_with_followups(
        self, daemon_id: str, outcomes: Sequence[Outcome], cols: tuple[list[Any], ...]
    ) -> list[Finished]:
        """Results with console lines, dead letters or cron jobs to update: all of it in
        one transaction."""
        retry_at = {o.run.execution_id: o.next_retry_at for o in outcomes}
        async with translated(), self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(q("complete_runs"), daemon_id, *cols)
            mine = {r["id"] for r in rows}  # a run rescued meanwhile keeps the rescuer's record
            logged = [o for o in outcomes if o.result.logs and o.run.execution_id in mine]
            if logged:
                await conn.execute(
                    q("save_logs"),
                    [o.run.execution_id for o in logged],
                    [o.run.tenant_id for o in logged],
                    [_logs_json(o.result.logs) for o in logged],
                )
            finished = [Finished.from_row(r) for r in rows]
            letters = await _dead_letter(conn, finished, retry_at)
            await _cron_finished(conn, finished)
        _log_letters(letters)  # after the commit: only what really happened
        return finished

    async def release_runs(self, daemon_id: str, execution_ids: Sequence[UUID]) -> int:
        if not execution_ids:
            return 0
        async with translated():
            rows = await self._pool.fetch(q("release_runs"), daemon_id, list(execution_ids))
        return len(rows)

    async def rescue_lost_runs(
        self, timeout_s: float, retry_at: datetime | Callable[[Finished], datetime],
        now: datetime | None = None,
    ) -> list[Finished]:
        """Close runs of daemons presumed dead as 'worker lost' and dead-letter them.
        `retry_at` is the next retry time, or a function giving it for each lost run (a lost
        retry counts as a failed attempt and backs off like one)."""
        when = retry_at if callable(retry_at) else (lambda _f: retry_at)
        async with translated(), self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(q("rescue_lost_runs"), timeout_s, now)
            finished = [Finished.from_row(r) for r in rows]
            letters = await _dead_letter(conn, finished,
                                         {f.execution_id: when(f) for f in finished})
            await _cron_finished(conn, finished)
            await conn.execute(q("forget_dead_daemons"), timeout_s, now)
        _log_letters(letters)
        return finished

    async def claim_retries(self, limit: int, now: datetime | None = None) -> int:
        async with translated():
            rows = await self._pool.fetch(q("claim_retries"), limit, now)
        return len(rows)

    # ------------------------------------------------------------- cron
    async def schedule_due(
        self, now: datetime, limit: int, decide: Callable[[DueJob, datetime], Decision]
    ) -> tuple[list[Decision], set[UUID]]:
        """Claim due jobs, decide each, apply the decisions: one transaction, so a tick is
        fired by one daemon, once. Returns the decisions and the scripts actually fired."""
        async with translated(), self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(q("cron_due_jobs"), now, limit)
            decisions = [decide(DueJob.from_row(r), now) for r in rows]
            fired = await _apply_cron(conn, decisions)
        return decisions, fired

    async def pending_work(self, now: datetime | None = None) -> bool:
        async with translated():
            return bool(await self._pool.fetchval(q("pending_work"), now))


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


@dataclass(frozen=True, slots=True)
class _Letter:
    """What recording did to one dead letter, for its log line."""

    event: str  # dead_letter_created | dead_letter_exhausted | dead_letter_resolved
    dead_letter_id: UUID
    run: Finished  # the execution that made the change
    retry_count: int  # retries used, the one just recorded included


async def _dead_letter(
    conn: asyncpg.Connection, finished: Iterable[Finished], retry_at: dict[UUID, datetime]
) -> list[_Letter]:
    """Failures of event runs become dead letters (or count against theirs); a retry that
    completed resolves its letter. Returns the letters created, exhausted and resolved."""
    events = [f for f in finished if f.trigger_type == "event"]
    new = [f for f in events if f.status != "completed" and f.dead_letter_id is None]
    again = [f for f in events if f.status != "completed" and f.dead_letter_id is not None]
    fixed = [f for f in events if f.status == "completed" and f.dead_letter_id is not None]
    letters: list[_Letter] = []
    if new:
        by_execution = {f.execution_id: f for f in new}
        rows = await conn.fetch(
            q("dead_letter_new"),
            [f.execution_id for f in new], [f.tenant_id for f in new],
            [f.error or f.status for f in new],
            [retry_at[f.execution_id] for f in new],
        )
        letters += [_Letter("dead_letter_created", r["dead_letter_id"],
                            by_execution[r["execution_id"]], 0)
                    for r in rows]
    if again:
        by_letter = {f.dead_letter_id: f for f in again}
        rows = await conn.fetch(
            q("dead_letter_retry_failed"),
            [f.dead_letter_id for f in again], [f.tenant_id for f in again],
            [f.execution_id for f in again], [f.error or f.status for f in again],
            [retry_at[f.execution_id] for f in again],
        )
        letters += [_Letter("dead_letter_exhausted", r["dead_letter_id"],
                            by_letter[r["dead_letter_id"]], r["retry_count"])
                    for r in rows if r["exhausted"]]
    if fixed:
        by_letter = {f.dead_letter_id: f for f in fixed}
        rows = await conn.fetch(
            q("dead_letter_resolved"),
            [f.dead_letter_id for f in fixed], [f.tenant_id for f in fixed],
        )
        letters += [_Letter("dead_letter_resolved", r["dead_letter_id"],
                            by_letter[r["dead_letter_id"]], r["retry_count"] + 1) for r in rows]
    return letters


_LETTER_LEVELS = {"dead_letter_created": "warning", "dead_letter_exhausted": "error",
                  "dead_letter_resolved": "info"}


def _log_letters(letters: Sequence[_Letter]) -> None:
    """One line per letter created (warning), exhausted (error: no retries left, an operator
    must look) or resolved by a retry that completed (info): the lines operators alert on."""
    for letter in letters:
        f = letter.run
        getattr(_LOG, _LETTER_LEVELS[letter.event])(
            letter.event, tenant_id=str(f.tenant_id), script_id=str(f.script_id),
            dead_letter_id=str(letter.dead_letter_id), execution_id=str(f.execution_id),
            retry_count=letter.retry_count)


async def _apply_cron(conn: asyncpg.Connection, decisions: Sequence[Decision]) -> set[UUID]:
    fire = [d for d in decisions if d.action == "fire"]
    replan = [d for d in decisions if d.action in ("replan", "skip")]
    invalid = [d for d in decisions if d.action == "invalid"]
    fired: set[UUID] = set()
    if fire:
        rows = await conn.fetch(
            q("cron_fire"),
            [d.job.script_id for d in fire], [d.job.tenant_id for d in fire],
            [d.scheduled_for for d in fire], [d.missed for d in fire],
            [d.scheduled_for.isoformat() if d.scheduled_for else None for d in fire],
            [d.next_run_at for d in fire],
        )
        fired = {r["script_id"] for r in rows if r["is_running"]}
    if replan:
        await conn.execute(
            q("cron_replan"), [d.job.script_id for d in replan],
            [d.job.tenant_id for d in replan], [d.next_run_at for d in replan],
        )
    if invalid:
        await conn.execute(
            q("cron_invalid"), [d.job.script_id for d in invalid],
            [d.job.tenant_id for d in invalid],
        )
    return fired


async def _cron_finished(conn: asyncpg.Connection, finished: Iterable[Finished]) -> None:
    done = [f for f in finished if f.trigger_type == "cron"]
    if done:
        await conn.execute(
            q("cron_finished"), [f.script_id for f in done], [f.tenant_id for f in done],
            [f.status for f in done],
        )
