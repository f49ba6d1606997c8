"""The scripts of examples/, loaded as they ship and run end to end: real PostgreSQL, real V8,
the daemon in drain mode (a fake clock for cron and retries), and for the webhook a real HTTP
receiver on 127.0.0.1 (allowlisted for ctx.http.fetch, as an operator would)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg
import pytest
from cryptography.fernet import Fernet
from support.daemons import drain
from support.factories import executions, make_script, make_tenant, publish

from consumer.access import parse_signature, sign
from consumer.app import store_publisher
from consumer.clock import FakeClock
from consumer.sandbox import Executor
from consumer.settings import REPO_ROOT, Settings
from consumer.store import Store


def example(name: str) -> str:
    return (REPO_ROOT / "examples" / name).read_text()


SETTINGS = {"secrets_key": (Fernet.generate_key().decode(),)}


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    store = await Store.open(db_url, settings=Settings(database_url=db_url, **SETTINGS))
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def executor(store: Store) -> AsyncIterator[Executor]:
    async with Executor(workers=1, publisher=store_publisher(store),
                        fetch_allowlist=["127.0.0.1"], secrets=store.secrets.get) as ex:
        yield ex


async def events_of(conn: asyncpg.Connection, tenant: UUID, event_type: str) -> list[Any]:
    rows = await conn.fetch(
        """SELECT payload, depth, source FROM jsrt_events
           WHERE tenant_id = $1 AND event_type = $2 ORDER BY published_at, id""",
        tenant, event_type)
    return [(json.loads(r["payload"]), r["depth"], r["source"]) for r in rows]


# ------------------------------------------------------------------ webhook forwarder
@dataclass
class Receiver:
    """A webhook endpoint: records each request, answers with `status` (changeable)."""

    base: str = ""
    status: int = 202
    requests: list[dict[str, Any]] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        request_line, *lines = head.decode().split("\r\n")
        method, path, _ = request_line.split(" ")
        headers = {k.lower(): v for k, v in (ln.split(": ", 1) for ln in lines if ": " in ln)}
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        self.requests.append({"method": method, "path": path, "headers": headers,
                              "body": json.loads(body) if body else None, "raw": body})
        reply = b'{"ok": true}' if self.status < 300 else b'{"error": "try later"}'
        writer.write(f"HTTP/1.1 {self.status} X\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(reply)}\r\nConnection: close\r\n\r\n".encode() + reply)
        try:
            await writer.drain()
        finally:
            writer.close()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    server = await asyncio.start_server(r.handle, "127.0.0.1", 0)
    r.base = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    async with server:
        yield r


SIGNING_KEY = "whsec-example-signing-key"


async def forwarder(conn: asyncpg.Connection, store: Store, url: str) -> UUID:
    """A tenant with the forwarder and its two secrets."""
    tenant = await make_tenant(conn)
    await store.secrets.set(tenant, "WEBHOOK_URL", url)
    await store.secrets.set(tenant, "WEBHOOK_SIGNING_KEY", SIGNING_KEY)
    await make_script(conn, tenant, example("webhook_forwarder.js"), event_types=["order.paid"])
    return tenant


async def test_webhook_forwarder_posts_the_event_with_its_id_as_idempotency_key(
        db_url: str, conn: asyncpg.Connection, store: Store, executor: Executor,
        receiver: Receiver) -> None:
    tenant = await forwarder(conn, store, f"{receiver.base}/hooks/orders")
    event_id = await publish(conn, tenant, "order.paid", {"order_id": 7})
    await drain(db_url, executor)

    [req] = receiver.requests
    assert (req["method"], req["path"]) == ("POST", "/hooks/orders")
    assert req["headers"]["idempotency-key"] == str(event_id)
    assert req["headers"]["content-type"] == "application/json"
    body = req["body"]
    assert (body["id"], body["type"], body["attempt"]) == (str(event_id), "order.paid", 1)
    assert body["data"] == {"order_id": 7}
    parsed = parse_signature(req["headers"]["x-jsrt-signature"])
    assert parsed is not None
    t, [v1] = parsed
    assert v1 == sign(SIGNING_KEY, t, req["raw"])  # what a jsrt hmac endpoint checks
    [run] = await executions(conn, tenant)
    assert run["status"] == "completed", run["error"]
    assert run["output"] == {"status": 202}
    assert receiver.base not in json.dumps(run, default=str)  # the URL secret is masked too


async def test_webhook_forwarder_failure_is_retried_with_the_same_key(
        db_url: str, conn: asyncpg.Connection, store: Store, executor: Executor,
        receiver: Receiver) -> None:
    tenant = await forwarder(conn, store, f"{receiver.base}/h")
    await publish(conn, tenant, "order.paid", {"n": 1})
    clock = FakeClock(datetime.now(UTC))
    receiver.status = 503
    await drain(db_url, executor, clock)
    [failed] = await executions(conn, tenant)
    assert failed["status"] == "failed"
    assert "answered 503" in failed["error"]

    receiver.status = 200
    clock.advance(3600)  # past the retry's backoff
    await drain(db_url, executor, clock)
    _, retry = await executions(conn, tenant)
    assert retry["status"] == "completed", retry["error"]
    assert retry["trigger_data"]["attempt"] == 2
    keys = [r["headers"]["idempotency-key"] for r in receiver.requests]
    assert len(keys) == 2 and keys[0] == keys[1]
    assert [r["body"]["attempt"] for r in receiver.requests] == [1, 2]
    resolution = await conn.fetchval(
        "SELECT resolution FROM jsrt_dead_letter_state WHERE tenant_id = $1", tenant)
    assert resolution == "succeeded"


# ------------------------------------------------------------------ nightly report
def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


async def nightly(conn: asyncpg.Connection) -> tuple[UUID, UUID]:
    tenant = await make_tenant(conn)
    script = await make_script(conn, tenant, example("nightly_report.js"), type="scheduled",
                               cron="0 2 * * *")
    return tenant, script


async def test_nightly_report_requests_the_report_of_the_day_that_ended(
        db_url: str, conn: asyncpg.Connection, executor: Executor) -> None:
    tenant, _ = await nightly(conn)
    clock = FakeClock(utc(2026, 12, 1, 1, 59, 30))
    await drain(db_url, executor, clock)  # plans the 02:00 tick
    assert await executions(conn, tenant) == []
    clock.set(utc(2026, 12, 1, 2, 0, 5))
    await drain(db_url, executor, clock)

    [run] = await executions(conn, tenant)
    assert (run["status"], run["trigger_type"]) == ("completed", "cron"), run["error"]
    out = run["output"]
    assert (out["report"], out["requested"], out["caught_up"]) == ("daily-activity", 1, 0)
    [(payload, depth, source)] = await events_of(conn, tenant, "report.requested")
    assert payload["period_start"] == "2026-11-30T00:00:00.000Z"
    assert payload["period_end"] == "2026-12-01T00:00:00.000Z"
    assert (depth, source) == (1, "script")


async def test_nightly_report_catches_up_the_nights_the_daemon_missed(
        db_url: str, conn: asyncpg.Connection, executor: Executor) -> None:
    tenant, _ = await nightly(conn)
    clock = FakeClock(utc(2026, 12, 1, 1, 0))
    await drain(db_url, executor, clock)
    clock.set(utc(2026, 12, 4, 2, 0, 5))  # down for three nights, back just after the fourth
    await drain(db_url, executor, clock)

    [run] = await executions(conn, tenant)
    assert run["status"] == "completed", run["error"]
    assert run["trigger_data"]["missed_ticks"] == 3
    requested = await events_of(conn, tenant, "report.requested")
    assert [p["period_start"][:10] for p, _, _ in requested] == [
        "2026-11-30", "2026-12-01", "2026-12-02", "2026-12-03"]
    assert run["output"]["caught_up"] == 3


# ------------------------------------------------------------------ order enricher
SHIPPING_LABEL = """async function handler(order, ctx) {
  return {label_for: order.order_id, total: order.total, depth: ctx.trigger.depth};
}"""


async def test_order_enricher_publishes_a_follow_up_that_the_next_script_receives(
        db_url: str, conn: asyncpg.Connection, executor: Executor) -> None:
    tenant = await make_tenant(conn)
    enricher = await make_script(conn, tenant, example("order_enricher.js"),
                                 event_types=["order.created"])
    labels = await make_script(conn, tenant, SHIPPING_LABEL, event_types=["order.enriched"])
    order = {"order_id": "A-1", "country": "FR", "customer": {"id": "c9", "lifetime_value": 900},
             "items": [{"sku": "mug", "qty": 2, "unit_price": 12.5},
                       {"sku": "tea", "qty": 1, "unit_price": 8}]}
    await publish(conn, tenant, "order.created", order)
    await publish(conn, tenant, "order.created", {"order_id": "B-2", "country": "XX", "items": []})
    await drain(db_url, executor)

    runs = await executions(conn, tenant)
    assert all(r["status"] == "completed" for r in runs), [r["error"] for r in runs]
    assert sorted(r["script_id"] == enricher for r in runs) == [False, True, True]
    [(enriched, depth, source)] = await events_of(conn, tenant, "order.enriched")
    assert (depth, source) == (1, "script")
    assert {k: enriched[k] for k in ("subtotal", "tax", "shipping", "total", "item_count",
                                     "segment")} == {
        "subtotal": 33, "tax": 6.6, "shipping": 7.5, "total": 47.1, "item_count": 3,
        "segment": "regular"}
    assert enriched["items"] == order["items"]
    [label] = [r for r in runs if r["script_id"] == labels]
    assert label["output"] == {"label_for": "A-1", "total": 47.1, "depth": 1}
    [(rejected, _, _)] = await events_of(conn, tenant, "order.rejected")
    assert rejected == {"order_id": "B-2",
                        "problems": ["no items", "no tax rate for country XX"]}


# ------------------------------------------------------------------ tenant orders (ctx.db)
async def test_tenant_orders_reads_only_its_tenants_rows_and_caches_them(
    conn: asyncpg.Connection, db_url: str
) -> None:
    from consumer.runtime import Runtime

    await conn.execute("""CREATE TABLE orders (id SERIAL PRIMARY KEY, tenant_id UUID NOT NULL,
                          status TEXT, total NUMERIC(10, 2),
                          created_at TIMESTAMPTZ NOT NULL DEFAULT now())""")
    mine, other = await make_tenant(conn, "mine"), await make_tenant(conn, "other")
    await conn.execute(
        "INSERT INTO orders (tenant_id, status, total, created_at) VALUES"
        " ($1, 'paid', 10.50, '2026-01-01'), ($1, 'paid', 4.25, '2026-01-02'),"
        " ($1, 'open', 1, '2026-01-03'), ($2, 'paid', 1000, '2026-01-04')", mine, other)
    async with Store.session(db_url) as store:
        await store.tenant_data.expose("orders", False, None)
    script = await make_script(conn, mine, example("tenant_orders.js"), type="oneoff")
    async with Runtime(db_url, workers=1) as rt:
        first = await rt.execute(script, {"query": {"status": "paid"}}, tenant_id=mine)
        again = await rt.execute(script, {"query": {"status": "paid"}}, tenant_id=mine)
    assert first.status == "completed", first.error
    assert first.output["byStatus"] == [{"status": "paid", "orders": 2, "total": 14.75}]
    assert [o["total"] for o in first.output["latest"]] == [4.25, 10.5]
    assert first.output["latest"][0]["created_at"].startswith("2026-01-02T00:00:00")
    assert (first.output["cached"], again.output["cached"]) == (False, True)
    assert first.metrics["database_query_count"] == 2
    assert again.metrics["database_query_count"] == 0
    recorded = await conn.fetchval("SELECT metrics FROM script_executions WHERE id = $1",
                                   UUID(str(first.execution_id)))
    assert json.loads(recorded)["database_query_count"] == 2
