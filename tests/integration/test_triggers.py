"""triggers.sql on a real PostgreSQL: the lookup tables follow `scripts` through every kind of
change, source versions are kept, updated_at is maintained, and events are queued durably
with NOTIFY as a wake-up only. Each test gets a fresh database (NOTIFY needs real commits);
notifications are awaited with a timeout, never slept for."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

TIMEOUT = 5.0
PLANNED = datetime(2030, 1, 1, tzinfo=UTC)  # what a scheduler would have written


# ---------------------------------------------------------------- fixtures and helpers
@pytest.fixture
async def tenant(conn: asyncpg.Connection) -> uuid.UUID:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    return await conn.fetchval("INSERT INTO tenants DEFAULT VALUES RETURNING id")


@pytest.fixture
async def user(conn: asyncpg.Connection, tenant: uuid.UUID) -> int:
    return await conn.fetchval("INSERT INTO users (tenant_id) VALUES ($1) RETURNING id", tenant)


@dataclass
class Listener:
    """A second connection LISTENing; notifications land in a queue, awaited with a timeout."""

    conn: asyncpg.Connection
    queue: asyncio.Queue[tuple[str, str]] = field(default_factory=asyncio.Queue)

    def _on(self, _c: object, _pid: int, channel: str, payload: str) -> None:
        self.queue.put_nowait((channel, payload))

    async def listen(self, *channels: str) -> None:
        for ch in channels:
            await self.conn.add_listener(ch, self._on)

    async def next(self) -> tuple[str, str]:
        return await asyncio.wait_for(self.queue.get(), TIMEOUT)

    async def next_json(self) -> tuple[str, dict[str, Any]]:
        channel, payload = await self.next()
        return channel, json.loads(payload)


@pytest.fixture
async def listener(db_url: str) -> AsyncIterator[Listener]:
    c = await asyncpg.connect(db_url)
    yield Listener(c)
    await c.close()


async def new_script(
    conn: asyncpg.Connection, tenant: uuid.UUID, type_: str = "oneoff", **cols: Any
) -> uuid.UUID:
    row = {"tenant_id": tenant, "name": f"s-{uuid.uuid4().hex[:8]}", "source": "v1",
           "type": type_, **cols}
    names = ", ".join(row)
    params = ", ".join(f"${i}" for i in range(1, len(row) + 1))
    return await conn.fetchval(
        f"INSERT INTO scripts ({names}) VALUES ({params}) RETURNING id", *row.values()
    )


async def update(conn: asyncpg.Connection, script: uuid.UUID, **cols: Any) -> None:
    sets = ", ".join(f"{k} = ${i}" for i, k in enumerate(cols, 2))
    await conn.execute(f"UPDATE scripts SET {sets} WHERE id = $1", script, *cols.values())


async def subscriptions(conn: asyncpg.Connection, script: uuid.UUID) -> dict[str, bool]:
    rows = await conn.fetch(
        "SELECT event_type, is_active FROM script_event_subscriptions WHERE script_id = $1",
        script,
    )
    return {r["event_type"]: r["is_active"] for r in rows}


async def endpoint(conn: asyncpg.Connection, script: uuid.UUID) -> tuple[Any, ...] | None:
    r = await conn.fetchrow(
        "SELECT http_path, http_methods, is_active FROM script_http_endpoints WHERE script_id = $1",
        script,
    )
    return None if r is None else (r["http_path"], r["http_methods"], r["is_active"])


async def job(conn: asyncpg.Connection, script: uuid.UUID) -> tuple[Any, ...] | None:
    """(cron, timezone, plan) where plan is 'afresh' for '-infinity', else the timestamp."""
    r = await conn.fetchrow(
        "SELECT cron_expression, timezone, next_run_at = '-infinity' AS afresh, next_run_at "
        "FROM script_scheduled_jobs WHERE script_id = $1",
        script,
    )
    if r is None:
        return None
    return (r["cron_expression"], r["timezone"], "afresh" if r["afresh"] else r["next_run_at"])


async def plan(conn: asyncpg.Connection, script: uuid.UUID) -> None:
    """Do what the scheduler does once it has computed the next tick."""
    await conn.execute(
        "UPDATE script_scheduled_jobs SET next_run_at = $2 WHERE script_id = $1", script, PLANNED
    )


async def assert_in_step(conn: asyncpg.Connection) -> None:
    """The invariant behind every sync test: the lookup tables are a function of `scripts`."""
    scripts = await conn.fetch("SELECT * FROM scripts")
    want_subs, want_http, want_jobs = set(), set(), set()
    for s in scripts:
        active = s["status"] == "active"
        if s["type"] == "event":
            want_subs |= {(s["id"], s["tenant_id"], et, active) for et in s["event_types"]}
        if s["type"] == "http":
            methods = tuple(sorted({m.upper() for m in s["http_methods"] or []}))
            want_http.add((s["id"], s["tenant_id"], s["http_path"], methods, active))
        if s["type"] == "scheduled":
            tz = (s["metadata"] or {}).get("timezone") or "UTC"
            want_jobs.add((s["id"], s["tenant_id"], s["cron_expression"], tz))
    subs = await conn.fetch(
        "SELECT script_id, tenant_id, event_type, is_active FROM script_event_subscriptions"
    )
    http = await conn.fetch(
        "SELECT script_id, tenant_id, http_path, http_methods, is_active FROM script_http_endpoints"
    )
    jobs = await conn.fetch(
        "SELECT script_id, tenant_id, cron_expression, timezone FROM script_scheduled_jobs"
    )
    assert {tuple(r) for r in subs} == want_subs
    assert {(*r[:3], tuple(r[3]), r[4]) for r in http} == want_http
    assert {tuple(r) for r in jobs} == want_jobs


# ---------------------------------------------------------------- event subscriptions
@pytest.mark.parametrize("status", ["draft", "active", "paused", "disabled", "archived"])
async def test_event_script_insert_creates_subscriptions(
    conn: asyncpg.Connection, tenant: uuid.UUID, status: str
) -> None:
    s = await new_script(conn, tenant, "event", status=status,
                         event_types=["user.created", "order.paid", "user.created"])
    active = status == "active"
    assert await subscriptions(conn, s) == {"user.created": active, "order.paid": active}
    assert await endpoint(conn, s) is None and await job(conn, s) is None
    await assert_in_step(conn)


async def test_subscriptions_follow_status(conn: asyncpg.Connection, tenant: uuid.UUID) -> None:
    s = await new_script(conn, tenant, "event", status="active", event_types=["a", "b"])
    for status in ("paused", "active", "disabled", "active", "archived", "draft", "active"):
        await update(conn, s, status=status)
        assert await subscriptions(conn, s) == {"a": status == "active", "b": status == "active"}
    await assert_in_step(conn)


async def test_event_types_added_and_removed(conn: asyncpg.Connection, tenant: uuid.UUID) -> None:
    s = await new_script(conn, tenant, "event", status="active", event_types=["a", "b"])
    b_id = await conn.fetchval(
        "SELECT id FROM script_event_subscriptions WHERE script_id = $1 AND event_type = 'b'", s
    )
    await update(conn, s, event_types=["b", "c"])
    assert await subscriptions(conn, s) == {"b": True, "c": True}
    # a kept event type keeps its row
    assert b_id == await conn.fetchval(
        "SELECT id FROM script_event_subscriptions WHERE script_id = $1 AND event_type = 'b'", s
    )
    await update(conn, s, event_types=["c"], status="paused")
    assert await subscriptions(conn, s) == {"c": False}
    with pytest.raises(asyncpg.CheckViolationError):
        await update(conn, s, event_types=[])
    assert await subscriptions(conn, s) == {"c": False}
    await assert_in_step(conn)


async def test_subscriptions_of_two_scripts_are_independent(
    conn: asyncpg.Connection, tenant: uuid.UUID
) -> None:
    s1 = await new_script(conn, tenant, "event", status="active", event_types=["x"])
    s2 = await new_script(conn, tenant, "event", status="draft", event_types=["x"])
    await update(conn, s1, event_types=["y"])
    assert await subscriptions(conn, s1) == {"y": True}
    assert await subscriptions(conn, s2) == {"x": False}
    await assert_in_step(conn)


async def test_type_change_event_to_http_and_back(
    conn: asyncpg.Connection, tenant: uuid.UUID
) -> None:
    s = await new_script(conn, tenant, "event", status="active", event_types=["a"])
    await update(conn, s, type="http", http_path="/hook", http_methods=["post"])
    assert await subscriptions(conn, s) == {}
    assert await endpoint(conn, s) == ("/hook", ["POST"], True)
    await assert_in_step(conn)

    await update(conn, s, type="event")
    assert await endpoint(conn, s) is None
    assert await subscriptions(conn, s) == {"a": True}
    await assert_in_step(conn)

    await update(conn, s, type="scheduled", cron_expression="*/5 * * * *")
    assert await subscriptions(conn, s) == {} and await endpoint(conn, s) is None
    assert await job(conn, s) == ("*/5 * * * *", "UTC", "afresh")
    await update(conn, s, type="oneoff")
    assert await job(conn, s) is None
    await assert_in_step(conn)


# ---------------------------------------------------------------- http endpoints
async def test_http_endpoint_follows_path_methods_and_status(
    conn: asyncpg.Connection, tenant: uuid.UUID
) -> None:
    s = await new_script(conn, tenant, "http", http_path="/a", http_methods=["get", "Post", "GET"])
    assert await endpoint(conn, s) == ("/a", ["GET", "POST"], False)  # draft
    await update(conn, s, status="active")
    assert await endpoint(conn, s) == ("/a", ["GET", "POST"], True)
    await update(conn, s, http_path="/b")
    assert await endpoint(conn, s) == ("/b", ["GET", "POST"], True)
    await update(conn, s, http_methods=["delete", "put"])
    assert await endpoint(conn, s) == ("/b", ["DELETE", "PUT"], True)
    await update(conn, s, http_methods=None)
    assert await endpoint(conn, s) == ("/b", [], True)
    for status in ("paused", "disabled", "archived", "active"):
        await update(conn, s, status=status)
        assert (await endpoint(conn, s))[2] is (status == "active")  # type: ignore[index]
    await assert_in_step(conn)


async def test_http_paths_can_be_swapped_through_a_third(
    conn: asyncpg.Connection, tenant: uuid.UUID
) -> None:
    a = await new_script(conn, tenant, "http", http_path="/a", status="active")
    b = await new_script(conn, tenant, "http", http_path="/b", status="active")
    await update(conn, a, http_path="/tmp")
    await update(conn, b, http_path="/a")
    await update(conn, a, http_path="/b")
    assert (await endpoint(conn, a))[0] == "/b"  # type: ignore[index]
    assert (await endpoint(conn, b))[0] == "/a"  # type: ignore[index]
    await assert_in_step(conn)


async def test_the_same_path_in_two_tenants(conn: asyncpg.Connection, tenant: uuid.UUID) -> None:
    other = await conn.fetchval("INSERT INTO tenants DEFAULT VALUES RETURNING id")
    await new_script(conn, tenant, "http", http_path="/same")
    await new_script(conn, other, "http", http_path="/same")
    assert await conn.fetchval("SELECT count(*) FROM script_http_endpoints") == 2
    await assert_in_step(conn)


# ---------------------------------------------------------------- scheduled jobs
async def test_scheduled_job_created_with_timezone(
    conn: asyncpg.Connection, tenant: uuid.UUID
) -> None:
    utc = await new_script(conn, tenant, "scheduled", cron_expression="0 * * * *")
    riga = await new_script(conn, tenant, "scheduled", cron_expression="0 9 * * *",
                            metadata={"timezone": "Europe/Riga"})
    blank = await new_script(conn, tenant, "scheduled", cron_expression="0 9 * * *",
                             metadata={"timezone": ""})
    assert await job(conn, utc) == ("0 * * * *", "UTC", "afresh")
    assert await job(conn, riga) == ("0 9 * * *", "Europe/Riga", "afresh")
    assert await job(conn, blank) == ("0 9 * * *", "UTC", "afresh")
    await assert_in_step(conn)


async def test_scheduled_job_replans_only_when_the_schedule_changes(
    conn: asyncpg.Connection, tenant: uuid.UUID
) -> None:
    s = await new_script(conn, tenant, "scheduled", cron_expression="0 * * * *", status="active")
    await plan(conn, s)

    # unrelated changes keep the plan
    await update(conn, s, description="nightly", source="v2", tags=["x"])
    await update(conn, s, metadata={"owner": "ops"})
    assert await job(conn, s) == ("0 * * * *", "UTC", PLANNED)

    await update(conn, s, cron_expression="*/10 * * * *")
    assert await job(conn, s) == ("*/10 * * * *", "UTC", "afresh")
    await plan(conn, s)

    await update(conn, s, metadata={"owner": "ops", "timezone": "Asia/Tokyo"})
    assert await job(conn, s) == ("*/10 * * * *", "Asia/Tokyo", "afresh")
    await plan(conn, s)

    await update(conn, s, metadata={"owner": "ops"})  # timezone removed: back to UTC
    assert await job(conn, s) == ("*/10 * * * *", "UTC", "afresh")
    await assert_in_step(conn)


async def test_reactivation_replans(conn: asyncpg.Connection, tenant: uuid.UUID) -> None:
    s = await new_script(conn, tenant, "scheduled", cron_expression="0 * * * *")
    await plan(conn, s)
    await update(conn, s, status="active")  # first activation
    assert (await job(conn, s))[2] == "afresh"  # type: ignore[index]
    await plan(conn, s)
    await update(conn, s, status="active")  # no change of status: plan kept
    assert (await job(conn, s))[2] == PLANNED  # type: ignore[index]
    for status in ("paused", "disabled"):
        await update(conn, s, status=status)  # the job stays, its plan too
        assert (await job(conn, s))[2] == PLANNED  # type: ignore[index]
        await update(conn, s, status="active")
        assert (await job(conn, s))[2] == "afresh"  # type: ignore[index]
        await plan(conn, s)
    await assert_in_step(conn)


async def test_scheduler_state_survives_unrelated_updates(
    conn: asyncpg.Connection, tenant: uuid.UUID
) -> None:
    s = await new_script(conn, tenant, "scheduled", cron_expression="0 * * * *", status="active")
    await conn.execute(
        "UPDATE script_scheduled_jobs SET last_run_at = $2, last_run_status = 'completed', "
        "is_running = true WHERE script_id = $1",
        s, PLANNED,
    )
    await update(conn, s, cron_expression="5 * * * *")
    r = await conn.fetchrow("SELECT * FROM script_scheduled_jobs WHERE script_id = $1", s)
    assert (r["last_run_at"], r["last_run_status"], r["is_running"]) == (
        PLANNED, "completed", True,
    )


# ---------------------------------------------------------------- delete
async def test_delete_removes_lookup_rows(conn: asyncpg.Connection, tenant: uuid.UUID) -> None:
    ids = [
        await new_script(conn, tenant, "event", event_types=["a"]),
        await new_script(conn, tenant, "http", http_path="/d"),
        await new_script(conn, tenant, "scheduled", cron_expression="* * * * *"),
    ]
    keep = await new_script(conn, tenant, "event", event_types=["a"])
    await conn.execute("DELETE FROM scripts WHERE id = ANY($1::uuid[])", ids)
    for table in ("script_event_subscriptions", "script_http_endpoints", "script_scheduled_jobs"):
        assert await conn.fetchval(
            f"SELECT count(*) FROM {table} WHERE script_id = ANY($1::uuid[])", ids
        ) == 0
    assert await subscriptions(conn, keep) == {"a": False}
    await assert_in_step(conn)


# ---------------------------------------------------------------- versions
async def versions(conn: asyncpg.Connection, script: uuid.UUID) -> list[tuple[Any, ...]]:
    rows = await conn.fetch(
        "SELECT version_number, source, change_description, created_by, tenant_id "
        "FROM script_versions WHERE script_id = $1 ORDER BY version_number",
        script,
    )
    return [tuple(r) for r in rows]


async def test_versions_1_2_3(conn: asyncpg.Connection, tenant: uuid.UUID, user: int) -> None:
    s = await new_script(conn, tenant, created_by=user, metadata={"change_description": "first"})
    assert await versions(conn, s) == [(1, "v1", "first", user, tenant)]

    await update(conn, s, source="v2", metadata={"change_description": "second"})
    await update(conn, s, description="docs only", metadata={"change_description": "ignored"})
    await update(conn, s, source="v2")  # the same source again
    await conn.execute("UPDATE scripts SET source = source WHERE id = $1", s)
    await update(conn, s, source="v3", metadata={})
    assert await versions(conn, s) == [
        (1, "v1", "first", user, tenant),
        (2, "v2", "second", user, tenant),
        (3, "v3", None, user, tenant),
    ]


async def test_versions_are_per_script(conn: asyncpg.Connection, tenant: uuid.UUID) -> None:
    a = await new_script(conn, tenant)
    b = await new_script(conn, tenant)
    await update(conn, a, source="a2")
    assert [v[0] for v in await versions(conn, a)] == [1, 2]
    assert [v[:2] for v in await versions(conn, b)] == [(1, "v1")]
    assert (await versions(conn, b))[0][3] is None  # no creator given


async def test_versions_when_many_scripts_change_in_one_statement(
    conn: asyncpg.Connection, tenant: uuid.UUID
) -> None:
    ids = [await new_script(conn, tenant) for _ in range(3)]
    await conn.execute("UPDATE scripts SET source = source || '!' WHERE tenant_id = $1", tenant)
    for s in ids:
        assert [v[:2] for v in await versions(conn, s)] == [(1, "v1"), (2, "v1!")]


# ---------------------------------------------------------------- updated_at
async def test_updated_at_is_maintained_on_scripts(
    conn: asyncpg.Connection, tenant: uuid.UUID
) -> None:
    old = datetime(2000, 1, 1, tzinfo=UTC)
    s = await new_script(conn, tenant, created_at=old, updated_at=old)
    r = await conn.fetchrow(
        "UPDATE scripts SET description = 'd' WHERE id = $1 "
        "RETURNING created_at, updated_at, now()",
        s,
    )
    assert r["created_at"] == old
    assert r["updated_at"] == r["now"] > old
    # an explicit value cannot fake it
    r = await conn.fetchrow(
        "UPDATE scripts SET updated_at = $2 WHERE id = $1 RETURNING updated_at, now()", s, old
    )
    assert r["updated_at"] == r["now"]


async def test_updated_at_is_maintained_on_scheduled_jobs(
    conn: asyncpg.Connection, tenant: uuid.UUID
) -> None:
    old = datetime(2000, 1, 1, tzinfo=UTC)
    s = await new_script(conn, tenant, "scheduled", cron_expression="* * * * *")
    await conn.execute(
        "ALTER TABLE script_scheduled_jobs DISABLE TRIGGER jsrt_scheduled_jobs_updated_at"
    )
    await conn.execute(
        "UPDATE script_scheduled_jobs SET created_at = $2, updated_at = $2 WHERE script_id = $1",
        s, old,
    )
    await conn.execute(
        "ALTER TABLE script_scheduled_jobs ENABLE TRIGGER jsrt_scheduled_jobs_updated_at"
    )
    r = await conn.fetchrow(
        "UPDATE script_scheduled_jobs SET is_running = true WHERE script_id = $1 "
        "RETURNING created_at, updated_at, now()",
        s,
    )
    assert r["created_at"] == old and r["updated_at"] == r["now"] > old
    # and through the sync trigger, when the script's schedule changes
    await conn.execute(
        "UPDATE script_scheduled_jobs SET updated_at = $2 WHERE script_id = $1", s, old
    )
    now = await conn.fetchval(
        "WITH u AS (UPDATE scripts SET cron_expression = '1 * * * *' WHERE id = $1) SELECT now()", s
    )
    assert await conn.fetchval(
        "SELECT updated_at FROM script_scheduled_jobs WHERE script_id = $1", s
    ) == now


# ---------------------------------------------------------------- jsrt_publish
async def test_publish_committed_is_queued_and_notified(
    conn: asyncpg.Connection, tenant: uuid.UUID, listener: Listener
) -> None:
    await listener.listen("jsrt_events")
    event_id = await conn.fetchval(
        "SELECT jsrt_publish($1, 'user.created', $2)", tenant, {"user_id": 7}
    )
    row = await conn.fetchrow("SELECT * FROM jsrt_events WHERE id = $1", event_id)
    assert (row["tenant_id"], row["event_type"], row["payload"]) == (
        tenant, "user.created", {"user_id": 7},
    )
    assert (row["source"], row["depth"], row["dedup_key"], row["dispatched_at"]) == (
        "publish", 0, None, None,
    )
    channel, payload = await listener.next_json()
    assert channel == "jsrt_events"
    assert payload["queued"] is True and payload["tenant_id"] == str(tenant)


async def test_publish_default_payload(conn: asyncpg.Connection, tenant: uuid.UUID) -> None:
    event_id = await conn.fetchval("SELECT jsrt_publish($1, 'ping')", tenant)
    assert await conn.fetchval("SELECT payload FROM jsrt_events WHERE id = $1", event_id) == {}


async def test_publish_rolled_back_leaves_nothing(
    conn: asyncpg.Connection, tenant: uuid.UUID, listener: Listener
) -> None:
    await listener.listen("jsrt_events")
    tx = conn.transaction()
    await tx.start()
    event_id = await conn.fetchval("SELECT jsrt_publish($1, 'user.created')", tenant)
    assert await conn.fetchval("SELECT count(*) FROM jsrt_events WHERE id = $1", event_id) == 1
    await tx.rollback()

    assert await conn.fetchval("SELECT count(*) FROM jsrt_events") == 0
    # Notifications arrive in commit order: if the rolled-back one had been sent, it would
    # come before this sentinel.
    await conn.execute("SELECT pg_notify('jsrt_events', 'sentinel')")
    assert await listener.next() == ("jsrt_events", "sentinel")


async def test_publish_in_a_transaction_notifies_on_commit(
    conn: asyncpg.Connection, tenant: uuid.UUID, listener: Listener
) -> None:
    await listener.listen("jsrt_events")
    async with conn.transaction():
        await conn.fetchval("SELECT jsrt_publish($1, 'a')", tenant)
        await conn.fetchval("SELECT jsrt_publish($1, 'b')", tenant)
        # nothing is visible to anyone before the commit
        assert await listener.conn.fetchval("SELECT count(*) FROM jsrt_events") == 0
    assert await listener.conn.fetchval("SELECT count(*) FROM jsrt_events") == 2
    _, payload = await listener.next_json()
    assert payload["tenant_id"] == str(tenant)
    # identical payloads in one transaction collapse into one notification
    await conn.execute("SELECT pg_notify('jsrt_events', 'sentinel')")
    assert await listener.next() == ("jsrt_events", "sentinel")


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        (("unknown", "user.created"), asyncpg.ForeignKeyViolationError, "unknown tenant"),
        (("tenant", ""), asyncpg.CheckViolationError, "event_type must be a non-empty string"),
        (("tenant", "   "), asyncpg.CheckViolationError, "event_type must be a non-empty string"),
        (("tenant", None), asyncpg.CheckViolationError, "event_type must be a non-empty string"),
        ((None, "user.created"), asyncpg.NotNullViolationError, "tenant_id is required"),
    ],
)
async def test_publish_rejects_bad_arguments(
    conn: asyncpg.Connection, tenant: uuid.UUID, args: tuple[Any, Any], error: type,
    message: str,
) -> None:
    tenant_arg = {"tenant": tenant, "unknown": uuid.uuid4(), None: None}[args[0]]
    with pytest.raises(error, match=message):
        await conn.fetchval("SELECT jsrt_publish($1, $2)", tenant_arg, args[1])
    assert await conn.fetchval("SELECT count(*) FROM jsrt_events") == 0


async def test_enqueue_deduplicates_by_key(
    conn: asyncpg.Connection, tenant: uuid.UUID, listener: Listener
) -> None:
    await listener.listen("jsrt_events")
    other = await conn.fetchval("INSERT INTO tenants DEFAULT VALUES RETURNING id")
    sql = "SELECT jsrt_enqueue($1, 'order.paid', $2, 'key', 0, 'notify')"
    first = await conn.fetchval(sql, tenant, {"n": 1})
    second = await conn.fetchval(sql, tenant, {"n": 2})
    assert first == second
    rows = await conn.fetch("SELECT * FROM jsrt_events WHERE tenant_id = $1", tenant)
    assert len(rows) == 1
    assert (rows[0]["payload"], rows[0]["source"], rows[0]["dedup_key"]) == (
        {"n": 1}, "notify", "key",
    )
    # the key is scoped to the tenant
    assert await conn.fetchval(sql, other, {"n": 3}) != first
    # the duplicate did not wake anyone: one notification per tenant, then the sentinel
    await conn.execute("SELECT pg_notify('jsrt_events', 'sentinel')")
    seen = [await listener.next() for _ in range(3)]
    assert [json.loads(p)["tenant_id"] for _, p in seen[:2]] == [str(tenant), str(other)]
    assert seen[2] == ("jsrt_events", "sentinel")


# ---------------------------------------------------------------- jsrt_scripts notifications
async def test_script_changes_are_announced(
    conn: asyncpg.Connection, tenant: uuid.UUID, listener: Listener
) -> None:
    await listener.listen("jsrt_scripts")
    s = await new_script(conn, tenant, "event", event_types=["a"])
    await update(conn, s, status="active")
    await conn.execute("DELETE FROM scripts WHERE id = $1", s)
    for op in ("insert", "update", "delete"):
        channel, payload = await listener.next_json()
        assert channel == "jsrt_scripts"
        assert payload["op"] == op
        assert payload["tenant_id"] == str(tenant) and payload["script_id"] == str(s)
    assert payload["type"] == "event"


async def test_rolled_back_script_change_is_not_announced(
    conn: asyncpg.Connection, tenant: uuid.UUID, listener: Listener
) -> None:
    await listener.listen("jsrt_scripts")
    tx = conn.transaction()
    await tx.start()
    await new_script(conn, tenant)
    await tx.rollback()
    await conn.execute("SELECT pg_notify('jsrt_scripts', 'sentinel')")
    assert await listener.next() == ("jsrt_scripts", "sentinel")
