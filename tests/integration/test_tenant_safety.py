"""The red-team pass of issue #13, against a real PostgreSQL and real V8, case by case: every
value a tenant hands the runtime is stored exactly, in its own row, or refused with one clear
line; no row a tenant or operator can write stops the daemon or another tenant.
(The classes of input are in test_json_classes.py.)"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import asyncpg
import pytest
from support.daemons import daemon_for, drain, settings_for
from support.factories import executions, make_script, make_tenant, publish
from support.waiting import eventually

from consumer.app import sandbox
from consumer.clock import FakeClock
from consumer.runtime import Runtime
from consumer.sandbox import Executor
from consumer.store import Store

ARRAY_OUT = "function handler(i, ctx) { return [TAG + '-private-' + i.n, TAG + '-card-' + i.n]; }"
FAILS = "function handler(i) { throw new Error('no'); }"


async def running(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM jsrt_runs"))


# ---------------------------------------------------------------- 1. arrays cross no tenant
async def test_array_outputs_are_stored_exactly_in_their_own_rows(
    conn: asyncpg.Connection, db_url: str, executor: Executor
) -> None:
    a, b = await make_tenant(conn, "a"), await make_tenant(conn, "b")
    await make_script(conn, a, "const TAG = 'A';\n" + ARRAY_OUT)
    await make_script(conn, b, "const TAG = 'B';\n" + ARRAY_OUT)
    for n in range(200):
        await publish(conn, a, "thing.happened", {"n": n})
        await publish(conn, b, "thing.happened", {"n": n})
    await drain(db_url, executor)
    for tenant, tag in ((a, "A"), (b, "B")):
        rows = await executions(conn, tenant)
        assert len(rows) == 200
        for r in rows:
            n = r["input"]["n"]
            assert r["status"] == "completed", r["error"]
            assert r["output"] == [f"{tag}-private-{n}", f"{tag}-card-{n}"]
    assert await running(conn) == 0


async def test_the_embedded_api_returns_what_the_row_holds(
    conn: asyncpg.Connection, db_url: str
) -> None:
    tenant = await make_tenant(conn)
    script = await make_script(conn, tenant, "function handler(i) { return [[1, 2], [], i]; }",
                               type="embedded")
    async with Runtime(db_url, workers=1) as rt:
        result = await rt.execute(script, [["x"]], tenant_id=tenant)
    [row] = await executions(conn, tenant)
    assert result.output == row["output"] == [[1, 2], [], [["x"]]]


# ---------------------------------------------------------------- 2. array payloads dead-letter
@pytest.mark.parametrize("payload", [["x", 2], [], [[1], [2, [3]]], "text", 7, None])
async def test_failures_of_any_payload_are_dead_lettered(
    conn: asyncpg.Connection, db_url: str, executor: Executor, payload: Any
) -> None:
    tenant = await make_tenant(conn)
    script = await make_script(conn, tenant, FAILS)
    await conn.execute("SELECT jsrt_publish($1, 'thing.happened', $2::jsonb)", tenant,
                       json.dumps(payload))
    await drain(db_url, executor)
    [letter] = await conn.fetch(
        "SELECT script_id, event_data::text AS data, error FROM script_event_dead_letters"
        " WHERE tenant_id = $1", tenant)
    assert letter["script_id"] == script
    assert json.loads(letter["data"]) == payload
    assert letter["error"].startswith("Error: no")
    assert await running(conn) == 0


async def test_a_lost_run_with_any_payload_is_rescued_with_everyone_elses(
    conn: asyncpg.Connection, db_url: str
) -> None:
    """Runs of a dead daemon, one of them with an array payload and one nested 2,000 deep (as
    SQL can write it): one rescue closes all of them, and dead-letters them."""
    tenant = await make_tenant(conn)
    script = await make_script(conn, tenant, FAILS)
    deep = "[" * 2000 + "]" * 2000
    for payload in ('["x", 2]', deep, '{"fine": true}'):
        exe = await conn.fetchval(
            """INSERT INTO script_executions (script_id, tenant_id, status, trigger_type,
                                              trigger_data, input)
               VALUES ($1, $2, 'running', 'event', '{"type": "event", "attempt": 1,
                       "event_type": "thing.happened"}', $3::jsonb) RETURNING id""",
            script, tenant, payload)
        await conn.execute(
            """INSERT INTO jsrt_runs (execution_id, tenant_id, script_id, state, daemon_id,
                                      started_at) VALUES ($1, $2, $3, 'running', 'gone', NOW())""",
            exe, tenant, script)
    store = await Store.open(db_url)
    try:
        lost = await store.queue.rescue_lost_runs(1.0, datetime.now(UTC) + timedelta(minutes=1))
    finally:
        await store.close()
    assert len(lost) == 3
    assert await running(conn) == 0
    assert await conn.fetchval(
        "SELECT count(*) FROM script_event_dead_letters WHERE tenant_id = $1", tenant) == 3


# ---------------------------------------------------------------- 3, 4. deep values
async def test_jsrt_publish_refuses_a_payload_nested_deeper_than_64(
    conn: asyncpg.Connection,
) -> None:
    tenant = await make_tenant(conn)
    ok = json.dumps(_nest(63))  # 64 levels with the innermost list
    await conn.execute("SELECT jsrt_publish($1, 'deep', $2::jsonb)", tenant, ok)
    with pytest.raises(asyncpg.ProgramLimitExceededError,
                       match="payload is nested deeper than 64 levels"):
        await conn.execute("SELECT jsrt_publish($1, 'deep', (repeat('[', 1500)"
                           " || repeat(']', 1500))::jsonb)", tenant)


async def test_a_deep_payload_in_the_queue_never_stops_the_daemon(
    conn: asyncpg.Connection, db_url: str, executor: Executor
) -> None:
    """Written into the queue by SQL (past jsrt_publish's check): the daemon passes it to V8
    as text; the script's echo of it is refused as output; tenant B is untouched."""
    a, b = await make_tenant(conn, "a"), await make_tenant(conn, "b")
    await make_script(conn, a, "function handler(i) { return i; }")
    await make_script(conn, b)
    await conn.execute(
        "INSERT INTO jsrt_events (tenant_id, event_type, payload) VALUES"
        " ($1, 'thing.happened', (repeat('[', 1500) || repeat(']', 1500))::jsonb)", a)
    await publish(conn, b, "thing.happened", {"n": 1})
    await drain(db_url, executor)
    [bad] = await conn.fetch("SELECT status, error FROM script_executions WHERE tenant_id = $1",
                             a)  # (its input is too deep for Python's json to read back)
    assert (bad["status"], bad["error"]) == ("failed", "output is nested deeper than 64 levels")
    [good] = await executions(conn, b)
    assert good["status"] == "completed"


async def test_deep_outputs_fail_cleanly_and_never_hold_a_slot(
    conn: asyncpg.Connection, db_url: str, executor: Executor
) -> None:
    a, b = await make_tenant(conn, "a"), await make_tenant(conn, "b")
    await make_script(
        conn, a, "function handler() { let v = 1; for (let i = 0; i < 2000; i++) v = [v];"
                 " return v; }", limits={"max_concurrent_runs": 2})
    await make_script(conn, b)
    for n in range(60):
        await publish(conn, a, "thing.happened", {"n": n})
        await publish(conn, b, "thing.happened", {"n": n})
    await drain(db_url, executor)
    a_rows, b_rows = await executions(conn, a), await executions(conn, b)
    assert {(r["status"], r["error"]) for r in a_rows} == {
        ("failed", "output is nested deeper than 64 levels")}
    assert len(a_rows) == 60
    assert len(b_rows) == 60 and {r["status"] for r in b_rows} == {"completed"}
    assert await running(conn) == 0


# ---------------------------------------------------------------- 6. U+0000, lone surrogates
@pytest.mark.parametrize(
    ("source", "status", "error", "console"),
    [
        ("function handler() { throw new Error('a\\u0000b'); }", "failed", "Error: a\ufffdb",
         None),
        ("function handler() { throw new Error('x\\ud800y'); }", "failed", "Error: x\ufffdy",
         None),
        ("function handler() { return 'a\\u0000b'; }", "failed",
         "output cannot be stored: it contains U+0000, which PostgreSQL cannot store", None),
        ("function handler() { return {k: '\\udc00'}; }", "failed",
         "output cannot be stored: it contains an unpaired UTF-16 surrogate, which is not valid"
         " Unicode", None),
        ("function handler() { console.log('n\\u0000l', '\\ud800'); return 1; }", "completed",
         None, "n\ufffdl \ufffd"),
    ],
)
async def test_what_postgresql_cannot_hold_is_cleaned_or_refused(
    conn: asyncpg.Connection, db_url: str, executor: Executor, source: str, status: str,
    error: str | None, console: str | None,
) -> None:
    tenant = await make_tenant(conn)
    await make_script(conn, tenant, source)
    await publish(conn, tenant, "thing.happened", {"n": 1})
    await drain(db_url, executor)
    [row] = await executions(conn, tenant)
    assert row["status"] == status
    if error is not None:
        assert row["error"].splitlines()[0] == error
    if console is not None:
        lines = await conn.fetchval(
            "SELECT lines::text FROM jsrt_execution_logs WHERE execution_id = $1", row["id"])
        assert [line["message"] for line in json.loads(lines)] == [console]
    assert await running(conn) == 0


async def test_a_result_the_database_refuses_is_recorded_as_a_failure_on_demand(
    conn: asyncpg.Connection, db_url: str
) -> None:
    """OnDemand (HTTP, jsrt exec, the embedded API) records a refused result the way the
    daemon does: as a failure that says why, never leaving the run 'running'."""
    tenant = await make_tenant(conn)
    script = await make_script(conn, tenant, "function handler() { return 'refuse me'; }",
                               type="oneoff")
    await conn.execute("""
        CREATE FUNCTION test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.output = '"refuse me"'::jsonb THEN
                RAISE EXCEPTION 'this output is refused by a test trigger';
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER test_refuse BEFORE UPDATE ON script_executions
            FOR EACH ROW EXECUTE FUNCTION test_refuse();""")
    async with Runtime(db_url, workers=1) as rt:
        result = await rt.execute(script, tenant_id=tenant)
    assert (result.ok, result.status) == (False, "failed")
    assert result.error == ("result could not be recorded: this output is refused by a test"
                            " trigger")
    [row] = await executions(conn, tenant)
    assert (row["status"], row["error"]) == ("failed", result.error)
    assert await running(conn) == 0


# ---------------------------------------------------------------- 7. bad rows written by SQL
BAD_LIMITS = [
    ('{"max_memory_bytes": "lots"}', "max_memory_bytes must be a positive integer (got 'lots')"),
    ('{"max_concurrent_runs": "abc"}', "max_concurrent_runs must be a positive integer"),
    ('{"max_concurrent_runs": 2.5}', "max_concurrent_runs must be a positive integer"),
    ('{"max_concurrent_runs": 1e10}', "max_concurrent_runs must be"),
    ('{"max_concurrent_runs": 0}', "max_concurrent_runs must be a positive integer (got 0)"),
    ('{"max_execution_time_ms": null}', "max_execution_time_ms must be a positive integer"),
    ('{"max_output_size_bytes": true}', "max_output_size_bytes must be a positive integer"),
    ('[1, 2]', "a JSON object is needed (got list)"),
    ('"text"', "a JSON object is needed (got str)"),
]


@pytest.mark.parametrize(("limits", "error"), BAD_LIMITS)
async def test_unusable_resource_limits_cost_only_that_scripts_runs(
    conn: asyncpg.Connection, db_url: str, executor: Executor, limits: str, error: str
) -> None:
    a, b = await make_tenant(conn, "a"), await make_tenant(conn, "b")
    bad = await make_script(conn, a)
    await conn.execute("UPDATE scripts SET resource_limits = $2::jsonb WHERE id = $1",
                       bad, limits)
    await make_script(conn, b)
    for n in range(3):
        await publish(conn, a, "thing.happened", {"n": n})
        await publish(conn, b, "thing.happened", {"n": n})
    await drain(db_url, executor)
    a_rows = await executions(conn, a)
    assert len(a_rows) == 3
    for r in a_rows:
        assert r["status"] == "failed"
        assert r["error"].startswith("invalid resource_limits: ")
        assert error in r["error"]
    assert {r["status"] for r in await executions(conn, b)} == {"completed"}
    assert await running(conn) == 0


# ---------------------------------------------------------------- 9. __proto__ stays a key
async def test_a_proto_key_in_a_payload_never_sets_a_prototype(
    conn: asyncpg.Connection, db_url: str, executor: Executor
) -> None:
    tenant = await make_tenant(conn)
    await make_script(conn, tenant, """function handler(i) {
        return {own: Object.prototype.hasOwnProperty.call(i, '__proto__'),
                proto: Object.getPrototypeOf(i) === Object.prototype,
                admin: i.isAdmin === undefined,
                nested: Object.getPrototypeOf(i.deep) === Object.prototype}; }""")
    await conn.execute(
        """SELECT jsrt_publish($1, 'thing.happened',
               '{"__proto__": {"isAdmin": true}, "deep": {"__proto__": []}}'::jsonb)""", tenant)
    await drain(db_url, executor)
    [row] = await executions(conn, tenant)
    assert row["output"] == {"own": True, "proto": True, "admin": True, "nested": True}


# ---------------------------------------------------------------- 14. smaller ones
async def test_ctx_events_publish_refuses_what_cannot_be_stored_without_database_detail(
    conn: asyncpg.Connection, db_url: str, executor: Executor
) -> None:
    tenant = await make_tenant(conn)
    await make_script(conn, tenant, """async function handler(i, ctx) {
        const out = [];
        for (const payload of [{a: '\\u0000'}, JSON.parse('['.repeat(70) + ']'.repeat(70))]) {
            try { await ctx.events.publish('x', payload); out.push('published'); }
            catch (e) { out.push(e.message); }
        }
        return out;
    }""")
    await publish(conn, tenant, "thing.happened", {})
    await drain(db_url, executor)
    [row] = await executions(conn, tenant)
    assert row["output"] == [
        "events.publish: payload cannot be stored: it contains U+0000, which PostgreSQL"
        " cannot store",
        "events.publish: payload is nested deeper than 64 levels",
    ], row
    assert "DETAIL" not in json.dumps(row["output"]) and "$" not in json.dumps(row["output"])


async def test_execute_source_runs_the_source_it_was_given_after_its_row_was_edited(
    conn: asyncpg.Connection, db_url: str
) -> None:
    tenant = await make_tenant(conn)
    source = "function handler() { return 'original'; }"
    async with Runtime(db_url, workers=1) as rt:
        assert (await rt.execute_source(tenant, source)).output == "original"
        await conn.execute("UPDATE scripts SET source = 'function handler() { return 1; }'"
                           " WHERE tenant_id = $1 AND type = 'embedded'", tenant)
        again = await rt.execute_source(tenant, source)
    assert again.output == "original"


def test_jsrt_publish_cli_refuses_a_deep_payload_in_one_line(db_url: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "consumer.cli", "publish", str(uuid.uuid4()), "deep",
         "[" * 1500 + "]" * 1500],
        env={"DATABASE_URL": db_url, "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
        timeout=60)
    assert proc.returncode != 0
    assert proc.stderr.strip() == "jsrt: error: payload is nested deeper than 64 levels"
    assert "Traceback" not in proc.stderr


# ---------------------------------------------------------------- 15. retries keep the trigger
async def test_a_dead_letter_retry_carries_the_whole_original_trigger(
    conn: asyncpg.Connection, db_url: str, executor: Executor
) -> None:
    """The retry of a failed run at depth 5 still runs at depth 5, with the event's
    published_at: a failing chain cannot restart at depth 1 on each retry."""
    tenant = await make_tenant(conn)
    await make_script(conn, tenant, """function handler(i, ctx) {
        if (ctx.trigger.attempt === 1) throw new Error('first');
        return {depth: ctx.trigger.depth, published_at: ctx.trigger.published_at}; }""")
    store = await Store.open(db_url)
    try:
        await store.queue.enqueue(tenant, "thing.happened", {"n": 1}, None, 5, "script")
    finally:
        await store.close()
    clock = FakeClock(datetime.now(UTC))
    await drain(db_url, executor, clock)
    clock.advance(3600)
    await drain(db_url, executor, clock)
    first, retry = await executions(conn, tenant)
    assert first["trigger_data"]["depth"] == 5
    assert retry["trigger_data"]["attempt"] == 2
    assert retry["output"] == {"depth": 5,
                               "published_at": first["trigger_data"]["published_at"]}


def _nest(levels: int) -> Any:
    value: Any = []
    for _ in range(levels):
        value = [value]
    return value



# ---------------------------------------------------------------- 16. payload size
BIG = "SELECT jsrt_publish($1, 'big', jsonb_build_object('s', repeat('x', $2::int)))"


async def test_jsrt_publish_refuses_a_payload_over_the_cap_and_queues_nothing(
    conn: asyncpg.Connection,
) -> None:
    tenant = await make_tenant(conn)
    await conn.execute(BIG, tenant, 200_000)  # under 256 KiB
    with pytest.raises(asyncpg.ProgramLimitExceededError,
                       match=r"payload is larger than 262144 bytes \(\d+ bytes\)"):
        await conn.execute(BIG, tenant, 300_000)
    assert await conn.fetchval("SELECT count(*) FROM jsrt_events WHERE tenant_id = $1",
                               tenant) == 1
    assert await conn.fetchval("SELECT count(*) FROM jsrt_events_due WHERE tenant_id = $1",
                               tenant) == 1
    # by any path: plain SQL, and a value that arrives compressed (copied from a row)
    with pytest.raises(asyncpg.ProgramLimitExceededError, match="payload is larger"):
        await conn.execute("INSERT INTO jsrt_events (tenant_id, event_type, payload) VALUES"
                           " ($1, 'big', jsonb_build_object('s', repeat('x', 300000)))", tenant)
    await conn.execute("CREATE TEMP TABLE stash (p jsonb)")
    await conn.execute("INSERT INTO stash SELECT jsonb_build_object('s', repeat('x', 3000000))")
    assert await conn.fetchval("SELECT pg_column_size(p) < 262144 FROM stash")  # compressed
    with pytest.raises(asyncpg.ProgramLimitExceededError, match="payload is larger"):
        await conn.execute("INSERT INTO jsrt_events (tenant_id, event_type, payload)"
                           " SELECT $1, 'big', p FROM stash", tenant)
    # the database may set another cap
    await conn.execute("SET jsrt.max_payload_bytes = '1000000'")
    await conn.execute(BIG, tenant, 300_000)
    await conn.execute("RESET jsrt.max_payload_bytes")


async def test_ctx_events_publish_of_a_payload_over_the_cap_says_so_in_one_line(
    conn: asyncpg.Connection, db_url: str, executor: Executor
) -> None:
    a, b = await make_tenant(conn, "a"), await make_tenant(conn, "b")
    await make_script(conn, a, """async function handler(i, ctx) {
        try { await ctx.events.publish('x', {s: 'x'.repeat(300000)}); return 'published'; }
        catch (e) { return e.message; }
    }""")
    await make_script(conn, b)
    await publish(conn, a, "thing.happened", {})
    await publish(conn, b, "thing.happened", {"n": 1})
    await drain(db_url, executor)
    [row] = await executions(conn, a)
    assert row["output"].startswith(
        "events.publish failed: payload is larger than 262144 bytes ("), row
    assert {r["status"] for r in await executions(conn, b)} == {"completed"}
    assert await conn.fetchval("SELECT count(*) FROM jsrt_events WHERE event_type = 'x'") == 0


# ---------------------------------------------------------------- 17. CPU within the limits
HOG = ("function handler() { const end = Date.now() + 4000; let x = 0;"
       " while (Date.now() < end) { x++ } return 'hog'; }")


@asynccontextmanager
async def daemon_running(db_url: str, **settings: Any) -> AsyncIterator[Executor]:
    """A daemon in the background with its process's own sandbox (two workers; burst
    workers, as many, by default)."""
    store = await Store.open(db_url)
    try:
        async with sandbox(settings_for(db_url, workers=2), store) as ex, \
                daemon_for(db_url, ex, workers=2, **settings) as d, \
                anyio.create_task_group() as tg:
            tg.start_soon(d.run)
            try:
                yield ex
            finally:
                d.stop()
    finally:
        await store.close()


async def recorded_before_any_of(conn: asyncpg.Connection, b: uuid.UUID,
                                 a: uuid.UUID) -> None:
    """B's event, published now, is recorded while none of A's runs has ended."""
    await publish(conn, b, "thing.happened", {"n": 1})
    await eventually(lambda: conn.fetchval(
        "SELECT count(*) FROM script_executions WHERE tenant_id = $1"
        " AND status = 'completed'", b), timeout=30, what="B's run recorded")
    assert await conn.fetchval(
        "SELECT count(*) FROM script_executions WHERE tenant_id = $1"
        " AND completed_at IS NOT NULL", a) == 0


async def test_a_tenant_burning_cpu_within_its_limits_does_not_hold_up_another_tenant(
    conn: asyncpg.Connection, db_url: str
) -> None:
    """Tenant A's runs each burn 4 s of CPU (its limit is 30 s), five at a time, on a
    daemon's two workers: tenant B's event, published once both are taken, is recorded
    before any of A's runs ends (it waited 4-24 s for them before burst workers)."""
    a, b = await make_tenant(conn, "a"), await make_tenant(conn, "b")
    await make_script(conn, a, HOG)
    await make_script(conn, b)
    for _ in range(4):
        await publish(conn, a, "thing.happened", {})
    async with daemon_running(db_url) as ex:
        assert ex.options.burst_workers == 2  # JSRT_BURST_WORKERS: as many as JSRT_WORKERS
        await eventually(lambda: sum(w.step_ms > 300 for w in ex.stats().workers) >= 2,
                         timeout=30, what="A's runs in both workers")
        await recorded_before_any_of(conn, b, a)
        assert ex.bursts >= 1
    assert [r["status"] for r in await executions(conn, a)] == ["completed"] * 4


# ---------------------------------------------------------------- 18. runs that wait
SLEEPS = "async function handler() { await new Promise((r) => setTimeout(r, 3000)); return 1; }"


async def test_a_tenants_waiting_runs_leave_slots_to_another_tenant(
    conn: asyncpg.Connection, db_url: str
) -> None:
    """Tenant A's runs wait 3 s on a timer (no CPU), from three scripts at five runs each: a
    daemon of 8 slots gives A its share (2) and tenant B's event runs at once (before, A's
    sleeping runs took every slot and B's event waited for them: 14 s measured)."""
    a, b = await make_tenant(conn, "a"), await make_tenant(conn, "b")
    for _ in range(3):
        await make_script(conn, a, SLEEPS)
    await make_script(conn, b)
    for _ in range(5):
        await publish(conn, a, "thing.happened", {})
    held = "SELECT sum(slots) FROM jsrt_leases WHERE tenant_id = $1"
    async with daemon_running(db_url, concurrency=8):
        await eventually(lambda: conn.fetchval(held, a), timeout=30,
                         what="A's runs in their slots")
        await recorded_before_any_of(conn, b, a)
        assert await conn.fetchval(held, a) <= 2
