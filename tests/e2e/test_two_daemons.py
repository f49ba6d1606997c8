"""Several daemons on one database: Postgres is the only coordinator."""

from __future__ import annotations

import asyncpg
from support.daemons import daemon_process
from support.factories import make_script, make_tenant
from support.waiting import row_becomes

EVENTS = 2000


async def test_two_daemons_run_every_event_script_pair_exactly_once(
    conn: asyncpg.Connection, db_url: str
) -> None:
    tenant = await make_tenant(conn)
    fast = await make_script(conn, tenant, "function handler(i) { return i.n; }",
                             limits={"max_concurrent_runs": 50})
    # max_concurrent_runs = 1 must hold across both daemons
    single = await make_script(conn, tenant, """
        function handler(i) { const u = Date.now() + 1; while (Date.now() < u) {} return i.n; }""",
                               limits={"max_concurrent_runs": 1})
    env = {"JSRT_CONCURRENCY": "32", "JSRT_WORKERS": "1"}
    with daemon_process(db_url, env=env) as a, daemon_process(db_url, env=env) as b:
        a.wait_event("daemon_started")
        b.wait_event("daemon_started")
        await conn.execute(
            """SELECT jsrt_publish($1, 'thing.happened', jsonb_build_object('n', g))
               FROM generate_series(1, $2) g""", tenant, EVENTS)
        await row_becomes(conn, "SELECT count(*) FROM script_executions WHERE tenant_id = $1 "
                          "AND status = 'completed'", tenant, expect=2 * EVENTS, timeout=100)
        for d in (a, b):
            assert d.stop() == 0, "".join(d.raw[-20:])
        ran_a, ran_b = a.count("execution_completed"), b.count("execution_completed")

    assert ran_a + ran_b == 2 * EVENTS
    assert ran_a > 0 and ran_b > 0, (ran_a, ran_b)  # both daemons took part
    per_pair = await conn.fetch(
        """SELECT script_id, count(*) AS n, count(DISTINCT input->>'n') AS events
           FROM script_executions WHERE tenant_id = $1 GROUP BY script_id""", tenant)
    assert {r["script_id"]: (r["n"], r["events"]) for r in per_pair} == {
        fast: (EVENTS, EVENTS), single: (EVENTS, EVENTS)}
    overlaps = await conn.fetchval(
        """SELECT count(*) FROM script_executions x JOIN script_executions y
             ON x.script_id = y.script_id AND x.id < y.id
            AND x.started_at < y.completed_at AND y.started_at < x.completed_at
           WHERE x.script_id = $1""", single)
    assert overlaps == 0
