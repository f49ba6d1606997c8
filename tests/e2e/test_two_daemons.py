"""Several daemons on one database: Postgres is the only coordinator."""

from __future__ import annotations

import os
import subprocess
import sys

import asyncpg
import httpx
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


async def test_daemons_on_one_host_share_the_default_metrics_address(db_url: str) -> None:
    """The second `jsrt run` (and a `jsrt serve`) on a host whose default metrics address is
    taken warns once and serves on a free port; an address set explicitly still fails."""
    default: dict[str, str | None] = {"JSRT_METRICS_ADDR": None, "JSRT_WORKERS": "1"}
    with daemon_process(db_url, env=default) as a, \
            daemon_process(db_url, env=default) as b, \
            daemon_process(db_url, env=default, command="serve",
                           args=("--http", "127.0.0.1:0")) as c:
        ports = [d.wait_event("metrics_listening")["port"] for d in (a, b, c)]
        assert len(set(ports)) == 3, ports
        # one of them took the default address (unless another process of this host holds
        # it); each of the others warned once, naming the free port it serves on instead
        warned = [(d, port) for d, port in zip((a, b, c), ports, strict=True)
                  if d.count("metrics_addr_in_use")]
        assert len(warned) >= 2
        for d, port in warned:
            warning = d.wait_event("metrics_addr_in_use")
            assert (warning["level"], warning["addr"], warning["fallback"], d.count(
                "metrics_addr_in_use")) == ("warning", "127.0.0.1:9464", f"127.0.0.1:{port}", 1)
        a.wait_event("daemon_started")
        b.wait_event("daemon_started")
        async with httpx.AsyncClient(timeout=10) as client:
            for port in ports:
                assert (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200

        taken = f"127.0.0.1:{ports[0]}"
        explicit = subprocess.run(
            [sys.executable, "-m", "consumer.cli", "run"], capture_output=True, text=True,
            timeout=60, env={**os.environ, "DATABASE_URL": db_url, "JSRT_METRICS_ADDR": taken,
                             "JSRT_WORKERS": "1"})
        assert explicit.returncode == 1
        assert f"cannot serve metrics on {taken}: address already in use" in explicit.stderr
        for d in (a, b, c):
            assert d.stop() == 0, "".join(d.raw[-20:])
