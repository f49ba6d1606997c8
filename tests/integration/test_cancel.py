"""Cancel (#19) against a real PostgreSQL and real V8: a pending run never starts, a running
one is stopped by the process that runs it (daemon, HTTP server, embedded Runtime) with its
worker kept, a finished one is left alone; a cancelled run is never dead-lettered."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from uuid import UUID

import anyio
import asyncpg
import httpx
import pytest
from support.cli import run_cli
from support.daemons import daemon_for, drain
from support.factories import executions, make_script, make_tenant, publish
from support.waiting import eventually, row_becomes

from consumer.app import store_publisher
from consumer.cancel import executor_stop, watching
from consumer.daemon import Daemon
from consumer.http import build_app
from consumer.lease import Lease
from consumer.ondemand import OnDemand
from consumer.runtime import Runtime
from consumer.sandbox import Executor
from consumer.settings import Settings
from consumer.store import Store

BUSY = "function handler() { while (true) {} }"  # stopped inside its step
SLEEPY = "async function handler() { await new Promise(r => setTimeout(r, 60000)); return 1 }"
QUICK = "function handler(i) { return { ok: true } }"
LONG = {"max_execution_time_ms": 120000}


async def pending_run(conn: asyncpg.Connection, tenant: UUID, script: UUID) -> UUID:
    """A queued execution no daemon has taken (as a retry or a cron tick leaves one)."""
    execution: UUID = await conn.fetchval(
        """INSERT INTO script_executions (script_id, tenant_id, status, trigger_type,
                                          trigger_data, input)
           VALUES ($1, $2, 'pending', 'event', '{"type": "event", "attempt": 1}', '{}')
           RETURNING id""", script, tenant)
    await conn.execute("INSERT INTO jsrt_runs (execution_id, tenant_id, script_id) "
                       "VALUES ($1, $2, $3)", execution, tenant, script)
    return execution


@asynccontextmanager
async def running_daemon(db_url: str, executor: Executor) -> AsyncIterator[Daemon]:
    async with daemon_for(db_url, executor) as d, anyio.create_task_group() as tg:
        tg.start_soon(d.run)
        try:
            yield d
        finally:
            d.stop()


async def test_a_pending_run_never_starts(conn: asyncpg.Connection, db_url: str,
                                          executor: Executor) -> None:
    tenant = await make_tenant(conn)
    script = await make_script(conn, tenant, QUICK)
    first, second = await pending_run(conn, tenant, script), await pending_run(conn, tenant, script)

    out = run_cli(db_url, "executions", "cancel", str(first), "--by", "alice", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [{
        "execution_id": str(first), "outcome": "cancelled", "status": "cancelled",
        "was": "pending", "script_id": str(script), "tenant_id": str(tenant)}]

    await drain(db_url, executor)
    rows = {r["id"]: r for r in await executions(conn, tenant)}
    assert (rows[first]["status"], rows[first]["error"]) == ("cancelled", "cancelled by alice")
    assert rows[first]["output"] is None
    assert rows[second]["status"] == "completed"
    assert await conn.fetchval("SELECT count(*) FROM script_event_dead_letters") == 0
    assert await conn.fetchval("SELECT count(*) FROM jsrt_cancels") == 0


@pytest.mark.parametrize("source", [BUSY, SLEEPY], ids=["in-a-step", "between-steps"])
async def test_a_running_event_run_is_stopped_and_its_worker_kept(
        conn: asyncpg.Connection, db_url: str, executor: Executor, source: str) -> None:
    async with running_daemon(db_url, executor) as daemon:
        await _stop_a_running_run(conn, db_url, executor, daemon, source)


async def _stop_a_running_run(conn: asyncpg.Connection, db_url: str, executor: Executor,
                              running_daemon: Daemon, source: str) -> None:
    tenant = await make_tenant(conn)
    script = await make_script(conn, tenant, source, limits=LONG)
    quick = await make_script(conn, tenant, QUICK, event_types=["after"])
    await publish(conn, tenant, "thing.happened")
    await row_becomes(conn, "SELECT status FROM script_executions WHERE script_id = $1",
                      script, expect="running")
    execution = await conn.fetchval("SELECT id FROM script_executions WHERE script_id = $1",
                                    script)
    restarts = executor.stats().restarts

    async with Store.session(db_url) as store:
        [done] = await store.executions.cancel([execution], "bob")
    assert (done.outcome, done.was, done.owner) == ("cancelled", "running", running_daemon.id)

    # the daemon lets go of it (its slot too) and the worker runs the next script's run
    await eventually(lambda: not running_daemon._in_flight, what="the run stopped")
    await publish(conn, tenant, "after")
    await row_becomes(conn, "SELECT status FROM script_executions WHERE script_id = $1",
                      quick, expect="completed")
    assert executor.stats().restarts == restarts
    row = await conn.fetchrow("SELECT status, error FROM script_executions WHERE id = $1",
                              execution)
    assert (row["status"], row["error"]) == ("cancelled", "cancelled by bob")
    assert await conn.fetchval("SELECT count(*) FROM script_event_dead_letters") == 0
    assert await conn.fetchval("SELECT count(*) FROM jsrt_runs") == 0
    assert await conn.fetchval("SELECT count(*) FROM jsrt_cancels") == 0


async def test_finished_and_unknown_executions_are_left_alone(
        conn: asyncpg.Connection, db_url: str, executor: Executor) -> None:
    tenant = await make_tenant(conn)
    await make_script(conn, tenant, QUICK)
    await publish(conn, tenant, "thing.happened")
    await drain(db_url, executor)
    [row] = await executions(conn, tenant)
    unknown = "00000000-0000-4000-8000-000000000001"

    out = run_cli(db_url, "executions", "cancel", str(row["id"]), unknown, "--json")
    assert out.returncode == 1
    got = json.loads(out.stdout)
    assert [(g["outcome"], g["status"]) for g in got] == [("finished", "completed"),
                                                          ("missing", None)]
    text = run_cli(db_url, "executions", "cancel", str(row["id"]))
    assert text.stdout.strip() == f"{row['id']} not cancelled: already completed"
    [after] = await executions(conn, tenant)
    assert after["status"] == "completed" and after["error"] is None


async def test_cancel_by_script_and_status(conn: asyncpg.Connection, db_url: str) -> None:
    tenant = await make_tenant(conn)
    script = await make_script(conn, tenant, QUICK)
    other = await make_script(conn, tenant, QUICK)
    mine = [await pending_run(conn, tenant, script) for _ in range(3)]
    theirs = await pending_run(conn, tenant, other)
    usage = run_cli(db_url, "executions", "cancel", str(mine[0]), "--script", str(script))
    assert usage.returncode == 2
    out = run_cli(db_url, "executions", "cancel", "--script", str(script), "--status",
                  "pending", "--json")
    assert out.returncode == 0, out.stderr
    assert sorted(g["execution_id"] for g in json.loads(out.stdout)) == sorted(map(str, mine))
    assert await conn.fetchval("SELECT status FROM script_executions WHERE id = $1",
                               theirs) == "pending"
    again = run_cli(db_url, "executions", "cancel", "--script", str(script), "--json")
    assert json.loads(again.stdout) == []


async def test_a_waiting_http_caller_gets_503_with_the_execution_id(
        conn: asyncpg.Connection, db_url: str) -> None:
    tenant = await make_tenant(conn)
    await make_script(conn, tenant, SLEEPY, type="http", http_path="/slow", limits=LONG,
                      metadata={"auth": "public"})
    settings = Settings.from_env(env={"DATABASE_URL": db_url})
    store = await Store.open(db_url)
    try:
        async with Executor(workers=1, publisher=store_publisher(store)) as ex, \
                Lease(store, 0.5, kind="http-test") as lease, \
                watching(store, lease.id, executor_stop(ex), 0.2):
            app = build_app(store, OnDemand(store, ex, lease.id), settings)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://jsrt") as client:
                answer: dict[str, Any] = {}

                async def call() -> None:
                    answer["r"] = await client.get(f"/t/{tenant}/slow")

                async with anyio.create_task_group() as tg:
                    tg.start_soon(call)
                    await row_becomes(conn, "SELECT count(*) FROM script_executions "
                                      "WHERE status = 'running'", expect=1)
                    execution = await conn.fetchval("SELECT id FROM script_executions")
                    out = run_cli(db_url, "executions", "cancel", str(execution), "--by", "ops")
                    assert out.returncode == 0, out.stderr
    finally:
        await store.close()
    response = answer["r"]
    assert response.status_code == 503
    assert response.json()["execution_id"] == str(execution)
    assert await conn.fetchval("SELECT error FROM script_executions") == "cancelled by ops"


async def test_runtime_cancel(conn: asyncpg.Connection, db_url: str) -> None:
    tenant = await make_tenant(conn)
    script = await make_script(conn, tenant, BUSY, type="oneoff", limits=LONG)
    async with Runtime(db_url, workers=1) as rt:
        got: dict[str, Any] = {}

        async def call() -> None:
            got["r"] = await rt.execute(script, tenant_id=tenant)

        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            await row_becomes(conn, "SELECT count(*) FROM script_executions "
                              "WHERE status = 'running'", expect=1)
            execution = await conn.fetchval("SELECT id FROM script_executions")
            done = await rt.cancel(execution, tenant_id=tenant)
            assert done.outcome == "cancelled"
        result = got["r"]
        assert (result.status, result.error) == ("cancelled", "cancelled by the embedded API")
        assert result.execution_id == execution
        assert (await rt.cancel(execution)).outcome == "finished"
        # the worker was kept and runs the next one
        quick = await make_script(conn, tenant, QUICK, type="oneoff")
        assert (await rt.execute(quick, tenant_id=tenant)).ok


async def test_a_run_waiting_in_a_daemons_local_queue_never_starts(
        conn: asyncpg.Connection, db_url: str, executor: Executor) -> None:
    tenant = await make_tenant(conn)
    # one slot: the runs after the first wait in the daemon's local queue (a serial group)
    script = await make_script(
        conn, tenant, """async function handler(i, ctx) {
            await ctx.events.publish('ran', {seq: i.seq});
            await new Promise(r => setTimeout(r, 300));
            return i.seq }""", limits={"max_concurrent_runs": 1})
    async with running_daemon(db_url, executor):
        for seq in range(3):
            await publish(conn, tenant, "thing.happened", {"seq": seq})
        await row_becomes(conn, "SELECT count(*) FROM script_executions "
                          "WHERE script_id = $1 AND status = 'running'", script, expect=1)
        last = await conn.fetchval("SELECT id FROM script_executions "
                                   "WHERE script_id = $1 AND input->>'seq' = '2'", script)
        async with Store.session(db_url) as store:
            [done] = await store.executions.cancel([last], "carol")
        assert (done.outcome, done.was) == ("cancelled", "pending")
        await row_becomes(conn, "SELECT count(*) FROM script_executions "
                          "WHERE script_id = $1 AND status = 'completed'", script, expect=2)
    ran = await conn.fetch("SELECT (payload->>'seq')::int AS seq FROM jsrt_events "
                           "WHERE event_type = 'ran' ORDER BY 1")
    assert [r["seq"] for r in ran] == [0, 1]
    row = await conn.fetchrow("SELECT status, error FROM script_executions WHERE id = $1", last)
    assert (row["status"], row["error"]) == ("cancelled", "cancelled by carol")
