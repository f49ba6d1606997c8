"""HTTP triggers against a real PostgreSQL and real V8: the app through httpx's ASGI
transport, and once through a real uvicorn server on a loopback port."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote
from uuid import UUID

import anyio
import asyncpg
import httpx
import pytest
from starlette.applications import Starlette
from support.factories import executions, make_script, make_tenant
from support.waiting import eventually, row_becomes

from consumer.app import store_publisher
from consumer.http import HttpServer, build_app
from consumer.lease import Lease
from consumer.ondemand import OnDemand
from consumer.sandbox import Executor
from consumer.settings import Settings
from consumer.store import Store

ECHO = "async function handler(req, ctx) { return { got: req, tenant: ctx.tenantId } }"


@dataclass
class Http:
    app: Starlette
    client: httpx.AsyncClient
    store: Store
    executor: Executor
    settings: Settings


@pytest.fixture
async def http(db_url: str) -> AsyncIterator[Http]:
    settings = Settings.from_env(env={"DATABASE_URL": db_url}, http_max_body_bytes=1024)
    store = await Store.open(db_url)
    try:
        async with Executor(workers=1, publisher=store_publisher(store),
                            fetch_allowlist=["127.0.0.1"]) as ex, \
                Lease(store, 0.5, kind="http-test") as lease:
            app = build_app(store, OnDemand(store, ex, lease.id), settings)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://jsrt") as client:
                yield Http(app, client, store, ex, settings)
    finally:
        await store.close()


async def raw_get(app: Starlette, raw_path: str) -> tuple[int, Any]:
    """One GET through the ASGI app with the path exactly as given (no client normalising)."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "GET", "scheme": "http", "path": unquote(raw_path),
             "raw_path": raw_path.encode(), "root_path": "", "query_string": b"",
             "headers": [(b"host", b"jsrt")], "client": ("127.0.0.1", 1),
             "server": ("jsrt", 80)}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return sent[0]["status"], json.loads(body)


async def endpoint(conn: asyncpg.Connection, tenant: UUID, path: str, source: str = ECHO,
                   methods: list[str] | None = None, **kw: Any) -> UUID:
    """An http script; public unless `metadata` says otherwise (these tests are about
    routing, bodies and responses: access has its own, tests/integration/test_access.py)."""
    kw.setdefault("metadata", {"auth": "public"})
    return await make_script(conn, tenant, source, type="http", http_path=path,
                             http_methods=methods if methods is not None else ["GET", "POST"],
                             **kw)


async def test_get_runs_the_script_and_records_the_execution(
    conn: asyncpg.Connection, http: Http
) -> None:
    tenant = await make_tenant(conn)
    script = await endpoint(conn, tenant, "/hooks/echo", metadata={})  # the default: a key
    key = (await http.store.keys.create(tenant, "test")).key

    r = await http.client.get(f"/t/{tenant}/hooks/echo?a=1&b=2&b=3",
                              headers={"authorization": f"Bearer {key}", "x-thing": "yes"})

    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["tenant"] == str(tenant)
    got = body["got"]
    assert (got["method"], got["path"], got["body"]) == ("GET", "/hooks/echo", None)
    assert got["query"] == {"a": "1", "b": ["2", "3"]}
    assert got["headers"]["x-thing"] == "yes"
    assert got["headers"]["authorization"] == f"Bearer {key}"  # the script sees it...
    [row] = await executions(conn, tenant)
    assert row["id"] == UUID(r.headers["x-execution-id"])
    assert (row["script_id"], row["status"], row["trigger_type"]) == (script, "completed", "http")
    assert row["trigger_data"]["method"] == "GET"
    assert row["trigger_data"]["path"] == "/hooks/echo"
    assert row["trigger_data"]["query"] == "a=1&b=2&b=3"
    assert row["input"]["headers"]["authorization"] == "[redacted]"  # ...history does not
    assert row["output"] == body
    assert await conn.fetchval("SELECT count(*) FROM jsrt_runs") == 0


async def test_header_tenant_and_bodies(conn: asyncpg.Connection, http: Http) -> None:
    tenant = await make_tenant(conn)
    await endpoint(conn, tenant, "/orders")
    hdr = {"x-tenant-id": str(tenant)}

    r = await http.client.post("/orders", json={"n": 1}, headers=hdr)
    assert r.status_code == 200, r.text
    assert r.json()["got"]["body"] == {"n": 1}

    r = await http.client.post("/orders", content="plain words",
                               headers={**hdr, "content-type": "text/plain"})
    assert r.json()["got"]["body"] == "plain words"

    r = await http.client.post("/orders", content="{not json",
                               headers={**hdr, "content-type": "application/json"})
    assert r.status_code == 400
    assert r.json() == {"error": "request body is not valid JSON"}
    assert len(await executions(conn, tenant)) == 2  # the rejected request ran nothing


async def test_shaped_and_plain_responses(conn: asyncpg.Connection, http: Http) -> None:
    tenant = await make_tenant(conn)
    await endpoint(conn, tenant, "/created", "async function handler() { return "
                   "{ status: 201, headers: { 'X-Custom': 'v', 'Content-Length': '999' }, "
                   "body: 'made it' } }")
    await endpoint(conn, tenant, "/json", "function handler() { return { status: 202, "
                   "body: { ok: true } } }")
    await endpoint(conn, tenant, "/plain", "function handler() { return [1, 'two'] }")
    await endpoint(conn, tenant, "/not-shaped", "function handler() { return { status: 201, "
                   "extra: 1 } }")

    r = await http.client.get(f"/t/{tenant}/created")
    assert (r.status_code, r.text, r.headers["x-custom"]) == (201, "made it", "v")
    assert r.headers["content-type"].startswith("text/plain")
    r = await http.client.get(f"/t/{tenant}/json")
    assert (r.status_code, r.json()) == (202, {"ok": True})
    r = await http.client.get(f"/t/{tenant}/plain")
    assert (r.status_code, r.json()) == (200, [1, "two"])
    r = await http.client.get(f"/t/{tenant}/not-shaped")
    assert (r.status_code, r.json()) == (200, {"status": 201, "extra": 1})


async def test_not_found_never_tells_tenants_apart(conn: asyncpg.Connection, http: Http) -> None:
    a, b = await make_tenant(conn, "a"), await make_tenant(conn, "b")
    await endpoint(conn, a, "/private")
    await endpoint(conn, b, "/other")
    unknown = uuid.uuid4()

    answers = [
        await http.client.get(f"/t/{b}/private"),  # tenant A's path with tenant B's id
        await http.client.get("/private", headers={"x-tenant-id": str(b)}),
        await http.client.get(f"/t/{unknown}/private"),  # a tenant that does not exist
        await http.client.get(f"/t/{a}/nope"),
        await http.client.get("/private"),  # no tenant at all
        await http.client.get("/private", headers={"x-tenant-id": "not-a-uuid"}),
    ]
    for r in answers:
        assert (r.status_code, r.json()) == (404, {"error": "not found"}), r.request.url
    # Paths exactly as a client may send them (httpx would normalise the dot segments away);
    # the server percent-decodes like uvicorn does, then matches exactly, never resolves.
    for raw in (f"/t/{b}/../{a}/private", f"/t/{b}%2F..%2F{a}/private",
                f"/t/{a}/x/%2E%2E/private", f"/t/{a}/./private", f"/t/{a}//private",
                f"/t/{b}/..%2F..%2Ft%2F{a}%2Fprivate"):
        assert await raw_get(http.app, raw) == (404, {"error": "not found"}), raw
    await endpoint(conn, a, "/paused", status="paused")
    assert (await http.client.get(f"/t/{a}/paused")).status_code == 404
    assert await executions(conn) == []


async def test_methods_and_body_limit(conn: asyncpg.Connection, http: Http) -> None:
    tenant = await make_tenant(conn)
    await endpoint(conn, tenant, "/post-only", methods=["POST", "PUT"])
    await endpoint(conn, tenant, "/default", methods=[])

    r = await http.client.get(f"/t/{tenant}/post-only")
    assert r.status_code == 405 and r.headers["allow"] == "POST, PUT"
    r = await http.client.delete(f"/t/{tenant}/default")
    assert r.status_code == 405 and r.headers["allow"] == "GET"
    assert (await http.client.get(f"/t/{tenant}/default")).status_code == 200

    r = await http.client.post(f"/t/{tenant}/post-only", content=b"x" * 1025)
    assert r.status_code == 413
    assert (await http.client.post(f"/t/{tenant}/post-only", content=b"x" * 1024)).status_code \
        == 200
    assert len(await executions(conn, tenant)) == 2


async def test_script_error_and_timeout(conn: asyncpg.Connection, http: Http) -> None:
    tenant = await make_tenant(conn)
    await endpoint(conn, tenant, "/boom", "function handler() { console.log('about to');"
                   " throw new Error('secret detail /srv/x') }")
    await endpoint(conn, tenant, "/spin", "function handler() { while (true) {} }",
                   limits={"max_execution_time_ms": 300})

    r = await http.client.get(f"/t/{tenant}/boom")
    assert r.status_code == 500
    body = r.json()
    assert body["error"] == "script failed" and "Traceback" not in r.text
    assert "secret detail" not in r.text
    row = (await executions(conn, tenant))[0]
    assert str(row["id"]) == body["execution_id"]
    assert row["status"] == "failed" and "secret detail" in row["error"]
    logs = await conn.fetchval(
        "SELECT lines::text FROM jsrt_execution_logs WHERE execution_id = $1", row["id"])
    assert "about to" in logs

    r = await http.client.get(f"/t/{tenant}/spin")
    assert r.status_code == 504
    spin = [e for e in await executions(conn, tenant) if str(e["id"]) == r.json()["execution_id"]]
    assert spin[0]["status"] == "timeout"


class Gate:
    """A loopback HTTP server whose responses wait until the test opens the gate."""

    def __init__(self) -> None:
        self.arrived = 0
        self.changed = asyncio.Condition()
        self.open = asyncio.Event()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        async with self.changed:
            self.arrived += 1
            self.changed.notify_all()
        await self.open.wait()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def wait_arrived(self, n: int) -> None:
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(lambda: self.arrived >= n), 20)


async def test_concurrent_requests_within_and_over_the_limit(
    conn: asyncpg.Connection, http: Http
) -> None:
    gate = Gate()
    server = await asyncio.start_server(gate.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    tenant = await make_tenant(conn)
    await endpoint(conn, tenant, "/slow", "async function handler(req, ctx) {"
                   f" const r = await ctx.http.fetch('http://127.0.0.1:{port}/'); return r.body }}",
                   limits={"max_concurrent_runs": 2})
    url = f"/t/{tenant}/slow"
    async with server:
        first = [asyncio.create_task(http.client.get(url)) for _ in range(2)]
        await gate.wait_arrived(2)  # both runs hold their slots now
        over = await asyncio.gather(http.client.get(url), http.client.get(url))
        assert [r.status_code for r in over] == [429, 429]
        assert over[0].headers["retry-after"] == "1"
        gate.open.set()
        within = await asyncio.gather(*first)
    assert [(r.status_code, r.json()) for r in within] == [(200, "ok"), (200, "ok")]
    rows = await executions(conn, tenant)
    assert [r["status"] for r in rows] == ["completed", "completed"]


async def test_full_counts_runs_of_other_processes(conn: asyncpg.Connection, http: Http) -> None:
    tenant = await make_tenant(conn)
    script = await endpoint(conn, tenant, "/one", limits={"max_concurrent_runs": 1})
    # a run of this script held by another live process (a daemon, another server)
    await conn.execute("INSERT INTO jsrt_daemons (id, hostname, pid) VALUES ('elsewhere', 'h', 1)")
    exec_id = await conn.fetchval(
        "INSERT INTO script_executions (script_id, tenant_id, status, trigger_type) "
        "VALUES ($1, $2, 'running', 'event') RETURNING id", script, tenant)
    await conn.execute(
        "INSERT INTO jsrt_runs (execution_id, tenant_id, script_id, state, daemon_id) "
        "VALUES ($1, $2, $3, 'running', 'elsewhere')", exec_id, tenant, script)

    assert (await http.client.get(f"/t/{tenant}/one")).status_code == 429
    await conn.execute("DELETE FROM jsrt_runs WHERE execution_id = $1", exec_id)
    assert (await http.client.get(f"/t/{tenant}/one")).status_code == 200


async def test_real_uvicorn_server(conn: asyncpg.Connection, db_url: str) -> None:
    tenant = await make_tenant(conn)
    script = await endpoint(conn, tenant, "/live", "function handler(req) { return "
                            "{ hello: req.body } }", limits={"max_concurrent_runs": 1})
    # a run left behind by a server that died an hour ago: it holds the only slot until the
    # new server's lease rescues it (no daemon is running here)
    await conn.execute("INSERT INTO jsrt_daemons (id, hostname, pid, heartbeat_at) "
                       "VALUES ('dead', 'h', 1, NOW() - interval '1 hour')")
    lost = await conn.fetchval(
        "INSERT INTO script_executions (script_id, tenant_id, status, trigger_type) "
        "VALUES ($1, $2, 'running', 'http') RETURNING id", script, tenant)
    await conn.execute(
        "INSERT INTO jsrt_runs (execution_id, tenant_id, script_id, state, daemon_id) "
        "VALUES ($1, $2, $3, 'running', 'dead')", lost, tenant, script)
    settings = Settings.from_env(env={"DATABASE_URL": db_url}, heartbeat_interval=0.2,
                                 heartbeat_timeout=2.0)
    store = await Store.open(db_url)
    try:
        async with Executor(workers=1, publisher=store_publisher(store)) as ex:
            server = HttpServer(settings, store, ex, "127.0.0.1:0")
            async with anyio.create_task_group() as tg:
                port = await tg.start(server.run)
                await row_becomes(conn, "SELECT status <> 'running' FROM script_executions "
                                  "WHERE id = $1", lost, timeout=20)
                assert await conn.fetchval("SELECT error FROM script_executions WHERE id = $1",
                                           lost) == "worker lost"
                assert await conn.fetchval("SELECT count(*) FROM jsrt_daemons") == 1
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                    r = await client.post(f"/t/{tenant}/live", json={"x": 1})
                    bad = await client.request("BREW", f"/t/{tenant}/live")
                await server.shutdown()
    finally:
        await store.close()
    assert (r.status_code, r.json()) == (200, {"hello": {"x": 1}})
    assert bad.status_code == 405
    assert [e["status"] for e in await executions(conn, tenant)] == ["failed", "completed"]
    assert await conn.fetchval("SELECT count(*) FROM jsrt_daemons") == 0  # lease released
    assert json.loads(r.text) == {"hello": {"x": 1}}


# ---------------------------------------------------------------- issue #13: bad input, no hang
@pytest.mark.parametrize(
    ("content", "ctype", "error"),
    [
        (b'{"n": NaN}', "application/json", "request body is not valid JSON"),
        (b"[" * 100 + b"]" * 100, "application/json",
         "request body is nested deeper than 64 levels"),
        (b"[" * 100_000 + b"]" * 100_000, "application/json",
         "request body is nested deeper than 64 levels"),
        (b'{"a": "\\u0000"}', "application/json",
         "request body cannot be stored: it contains U+0000, which PostgreSQL cannot store"),
        (b'"\\ud800"', "application/json",
         "request body cannot be stored: it contains an unpaired UTF-16 surrogate, which is not"
         " valid Unicode"),
        (b"text with a \x00 in it", "text/plain",
         "request cannot be stored: it contains U+0000, which PostgreSQL cannot store"),
    ],
)
async def test_malformed_bodies_get_400_saying_why(
    conn: asyncpg.Connection, http: Http, content: bytes, ctype: str, error: str
) -> None:
    # the fixture's app takes 1 KiB bodies; the very deep one needs 200 KB
    big = Settings.from_env(env={"DATABASE_URL": "x"}, http_max_body_bytes=1 << 20)
    app = (build_app(http.store, OnDemand(http.store, http.executor, "x"), big)
           if len(content) > 1024 else http.app)
    tenant = await make_tenant(conn)
    await endpoint(conn, tenant, "/in")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://jsrt") as client:
        r = await client.post(f"/t/{tenant}/in", content=content,
                              headers={"content-type": ctype})
    assert (r.status_code, r.json()) == (400, {"error": error})
    assert await executions(conn, tenant) == []


async def test_a_query_with_u0000_gets_400(conn: asyncpg.Connection, http: Http) -> None:
    tenant = await make_tenant(conn)
    await endpoint(conn, tenant, "/q")
    r = await http.client.get(f"/t/{tenant}/q?a=%00")
    assert r.status_code == 400
    assert "U+0000" in r.json()["error"]


async def test_outputs_that_cannot_be_kept_never_hang_nor_use_up_the_slots(
    conn: asyncpg.Connection, http: Http
) -> None:
    """Deep outputs, outputs with U+0000: each request ends with 500 and the execution id,
    and the endpoint never answers 429 - the slots are freed every time (the red team locked
    an endpoint into 429 for good with five of them)."""
    tenant = await make_tenant(conn)
    await endpoint(conn, tenant, "/deep", "function handler() { let v = 1;"
                   " for (let i = 0; i < 2000; i++) v = [v]; return v; }",
                   limits={"max_concurrent_runs": 2})
    await endpoint(conn, tenant, "/nul", "function handler() { return {a: 'x\\u0000'}; }",
                   limits={"max_concurrent_runs": 2})
    for path in ["/deep", "/nul"] * 6:
        with anyio.fail_after(20):
            r = await http.client.get(f"/t/{tenant}{path}")
        assert r.status_code == 500, r.text
        assert r.json()["error"] == "script failed"
    rows = await executions(conn, tenant)
    assert len(rows) == 12 and {r["status"] for r in rows} == {"failed"}
    assert await conn.fetchval("SELECT count(*) FROM jsrt_runs") == 0


async def test_a_proto_key_in_a_body_never_sets_a_prototype(
    conn: asyncpg.Connection, http: Http
) -> None:
    """`__proto__` in a JSON body stays an own key of the object the script gets (values enter
    V8 through JSON.parse, never as object-literal source), at the top and nested."""
    tenant = await make_tenant(conn)
    source = """function handler(req) {
      const b = req.body;
      return { own: Object.keys(b), isAdmin: b.isAdmin === undefined ? null : b.isAdmin,
               nested: Object.keys(b.inner), nestedAdmin: b.inner.isAdmin === undefined,
               proto: Object.getPrototypeOf(b) === Object.prototype };
    }"""
    await endpoint(conn, tenant, "/proto", source, methods=["POST"])
    body = '{"__proto__": {"isAdmin": true}, "inner": {"__proto__": {"isAdmin": 1}}}'
    r = await http.client.post(f"/t/{tenant}/proto", content=body,
                               headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    assert r.json() == {"own": ["__proto__", "inner"], "isAdmin": None,
                        "nested": ["__proto__"], "nestedAdmin": True, "proto": True}


async def test_a_tenants_bodies_in_flight_have_a_share_and_others_keep_theirs(
    conn: asyncpg.Connection, http: Http
) -> None:
    """Request bodies one process holds at once are bounded per tenant (and in all): a
    tenant's request beyond its share gets 503 with retry-after and is not run, another
    tenant's request still runs, and the share comes back as requests end. (128 connections
    of 1 MiB bodies held the server at 612 MB before.)"""
    settings = Settings.from_env(env={"DATABASE_URL": "x"}, http_max_body_bytes=1024,
                                 http_tenant_body_bytes=2048, http_body_bytes=4096)
    app = build_app(http.store, OnDemand(http.store, http.executor, "x"), settings)
    budget = app.state.http_trigger.bodies
    slow = "async function handler(req) { await new Promise(r => setTimeout(r, 1500)); return 1 }"
    loud, quiet = await make_tenant(conn), await make_tenant(conn)
    for tenant in (loud, quiet):
        await endpoint(conn, tenant, "/in", slow, methods=["POST"])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://jsrt") as client:
        async def post(tenant: UUID) -> httpx.Response:
            return await client.post(f"/t/{tenant}/in", content=b"x" * 1024)

        first = [asyncio.create_task(post(loud)) for _ in range(2)]
        await eventually(lambda: budget.held(loud) == 2048, what="two bodies in flight")
        r = await post(loud)
        assert (r.status_code, r.headers.get("retry-after")) == (503, "1")
        assert "too many request bodies in flight" in r.json()["error"]
        assert (await post(quiet)).status_code == 200
        assert [t.status_code for t in await asyncio.gather(*first)] == [200, 200]
        assert budget.held() == 0
        assert (await post(loud)).status_code == 200
    assert len(await executions(conn, loud)) == 3
