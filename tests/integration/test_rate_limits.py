"""Rate limits across processes (issue #14 item 4): max_api_calls_per_minute is counted in the
database, so two daemons, a daemon and `jsrt serve`, or a restart never give a script more
than its limit. Real PostgreSQL; the windows with an injected clock."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
from support.factories import executions, make_script, make_tenant

from consumer.ratelimit import REFUSED_FOR
from consumer.runtime import Runtime
from consumer.store import Store

T0 = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)


async def test_a_window_allows_exactly_the_limit(db_url: str, conn: asyncpg.Connection) -> None:
    tenant, script = await make_tenant(conn), uuid.uuid4()
    store = await Store.open(db_url)
    try:
        got = [await store.rates.acquire(tenant, script, "api", 3, T0) for _ in range(5)]
        assert got == [True, True, True, False, False]
        # another bucket and another script count on their own
        assert await store.rates.acquire(tenant, script, "http", 3, T0)
        assert await store.rates.acquire(tenant, uuid.uuid4(), "api", 3, T0)
    finally:
        await store.close()


async def test_a_refusal_is_remembered_for_a_second_without_a_statement(
    db_url: str, conn: asyncpg.Connection
) -> None:
    """A script catching RateLimitError in a loop made one statement per call: the process
    now refuses for REFUSED_FOR without asking; a changed limit, and the next second, ask."""
    tenant, script = await make_tenant(conn), uuid.uuid4()
    store = await Store.open(db_url)
    try:
        assert [await store.rates.acquire(tenant, script, "api", 2, T0) for _ in range(3)] \
            == [True, True, False]
        await conn.execute("DELETE FROM jsrt_rate_windows WHERE script_id = $1", script)
        # the window is empty now, but the refusal holds in this process for a second
        assert not await store.rates.acquire(tenant, script, "api", 2,
                                             T0 + timedelta(milliseconds=900))
        assert await store.rates.acquire(tenant, script, "api", 3, T0)  # another limit asks
        assert await store.rates.acquire(tenant, script, "api", 2, T0 + REFUSED_FOR)
    finally:
        await store.close()


async def test_the_previous_window_counts_while_it_overlaps_the_last_minute(
    db_url: str, conn: asyncpg.Connection
) -> None:
    tenant, script = await make_tenant(conn), uuid.uuid4()
    store = await Store.open(db_url)
    try:
        for _ in range(10):
            assert await store.rates.acquire(tenant, script, "api", 10, T0 + timedelta(seconds=50))
        # 15 s into the next window, 75 % of the previous one still counts: 7.5 → 7 of 10
        later = T0 + timedelta(seconds=75)
        got = [await store.rates.acquire(tenant, script, "api", 10, later) for _ in range(5)]
        assert got == [True, True, True, False, False]
        # two minutes on, the old windows are gone and nothing counts against the script
        much_later = T0 + timedelta(minutes=3)
        assert await store.rates.acquire(tenant, script, "api", 1, much_later)
        assert await conn.fetchval(
            "SELECT count(*) FROM jsrt_rate_windows WHERE script_id = $1", script) == 1
    finally:
        await store.close()


async def test_max_api_calls_per_minute_holds_across_processes_and_restarts(
    db_url: str, conn: asyncpg.Connection
) -> None:
    """Three embedded Runtimes one after the other - each its own pool, sandbox and lease, as
    three processes would be (or one restarted) - share the script's 5 calls a minute."""
    tenant = await make_tenant(conn)
    script = await make_script(conn, tenant, """async function handler(i, ctx) {
        const out = [];
        for (let n = 0; n < 3; n++) {
            try { await ctx.events.publish('tick', {n}); out.push('ok'); }
            catch (e) { out.push(e.name); }
        }
        return out;
    }""", type="oneoff", limits={"max_api_calls_per_minute": 5})
    outputs = []
    for _ in range(3):
        async with Runtime(db_url, workers=1) as rt:
            outputs.append((await rt.execute(script, tenant_id=tenant)).output)
    assert outputs == [["ok", "ok", "ok"], ["ok", "ok", "RateLimitError"],
                       ["RateLimitError"] * 3]
    assert await conn.fetchval(
        "SELECT count(*) FROM jsrt_events WHERE tenant_id = $1", tenant) == 5
    assert len(await executions(conn, tenant)) == 3
