"""The console's overview served by a real `jsrt run --http` process (#18): the processes'
memory comes from their own heartbeats (jsrt_daemons.memory), an operator sees every process
with host and pid, a tenant only the process running its script right now, without them."""

from __future__ import annotations

import json
import socket

import asyncpg
import httpx
from support.cli import run_cli
from support.console import csrf_of
from support.daemons import daemon_process
from support.factories import make_script, make_tenant, publish
from support.waiting import eventually

PEPPER = {"JSRT_KEY_PEPPER": "e2e-pepper"}
SLOW = """async function handler(input, ctx) {
    await new Promise((resolve) => setTimeout(resolve, 4000));
    return {slept: true};
}"""


def make_key(db_url: str, *args: str) -> str:
    made = run_cli(db_url, "keys", "create", *args, "--name", "console-e2e",
                   "--scopes", "executions:read", **PEPPER)
    assert made.returncode == 0, made.stderr
    return made.stdout.strip().splitlines()[-1]


async def signed_in(port: int, key: str) -> httpx.AsyncClient:
    client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}")
    form = await client.get("/console/login")
    r = await client.post("/console/login", data={"key": key, "csrf": csrf_of(form.text)})
    assert r.status_code == 303, r.text[:300]
    return client


async def test_the_overview_shows_the_processes_and_their_memory(conn: asyncpg.Connection,
                                                                  db_url: str) -> None:
    tenant = await make_tenant(conn, "e2e")
    await make_script(conn, tenant, SLOW, name="sleeper")
    operator_key = make_key(db_url, "--operator")
    tenant_key = make_key(db_url, "--tenant", str(tenant))
    with daemon_process(db_url, args=("--http", "127.0.0.1:0"), env=PEPPER) as d:
        port = d.wait_event("http_listening")["port"]

        async def reported() -> bool:  # both leases of the process, workers included
            rows = await conn.fetch("SELECT memory FROM jsrt_daemons")
            docs = [json.loads(r["memory"]) for r in rows if r["memory"]]
            return len(docs) == 2 and all(doc["workers"] for doc in docs)

        await eventually(reported, timeout=30, what="the process's memory in jsrt_daemons")
        operator = await signed_in(port, operator_key)
        tenant_view = await signed_in(port, tenant_key)
        try:
            page = (await operator.get("/console/overview")).text
            assert page.count('data-testid="worker-row"') == 1  # one process, two leases
            assert f"{socket.gethostname()}:{d.proc.pid}" in page and "MiB" in page
            idle = (await tenant_view.get("/console/overview")).text
            assert 'data-testid="workers-empty"' in idle

            await publish(conn, tenant, "thing.happened", {})

            async def serving() -> str | None:
                text = (await tenant_view.get("/console/overview/live",
                                              headers={"hx-request": "true"})).text
                running = 'data-testid="running-table"' in text and "sleeper" in text
                return text if running and 'data-testid="worker-row"' in text else None

            busy = await eventually(serving, timeout=30, what="the tenant's run on the overview")
            assert f"{socket.gethostname()}:" not in busy  # neither host nor pid
            assert "MiB" in busy
        finally:
            await operator.aclose()
            await tenant_view.aclose()
        assert d.stop() == 0
