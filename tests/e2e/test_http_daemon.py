"""`jsrt run --http`: the daemon and the HTTP trigger server in one real process; `jsrt serve`:
the HTTP trigger server alone, with the same health and metrics endpoints."""

from __future__ import annotations

import socket

import asyncpg
import httpx
from support.cli import run_cli
from support.daemons import daemon_process
from support.factories import make_script, make_tenant, publish
from support.metrics import parse


async def test_run_with_http_serves_requests_and_events(conn: asyncpg.Connection,
                                                        db_url: str) -> None:
    tenant = await make_tenant(conn)
    await make_script(conn, tenant)  # an event script
    await make_script(conn, tenant, "function handler(req) { return { you: req.query.name } }",
                      type="http", http_path="/hello", http_methods=["GET"])  # auth: key
    pepper = {"JSRT_KEY_PEPPER": "e2e-pepper"}
    made = run_cli(db_url, "keys", "create", "--tenant", str(tenant), "--name", "e2e", **pepper)
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip().splitlines()[-1]  # printed once, the last line
    with daemon_process(db_url, args=("--http", "127.0.0.1:0"), env=pepper) as d:
        port = d.wait_event("http_listening")["port"]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            refused = await client.get("/hello", headers={"x-tenant-id": str(tenant)})
            r = await client.get("/hello", params={"name": "ada"},
                                 headers={"x-tenant-id": str(tenant),
                                          "authorization": f"Bearer {key}"})
        assert refused.status_code == 401
        assert (r.status_code, r.json()) == (200, {"you": "ada"})
        await publish(conn, tenant, "thing.happened", {"x": 1})
        d.wait_event("execution_completed", tenant_id=str(tenant), trigger="event")
        # two leases while running: the daemon's and the HTTP server's
        assert await conn.fetchval("SELECT count(*) FROM jsrt_daemons") == 2
        assert d.stop() == 0
    d.wait_event("http_stopped")
    d.wait_event("daemon_stopped")
    rows = await conn.fetch("SELECT trigger_type, status FROM script_executions "
                            "WHERE tenant_id = $1 ORDER BY trigger_type", tenant)
    assert [(r["trigger_type"], r["status"]) for r in rows] == [
        ("event", "completed"), ("http", "completed")]
    assert await conn.fetchval("SELECT count(*) FROM jsrt_daemons") == 0


async def test_serve_alone_answers_health_readiness_and_metrics(conn: asyncpg.Connection,
                                                               db_url: str) -> None:
    """The image's HEALTHCHECK calls /healthz whatever the command: `jsrt serve` answers it."""
    tenant = await make_tenant(conn)
    await make_script(conn, tenant, "function handler(req) { return { you: req.query.name } }",
                      type="http", http_path="/hello", http_methods=["GET"],
                      metadata={"auth": "public"})
    with daemon_process(db_url, command="serve", args=("--http", "127.0.0.1:0")) as d:
        http_port = d.wait_event("http_listening")["port"]
        metrics_port = d.wait_event("metrics_listening")["port"]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{metrics_port}") as ops:
            assert (await ops.get("/healthz")).status_code == 200
            ready = await ops.get("/readyz")
            assert ready.status_code == 200, ready.text
            assert ready.json()["ready"] is True
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}") as client:
                r = await client.get(f"/t/{tenant}/hello", params={"name": "ada"})
            assert (r.status_code, r.json()) == (200, {"you": "ada"})
            page = (await ops.get("/metrics")).text
        assert d.stop() == 0
    _, samples = parse(page)
    assert samples[("jsrt_executions_total",
                    (("status", "completed"), ("trigger", "http")))] == 1
    assert samples[("jsrt_events_received_total", (("source", "publish"),))] == 0


async def test_a_taken_http_address_is_named_before_any_banner(db_url: str) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        addr = f"127.0.0.1:{taken.getsockname()[1]}"
        for argv in (("run", "--http", addr), ("dev", "--no-demo", "--http", addr),
                     ("serve", "--http", addr)):
            done = run_cli(db_url, *argv)
            assert done.returncode == 1, argv
            assert done.stderr.splitlines()[-1] == (
                f"jsrt: error: cannot serve HTTP on {addr}: address already in use; give "
                "--http another HOST:PORT (port 0: any free port)"), done.stderr
            assert "jsruntime is running" not in done.stdout
