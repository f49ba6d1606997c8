"""ctx.db and ctx.cache end to end: real PostgreSQL, real V8 workers, tables exposed the way
an operator exposes them, two tenants whose rows must never meet."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
from support.cli import run_cli
from support.waiting import eventually

from consumer.cache import PgCache
from consumer.clock import FakeClock
from consumer.sandbox import ExecutionRequest, ExecutionResult, Executor, Limits
from consumer.scriptdata import ScriptData
from consumer.sql import q
from consumer.store import Store

LIMITS = Limits(max_execution_time_ms=10_000, max_api_calls_per_minute=10_000)

SCHEMA = """
CREATE TABLE orders (id SERIAL PRIMARY KEY, tenant_id UUID NOT NULL, total NUMERIC,
                     note TEXT, placed_at TIMESTAMPTZ, payload JSONB, blob BYTEA,
                     big BIGINT, ratio DOUBLE PRECISION, ref UUID);
CREATE TABLE customers (id INT PRIMARY KEY, tenant_id UUID NOT NULL, name TEXT);
CREATE TABLE secrets (id INT, tenant_id UUID, secret TEXT);
CREATE VIEW all_orders AS SELECT * FROM orders;
"""


@dataclass
class Env:
    conn: asyncpg.Connection
    store: Store
    executor: Executor
    clock: FakeClock
    a: str
    b: str
    script: str

    async def run(self, source: str, *, tenant: str | None = None, script: str | None = None,
                  limits: Limits = LIMITS, input: Any = None) -> ExecutionResult:
        n = uuid.uuid4()
        return await self.executor.execute(ExecutionRequest(
            source=source, version_id=str(n), input_json=json.dumps(input),
            tenant_id=tenant or self.a, script_id=script or self.script, execution_id=str(n),
            trigger={"type": "manual"}, limits=limits))

    async def output(self, source: str, **kw: Any) -> Any:
        result = await self.run(source, **kw)
        assert result.status == "completed", (result.error, result.stack)
        return result.output


@pytest.fixture
async def env(conn: asyncpg.Connection, db_url: str) -> AsyncIterator[Env]:
    await conn.execute(SCHEMA)
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    await conn.execute(
        "INSERT INTO orders (tenant_id, total, note) VALUES ($1, 10.5, 'a1'), ($1, 20, 'a2'),"
        " ($2, 99, 'b1'), ($2, 98, 'b2')", uuid.UUID(a), uuid.UUID(b))
    await conn.execute("INSERT INTO customers VALUES (1, $1, 'Ada'), (2, $2, 'Bob')",
                       uuid.UUID(a), uuid.UUID(b))
    await conn.execute("INSERT INTO secrets VALUES (1, $1, 'a-secret'), (2, $2, 'b-secret')",
                       uuid.UUID(a), uuid.UUID(b))
    store = await Store.open(db_url)
    await store.tenant_data.expose("orders", True, None)
    await store.tenant_data.expose("customers", False, None)
    store.tenant_data.max_statement_s = 0.5  # the 5 s cap, shortened for the timeout test
    clock = FakeClock()
    data = ScriptData(store.tenant_data, PgCache(store.db, clock, max_entries=50))
    try:
        async with Executor(workers=1, data=data) as executor:
            yield Env(conn, store, executor, clock, a, b, str(uuid.uuid4()))
    finally:
        await store.close()


async def test_each_method_and_the_value_mapping(env: Env) -> None:
    out = await env.output("""
    async function handler(input, ctx) {
      const rows = await ctx.db.query('SELECT note, total FROM orders ORDER BY id');
      const one = await ctx.db.queryOne('SELECT note FROM orders WHERE note = $1', ['a2']);
      const none = await ctx.db.queryOne('SELECT note FROM orders WHERE note = $1', ['b1']);
      const n = await ctx.db.execute(
        'INSERT INTO orders (tenant_id, total, note, placed_at, payload, blob, big, ratio, ref)'
        + ' VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)',
        [ctx.tenantId, '0.1000000000000000001', 'typed', '2026-01-02T03:04:05Z', {k: [1, 'x']},
         'AAEC', '9007199254740993', 0.25, '00000000-0000-4000-8000-000000000001']);
      const typed = await ctx.db.queryOne(
        'SELECT total, placed_at, payload, blob, big, ratio, ref, 9.99::numeric AS price'
        + ' FROM orders WHERE note = $1', ['typed']);
      const updated = await ctx.db.execute('UPDATE orders SET note = note || $1', ['!']);
      return { rows, one, none, n, typed, updated };
    }""")
    assert out["rows"] == [{"note": "a1", "total": 10.5}, {"note": "a2", "total": 20}]
    assert out["one"] == {"note": "a2"} and out["none"] is None and out["n"] == 1
    assert out["typed"] == {
        "total": "0.1000000000000000001",  # not exactly a double: a string
        "placed_at": "2026-01-02T03:04:05+00:00", "payload": {"k": [1, "x"]},
        "blob": "AAEC", "big": "9007199254740993", "ratio": 0.25,
        "ref": "00000000-0000-4000-8000-000000000001", "price": 9.99,
    }
    assert out["updated"] == 3  # its own three rows, never tenant B's
    assert await env.conn.fetchval("SELECT count(*) FROM orders WHERE note LIKE '%!'") == 3


async def test_database_query_count_counts_every_statement(env: Env) -> None:
    result = await env.run("""
    async function handler(input, ctx) {
      await ctx.db.query('SELECT 1 AS x');
      await ctx.db.queryOne('SELECT 1 AS x');
      await ctx.db.transaction(async (tx) => {
        await tx.execute('UPDATE orders SET note = $1 WHERE note = $2', ['z', 'a1']);
        await tx.query('SELECT 1 AS x');
      });
      try { await ctx.db.query('SELECT * FROM secrets') } catch (e) {}
      await ctx.cache.set('k', 1);
      return 1;
    }""")
    assert result.status == "completed", result.error
    assert result.metrics["database_query_count"] == 5
    assert result.metrics["api_call_count"] >= 6


REFUSALS = [
    ("SELECT 1; SELECT 2", "exactly one statement is allowed"),
    ("SET ROLE postgres", "SET and RESET are not allowed"),
    ("RESET ROLE", "SET and RESET are not allowed"),
    ("SET jsrt.tenant_id = 'x'", "SET and RESET are not allowed"),
    ("CREATE TABLE x (a int)", "DDL is not allowed"),
    ("DROP TABLE orders", "DDL is not allowed"),
    ("ALTER TABLE orders DISABLE ROW LEVEL SECURITY", "DDL is not allowed"),
    ("COPY orders TO STDOUT", "COPY is not allowed"),
    ("LISTEN x", "LISTEN is not allowed"),
    ("NOTIFY x", "NOTIFY is not allowed"),
    ("SELECT * FROM orders FOR UPDATE", "locking clauses"),
    ("SELECT * FROM orders FOR SHARE SKIP LOCKED", "locking clauses"),
    ("SELECT set_config('jsrt.tenant_id', 'x', true)", "function set_config is not allowed"),
    ("SELECT current_setting('jsrt.tenant_id')", "function current_setting is not allowed"),
    ("SELECT pg_sleep(10)", "function pg_sleep is not allowed"),
    ("SELECT pg_advisory_lock(1)", "function pg_advisory_lock is not allowed"),
    ("SELECT dblink('x', 'y')", "function dblink is not allowed"),
    ("SELECT pg_read_file('/etc/passwd')", "function pg_read_file is not allowed"),
    ("SELECT lo_import('/etc/passwd')", "function lo_import is not allowed"),
    ("SELECT pg_terminate_backend(1)", "function pg_terminate_backend is not allowed"),
    ("SELECT * FROM secrets", "table secrets is not exposed"),
    ("SELECT * FROM scripts", "table scripts is not exposed"),
    ("SELECT * FROM pg_catalog.pg_roles", "table pg_catalog.pg_roles is not exposed"),
    ("SELECT * FROM information_schema.tables", "is not exposed"),
    ("SELECT * FROM all_orders", "table all_orders is not exposed"),
    ("WITH x AS (SELECT * FROM secrets) SELECT * FROM x", "table secrets is not exposed"),
    ("SELECT * FROM secrets, (WITH secrets AS (SELECT 1) SELECT * FROM secrets) s",
     "table secrets is not exposed"),
    ("SELECT 'orders'::regclass", "a cast to regclass is not allowed"),
    ("SELECT * INTO copy FROM orders", "SELECT INTO is not allowed"),
    ("BEGIN", "transaction control is not allowed"),
    ("SELECT * FROM orders WHERE id = $1", "uses 1 parameter(s)"),
    ("SELEC 1", "syntax error"),
]


async def test_each_refusal_says_why(env: Env) -> None:
    out = await env.output("""
    async function handler(input, ctx) {
      const said = [];
      for (const sql of input) {
        try { await ctx.db.query(sql); said.push('ran'); } catch (e) { said.push(e.message); }
      }
      try { await ctx.db.query('DELETE FROM orders'); } catch (e) { said.push(e.message); }
      try { await ctx.db.execute('UPDATE customers SET name = $1', ['x']); }
      catch (e) { said.push(e.message); }
      return said;
    }""", input=[sql for sql, _ in REFUSALS])
    for (sql, expected), said in zip(REFUSALS, out, strict=False):
        assert expected in said and said.startswith("ctx.db: "), (sql, said)
    assert "read-only: use execute" in out[len(REFUSALS)]
    assert "customers is read-only for scripts" in out[len(REFUSALS) + 1]
    assert await env.conn.fetchval("SELECT count(*) FROM orders") == 4


async def test_a_tenant_never_sees_or_changes_another_tenants_rows(env: Env) -> None:
    out = await env.output("""
    async function handler(b, ctx) {
      const q = (sql, p) => ctx.db.query(sql, p);
      const seen = {
        named: await q('SELECT note FROM orders WHERE tenant_id = $1', [b]),
        cast: await q("SELECT note FROM orders WHERE tenant_id::text = $1", [b]),
        or: await q("SELECT note FROM orders WHERE tenant_id = $1 OR true ORDER BY note", [b]),
        join: await q('SELECT o.note, c.name FROM orders o JOIN customers c'
                      + ' ON c.tenant_id = o.tenant_id ORDER BY o.note'),
        sub: await q('SELECT (SELECT count(*) FROM orders WHERE tenant_id = $1) AS n', [b]),
        cte: await q('WITH x AS (SELECT * FROM orders) SELECT count(*) AS n FROM x'),
        union: await q('SELECT note FROM orders UNION SELECT name FROM customers ORDER BY 1'),
        agg: await q('SELECT sum(total) AS s, count(DISTINCT tenant_id) AS t FROM orders'),
      };
      const changed = {
        update: await ctx.db.execute('UPDATE orders SET note = $1 WHERE tenant_id = $2', ['x', b]),
        del: await ctx.db.execute('DELETE FROM orders WHERE tenant_id = $1', [b]),
      };
      let insert = null;
      try {
        await ctx.db.execute('INSERT INTO orders (tenant_id, note) VALUES ($1, $2)', [b, 'evil']);
      } catch (e) { insert = e.message; }
      let move = null;
      try {
        await ctx.db.execute('UPDATE orders SET tenant_id = $1', [b]);
      } catch (e) { move = e.message; }
      return { seen, changed, insert, move };
    }""", input=env.b)
    seen = out["seen"]
    assert seen["named"] == [] and seen["cast"] == [] and seen["sub"] == [{"n": 0}]
    assert seen["or"] == [{"note": "a1"}, {"note": "a2"}]
    assert seen["join"] == [{"note": "a1", "name": "Ada"}, {"note": "a2", "name": "Ada"}]
    assert seen["cte"] == [{"n": 2}]
    assert seen["union"] == [{"note": "Ada"}, {"note": "a1"}, {"note": "a2"}]
    assert seen["agg"] == [{"s": 30.5, "t": 1}]
    assert out["changed"] == {"update": 0, "del": 0}
    assert "row-level security" in out["insert"]
    assert "row-level security" in out["move"]
    rows = await env.conn.fetch("SELECT note FROM orders WHERE tenant_id = $1 ORDER BY note",
                                uuid.UUID(env.b))
    assert [r["note"] for r in rows] == ["b1", "b2"]


async def test_the_role_reaches_nothing_but_exposed_rows_without_the_parser(env: Env) -> None:
    """The database layer alone: raw SQL under the role with a bound tenant."""
    conn = env.conn

    async def as_tenant(sql: str) -> Any:
        async with conn.transaction():
            await conn.execute(q("data_bind"), env.a, "2000")
            return await conn.fetch(sql)

    for sql in ("SELECT * FROM secrets", "SELECT * FROM scripts", "SELECT * FROM tenants",
                "SELECT * FROM script_executions", "SELECT * FROM all_orders",
                "SELECT * FROM jsrt_cache", "SELECT * FROM jsrt_exposed_tables"):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await as_tenant(sql)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await as_tenant("INSERT INTO customers VALUES (3, gen_random_uuid(), 'x')")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await as_tenant("ALTER TABLE orders DISABLE ROW LEVEL SECURITY")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await as_tenant("CREATE TABLE public.mine (a int)")
    rows = await as_tenant(f"SELECT note FROM orders WHERE tenant_id = '{env.b}' OR true")
    assert sorted(r["note"] for r in rows) == ["a1", "a2"]
    # a permissive policy of the host's own, open to everyone, does not widen it
    await conn.execute("CREATE POLICY host_open ON orders USING (true) WITH CHECK (true)")
    rows = await as_tenant("SELECT note FROM orders")
    assert sorted(r["note"] for r in rows) == ["a1", "a2"]
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await as_tenant(f"INSERT INTO orders (tenant_id) VALUES ('{env.b}') RETURNING id")
    # a binding the role sets itself, even to the other tenant's id or a forged signature,
    # is no binding: the policy matches nothing
    for forged in (env.b, f"{env.b}.{'0' * 64}", f"{env.a}.{'0' * 64}", ""):
        async with conn.transaction():
            await conn.execute(q("data_bind"), env.a, "2000")
            await conn.execute("SELECT set_config('jsrt.tenant_id', $1, true)", forged)
            assert await conn.fetch("SELECT * FROM orders") == []
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("INSERT INTO orders (tenant_id) VALUES ($1)", uuid.UUID(env.b))
    for sql in ("SELECT * FROM jsrt_data_secret",
                f"SELECT jsrt_sign_tenant('{env.b}')"):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await as_tenant(sql)
    # no tenant bound: no row at all
    async with conn.transaction():
        await conn.execute("SET LOCAL ROLE jsrt_tenant_data")
        assert await conn.fetch("SELECT * FROM orders") == []
    # hidden: the grants go at once
    assert await env.store.tenant_data.hide("customers")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await as_tenant("SELECT * FROM customers")


async def test_a_statement_past_its_timeout_is_cancelled_and_the_run_goes_on(env: Env) -> None:
    out = await env.output("""
    async function handler(input, ctx) {
      let said = null;
      try {
        await ctx.db.query('SELECT count(*) AS n FROM generate_series(1, 1000000000000) g');
      } catch (e) { said = e.message; }
      const after = await ctx.db.queryOne('SELECT count(*) AS n FROM orders');
      return { said, after };
    }""")
    assert out["said"] == "ctx.db: the statement was cancelled: it ran past its timeout"
    assert out["after"] == {"n": 2}


async def test_transactions_commit_roll_back_and_end_with_the_execution(env: Env) -> None:
    out = await env.output("""
    async function handler(input, ctx) {
      const kept = await ctx.db.transaction(async (tx) => {
        await tx.execute('UPDATE orders SET note = $1 WHERE note = $2', ['kept', 'a1']);
        return (await tx.queryOne('SELECT note FROM orders WHERE note = $1', ['kept'])).note;
      });
      let thrown = null;
      try {
        await ctx.db.transaction(async (tx) => {
          await tx.execute('UPDATE orders SET note = $1 WHERE note = $2', ['lost', 'a2']);
          throw new Error('changed my mind');
        });
      } catch (e) { thrown = e.message; }
      return { kept, thrown };
    }""")
    assert out == {"kept": "kept", "thrown": "changed my mind"}
    notes = {r["note"] for r in await env.conn.fetch("SELECT note FROM orders")}
    assert "kept" in notes and "a2" in notes and "lost" not in notes

    # left open when the execution times out: rolled back, the connection given back
    result = await env.run("""
    async function handler(input, ctx) {
      await ctx.db.transaction(async (tx) => {
        await tx.execute('UPDATE orders SET note = $1', ['abandoned']);
        await new Promise(() => {});
      });
    }""", limits=Limits(max_execution_time_ms=500, max_api_calls_per_minute=1000))
    assert result.status == "timeout"

    async def released() -> bool:
        return not await env.conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND state LIKE 'idle in transaction%'")

    await eventually(released, timeout=10, what="the open transaction rolled back")
    assert await env.conn.fetchval("SELECT count(*) FROM orders WHERE note = 'abandoned'") == 0


async def test_results_are_capped(env: Env) -> None:
    out = await env.output("""
    async function handler(input, ctx) {
      const said = [];
      for (const sql of ["SELECT g FROM generate_series(1, 1001) g",
                         "SELECT repeat('x', 600000) AS a, repeat('y', 600000) AS b"]) {
        try { await ctx.db.query(sql); said.push('ran'); } catch (e) { said.push(e.message); }
      }
      said.push((await ctx.db.query('SELECT g FROM generate_series(1, 1000) g')).length);
      return said;
    }""")
    assert out[0] == "ctx.db: the result has more than 1000 rows (add a LIMIT)"
    assert out[1].startswith("ctx.db: the result is larger than 1048576 bytes")
    assert out[2] == 1000


CACHE_SCRIPT = """
async function handler(input, ctx) {
  const c = ctx.cache;
  if (input.op === 'set') { await c.set(input.key, input.value, input.ttl); return null; }
  if (input.op === 'get') return await c.get(input.key);
  if (input.op === 'exists') return await c.exists(input.key);
  if (input.op === 'delete') return await c.delete(input.key);
  if (input.op === 'incr') return await c.increment(input.key, input.delta);
  try { await c[input.op](...input.args); return 'ran'; } catch (e) { return e.message; }
}"""


async def test_cache_methods_scopes_and_ttl(env: Env) -> None:
    async def do(op: str, script: str | None = None, tenant: str | None = None, **kw: Any) -> Any:
        return await env.output(CACHE_SCRIPT, input={"op": op, **kw}, script=script,
                                tenant=tenant)

    other_script, other_tenant = str(uuid.uuid4()), env.b
    assert await do("set", key="k", value={"a": [1, 2]}) is None
    assert await do("get", key="k") == {"a": [1, 2]}
    assert await do("exists", key="k") is True
    assert await do("get", key="k", script=other_script) is None
    assert await do("get", key="k", tenant=other_tenant) is None
    assert await do("incr", key="n") == 1
    assert await do("incr", key="n", delta=41) == 42
    assert await do("delete", key="k") is True
    assert await do("delete", key="k") is False
    assert await do("exists", key="k") is False
    keys = [r["key"] for r in await env.conn.fetch("SELECT key FROM jsrt_cache")]
    assert keys == [f"tenant:{env.a}:script:{env.script}:n"]

    await do("set", key="t", value="soon gone", ttl=60)
    env.clock.advance(59)
    assert await do("get", key="t") == "soon gone"
    env.clock.advance(2)
    assert await do("get", key="t") is None and await do("exists", key="t") is False
    said = await env.output("""
    async function handler(input, ctx) {
      const c = ctx.cache, said = [];
      for (const f of [() => c.set('', 1), () => c.set('v', 'x'.repeat(70000)),
                       () => c.set('v', 1, -5), () => c.increment('v2', 'x')]) {
        try { await f(); said.push('ran'); } catch (e) { said.push(e.message); }
      }
      await c.set('s', 'text');
      try { await c.increment('s'); } catch (e) { said.push(e.message); }
      return said;
    }""")
    assert said == [
        "ctx.cache: a key is a non-empty string of at most 256 characters",
        "ctx.cache: the value is larger than 65536 bytes",
        "ctx.cache: ttlSeconds must be a number > 0 and <= 2592000",
        "ctx.cache.increment: delta must be a number",
        "ctx.cache.increment: the value at 's' is not a number",
    ]


async def test_cache_entries_are_bounded_per_tenant(env: Env) -> None:
    said = await env.output("""
    async function handler(input, ctx) {
      for (let i = 0; i < 50; i++) await ctx.cache.set('k' + i, i, i < 10 ? 1 : undefined);
      try { await ctx.cache.set('one-more', 1); } catch (e) { return e.message; }
      return 'ran';
    }""")
    assert said == "ctx.cache: the tenant's cache is full (50 entries)"
    env.clock.advance(5)  # ten of them expire: room again, and they are swept
    assert await env.output(
        "async function handler(i, ctx) { await ctx.cache.set('one-more', 1); return 1 }") == 1
    assert await env.conn.fetchval("SELECT count(*) FROM jsrt_cache") <= 41


async def test_increments_under_concurrency_are_exact(env: Env) -> None:
    source = """
    async function handler(input, ctx) {
      for (let i = 0; i < 5; i++) await ctx.cache.increment('hits');
      return await ctx.cache.get('hits');
    }"""
    results = await asyncio.gather(*(env.run(source) for _ in range(20)))
    assert all(r.status == "completed" for r in results), [r.error for r in results]
    assert max(r.output for r in results) == 100
    assert await env.output("async function handler(i, ctx) { return ctx.cache.get('hits') }") \
        == 100


async def test_calls_count_against_the_api_limit(env: Env) -> None:
    out = await env.output("""
    async function handler(input, ctx) {
      let done = 0;
      try {
        for (let i = 0; i < 10; i++) { await ctx.db.query('SELECT 1 AS x'); done++; }
      } catch (e) { return [done, e.name, e.message]; }
      return [done];
    }""", limits=Limits(max_api_calls_per_minute=3))
    assert out == [3, "RateLimitError", "rate limit exceeded: max_api_calls_per_minute=3"]


def test_jsrt_db_expose_list_hide(db_url: str) -> None:
    asyncio.run(_make_tables(db_url))
    ok = run_cli(db_url, "db", "expose", "orders", "--write")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == ("exposed public.orders: scripts may read and write their own "
                                 "tenant's rows (all columns)")
    cols = run_cli(db_url, "db", "expose", "customers", "--columns", "id,name")
    assert cols.returncode == 0 and "(tenant_id, id, name)" in cols.stdout
    no = run_cli(db_url, "db", "expose", "secrets_plain")
    assert no.returncode == 2
    assert no.stderr.strip() == ("jsrt: error: jsrt_expose_table: secrets_plain has no "
                                 "tenant_id uuid column")
    own = run_cli(db_url, "db", "expose", "scripts")
    assert own.returncode == 2 and "cannot be exposed to scripts" in own.stderr
    missing = run_cli(db_url, "db", "expose", "nosuch")
    assert missing.returncode == 2 and "no table named 'nosuch'" in missing.stderr
    listed = run_cli(db_url, "db", "list", "--json")
    rows = json.loads(listed.stdout)
    assert [(r["table"], r["writable"], r["columns"]) for r in rows] == [
        ("public.customers", False, ["tenant_id", "id", "name"]), ("public.orders", True, None)]
    hidden = run_cli(db_url, "db", "hide", "orders")
    assert hidden.returncode == 0 and "hidden orders" in hidden.stdout
    again = run_cli(db_url, "db", "hide", "orders")
    assert again.returncode == 2 and "'orders' is not exposed" in again.stderr


async def _make_tables(db_url: str) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute(SCHEMA + "CREATE TABLE secrets_plain (id INT, secret TEXT);")
    finally:
        await conn.close()


async def test_the_iota_globals_sdk_db_and_sdk_cache_are_ctx_db_and_ctx_cache(env: Env) -> None:
    """A script written to the IOTA SDK's spec (globals only) reads and writes its tenant's
    rows and cache entries exactly as through ctx, with the same isolation and counts."""
    result = await env.run("""
    async function main() {
      const rows = await sdk.db.query('SELECT note FROM orders ORDER BY id');
      const one = await sdk.db.queryOne('SELECT name FROM customers WHERE id = $1', [2]);
      const n = await sdk.db.execute('UPDATE orders SET note = note || $1', ['?']);
      const kept = await sdk.db.transaction(
        async (tx) => (await tx.query('SELECT count(*) AS c FROM orders'))[0].c);
      await sdk.cache.set('hits', 1, 60);
      await sdk.cache.increment('hits', 2);
      const viaCtx = await context.cache.get('hits');
      return { rows, one, n, kept, hits: await sdk.cache.get('hits'), viaCtx,
               exists: await sdk.cache.exists('hits'), deleted: await sdk.cache.delete('hits') };
    }""")
    assert result.status == "completed", (result.error, result.stack)
    out = result.output
    assert out["rows"] == [{"note": "a1"}, {"note": "a2"}]
    assert out["one"] is None  # customer 2 is tenant B's
    assert (out["n"], out["kept"], out["hits"], out["viaCtx"], out["exists"]) == (2, 2, 3, 3, True)
    assert result.metrics["database_query_count"] == 4
    assert await env.conn.fetchval("SELECT count(*) FROM orders WHERE note LIKE '%?'") == 2


HOLD = """async function handler(input, ctx) {
  await ctx.db.transaction(async (tx) => {
    await tx.query('SELECT id FROM orders LIMIT 1');
    await new Promise(() => {});  // held until the execution's time is up
  });
}"""
ONE = """async function handler(input, ctx) {
  try { return (await ctx.db.query('SELECT count(*) AS n FROM orders'))[0].n; }
  catch (e) { return 'refused: ' + e.message; }
}"""


async def test_one_tenants_open_transactions_never_take_the_daemons_or_others_connections(
        conn: asyncpg.Connection, db_url: str) -> None:
    # ctx.db has a pool of its own (3 here) and one tenant holds at most 2 of it: tenant A's
    # hanging transactions leave the daemon's pool alone and a connection for tenant B.
    from consumer.settings import Settings

    await conn.execute(SCHEMA)
    a, b, c = (str(uuid.uuid4()) for _ in range(3))
    await conn.execute("INSERT INTO orders (tenant_id, total) VALUES ($1, 1), ($2, 2), ($2, 3)",
                       uuid.UUID(a), uuid.UUID(b))
    settings = Settings(database_url=db_url, data_pool_size=3, data_tenant_connections=2)
    store = await Store.open(db_url, min_size=1, max_size=2, settings=settings)
    await store.tenant_data.expose("orders", True, None)
    store.tenant_data.max_statement_s = 0.5
    data = ScriptData(store.tenant_data, PgCache(store.db, FakeClock(), max_entries=50))
    held = Limits(max_execution_time_ms=6_000, max_api_calls_per_minute=10_000)
    try:
        async with Executor(workers=1, data=data) as executor:
            env = Env(conn, store, executor, FakeClock(), a, b, str(uuid.uuid4()))

            async def in_transaction() -> int:
                return int(await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND application_name = 'jsrt-data' AND state LIKE 'idle in transaction%'"))

            holders = [asyncio.ensure_future(env.run(HOLD, tenant=a, limits=held))
                       for _ in range(3)]
            await eventually(lambda: _at_least(in_transaction, 2), timeout=10,
                             what="tenant A holding two transactions")
            # A's third transaction waits for its share, then is refused in words
            assert await env.output(ONE, tenant=a) == (
                "refused: ctx.db: this tenant already holds 2 database connections (open "
                "transactions and running statements); none came free in time")
            # B still has a connection, and the daemon's own pool is untouched
            assert await env.output(ONE, tenant=b) == 2
            await store.ping()
            assert await in_transaction() == 2  # the third holder never got one either
            # a third tenant holding the pool's last connection: B now waits, then is told
            third = asyncio.ensure_future(env.run(HOLD, tenant=c, limits=held))
            await eventually(lambda: _at_least(in_transaction, 3), timeout=10,
                             what="tenant C holding the last connection")
            assert (await env.output(ONE, tenant=b)).startswith(
                "refused: ctx.db: no database connection came free in time")
            await store.ping()
            results = await asyncio.gather(*holders)
            # two held theirs to the end; the third was refused its transaction, and failed
            assert sorted(r.status for r in results) == ["failed", "timeout", "timeout"]
            assert "already holds 2 database connections" in next(
                r.error for r in results if r.status == "failed")
            assert (await third).status == "timeout"
            # every connection came back: A has its share again
            assert await env.output(ONE, tenant=a) == 1
    finally:
        await store.close()


async def _at_least(count: Any, n: int) -> bool:
    return bool(await count() >= n)
