"""The real `jsrt run` daemon in subprocesses: real PostgreSQL, real V8, real signals.
Tests wait for log lines and rows, never for fixed sleeps."""

from __future__ import annotations

import json
import signal
import uuid

import asyncpg
from support.daemons import daemon_process
from support.factories import make_script, make_tenant, publish
from support.waiting import eventually, row_becomes


async def test_publish_is_executed_by_the_running_daemon(conn: asyncpg.Connection,
                                                          db_url: str) -> None:
    tenant = await make_tenant(conn)
    await make_script(conn, tenant)
    with daemon_process(db_url) as d:
        d.wait_event("daemon_started")
        await publish(conn, tenant, "thing.happened", {"x": 1})
        line = d.wait_event("execution_completed", tenant_id=str(tenant))
        assert line["event_type"] == "thing.happened"
        assert line["status"] == "completed"
        assert d.stop() == 0
    d.wait_event("daemon_stopped")


async def test_raw_notify_is_stored_and_executed(conn: asyncpg.Connection, db_url: str) -> None:
    tenant = await make_tenant(conn)
    await make_script(conn, tenant, event_types=["raw.event"])
    with daemon_process(db_url) as d:
        d.wait_event("listener_connected")
        msg = {"tenant_id": str(tenant), "event_type": "raw.event", "payload": {"a": 1},
               "id": "dedup-1"}
        for _ in range(2):  # the second is a duplicate by id
            await conn.execute("SELECT pg_notify('jsrt_events', $1)", json.dumps(msg))
        d.wait_event("execution_completed", tenant_id=str(tenant))
        assert await conn.fetchval("SELECT count(*) FROM jsrt_events WHERE tenant_id = $1",
                                   tenant) == 1
        d.stop()
    rows = await conn.fetch(
        "SELECT input::text FROM script_executions WHERE tenant_id = $1", tenant)
    assert [json.loads(r[0]) for r in rows] == [{"a": 1}]


async def test_raw_events_with_a_queued_key_or_ids_of_two_types_are_all_kept(
    conn: asyncpg.Connection, db_url: str
) -> None:
    """A raw event whose body has a top-level "queued" key is an event, not jsrt_publish's
    wake-up (the red team's was dropped without a line); "id": 1 and "id": "1" are two."""
    tenant = await make_tenant(conn)
    await make_script(conn, tenant, event_types=["raw.event"])
    with daemon_process(db_url) as d:
        d.wait_event("listener_connected")
        for extra in ({"queued": True}, {"id": 1}, {"id": "1"}):
            msg = {"tenant_id": str(tenant), "event_type": "raw.event", "payload": extra,
                   **extra}
            await conn.execute("SELECT pg_notify('jsrt_events', $1)", json.dumps(msg))
        await eventually(lambda: d.count("execution_completed") >= 3, timeout=30,
                         what="three raw events run")
        d.stop()
    rows = await conn.fetch("SELECT payload::text FROM jsrt_events WHERE tenant_id = $1",
                            tenant)  # (stored concurrently: in no particular order)
    assert sorted(r[0] for r in rows) == sorted(
        json.dumps(p) for p in ({"queued": True}, {"id": 1}, {"id": "1"}))


async def test_malformed_notifications_are_rejected_and_the_daemon_lives_on(
    conn: asyncpg.Connection, db_url: str
) -> None:
    tenant = await make_tenant(conn)
    await make_script(conn, tenant)
    deep = "[" * 200 + "]" * 200
    bad = {
        "not json": "{nope",
        "not an object": "[1, 2]",
        "missing tenant": json.dumps({"event_type": "x"}),
        "tenant not uuid": json.dumps({"tenant_id": "abc", "event_type": "x"}),
        "unknown tenant": json.dumps({"tenant_id": str(uuid.uuid4()), "event_type": "x"}),
        "empty type": json.dumps({"tenant_id": str(tenant), "event_type": "  "}),
        "type not string": json.dumps({"tenant_id": str(tenant), "event_type": 5}),
        "absurd nesting": json.dumps({"tenant_id": str(tenant), "event_type": "x",
                                      "payload": json.loads(deep)}),
        "id not scalar": json.dumps({"tenant_id": str(tenant), "event_type": "x", "id": [1]}),
    }
    with daemon_process(db_url) as d:
        d.wait_event("listener_connected")
        for text in bad.values():
            await conn.execute("SELECT pg_notify('jsrt_events', $1)", text)
        d.wait_for(lambda ln: ln.get("event") == "event_rejected"
                   and "unknown tenant" in ln.get("reason", ""))
        await eventually(lambda: d.count("event_rejected") >= len(bad), timeout=20,
                         what="every malformed notification rejected")
        reasons = [ln["reason"] for ln in d.lines if ln.get("event") == "event_rejected"]
        assert all(len(r.splitlines()) == 1 for r in reasons)
        # still alive and working
        await publish(conn, tenant, "thing.happened")
        d.wait_event("execution_completed", tenant_id=str(tenant))
        assert d.stop() == 0
    assert await conn.fetchval("SELECT count(*) FROM jsrt_events WHERE tenant_id = $1", tenant) == 1


async def test_sigterm_lets_running_executions_finish(conn: asyncpg.Connection,
                                                      db_url: str) -> None:
    tenant = await make_tenant(conn)
    await make_script(conn, tenant, """
        async function handler(input, ctx) {
            const until = Date.now() + 700; while (Date.now() < until) {}
            return 'done';
        }""")
    with daemon_process(db_url, env={"JSRT_GRACE_PERIOD": "20"}) as d:
        d.wait_event("daemon_started")
        await publish(conn, tenant, "thing.happened")
        await row_becomes(conn, "SELECT count(*) = 1 FROM script_executions "
                         "WHERE tenant_id = $1 AND status = 'running'", tenant)
        assert d.stop(signal.SIGTERM) == 0
    assert await conn.fetchval(
        "SELECT status FROM script_executions WHERE tenant_id = $1", tenant) == "completed"
    assert await conn.fetchval("SELECT count(*) FROM jsrt_runs") == 0
    assert await conn.fetchval("SELECT count(*) FROM jsrt_daemons") == 0


async def test_sigkill_mid_stream_loses_nothing(conn: asyncpg.Connection, db_url: str) -> None:
    tenant = await make_tenant(conn)
    n = 200
    # slow enough that some executions are surely running when the daemon is killed
    slow = await make_script(conn, tenant, """
        function handler(i) {
            const u = Date.now() + 100; while (Date.now() < u) {} return i.n;
        }""", limits={"max_concurrent_runs": 8})
    await make_script(conn, tenant, "function handler(i) { return i.n; }")
    env = {"JSRT_RETRY_BASE_SECONDS": "0.2"}
    with daemon_process(db_url, env=env) as first:
        first.wait_event("daemon_started")
        for i in range(n):
            await publish(conn, tenant, "thing.happened", {"n": i})
        await row_becomes(conn, "SELECT count(*) >= 20 FROM script_executions "
                         "WHERE script_id = $1 AND status = 'completed'", slow)
        await row_becomes(conn, "SELECT count(*) > 0 FROM script_executions "
                         "WHERE script_id = $1 AND status = 'running'", slow)
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(10)
    with daemon_process(db_url, env=env) as second:
        second.wait_event("daemon_started")
        second.wait_event("execution_worker_lost")  # the dead daemon's runs are rescued
        await row_becomes(
            conn,
            """SELECT count(DISTINCT (input->>'n', script_id)) FROM script_executions
               WHERE tenant_id = $1 AND status = 'completed'""",
            tenant, expect=2 * n, timeout=90)
        assert second.stop() == 0
    assert await conn.fetchval("SELECT count(*) FROM jsrt_runs") == 0
    assert await conn.fetchval(
        "SELECT count(*) FROM script_executions WHERE status IN ('running', 'pending')") == 0
    assert await conn.fetchval("SELECT count(*) FROM jsrt_events WHERE dispatched_at IS NULL") == 0
    # first attempts are unique per (event, script); lost ones were retried, not duplicated
    dupes = await conn.fetchval(
        """SELECT count(*) FROM (SELECT trigger_data->>'event_id', script_id FROM script_executions
           WHERE (trigger_data->>'attempt')::int = 1 GROUP BY 1, 2 HAVING count(*) > 1) x""")
    assert dupes == 0
    lost = await conn.fetch(
        "SELECT id FROM script_executions WHERE error = 'worker lost' AND tenant_id = $1", tenant)
    assert lost  # the kill really caught executions in flight ...
    letters = await conn.fetch(
        """SELECT st.resolution FROM script_event_dead_letters d
           JOIN jsrt_dead_letter_state st ON st.dead_letter_id = d.id
           WHERE d.tenant_id = $1""", tenant)
    # ... and each became a dead letter that a retry resolved
    assert letters and all(r["resolution"] == "succeeded" for r in letters)


async def test_listener_survives_backend_termination(conn: asyncpg.Connection,
                                                     db_url: str) -> None:
    tenant = await make_tenant(conn)
    await make_script(conn, tenant)
    with daemon_process(db_url, env={"JSRT_POLL_INTERVAL": "30"}) as d:
        d.wait_event("listener_connected")
        await conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                           "WHERE application_name = 'jsrt-listener' "
                           "AND datname = current_database()")
        d.wait_event("listener_reconnected")
        # with a 30 s poll, only the notification can make this fast
        await publish(conn, tenant, "thing.happened")
        d.wait_event("execution_completed", tenant_id=str(tenant), timeout=15)
        assert d.stop() == 0
