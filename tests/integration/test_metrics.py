"""/metrics, /healthz and /readyz of a running daemon: real PostgreSQL, real V8, a real
uvicorn server on a loopback port. Nothing sleeps: tests poll the endpoints with a deadline."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import anyio
import asyncpg
import httpx
import pytest
from support.daemons import settings_for
from support.factories import make_script, make_tenant, publish
from support.metrics import Samples, parse, value
from support.private_pg import private_server
from support.waiting import eventually

from consumer.app import store_publisher
from consumer.daemon import Daemon
from consumer.metrics import Metrics, start_metrics
from consumer.migrate import Migrator
from consumer.sandbox import Executor
from consumer.settings import REPO_ROOT
from consumer.store import Store

FAMILIES = (
    "jsrt_events_received", "jsrt_events_rejected", "jsrt_executions",
    "jsrt_execution_duration_seconds", "jsrt_queue_pending_events",
    "jsrt_queue_oldest_pending_event_age_seconds", "jsrt_queue_runs", "jsrt_dead_letters",
    "jsrt_sandbox_worker_restarts", "jsrt_sandbox_workers", "jsrt_sandbox_worker_rss_bytes",
    "jsrt_listener_reconnects", "jsrt_side_claims", "jsrt_executions_lost",
    "process_resident_memory_bytes",
)
FORWARD = """async function handler(input, ctx) {
  await ctx.events.publish('thing.followed', {n: input.n});
  return {n: input.n};
}"""
BOOM = "function handler() { throw new Error('boom'); }"

@dataclass
class Served:
    client: httpx.AsyncClient
    daemon: Daemon


@asynccontextmanager
async def serving(db_url: str, **overrides: Any) -> AsyncIterator[Served]:
    """A daemon (not in drain mode) with its metrics server, as `jsrt run` wires them."""
    settings = settings_for(db_url, metrics_addr="127.0.0.1:0", metrics_interval=0.1,
                            **overrides)
    store = await Store.open(db_url)
    try:
        async with Executor(workers=1, publisher=store_publisher(store)) as ex:
            daemon = Daemon(settings, store, ex)
            async with anyio.create_task_group() as tg:
                server = await start_metrics(tg, settings, store, ex, daemon.status)
                assert server is not None
                tg.start_soon(daemon.run)
                await listening(daemon)
                base = f"http://127.0.0.1:{server.port}"
                async with httpx.AsyncClient(base_url=base, timeout=10) as client:
                    yield Served(client, daemon)
                daemon.stop()
                await server.shutdown()
    finally:
        await store.close()


async def listening(daemon: Daemon) -> None:
    """Until the daemon's LISTEN connection is up (a NOTIFY sent before it is not heard)."""
    listener = await eventually(lambda: daemon.listener, what="the daemon's listener")
    with anyio.fail_after(30):
        await listener.connected.wait()


async def scrape(client: httpx.AsyncClient) -> tuple[set[str], Samples]:
    resp = await client.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    return parse(resp.text)


async def scrape_until(client: httpx.AsyncClient, ok: Callable[[Samples], bool],
                       timeout: float = 30) -> Samples:
    samples: Samples = {}

    async def check() -> bool:
        nonlocal samples
        _, samples = await scrape(client)
        return ok(samples)

    await eventually(check, timeout=timeout, what="metrics")
    return samples


async def test_each_family_is_exposed_after_a_few_events(db_url: str,
                                                         conn: asyncpg.Connection) -> None:
    tenant = await make_tenant(conn)
    await make_script(conn, tenant, FORWARD, event_types=["thing.happened"])
    await make_script(conn, tenant, BOOM, event_types=["thing.broke"])
    async with serving(db_url) as s:
        for n in range(3):
            await publish(conn, tenant, "thing.happened", {"n": n})
        await publish(conn, tenant, "thing.broke", {})
        await conn.execute("SELECT pg_notify('jsrt_events', 'not json')")

        samples = await scrape_until(s.client, lambda m: (
            value(m, "jsrt_executions_total", trigger="event", status="completed") >= 3
            and value(m, "jsrt_executions_total", trigger="event", status="failed") >= 1
            and value(m, "jsrt_events_received_total", source="script") >= 3
            and value(m, "jsrt_events_rejected_total", source="notify") >= 1
            and value(m, "jsrt_dead_letters", state="retriable") >= 1))
        families, _ = await scrape(s.client)

    assert set(FAMILIES) <= families
    assert value(samples, "jsrt_events_received_total", source="publish") == 4
    assert value(samples, "jsrt_events_received_total", source="script") == 3
    assert value(samples, "jsrt_events_rejected_total", source="notify") == 1
    assert value(samples, "jsrt_execution_duration_seconds_count", trigger="event") == 4
    assert value(samples, "jsrt_executions_total", trigger="cron", status="completed") == 0
    assert value(samples, "jsrt_sandbox_workers") == 1
    assert value(samples, "jsrt_sandbox_worker_restarts_total") == 0
    assert value(samples, "jsrt_listener_reconnects_total") == 0


async def test_healthz_and_readyz_answer_while_all_is_well(db_url: str) -> None:
    async with serving(db_url) as s:
        health = await s.client.get("/healthz")
        ready = await s.client.get("/readyz")
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    assert ready.status_code == 200
    assert ready.json() == {"ready": True, "database": "ok", "workers": 1}


async def test_queue_and_dead_letter_gauges_count_every_state(
        db_url: str, conn: asyncpg.Connection) -> None:
    tenant = await make_tenant(conn)
    script = await make_script(conn, tenant)
    for n in range(3):
        await publish(conn, tenant, "thing.happened", {"n": n})
    await conn.execute("UPDATE jsrt_events SET published_at = NOW() - INTERVAL '1 minute'"
                       " WHERE tenant_id = $1", tenant)
    for retries, max_retries, resolution in [(0, 3, None), (3, 3, None), (1, 3, "succeeded")]:
        await dead_letter(conn, tenant, script, retries, max_retries, resolution)
    store = await Store.open(db_url)
    try:
        metrics = Metrics(store, Executor(workers=1))  # never started: no workers
        assert await store.queue.dispatch_events(1, 1) == (1, 1)  # one event → one pending run
        assert await metrics.refresh()
    finally:
        await store.close()

    def sample(name: str, **labels: str) -> float | None:
        return metrics.registry.get_sample_value(name, labels)

    assert sample("jsrt_queue_pending_events") == 2
    assert 59 < (sample("jsrt_queue_oldest_pending_event_age_seconds") or 0) < 600
    assert sample("jsrt_queue_runs", state="pending") == 1
    assert sample("jsrt_queue_runs", state="running") == 0
    assert [sample("jsrt_dead_letters", state=s) for s in ("retriable", "exhausted", "resolved")] \
        == [1, 1, 1]
    assert sample("jsrt_events_received_total", source="publish") == 1
    assert sample("jsrt_sandbox_workers") == 0


async def dead_letter(conn: asyncpg.Connection, tenant: UUID, script: UUID, retries: int,
                      max_retries: int, resolution: str | None) -> None:
    letter = await conn.fetchval(
        """INSERT INTO script_event_dead_letters
               (script_id, tenant_id, event_type, event_data, error, retry_count)
           VALUES ($1, $2, 'thing.happened', $3::jsonb, 'Error: boom', $4) RETURNING id""",
        script, tenant, json.dumps({}), retries)
    await conn.execute(
        """INSERT INTO jsrt_dead_letter_state
               (dead_letter_id, tenant_id, max_retries, resolved_at, resolution)
           VALUES ($1, $2, $3, CASE WHEN $4::text IS NULL THEN NULL ELSE NOW() END, $4)""",
        letter, tenant, max_retries, resolution)


# ------------------------------------------------------------------ the database goes away
@pytest.fixture
def private_db() -> Any:
    with private_server() as server:
        yield server


async def readiness(client: httpx.AsyncClient, want: int, timeout: float = 30) -> Any:
    async def check() -> Any:
        resp = await client.get("/readyz")
        return resp.json() if resp.status_code == want else None

    return await eventually(check, timeout=timeout, what=f"/readyz {want}")


async def test_readyz_fails_while_the_database_is_down_and_recovers(private_db: Any) -> None:
    conn = await asyncpg.connect(private_db.uri)
    try:
        await Migrator(conn, REPO_ROOT / "schema", REPO_ROOT / "triggers.sql").up()
    finally:
        await conn.close()
    async with serving(private_db.uri) as s:
        assert (await readiness(s.client, 200))["database"] == "ok"
        await anyio.to_thread.run_sync(private_db.stop)
        down = await readiness(s.client, 503)
        assert down["ready"] is False and down["database"] != "ok"
        assert down["workers"] == 1
        assert (await s.client.get("/healthz")).status_code == 200  # alive all the same
        await anyio.to_thread.run_sync(private_db.start)
        assert (await readiness(s.client, 200))["database"] == "ok"
