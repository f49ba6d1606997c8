"""The consumer against a real PostgreSQL and real V8 workers, in drain mode."""

from __future__ import annotations

import json

import anyio
import asyncpg
import pytest
import structlog.testing
from support.daemons import drain
from support.factories import executions, make_script, make_tenant, publish

from consumer.sandbox import Executor
from consumer.store import Store


async def test_publish_runs_every_subscribed_script_once(
    conn: asyncpg.Connection, db_url: str, executor: Executor
) -> None:
    tenant = await make_tenant(conn)
    a = await make_script(conn, tenant, event_types=["user.created"])
    b = await make_script(
        conn, tenant, "async function handler(i, ctx) { return i.n * 2; }",
        event_types=["user.created", "user.deleted"])
    await make_script(conn, tenant, event_types=["other.thing"])
    event_id = await publish(conn, tenant, "user.created", {"n": 21})

    await drain(db_url, executor)

    rows = await executions(conn, tenant)
    assert sorted(r["script_id"] for r in rows) == sorted([a, b])
    for r in rows:
        assert r["status"] == "completed", r["error"]
        assert r["trigger_type"] == "event"
        assert r["input"] == {"n": 21}
        assert r["trigger_data"]["event_id"] == str(event_id)
        assert r["trigger_data"]["event_type"] == "user.created"
        assert r["trigger_data"]["attempt"] == 1
        assert r["completed_at"] >= r["started_at"]
        assert r["metrics"]["duration_ms"] >= 0
    out = {r["script_id"]: r["output"] for r in rows}
    assert out[a] == {"echo": {"n": 21}, "tenant": str(tenant)}
    assert out[b] == 42
    assert await conn.fetchval("SELECT count(*) FROM jsrt_runs") == 0
    assert await conn.fetchval(
        "SELECT count(*) FROM jsrt_events WHERE dispatched_at IS NULL") == 0


async def test_rolled_back_publish_runs_nothing(
    conn: asyncpg.Connection, db_url: str, executor: Executor
) -> None:
    tenant = await make_tenant(conn)
    await make_script(conn, tenant)
    tx = conn.transaction()
    await tx.start()
    await publish(conn, tenant, "thing.happened")
    await tx.rollback()

    await drain(db_url, executor)
    assert await executions(conn, tenant) == []


@pytest.mark.parametrize("status", ["draft", "paused", "disabled", "archived"])
async def test_inactive_scripts_run_nothing(
    conn: asyncpg.Connection, db_url: str, executor: Executor, status: str
) -> None:
    tenant = await make_tenant(conn)
    await make_script(conn, tenant, status=status)
    await publish(conn, tenant, "thing.happened")
    await drain(db_url, executor)
    assert await executions(conn, tenant) == []
    # the event was consumed, not left behind
    assert await conn.fetchval("SELECT count(*) FROM jsrt_events WHERE dispatched_at IS NULL") == 0


async def test_a_tenant_never_runs_for_another_tenants_event(
    conn: asyncpg.Connection, db_url: str, executor: Executor
) -> None:
    a, b = await make_tenant(conn, "a"), await make_tenant(conn, "b")
    await make_script(conn, a, event_types=["order.paid"])
    b_script = await make_script(conn, b, event_types=["order.paid"])
    await publish(conn, b, "order.paid", {"secret": "b's"})
    await drain(db_url, executor)
    assert await executions(conn, a) == []
    rows = await executions(conn, b)
    assert [r["script_id"] for r in rows] == [b_script]


async def test_failures_are_recorded_and_dead_lettered(
    conn: asyncpg.Connection, db_url: str, executor: Executor
) -> None:
    tenant = await make_tenant(conn)
    script = await make_script(conn, tenant, "function handler() { throw new TypeError('nope'); }")
    await publish(conn, tenant, "thing.happened", {"k": 1})
    await drain(db_url, executor)
    [row] = await executions(conn, tenant)
    assert row["status"] == "failed"
    assert "TypeError: nope" in row["error"]
    letter = await conn.fetchrow(
        "SELECT * FROM script_event_dead_letters WHERE tenant_id = $1", tenant)
    assert letter["script_id"] == script
    assert letter["execution_id"] == row["id"]
    assert letter["retry_count"] == 0
    assert letter["event_type"] == "thing.happened"


async def test_script_published_events_stay_in_the_tenant_and_run(
    conn: asyncpg.Connection, db_url: str, executor: Executor
) -> None:
    tenant = await make_tenant(conn)
    await make_script(conn, tenant, """
        async function handler(input, ctx) {
            await ctx.events.publish('step.two', {from: input.n});
            return 'published';
        }""", event_types=["step.one"])
    second = await make_script(conn, tenant, "function handler(i) { return i.from + 1; }",
                               event_types=["step.two"])
    await publish(conn, tenant, "step.one", {"n": 1})
    await drain(db_url, executor)
    rows = await executions(conn, tenant)
    assert len(rows) == 2
    [r2] = [r for r in rows if r["script_id"] == second]
    assert r2["status"] == "completed"
    assert r2["output"] == 2
    assert r2["trigger_data"]["depth"] == 1


async def test_a_script_cannot_publish_into_another_tenant(
    conn: asyncpg.Connection, db_url: str, executor: Executor
) -> None:
    a, b = await make_tenant(conn, "a"), await make_tenant(conn, "b")
    await make_script(conn, a, f"""
        async function handler(input, ctx) {{
            // every way a script might try to name another tenant
            await ctx.events.publish('victim.event', {{tenant_id: '{b}'}}, {{tenant_id: '{b}'}});
            ctx.tenantId = '{b}';
            await ctx.events.publish('victim.event', {{}});
            return 'tried';
        }}""", event_types=["attack"])
    victim = await make_script(conn, b, event_types=["victim.event"])
    await publish(conn, a, "attack")
    await drain(db_url, executor)
    assert await executions(conn, b) == []
    assert await conn.fetchval(
        "SELECT count(*) FROM jsrt_events WHERE tenant_id = $1", b) == 0
    assert await conn.fetchval(
        "SELECT count(*) FROM jsrt_events WHERE tenant_id = $1 AND event_type = 'victim.event'",
        a) == 2
    assert victim  # exists, and never ran


async def test_a_raw_event_for_one_tenant_never_reaches_another(
    conn: asyncpg.Connection, db_url: str, executor: Executor
) -> None:
    a, b = await make_tenant(conn, "a"), await make_tenant(conn, "b")
    await make_script(conn, a, event_types=["shared.name"])
    await make_script(conn, b, event_types=["shared.name"])
    # the same dedup key in two tenants are two events; a repeat within a tenant is one
    store = await Store.open(db_url)
    try:
        for tenant in (a, b, a):
            await store.queue.enqueue(tenant, "shared.name", {"who": str(tenant)}, "same-key", 0,
                                "notify")
    finally:
        await store.close()
    await drain(db_url, executor)
    for tenant in (a, b):
        rows = await executions(conn, tenant)
        assert [r["input"] for r in rows] == [{"who": str(tenant)}]


HOSTILE = {
    "infinite loop": ("function handler() { while (true) {} }", "timeout", "timeout"),
    # On some hosts (seen 2026-12-02 on a fresh machine, every run; not on the one before)
    # V8 dies with SIGSEGV while this loop runs in a worker under a memory limit, alone too:
    # the run then fails as a crash of the engine - still one run's failure, one clear line,
    # nothing lost - instead of timing out. Open: the note of that day says what is known.
    "async loop": ("async function handler() { await null; while (true) {} }",
                   "timeout|failed", "timeout|script crashed the engine"),
    "heap bomb": ("function handler() { const a = []; while (true) a.push(new Array(1e5)); }",
                  "failed", "memory limit exceeded"),
    # untouched buffers are not resident: RLIMIT_DATA may turn the bomb into a RangeError first
    "buffer bomb": (
        "function handler() { const a = []; while (true) a.push(new Uint8Array(1e7)); }",
        # V8 either throws (RangeError) or, where an allocation fails inside the engine,
        # aborts the worker: then the run is tried again alone, aborts again, and is failed
        # with the sandbox's verdict (seen in CI: both workers SIGABRT, the others went on)
        "failed", "memory|RangeError: Array buffer allocation failed"
                  "|sandbox worker failed repeatedly while running this execution"),
    "huge output": ("function handler() { return 'x'.repeat(2e6); }", "failed",
                    "output too large"),
    # aborts V8 (SIGTRAP) unless the time limit comes first
    "engine crash": (
        "function handler() { let a = []; while (true) a.push(new Array(1.2e8).fill(0)); }",
        "failed|timeout", ""),
    "syntax error": ("function handler( {", "failed", "SyntaxError"),
}


async def test_hostile_scripts_fail_cleanly_and_everyone_else_carries_on(
    conn: asyncpg.Connection, db_url: str, executor: Executor
) -> None:
    tenant = await make_tenant(conn)
    limits = {"max_execution_time_ms": 800, "max_memory_bytes": 32 * 2**20}
    names = {}
    for name, (source, _, _) in HOSTILE.items():
        names[await make_script(conn, tenant, source, name=name, limits=limits,
                                event_types=["attack"])] = name
    good = await make_script(conn, tenant, "function handler(i) { return i.n; }",
                             event_types=["attack"])
    for n in range(3):
        await publish(conn, tenant, "attack", {"n": n})

    with anyio.fail_after(100):
        await drain(db_url, executor)

    rows = await executions(conn, tenant)
    assert len(rows) == 3 * (len(HOSTILE) + 1)  # every (event, script) ran; none lost
    assert sorted(r["output"] for r in rows if r["script_id"] == good) == [0, 1, 2]
    for r in rows:
        if r["script_id"] == good:
            assert r["status"] == "completed"
            continue
        _, status, fragment = HOSTILE[names[r["script_id"]]]
        assert r["status"] in status.split("|"), (names[r["script_id"]], r["error"])
        assert any(f in r["error"] for f in fragment.split("|")), r["error"]
        assert r["output"] is None
        assert r["error"].splitlines()[0].strip()  # a readable first line
    letters = await conn.fetchval(
        "SELECT count(*) FROM script_event_dead_letters WHERE tenant_id = $1", tenant)
    assert letters == 3 * len(HOSTILE)


async def test_fan_out_takes_every_tenant_in_one_pass_and_caps_each(
    conn: asyncpg.Connection, db_url: str
) -> None:
    tenants = [await make_tenant(conn, f"t{i}") for i in range(6)]
    for t in tenants:
        await make_script(conn, t)
        for n in range(3):
            await publish(conn, t, "thing.happened", {"n": n})
    store = await Store.open(db_url)
    try:
        # whatever the random first tenant, one pass wraps round to all six
        assert await store.queue.dispatch_events(limit=100, per_tenant=2) == (12, 12)
        per_tenant = await conn.fetch(
            "SELECT tenant_id, count(*) AS n FROM jsrt_events WHERE dispatched_at IS NOT NULL "
            "GROUP BY tenant_id")
        assert sorted(r["n"] for r in per_tenant) == [2] * 6
        assert await store.queue.dispatch_events(limit=4, per_tenant=2) == (4, 4)
        assert await store.queue.dispatch_events(limit=100, per_tenant=2) == (2, 2)
        assert await store.queue.dispatch_events(limit=100, per_tenant=2) == (0, 0)
    finally:
        await store.close()


async def test_a_claim_starts_new_executions_at_once_within_the_free_slots(
    conn: asyncpg.Connection, db_url: str
) -> None:
    tenant = await make_tenant(conn)
    script = await make_script(conn, tenant, limits={"max_concurrent_runs": 2})
    for n in range(5):
        await publish(conn, tenant, "thing.happened", {"n": n})
    store = await Store.open(db_url)
    try:
        # three free slots: three events fanned out (the rest stay queued as events), two
        # start at once (the script's limit), the third waits as 'pending'
        claimed = await store.queue.claim("d1", 100, 100, 3, 10, start_pending=True)
        assert (claimed.events, claimed.created, claimed.queued) == (3, 3, 1)
        assert [json.loads(r.input_json)["n"] for r in claimed.started] == [0, 1]
        assert claimed.more and claimed.waiting  # two events left; one run waits
        states = await conn.fetch(
            "SELECT x.status, r.state, r.daemon_id FROM script_executions x "
            "JOIN jsrt_runs r ON r.execution_id = x.id WHERE x.tenant_id = $1 "
            "ORDER BY x.input->>'n'", tenant)
        assert [tuple(s) for s in states] == [
            ("running", "running", "d1"), ("running", "running", "d1"),
            ("pending", "pending", None)]
        assert await conn.fetchval(
            "SELECT count(*) FROM jsrt_events WHERE tenant_id = $1 AND dispatched_at IS NULL",
            tenant) == 2

        # a slot frees: the queued run starts before any newer event's execution
        await conn.execute("DELETE FROM jsrt_runs WHERE execution_id = $1",
                           claimed.started[0].execution_id)
        again = await store.queue.claim("d1", 100, 100, 3, 10, start_pending=True)
        assert [json.loads(r.input_json)["n"] for r in again.started] == [2]
        assert again.queued == again.created  # the script is full: new ones queue
        assert all(r.script_id == script for r in again.started)
    finally:
        await store.close()


async def test_a_claim_commits_asynchronously_and_leaves_the_session_durable(
    conn: asyncpg.Connection, db_url: str
) -> None:
    tenant = await make_tenant(conn)
    await make_script(conn, tenant)
    await publish(conn, tenant, "thing.happened")
    store = await Store.open(db_url, min_size=1, max_size=1)
    try:
        assert len((await store.queue.claim("d1", 10, 10, 10, 10)).started) == 1
        # synchronous_commit = off held for the claim's own transaction only
        assert await store.db.fetchval("SHOW synchronous_commit") == "on"
    finally:
        await store.close()


async def test_a_runs_log_lines_name_its_script(
    conn: asyncpg.Connection, db_url: str, executor: Executor
) -> None:
    """Operators read names, not ids: every line about a run carries the script's name (#14)."""
    tenant = await make_tenant(conn)
    await make_script(conn, tenant, "function handler() { throw new TypeError('nope'); }",
                      name="billing-sync")
    await publish(conn, tenant, "thing.happened", {"k": 1})
    with structlog.testing.capture_logs() as logs:
        await drain(db_url, executor)
    [failed] = [line for line in logs if line["event"] == "execution_failed"]
    assert failed["script"] == "billing-sync"
