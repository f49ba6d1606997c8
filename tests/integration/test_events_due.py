"""Due events apart from the history (#17, schema/20261205000000_events_due.sql), against a
real PostgreSQL and real V8: every way an event is inserted makes it due, the claim that fans
it out takes it off, and the claim never walks the history's index - however many events were
dispatched since jsrt_events was last vacuumed."""

from __future__ import annotations

import json
import uuid

import asyncpg
from support.daemons import drain
from support.factories import make_script, make_tenant, publish

from consumer.sandbox import Executor
from consumer.store import Store

DUE = "SELECT event_id FROM jsrt_events_due ORDER BY published_at"
UNDISPATCHED = "SELECT id FROM jsrt_events WHERE dispatched_at IS NULL ORDER BY published_at"


async def fan_out(store: Store, limit: int = 100) -> int:
    """One claim of the current release that fans events out and starts nothing."""
    leased = await store.queue.claim_leased("test-claim", limit, limit, 0, 0, 1, {})
    return leased.events


async def history_scans(conn: asyncpg.Connection) -> int:
    """Scans of jsrt_events that are not by primary key - sequential, or through the pending
    index - so far, as PostgreSQL's statistics count them."""
    return int(await conn.fetchval(
        "SELECT t.seq_scan + i.idx_scan FROM pg_stat_user_tables t, pg_stat_user_indexes i"
        " WHERE t.relname = 'jsrt_events' AND i.indexrelname = 'idx_jsrt_events_pending'"))


async def test_every_way_of_inserting_an_event_makes_it_due(
        conn: asyncpg.Connection) -> None:
    tenant = await make_tenant(conn)
    await publish(conn, tenant, "a.happened", {"n": 1})
    await conn.execute("SELECT jsrt_enqueue($1, 'b.happened', '{}', 'key-1')", tenant)
    # the same key again: a duplicate, not a second event
    await conn.execute("SELECT jsrt_enqueue($1, 'b.happened', '{}', 'key-1')", tenant)
    await conn.execute(  # several rows in one statement, as a service might insert them
        "INSERT INTO jsrt_events (tenant_id, event_type, payload)"
        " SELECT $1, 'c.happened', jsonb_build_object('n', g) FROM generate_series(1, 3) g", tenant)
    await conn.execute(  # inserted as already dispatched (history): not due
        "INSERT INTO jsrt_events (tenant_id, event_type, dispatched_at) VALUES ($1, 'd', NOW())",
        tenant)
    due = [r["event_id"] for r in await conn.fetch(DUE)]
    assert len(due) == 5
    assert due == [r["id"] for r in await conn.fetch(UNDISPATCHED)]
    assert await conn.fetchval(
        "SELECT bool_and(q.tenant_id = e.tenant_id AND q.published_at = e.published_at)"
        " FROM jsrt_events_due q JOIN jsrt_events e ON e.id = q.event_id")


async def test_a_rolled_back_publish_leaves_nothing_due(conn: asyncpg.Connection) -> None:
    tenant = await make_tenant(conn)
    tx = conn.transaction()
    await tx.start()
    await publish(conn, tenant, "a.happened", {})
    await tx.rollback()
    assert await conn.fetch(DUE) == []


async def test_the_claim_takes_what_it_fans_out_off_the_due_events(
        conn: asyncpg.Connection, db_url: str) -> None:
    tenant = await make_tenant(conn)
    script = await make_script(conn, tenant)
    for n in range(7):
        await publish(conn, tenant, "thing.happened", {"n": n})
    async with Executor(workers=1) as ex:
        await drain(db_url, ex)
    assert await conn.fetch(DUE) == []
    assert await conn.fetch(UNDISPATCHED) == []
    rows = await conn.fetch("SELECT input, status FROM script_executions WHERE script_id = $1"
                            " ORDER BY (input->>'n')::int", script)
    assert [(json.loads(r["input"])["n"], r["status"]) for r in rows] == [
        (n, "completed") for n in range(7)]


async def test_an_event_dispatched_by_the_previous_release_runs_once(
        conn: asyncpg.Connection, db_url: str) -> None:
    """During a rolling deploy a daemon of the previous release dispatches through jsrt_claim
    (triggers.sql), which knows no due table: the next claim of this release drops the due
    row of that event without fanning it out a second time."""
    tenant = await make_tenant(conn)
    script = await make_script(conn, tenant)
    for n in range(3):
        await publish(conn, tenant, "thing.happened", {"n": n})
    store = await Store.open(db_url)
    try:
        assert await store.queue.dispatch_events(1, 1) == (1, 1)  # the v1 claim
        assert len(await conn.fetch(DUE)) == 3  # it left its event's due row
        assert await fan_out(store) == 2
        assert await conn.fetch(DUE) == []
        assert await fan_out(store) == 0
    finally:
        await store.close()
    assert await conn.fetchval(
        "SELECT count(*) FROM script_executions WHERE script_id = $1", script) == 3
    assert await conn.fetchval(
        "SELECT count(DISTINCT trigger_data->>'event_id') FROM script_executions"
        " WHERE script_id = $1", script) == 3


async def test_an_event_another_transaction_holds_waits_for_the_next_claim(
        conn: asyncpg.Connection, db_url: str) -> None:
    """A claim of the previous release locks the events it fans out: this release's claim
    skips such an event and keeps its due row, and the claim after that finds it dispatched
    (or, as here, released and still due)."""
    tenant = await make_tenant(conn)
    script = await make_script(conn, tenant)
    event = await publish(conn, tenant, "thing.happened", {"n": 1})
    other = await asyncpg.connect(db_url)
    store = await Store.open(db_url)
    try:
        tx = other.transaction()
        await tx.start()
        await other.execute("SELECT 1 FROM jsrt_events WHERE id = $1 FOR UPDATE", event)
        assert await fan_out(store) == 0
        assert [r["event_id"] for r in await conn.fetch(DUE)] == [event]
        await tx.rollback()
        assert await fan_out(store) == 1
        assert await conn.fetch(DUE) == []
    finally:
        await store.close()
        await other.close()
    assert await conn.fetchval(
        "SELECT count(*) FROM script_executions WHERE script_id = $1", script) == 1


async def test_a_due_row_whose_event_is_gone_is_dropped(
        conn: asyncpg.Connection, db_url: str) -> None:
    tenant = await make_tenant(conn)
    await make_script(conn, tenant)
    await conn.execute("INSERT INTO jsrt_events_due (event_id, tenant_id, published_at)"
                       " VALUES ($1, $2, NOW())", uuid.uuid4(), tenant)
    await publish(conn, tenant, "thing.happened", {"n": 1})
    store = await Store.open(db_url)
    try:
        assert await fan_out(store) == 1
    finally:
        await store.close()
    assert await conn.fetch(DUE) == []
    assert await conn.fetchval("SELECT count(*) FROM script_executions") == 1


async def test_the_claim_never_scans_the_history_index(
        conn: asyncpg.Connection, db_url: str) -> None:
    """The history's pending index holds an entry of every event dispatched since the last
    VACUUM of jsrt_events, at the front of each tenant's range, where a probe starts: the
    claims, the drain's check, the metrics and the console's overview go through the due
    table instead. Counted with PostgreSQL's own index statistics."""
    tenant = await make_tenant(conn)
    await make_script(conn, tenant)
    await conn.execute("SELECT jsrt_publish($1, 'thing.happened', jsonb_build_object('n', g))"
                       " FROM generate_series(1, 2000) g", tenant)
    await conn.execute("ANALYZE jsrt_events")
    before = await history_scans(conn)
    async with Store.session(db_url) as store:
        while await fan_out(store, limit=200):
            pass
        assert await store.queue.pending_work()  # the runs fanned out wait (no slots taken)
        assert await conn.fetch(DUE) == []
        await store.queue.vacuum()
        other = uuid.uuid4()
        await conn.execute("INSERT INTO tenants (id, name) VALUES ($1, 'other')", other)
        await publish(conn, other, "thing.happened", {})
        assert await fan_out(store) == 1
        assert await fan_out(store) == 0
        # the session's statistics reach shared memory before this statement's reply
        await store.db.execute("SELECT pg_stat_force_next_flush()")
    assert await conn.fetchval("SELECT count(*) FROM jsrt_events WHERE dispatched_at IS NULL") == 0
    assert await history_scans(conn) == before
