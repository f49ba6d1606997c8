"""Retention against a real PostgreSQL: `cleanup` deletes exactly what the policy says (rows
just inside and just outside every boundary), in batches, never an execution an unresolved
dead letter points at; `jsrt cleanup` output; the daemon's periodic pass."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import anyio
import asyncpg
import pytest
import structlog
from support.daemons import daemon_for
from support.factories import make_script, make_tenant
from support.waiting import row_becomes

from consumer import cli
from consumer.app import store_publisher
from consumer.clock import FakeClock
from consumer.retention import Policy
from consumer.sandbox import Executor
from consumer.store import Store

MINUTE = timedelta(minutes=1)
DAY = timedelta(days=1)


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    s = await Store.open(db_url)
    yield s
    await s.close()


class Rows:
    """Rows placed around each boundary of the policy, relative to `now`."""

    def __init__(self, conn: asyncpg.Connection, now: datetime) -> None:
        self.conn, self.now = conn, now
        self.gone: set[UUID] = set()  # what the policy deletes
        self.kept: set[UUID] = set()

    async def setup(self) -> None:
        self.tenant = await make_tenant(self.conn)
        self.script = await make_script(self.conn, self.tenant)

    async def execution(self, status: str, age: timedelta, gone: bool) -> UUID:
        eid: UUID = await self.conn.fetchval(
            """INSERT INTO script_executions (script_id, tenant_id, status, trigger_type,
                                              started_at)
               VALUES ($1, $2, $3, 'event', $4) RETURNING id""",
            self.script, self.tenant, status, self.now - age)
        (self.gone if gone else self.kept).add(eid)
        return eid

    async def letter(self, execution: UUID, age: timedelta, gone: bool, retry_count: int = 3,
                     resolution: str | None = None, in_flight: bool = False,
                     next_retry: bool = False, max_retries: int = 3) -> UUID:
        lid: UUID = await self.conn.fetchval(
            """INSERT INTO script_event_dead_letters (script_id, tenant_id, execution_id,
                   event_type, event_data, error, retry_count, created_at)
               VALUES ($1, $2, $3, 'thing.happened', '{}', 'Error: x', $4, $5) RETURNING id""",
            self.script, self.tenant, execution, retry_count, self.now - age)
        await self.conn.execute(
            """INSERT INTO jsrt_dead_letter_state (dead_letter_id, tenant_id, next_retry_at,
                   in_flight, resolved_at, resolution, max_retries)
               VALUES ($1, $2, $3, $4, CASE WHEN $5::text IS NOT NULL THEN $6::timestamptz END,
                       $5, $7)""",
            lid, self.tenant, self.now if next_retry else None, in_flight, resolution, self.now,
            max_retries)
        (self.gone if gone else self.kept).add(lid)
        return lid

    async def event(self, dispatched_age: timedelta | None, gone: bool,
                    published_age: timedelta = 60 * DAY) -> UUID:
        eid: UUID = await self.conn.fetchval(
            """INSERT INTO jsrt_events (tenant_id, event_type, published_at, dispatched_at)
               VALUES ($1, 'thing.happened', $2, $3) RETURNING id""",
            self.tenant, self.now - published_age,
            None if dispatched_age is None else self.now - dispatched_age)
        (self.gone if gone else self.kept).add(eid)
        return eid

    async def firing(self, age: timedelta, gone: bool) -> None:
        when = self.now - age
        await self.conn.execute(
            "INSERT INTO jsrt_cron_firings (script_id, tenant_id, scheduled_for, fired_at) "
            "VALUES ($1, $2, $3, $3)", self.script, self.tenant, when)
        key = UUID(int=int(age.total_seconds()))  # firings have no id: keyed by their age
        (self.gone if gone else self.kept).add(key)

    async def remaining(self) -> set[UUID]:
        ids = await self.conn.fetch(
            """SELECT id FROM script_executions UNION ALL SELECT id FROM script_event_dead_letters
               UNION ALL SELECT id FROM jsrt_events""")
        ages = await self.conn.fetch("SELECT $1::timestamptz - fired_at AS age "
                                     "FROM jsrt_cron_firings", self.now)
        return {r["id"] for r in ids} | {UUID(int=int(r["age"].total_seconds())) for r in ages}


async def policy_rows(conn: asyncpg.Connection, now: datetime) -> Rows:
    r = Rows(conn, now)
    await r.setup()
    old_x, new_x = 90 * DAY + MINUTE, 90 * DAY - MINUTE
    for status in ("completed", "failed", "timeout"):
        await r.execution(status, old_x, gone=True)
        await r.execution(status, new_x, gone=False)
    for status in ("pending", "running", "cancelled"):  # not finished, or not in the policy
        await r.execution(status, 200 * DAY, gone=False)
    # an old execution an unresolved letter points at is kept, and so is the letter
    await r.letter(await r.execution("failed", old_x, gone=False), DAY, gone=False, retry_count=1)
    await r.letter(await r.execution("failed", old_x, gone=False), 10 * DAY, gone=False)
    # a resolved letter goes with its execution (ON DELETE CASCADE)
    await r.letter(await r.execution("failed", old_x, gone=True), 100 * DAY, gone=True,
                   retry_count=1, resolution="succeeded")

    old_l, new_l = 30 * DAY + MINUTE, 30 * DAY - MINUTE
    recent = 10 * MINUTE

    async def letter(age: timedelta, gone: bool, **kw: Any) -> None:
        await r.letter(await r.execution("failed", recent, gone=False), age, gone, **kw)

    await letter(old_l, True)  # exhausted, just past 30 days
    await letter(new_l, False)  # exhausted, just inside
    await letter(40 * DAY, True, resolution="discarded")  # the seed's rule: retry_count >= 3
    await letter(40 * DAY, False, retry_count=2)  # retries left
    await letter(40 * DAY, False, in_flight=True)  # a retry is running
    await letter(40 * DAY, False, next_retry=True, max_retries=4)  # an operator granted one more

    await r.event(7 * DAY + MINUTE, gone=True)
    await r.event(7 * DAY - MINUTE, gone=False)
    await r.event(None, gone=False)  # still queued, however old
    await r.firing(7 * DAY + MINUTE, gone=True)
    await r.firing(7 * DAY - MINUTE, gone=False)
    return r


async def test_cleanup_deletes_exactly_what_the_policy_says(
    conn: asyncpg.Connection, store: Store
) -> None:
    now = datetime.now(UTC)
    rows = await policy_rows(conn, now)
    expected = {"dead_letters": 2, "executions": 4, "events": 1, "cron_firings": 1}
    before = await rows.remaining()

    assert await store.retention.cleanup(Policy(), now, dry_run=True) == expected
    assert await rows.remaining() == before

    assert await store.retention.cleanup(Policy(batch=2), now) == expected  # several batches each
    assert await rows.remaining() == rows.kept
    assert not rows.gone & await rows.remaining()
    assert await store.retention.cleanup(Policy(), now) == dict.fromkeys(expected, 0)


async def test_retention_ages_are_configurable(conn: asyncpg.Connection, store: Store) -> None:
    now = datetime.now(UTC)
    await policy_rows(conn, now)
    short = Policy(executions_days=1, dead_letters_days=1, events_days=30, cron_firings_days=30)
    # every exhausted letter is old enough now (4), and so every finished execution but the
    # one an unresolved letter with retries left points at; every event and firing too young
    assert await store.retention.cleanup(short, now) == {
        "dead_letters": 4, "executions": 8, "events": 0, "cron_firings": 0}


async def jsrt(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], db_url: str,
               *argv: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    monkeypatch.setenv("DATABASE_URL", db_url)
    for k, v in (env or {}).items():
        monkeypatch.setenv(k, v)
    capsys.readouterr()
    try:
        code = await anyio.to_thread.run_sync(cli.main, list(argv))
    finally:
        structlog.reset_defaults()  # main() logged to the captured stderr, closed after the test
    return code, capsys.readouterr().out


async def test_cli_cleanup_table_and_json(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    conn: asyncpg.Connection, db_url: str,
) -> None:
    rows = await policy_rows(conn, datetime.now(UTC))
    before = await rows.remaining()
    code, out = await jsrt(monkeypatch, capsys, db_url, "cleanup", "--dry-run")
    assert code == 0
    assert out.splitlines() == [
        "would delete          2  dead letters older than 30 days",
        "would delete          4  executions older than 90 days",
        "would delete          1  events older than 7 days",
        "would delete          1  cron firings older than 7 days",
    ]
    assert await rows.remaining() == before

    code, out = await jsrt(monkeypatch, capsys, db_url, "cleanup", "--json",
                           env={"JSRT_RETENTION_EVENTS_DAYS": "30", "JSRT_CLEANUP_BATCH": "3"})
    assert code == 0
    assert json.loads(out) == {"dry_run": False, "deleted": {
        "dead_letters": 2, "executions": 4, "events": 0, "cron_firings": 1}}
    remaining = await rows.remaining()
    assert remaining == rows.kept | (rows.gone & {r["id"] for r in await conn.fetch(
        "SELECT id FROM jsrt_events")})


async def test_the_daemon_cleans_up_periodically_at_its_clock(
    conn: asyncpg.Connection, db_url: str
) -> None:
    tenant = await make_tenant(conn)
    script = await make_script(conn, tenant)
    await conn.execute(
        """INSERT INTO script_executions (script_id, tenant_id, status, trigger_type)
           SELECT $1, $2, 'completed', 'event' FROM generate_series(1, 5)""", script, tenant)
    clock = FakeClock(datetime.now(UTC) + 91 * DAY)  # to the daemon, they are 91 days old
    store = await Store.open(db_url)
    try:
        async with (Executor(workers=1, publisher=store_publisher(store)) as ex,
                    daemon_for(db_url, ex, clock, cleanup_interval=0.05) as d,
                    anyio.create_task_group() as tg):
            tg.start_soon(d.run)
            await row_becomes(conn, "SELECT count(*) FROM script_executions", expect=0,
                              timeout=30)
            d.stop()
    finally:
        await store.close()


async def _dead_runs(conn: asyncpg.Connection, n: int) -> None:
    """n runs that came and went: inserted into jsrt_runs and deleted, as the run path does."""
    tenant = await make_tenant(conn)
    script = await make_script(conn, tenant)
    await conn.execute(
        """WITH e AS (INSERT INTO script_executions (script_id, tenant_id, status, trigger_type)
                      SELECT $1, $2, 'completed', 'event' FROM generate_series(1, $3)
                      RETURNING id)
           INSERT INTO jsrt_runs (execution_id, tenant_id, script_id, state)
           SELECT id, $2, $1, 'pending' FROM e""", script, tenant, n)
    await conn.execute("DELETE FROM jsrt_runs")


async def _vacuumed(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval(
        "SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = 'jsrt_runs'"))


async def test_the_queue_vacuum_frees_the_run_queues_dead_rows(conn: asyncpg.Connection,
                                                                store: Store) -> None:
    # Whatever autovacuum does (it is off on some machines, and visits a database once a
    # minute at best), the run path's own VACUUM reclaims the dead rows of jsrt_runs, so
    # that their pages are reused instead of scanned as the table grows.
    from consumer.vacuum import QueueVacuum

    await _dead_runs(conn, 2000)
    before = await _vacuumed(conn)
    pages = await conn.fetchval("SELECT pg_relation_size('jsrt_runs') / 8192")
    await QueueVacuum(store.queue, 5.0).once()
    assert await _vacuumed(conn) == before + 1
    await _dead_runs(conn, 2000)  # the next runs fill the pages freed, not new ones
    assert await conn.fetchval("SELECT pg_relation_size('jsrt_runs') / 8192") <= pages + 1


async def test_the_queue_vacuum_skips_a_table_another_process_vacuums(
        conn: asyncpg.Connection, store: Store) -> None:
    from consumer.vacuum import QueueVacuum

    # a lock that conflicts with VACUUM's, held by another session: skipped, not waited for
    async with conn.transaction():
        await conn.execute("LOCK TABLE jsrt_runs IN SHARE UPDATE EXCLUSIVE MODE")
        with anyio.fail_after(10):
            await QueueVacuum(store.queue, 5.0).once()


async def test_the_daemon_vacuums_the_run_queue_periodically(conn: asyncpg.Connection,
                                                             db_url: str) -> None:
    before = await _vacuumed(conn)
    store = await Store.open(db_url)
    try:
        async with (Executor(workers=1, publisher=store_publisher(store)) as ex,
                    daemon_for(db_url, ex, queue_vacuum_interval=0.05) as d,
                    anyio.create_task_group() as tg):
            tg.start_soon(d.run)
            await row_becomes(conn, "SELECT vacuum_count >= $1 FROM pg_stat_user_tables"
                              " WHERE relname = 'jsrt_runs'", before + 2, expect=True,
                              timeout=30)
            d.stop()
    finally:
        await store.close()
