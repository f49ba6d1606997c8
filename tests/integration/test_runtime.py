"""The embedded API as a host application uses it: real PostgreSQL, real V8 workers."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg
import pytest
from support.factories import executions, make_script, make_tenant

from consumer.errors import NotFound, ScriptBusy, ValidationError
from consumer.runtime import Runtime

DOUBLE = "async function handler(input, ctx) { return { doubled: input.n * 2, t: ctx.tenantId } }"


async def test_execute_a_stored_script(conn: asyncpg.Connection, db_url: str) -> None:
    tenant = await make_tenant(conn)
    script = await make_script(conn, tenant, DOUBLE, type="oneoff", status="draft")

    async with Runtime(db_url, workers=1) as rt:
        assert await conn.fetchval("SELECT count(*) FROM jsrt_daemons") == 1  # its lease
        result = await rt.execute(script, {"n": 21}, tenant_id=str(tenant))

    assert result.ok and result.status == "completed"
    assert result.output == {"doubled": 42, "t": str(tenant)}
    assert result.metrics["duration_ms"] >= 0
    [row] = await executions(conn, tenant)
    assert row["id"] == result.execution_id
    assert (row["status"], row["trigger_type"], row["input"]) == ("completed", "api", {"n": 21})
    assert row["output"] == result.output
    assert await conn.fetchval("SELECT count(*) FROM jsrt_runs") == 0
    assert await conn.fetchval("SELECT count(*) FROM jsrt_daemons") == 0  # lease released
    with pytest.raises(AttributeError):
        result.status = "failed"  # type: ignore[misc]  # frozen


async def test_a_host_cannot_reach_another_tenants_script(
    conn: asyncpg.Connection, db_url: str
) -> None:
    a, b = await make_tenant(conn, "a"), await make_tenant(conn, "b")
    script = await make_script(conn, a, DOUBLE, type="oneoff")
    archived = await make_script(conn, a, DOUBLE, type="oneoff", status="archived")
    async with Runtime(db_url, workers=1) as rt:
        with pytest.raises(NotFound):
            await rt.execute(script, {"n": 1}, tenant_id=b)
        with pytest.raises(NotFound):
            await rt.execute(archived, {"n": 1}, tenant_id=a)
    assert await executions(conn) == []


async def test_failures_are_recorded_with_logs(conn: asyncpg.Connection, db_url: str) -> None:
    tenant = await make_tenant(conn)
    script = await make_script(conn, tenant, "function handler() { console.log('step 1');"
                               " console.error('bad'); throw new TypeError('nope') }",
                               type="oneoff")
    async with Runtime(db_url, workers=1) as rt:
        result = await rt.execute(script, tenant_id=tenant)
    assert (result.ok, result.status, result.error) == (False, "failed", "TypeError: nope")
    assert [line["message"] for line in result.logs] == ["step 1", "bad"]
    [row] = await executions(conn, tenant)
    assert row["status"] == "failed" and row["error"].startswith("TypeError: nope")
    assert row["input"] == {}
    lines = await conn.fetchval(
        "SELECT lines FROM jsrt_execution_logs WHERE execution_id = $1 AND tenant_id = $2",
        result.execution_id, tenant)
    assert "step 1" in lines


async def test_execute_source_keeps_an_embedded_script(
    conn: asyncpg.Connection, db_url: str
) -> None:
    tenant = await make_tenant(conn)
    source = "export default async function (input) { return input.a + input.b }"
    async with Runtime(db_url, workers=1) as rt:
        first = await rt.execute_source(tenant, source, {"a": 1, "b": 2})
        again = await rt.execute_source(tenant, source, {"a": 5, "b": 5})
        other = await rt.execute_source(tenant, source, {"a": 0, "b": 0},
                                        limits={"max_execution_time_ms": 500})
    assert (first.output, again.output, other.output) == (3, 10, 0)
    rows = await conn.fetch("SELECT id, name, type, status, resource_limits FROM scripts "
                            "WHERE tenant_id = $1 ORDER BY name", tenant)
    assert len(rows) == 2  # one per (source, limits)
    assert {r["type"] for r in rows} == {"embedded"} and {r["status"] for r in rows} == {"active"}
    assert all(r["name"].startswith("embedded-") for r in rows)
    assert {e["trigger_type"] for e in await executions(conn, tenant)} == {"api"}


@pytest.mark.parametrize("source, limits, message", [
    ("function handler( {", None, "the source does not parse: SyntaxError"),
    ("function handler() {}", {"max_memory_bytes": 0}, "max_memory_bytes must be a positive"),
    ("function handler() {}", {"max_cpu": 1}, "unknown key 'max_cpu'"),
    ("function handler() {}", {"max_concurrent_runs": 10**9}, "must be at most 1000"),
])
async def test_execute_source_validates_first(
    conn: asyncpg.Connection, db_url: str, source: str, limits: Any, message: str
) -> None:
    tenant = await make_tenant(conn)
    async with Runtime(db_url, workers=1) as rt:
        with pytest.raises(ValidationError, match=message):
            await rt.execute_source(tenant, source, {}, limits=limits)
    assert await conn.fetchval("SELECT count(*) FROM scripts") == 0


async def hold_a_slot(conn: asyncpg.Connection, tenant: Any, script: Any) -> Any:
    """A run of the script held by another live process."""
    await conn.execute("INSERT INTO jsrt_daemons (id, hostname, pid) VALUES ('other', 'h', 1) "
                       "ON CONFLICT DO NOTHING")
    exec_id = await conn.fetchval(
        "INSERT INTO script_executions (script_id, tenant_id, status, trigger_type) "
        "VALUES ($1, $2, 'running', 'manual') RETURNING id", script, tenant)
    await conn.execute(
        "INSERT INTO jsrt_runs (execution_id, tenant_id, script_id, state, daemon_id) "
        "VALUES ($1, $2, $3, 'running', 'other')", exec_id, tenant, script)
    return exec_id


async def test_a_full_script_makes_execute_wait_not_fail(
    conn: asyncpg.Connection, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant = await make_tenant(conn)
    script = await make_script(conn, tenant, DOUBLE, type="oneoff",
                               limits={"max_concurrent_runs": 1})
    held = await hold_a_slot(conn, tenant, script)

    async with Runtime(db_url, workers=1, max_wait=0.2) as rt:
        with pytest.raises(ScriptBusy):
            await rt.execute(script, {"n": 1}, tenant_id=tenant)

    async with Runtime(db_url, workers=1) as rt:
        turned_away = asyncio.Event()
        runner = rt._runner
        start = runner.start

        async def watched(*args: Any, **kwargs: Any) -> Any:
            run = await start(*args, **kwargs)
            if run is None:
                turned_away.set()
            return run

        monkeypatch.setattr(runner, "start", watched)
        waiting = asyncio.create_task(rt.execute(script, {"n": 4}, tenant_id=tenant))
        await asyncio.wait_for(turned_away.wait(), 10)  # it found the script full...
        assert not waiting.done()
        await conn.execute("DELETE FROM jsrt_runs WHERE execution_id = $1", held)
        result = await asyncio.wait_for(waiting, 20)  # ...and ran once a slot freed up
    assert result.output["doubled"] == 8


# A script written to the IOTA SDK's JavaScript runtime specification, globals only: an
# embedded validation rule that verifies a signed payload and publishes its verdict.
IOTA_STYLE = r"""
async function validateOrder(order) {
    sdk.log.info('validating order', { orderId: order.id, user: context.userId });
    const enc = new TextEncoder();
    const key = await crypto.subtle.importKey(
        'raw', enc.encode('shared-secret'), { name: 'HMAC', hash: 'SHA-256' }, false, ['verify']);
    const signature = Uint8Array.from(atob(order.signature), (c) => c.charCodeAt(0));
    const valid = await crypto.subtle.verify('HMAC', key, signature, enc.encode(String(order.id)));
    const callback = new URL('/orders/' + order.id + '?status=' + (valid ? 'ok' : 'bad'), 'https://shop.example');
    const eventId = await events.publish('order.validation.completed', {
        orderId: order.id, valid, callback: callback.href, ref: crypto.randomUUID() });
    if (!valid) sdk.log.warn('bad signature', { orderId: order.id });
    return { valid, tenant: context.tenantId, user: context.userId, org: context.organizationId,
             execution: context.executionId, eventId: typeof eventId };
}
"""


async def test_an_iota_style_script_runs_unmodified(conn: asyncpg.Connection, db_url: str) -> None:
    import base64
    import hashlib
    import hmac

    tenant = await make_tenant(conn)
    script = await make_script(conn, tenant, IOTA_STYLE, type="embedded")
    good = base64.b64encode(hmac.new(b"shared-secret", b"7", hashlib.sha256).digest()).decode()
    async with Runtime(db_url, workers=1) as rt:
        ok = await rt.execute(script, {"id": 7, "signature": good}, tenant_id=tenant,
                              user_id=42, organization_id="org-1")
        bad = await rt.execute(script, {"id": 8, "signature": good}, tenant_id=tenant)
    assert ok.status == "completed", ok
    assert ok.output == {"valid": True, "tenant": str(tenant), "user": 42, "org": "org-1",
                         "execution": str(ok.execution_id), "eventId": "string"}
    assert (bad.output["valid"], bad.output["user"], bad.output["org"]) == (False, None, None)
    assert ok.metrics["api_call_count"] == 1  # the publish; crypto is no API call
    published = await conn.fetch(
        "SELECT tenant_id, payload FROM jsrt_events WHERE event_type = $1 ORDER BY published_at",
        "order.validation.completed")
    assert [row["tenant_id"] for row in published] == [tenant, tenant]
    payloads = [json.loads(row["payload"]) for row in published]
    assert payloads[0]["callback"] == "https://shop.example/orders/7?status=ok"
    assert payloads[0]["ref"] != payloads[1]["ref"]
    [row] = [r for r in await executions(conn, tenant) if r["id"] == ok.execution_id]
    assert row["trigger_data"] == {"type": "api", "user_id": 42, "organization_id": "org-1"}
    lines = json.loads(await conn.fetchval(
        "SELECT lines FROM jsrt_execution_logs WHERE execution_id = $1", bad.execution_id))
    assert [(x["level"], x["message"], x["metadata"]) for x in lines] == [
        ("info", "validating order", {"orderId": 8, "user": None}),
        ("warn", "bad signature", {"orderId": 8}),
    ]
