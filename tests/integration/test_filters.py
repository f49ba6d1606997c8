"""Payload filters (#19): scripts.metadata.event_filters, parsed by PostgreSQL when the script
is saved and evaluated in the fan-out: an event that does not match creates no execution."""

from __future__ import annotations

import json
from pathlib import Path

import asyncpg
import pytest
from structlog.testing import capture_logs
from support.cli import run_cli
from support.daemons import drain
from support.factories import executions, make_script, make_tenant, publish

from consumer.errors import ValidationError
from consumer.sandbox import Executor
from consumer.store import Store
from consumer.validation import ScriptSpec

BIG_EUR = '$.total > 100 && $.currency == "EUR"'


async def test_only_matching_events_run(conn: asyncpg.Connection, db_url: str,
                                        executor: Executor) -> None:
    tenant = await make_tenant(conn)
    script = await make_script(conn, tenant, event_types=["order.created", "order.paid"],
                               metadata={"event_filters": {"order.created": BIG_EUR}})
    match = await publish(conn, tenant, "order.created", {"total": 150, "currency": "EUR"})
    await publish(conn, tenant, "order.created", {"total": 150, "currency": "USD"})
    await publish(conn, tenant, "order.created", {"total": 50, "currency": "EUR"})
    # the filter is for order.created only: every order.paid runs
    paid = await publish(conn, tenant, "order.paid", {"total": 1})

    await drain(db_url, executor)

    rows = await executions(conn, tenant)
    assert sorted(r["trigger_data"]["event_id"] for r in rows) == sorted([str(match), str(paid)])
    assert all(r["script_id"] == script and r["status"] == "completed" for r in rows)
    # every event was consumed, the filtered ones included, and none was delivered twice
    assert await conn.fetchval(
        "SELECT count(*) FROM jsrt_events WHERE dispatched_at IS NULL") == 0
    assert await conn.fetchval("SELECT count(*) FROM jsrt_deliveries") == 2


async def test_a_filter_of_one_script_leaves_the_others_alone(
        conn: asyncpg.Connection, db_url: str, executor: Executor) -> None:
    tenant = await make_tenant(conn)
    filtered = await make_script(conn, tenant, event_types=["order.created"],
                                 metadata={"event_filters": {"order.created": "$.total > 100"}})
    plain = await make_script(conn, tenant, event_types=["order.created"])
    await publish(conn, tenant, "order.created", {"total": 5})
    await drain(db_url, executor)
    rows = await executions(conn, tenant)
    assert [r["script_id"] for r in rows] == [plain]
    assert filtered != plain


async def test_a_filter_that_cannot_be_evaluated_skips_the_event_with_one_line(
        conn: asyncpg.Connection, db_url: str, executor: Executor) -> None:
    tenant = await make_tenant(conn)
    script = await make_script(conn, tenant, event_types=["order.created"],
                               metadata={"event_filters": {"order.created": "$.total > 100"}})
    strict = await make_script(
        conn, tenant, event_types=["order.created"],
        metadata={"event_filters": {"order.created": "strict $.total.amount > 1"}})
    wrong = await publish(conn, tenant, "order.created", {"total": "lots"})
    with capture_logs() as logs:
        await drain(db_url, executor)
    assert await executions(conn, tenant) == []
    assert await conn.fetchval("SELECT count(*) FROM script_event_dead_letters") == 0
    skipped = [e for e in logs if e["event"] == "event_filter_skipped"]
    assert sorted(e["script_id"] for e in skipped) == sorted([str(script), str(strict)])
    assert {e["event_id"] for e in skipped} == {str(wrong)}
    assert all(e["log_level"] == "warning" for e in skipped)


async def test_invalid_filters_are_refused_with_postgresqls_message(
        conn: asyncpg.Connection, db_url: str) -> None:
    tenant = await make_tenant(conn)
    async with Store.session(db_url) as store:
        spec = ScriptSpec(name="f", type="event", source="function handler() {}",
                          event_types=("a", "b"),
                          event_filters=(("a", "$.total >"), ("b", "$.total")))
        with pytest.raises(ValidationError) as exc:
            await store.scripts.create(tenant, spec)
        lines = str(exc.value).splitlines()
        assert lines[0] == "--filter a: syntax error at end of jsonpath input"
        assert lines[1].startswith("--filter b: '$.total' is not a predicate")
        # one of a type the script does not subscribe to: refused before the database
        with pytest.raises(ValidationError, match="does not subscribe to 'c'"):
            await store.scripts.create(tenant, ScriptSpec(
                name="g", type="event", source="function handler() {}", event_types=("a",),
                event_filters=(("c", "$.x == 1"),)))
    assert await conn.fetchval("SELECT count(*) FROM scripts") == 0
    # written by SQL, the database itself refuses it
    with pytest.raises(asyncpg.PostgresError, match="jsonpath"):
        await make_script(conn, tenant, metadata={"event_filters": {"thing.happened": "$.a >"}})


async def test_cli_sets_shows_and_removes_filters(conn: asyncpg.Connection, db_url: str,
                                                  tmp_path: Path) -> None:
    tenant = await make_tenant(conn)
    handler = tmp_path / "h.js"
    handler.write_text("function handler(i) { return i }")
    made = run_cli(db_url, "scripts", "create", "--tenant", str(tenant), "--name", "big",
                   "--type", "event", "--event-types", "order.created,order.paid",
                   "--file", str(handler), "--filter", f"order.created={BIG_EUR}", "--json")
    assert made.returncode == 0, made.stderr
    script = json.loads(made.stdout)["id"]
    shown = run_cli(db_url, "scripts", "show", script, "--json")
    assert json.loads(shown.stdout)["metadata"]["event_filters"] == {"order.created": BIG_EUR}
    text = run_cli(db_url, "scripts", "show", script).stdout
    assert f"runs on order.created only when the payload satisfies {BIG_EUR}" in text
    assert await conn.fetchval("SELECT filter::text FROM jsrt_event_filters") == \
        '($."total" > 100 && $."currency" == "EUR")'

    bad = run_cli(db_url, "scripts", "update", script, "--filter", "order.paid=$.x ==")
    assert bad.returncode == 2
    assert "jsrt: error: --filter order.paid: syntax error" in bad.stderr

    removed = run_cli(db_url, "scripts", "update", script, "--filter", "order.created=")
    assert removed.returncode == 0, removed.stderr
    assert await conn.fetchval("SELECT count(*) FROM jsrt_event_filters") == 0
    meta = await conn.fetchval("SELECT metadata FROM scripts WHERE id = $1::uuid", script)
    assert "event_filters" not in (json.loads(meta) if isinstance(meta, str) else meta)
