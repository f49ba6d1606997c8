"""Every rule of the seed's seven tables, exercised on a real PostgreSQL: each CHECK, UNIQUE,
NOT NULL and FOREIGN KEY rejects a violating row, each ON DELETE does what it says, the
defaults are the seed's, and the indexes the seed promises exist and serve its queries.

Nothing here needs a commit (no NOTIFY), so the module shares one freshly migrated database
and every test runs inside a transaction that is rolled back; a violation is provoked inside
a savepoint so the test can go on."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from support.databases import create_database, drop_database, with_database

pytestmark = pytest.mark.asyncio(loop_scope="module")

SEED_TABLES = (
    "scripts",
    "script_executions",
    "script_versions",
    "script_event_subscriptions",
    "script_scheduled_jobs",
    "script_http_endpoints",
    "script_event_dead_letters",
)
SCRIPT_CHILDREN = SEED_TABLES[1:]
FAR_FUTURE = datetime(2999, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class World:
    tenant: uuid.UUID
    other_tenant: uuid.UUID
    org: uuid.UUID
    user: int
    script: uuid.UUID  # a 'oneoff' script of `tenant`: the sync triggers leave it alone
    execution: uuid.UUID


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_conn(pg_server: str, template_db: str) -> AsyncIterator[asyncpg.Connection]:
    name = await create_database(pg_server, template_db)
    c = await asyncpg.connect(with_database(pg_server, name))
    await c.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    yield c
    await c.close()
    await drop_database(pg_server, name)


@pytest_asyncio.fixture(loop_scope="module")
async def conn(shared_conn: asyncpg.Connection) -> AsyncIterator[asyncpg.Connection]:
    """The shared connection, inside a transaction that is rolled back after the test."""
    tx = shared_conn.transaction()
    await tx.start()
    yield shared_conn
    await tx.rollback()


async def insert(conn: asyncpg.Connection, table: str, row: dict[str, Any]) -> asyncpg.Record:
    cols = ", ".join(row)
    params = ", ".join(f"${i}" for i in range(1, len(row) + 1))
    return await conn.fetchrow(
        f"INSERT INTO {table} ({cols}) VALUES ({params}) RETURNING *", *row.values()
    )


@pytest_asyncio.fixture(loop_scope="module")
async def world(conn: asyncpg.Connection) -> World:
    tenant = await conn.fetchval("INSERT INTO tenants DEFAULT VALUES RETURNING id")
    other = await conn.fetchval("INSERT INTO tenants DEFAULT VALUES RETURNING id")
    org = await conn.fetchval(
        "INSERT INTO organizations (tenant_id) VALUES ($1) RETURNING id", tenant
    )
    user = await conn.fetchval("INSERT INTO users (tenant_id) VALUES ($1) RETURNING id", tenant)
    script = await conn.fetchval(
        "INSERT INTO scripts (tenant_id, organization_id, name, source, type, created_by) "
        "VALUES ($1, $2, 'base', 'export default () => 1', 'oneoff', $3) RETURNING id",
        tenant, org, user,
    )
    execution = await conn.fetchval(
        "INSERT INTO script_executions (script_id, tenant_id, trigger_type) "
        "VALUES ($1, $2, 'manual') RETURNING id",
        script, tenant,
    )
    return World(tenant, other, org, user, script, execution)


def valid_row(table: str, w: World) -> dict[str, Any]:
    """A row of `table` that every rule accepts (the scripts row is named 'n2')."""
    owned = {"script_id": w.script, "tenant_id": w.tenant}
    return {
        "scripts": {
            "tenant_id": w.tenant, "organization_id": w.org, "name": "n2", "source": "x",
            "type": "oneoff", "created_by": w.user,
        },
        "script_executions": {**owned, "trigger_type": "manual"},
        "script_versions": {**owned, "version_number": 99, "source": "x", "created_by": w.user},
        "script_event_subscriptions": {**owned, "event_type": "user.created"},
        "script_scheduled_jobs": {
            **owned, "cron_expression": "* * * * *", "next_run_at": FAR_FUTURE,
        },
        "script_http_endpoints": {**owned, "http_path": "/p", "http_methods": ["GET"]},
        "script_event_dead_letters": {
            **owned, "execution_id": w.execution, "event_type": "user.created",
            "event_data": {"a": 1}, "error": "boom",
        },
    }[table]


async def constraints(conn: asyncpg.Connection, contype: str) -> set[str]:
    rows = await conn.fetch(
        "SELECT conname FROM pg_constraint "
        "WHERE contype::text = $1 AND conrelid = ANY($2::regclass[])",
        contype, list(SEED_TABLES),
    )
    return {r["conname"] for r in rows}


async def count(conn: asyncpg.Connection, table: str, **where: Any) -> int:
    cond = " AND ".join(f"{k} = ${i}" for i, k in enumerate(where, 1)) or "true"
    return await conn.fetchval(f"SELECT count(*) FROM {table} WHERE {cond}", *where.values())


async def test_valid_rows_are_accepted(conn: asyncpg.Connection, world: World) -> None:
    for table in SEED_TABLES:
        await insert(conn, table, valid_row(table, world))


# ---------------------------------------------------------------- CHECK
CHECKS = [
    ("scripts_type_check", "scripts", {"type": "cron"}),
    ("scripts_status_check", "scripts", {"status": "deleted"}),
    ("scripts_cron_required", "scripts", {"type": "scheduled"}),
    ("scripts_http_path_required", "scripts", {"type": "http"}),
    ("scripts_event_types_required", "scripts", {"type": "event"}),
    ("scripts_event_types_required", "scripts", {"type": "event", "event_types": []}),
    ("scripts_event_types_required", "scripts", {"type": "event", "event_types": None}),
    ("script_executions_status_check", "script_executions", {"status": "done"}),
    ("script_executions_trigger_type_check", "script_executions", {"trigger_type": "webhook"}),
]


@pytest.mark.parametrize(("constraint", "table", "override"), CHECKS)
async def test_check_rejects(
    conn: asyncpg.Connection, world: World, constraint: str, table: str, override: dict[str, Any]
) -> None:
    with pytest.raises(asyncpg.CheckViolationError) as exc:
        async with conn.transaction():
            await insert(conn, table, {**valid_row(table, world), **override})
    assert exc.value.constraint_name == constraint


async def test_checks_are_all_covered(conn: asyncpg.Connection) -> None:
    assert await constraints(conn, "c") == {c for c, _, _ in CHECKS}


async def test_check_rejects_an_update_too(conn: asyncpg.Connection, world: World) -> None:
    with pytest.raises(asyncpg.CheckViolationError) as exc:
        async with conn.transaction():
            await conn.execute("UPDATE scripts SET type = 'event' WHERE id = $1", world.script)
    assert exc.value.constraint_name == "scripts_event_types_required"
    with pytest.raises(asyncpg.CheckViolationError) as exc:
        async with conn.transaction():
            await conn.execute("UPDATE scripts SET type = 'scheduled' WHERE id = $1", world.script)
    assert exc.value.constraint_name == "scripts_cron_required"


async def test_every_enum_value_is_accepted(conn: asyncpg.Connection, world: World) -> None:
    required = {
        "scheduled": {"cron_expression": "0 * * * *"},
        "http": {"http_path": "/h"},
        "event": {"event_types": ["user.created"]},
    }
    for t in ("scheduled", "http", "event", "oneoff", "embedded"):
        await insert(conn, "scripts", {
            **valid_row("scripts", world), "name": f"t-{t}", "type": t, **required.get(t, {}),
        })
    for s in ("draft", "active", "paused", "disabled", "archived"):
        row = {**valid_row("scripts", world), "name": f"s-{s}", "status": s}
        await insert(conn, "scripts", row)
    for s in ("pending", "running", "completed", "failed", "timeout", "cancelled"):
        for tt in ("cron", "http", "event", "manual", "api"):
            await insert(conn, "script_executions", {
                **valid_row("script_executions", world), "status": s, "trigger_type": tt,
            })


# ---------------------------------------------------------------- UNIQUE
async def test_script_name_is_unique_per_tenant(conn: asyncpg.Connection, world: World) -> None:
    with pytest.raises(asyncpg.UniqueViolationError) as exc:
        async with conn.transaction():
            await insert(conn, "scripts", {**valid_row("scripts", world), "name": "base"})
    assert exc.value.constraint_name == "scripts_name_tenant_unique"
    # the same name in another tenant is fine
    await insert(conn, "scripts", {
        **valid_row("scripts", world), "name": "base", "tenant_id": world.other_tenant,
        "organization_id": None,
    })


async def test_http_path_is_unique_per_tenant(conn: asyncpg.Connection, world: World) -> None:
    http = {**valid_row("scripts", world), "type": "http", "http_path": "/hook"}
    await insert(conn, "scripts", {**http, "name": "h1"})
    with pytest.raises(asyncpg.UniqueViolationError) as exc:
        async with conn.transaction():
            await insert(conn, "scripts", {**http, "name": "h2"})
    assert exc.value.constraint_name == "scripts_http_path_tenant_unique"
    await insert(conn, "scripts", {
        **http, "name": "h1", "tenant_id": world.other_tenant, "organization_id": None,
    })
    # scripts without a path do not collide
    await insert(conn, "scripts", {**valid_row("scripts", world), "name": "o1"})
    await insert(conn, "scripts", {**valid_row("scripts", world), "name": "o2"})


UNIQUES = [
    # (constraint, table, the row inserted twice)
    ("script_versions_unique", "script_versions", {"version_number": 1}),
    ("script_event_subscriptions_unique", "script_event_subscriptions", {}),
    ("script_scheduled_jobs_script_id_key", "script_scheduled_jobs", {}),
    ("script_http_endpoints_script_id_key", "script_http_endpoints", {}),
]


@pytest.mark.parametrize(("constraint", "table", "override"), UNIQUES)
async def test_unique_rejects(
    conn: asyncpg.Connection, world: World, constraint: str, table: str, override: dict[str, Any]
) -> None:
    row = {**valid_row(table, world), **override}
    if table != "script_versions":  # version 1 exists already: the trigger wrote it
        await insert(conn, table, row)
    with pytest.raises(asyncpg.UniqueViolationError) as exc:
        async with conn.transaction():
            await insert(conn, table, row)
    assert exc.value.constraint_name == constraint


async def test_http_endpoint_path_is_unique_per_tenant(
    conn: asyncpg.Connection, world: World
) -> None:
    await insert(conn, "script_http_endpoints", valid_row("script_http_endpoints", world))
    other_script = (await insert(conn, "scripts", valid_row("scripts", world)))["id"]
    row = {**valid_row("script_http_endpoints", world), "script_id": other_script}
    with pytest.raises(asyncpg.UniqueViolationError) as exc:
        async with conn.transaction():
            await insert(conn, "script_http_endpoints", row)
    assert exc.value.constraint_name == "script_http_endpoints_path_unique"
    await insert(conn, "script_http_endpoints", {**row, "http_path": "/other"})


async def test_uniques_are_all_covered(conn: asyncpg.Connection) -> None:
    assert await constraints(conn, "u") == {c for c, _, _ in UNIQUES} | {
        "scripts_name_tenant_unique",
        "scripts_http_path_tenant_unique",
        "script_http_endpoints_path_unique",
    }


# ---------------------------------------------------------------- NOT NULL
NOT_NULL = {
    "scripts": (
        "id", "tenant_id", "name", "source", "type", "status", "resource_limits",
        "created_at", "updated_at",
    ),
    "script_executions": ("id", "script_id", "tenant_id", "status", "trigger_type", "started_at"),
    "script_versions": ("id", "script_id", "tenant_id", "version_number", "source", "created_at"),
    "script_event_subscriptions": (
        "id", "script_id", "tenant_id", "event_type", "is_active", "created_at",
    ),
    "script_scheduled_jobs": (
        "id", "script_id", "tenant_id", "cron_expression", "next_run_at", "is_running",
        "created_at", "updated_at",
    ),
    "script_http_endpoints": (
        "id", "script_id", "tenant_id", "http_path", "http_methods", "is_active", "created_at",
    ),
    "script_event_dead_letters": (
        "id", "script_id", "tenant_id", "event_type", "event_data", "error", "retry_count",
        "created_at",
    ),
}


@pytest.mark.parametrize(
    ("table", "column"), [(t, c) for t, cols in NOT_NULL.items() for c in cols]
)
async def test_not_null_rejects(
    conn: asyncpg.Connection, world: World, table: str, column: str
) -> None:
    with pytest.raises(asyncpg.NotNullViolationError) as exc:
        async with conn.transaction():
            await insert(conn, table, {**valid_row(table, world), column: None})
    assert exc.value.column_name == column


async def test_not_nulls_are_all_covered(conn: asyncpg.Connection) -> None:
    rows = await conn.fetch(
        "SELECT attrelid::regclass::text AS t, attname FROM pg_attribute "
        "WHERE attrelid = ANY($1::regclass[]) AND attnum > 0 AND attnotnull",
        list(SEED_TABLES),
    )
    assert {(r["t"], r["attname"]) for r in rows} == {
        (t, c) for t, cols in NOT_NULL.items() for c in cols
    }


# ---------------------------------------------------------------- FOREIGN KEY
MISSING_UUID = uuid.UUID(int=1)
FKS = [
    ("scripts", "tenant_id", "scripts_tenant_id_fkey"),
    ("scripts", "organization_id", "scripts_organization_id_fkey"),
    ("scripts", "created_by", "scripts_created_by_fkey"),
    ("script_versions", "created_by", "script_versions_created_by_fkey"),
    ("script_event_dead_letters", "execution_id", "script_event_dead_letters_execution_id_fkey"),
] + [
    (t, c, f"{t}_{c}_fkey") for t in SCRIPT_CHILDREN for c in ("script_id", "tenant_id")
]


@pytest.mark.parametrize(("table", "column", "constraint"), FKS)
async def test_foreign_key_rejects(
    conn: asyncpg.Connection, world: World, table: str, column: str, constraint: str
) -> None:
    missing = 987654 if column == "created_by" else MISSING_UUID
    with pytest.raises(asyncpg.ForeignKeyViolationError) as exc:
        async with conn.transaction():
            await insert(conn, table, {**valid_row(table, world), column: missing})
    assert exc.value.constraint_name == constraint


async def test_foreign_keys_are_all_covered(conn: asyncpg.Connection) -> None:
    assert await constraints(conn, "f") == {c for _, _, c in FKS}
    # "All tables include tenant_id with foreign key to tenants"
    rows = await conn.fetch(
        "SELECT conrelid::regclass::text AS t FROM pg_constraint WHERE contype = 'f' "
        "AND confrelid = 'tenants'::regclass AND conrelid = ANY($1::regclass[]) "
        "AND pg_get_constraintdef(oid) LIKE 'FOREIGN KEY (tenant_id)%ON DELETE CASCADE'",
        list(SEED_TABLES),
    )
    assert sorted(r["t"] for r in rows) == sorted(SEED_TABLES)


# ---------------------------------------------------------------- ON DELETE
async def fill(conn: asyncpg.Connection, w: World) -> None:
    """One row in every script_* table for world.script (version 1 exists already)."""
    for table in SCRIPT_CHILDREN:
        if table != "script_versions":
            await insert(conn, table, valid_row(table, w))


async def children(conn: asyncpg.Connection, script: uuid.UUID) -> dict[str, int]:
    return {t: await count(conn, t, script_id=script) for t in SCRIPT_CHILDREN}


async def test_deleting_a_tenant_removes_its_scripts_and_all_their_rows(
    conn: asyncpg.Connection, world: World
) -> None:
    await fill(conn, world)
    other = await insert(conn, "scripts", {
        **valid_row("scripts", world), "tenant_id": world.other_tenant, "organization_id": None,
    })
    assert set((await children(conn, world.script)).values()) == {1, 2}  # executions: 2

    await conn.execute("DELETE FROM tenants WHERE id = $1", world.tenant)
    assert await count(conn, "scripts", tenant_id=world.tenant) == 0
    for table in SEED_TABLES:
        assert await count(conn, table, tenant_id=world.tenant) == 0, table
    # the other tenant is untouched
    assert await count(conn, "scripts", id=other["id"]) == 1
    assert await count(conn, "script_versions", script_id=other["id"]) == 1


async def test_deleting_a_script_removes_all_its_rows(
    conn: asyncpg.Connection, world: World
) -> None:
    await fill(conn, world)
    keep = await insert(conn, "scripts", valid_row("scripts", world))
    await conn.execute("DELETE FROM scripts WHERE id = $1", world.script)
    assert await children(conn, world.script) == dict.fromkeys(SCRIPT_CHILDREN, 0)
    assert await count(conn, "script_versions", script_id=keep["id"]) == 1


async def test_deleting_an_organization_removes_its_scripts(
    conn: asyncpg.Connection, world: World
) -> None:
    await conn.execute("DELETE FROM organizations WHERE id = $1", world.org)
    assert await count(conn, "scripts", id=world.script) == 0


async def test_deleting_an_execution_removes_its_dead_letters(
    conn: asyncpg.Connection, world: World
) -> None:
    await insert(conn, "script_event_dead_letters", valid_row("script_event_dead_letters", world))
    orphan = {**valid_row("script_event_dead_letters", world), "execution_id": None}
    await insert(conn, "script_event_dead_letters", orphan)
    await conn.execute("DELETE FROM script_executions WHERE id = $1", world.execution)
    assert await count(conn, "script_event_dead_letters", script_id=world.script) == 1
    assert await count(conn, "scripts", id=world.script) == 1


async def test_deleting_a_user_sets_created_by_null(conn: asyncpg.Connection, world: World) -> None:
    await conn.execute("UPDATE scripts SET source = 'v2' WHERE id = $1", world.script)
    assert await count(conn, "script_versions", script_id=world.script, created_by=world.user) == 2
    await conn.execute("DELETE FROM users WHERE id = $1", world.user)
    assert await conn.fetchval("SELECT created_by FROM scripts WHERE id = $1", world.script) is None
    rows = await conn.fetch(
        "SELECT created_by FROM script_versions WHERE script_id = $1", world.script
    )
    assert [r["created_by"] for r in rows] == [None, None]


# ---------------------------------------------------------------- defaults
SEED_RESOURCE_LIMITS = {
    "max_execution_time_ms": 30000,
    "max_memory_bytes": 67108864,
    "max_concurrent_runs": 5,
    "max_api_calls_per_minute": 60,
    "max_output_size_bytes": 1048576,
}
SEED_METRICS = {
    "duration_ms": 0, "memory_used_bytes": 0, "api_call_count": 0, "database_query_count": 0,
}


async def test_defaults_are_the_seeds(conn: asyncpg.Connection, world: World) -> None:
    now = await conn.fetchval("SELECT now()")
    rows = {t: await insert(conn, t, valid_row(t, world)) for t in SEED_TABLES}

    s = rows["scripts"]
    assert isinstance(s["id"], uuid.UUID)
    assert s["status"] == "draft"
    assert s["resource_limits"] == SEED_RESOURCE_LIMITS
    assert (s["metadata"], s["tags"], s["http_methods"], s["event_types"]) == ({}, [], [], [])
    assert s["created_at"] == s["updated_at"] == now

    e = rows["script_executions"]
    assert (e["status"], e["trigger_data"], e["input"], e["output"]) == ("pending", {}, {}, None)
    assert e["metrics"] == SEED_METRICS
    assert e["started_at"] == now and e["completed_at"] is None

    assert rows["script_versions"]["created_at"] == now
    assert rows["script_event_subscriptions"]["is_active"] is True
    j = rows["script_scheduled_jobs"]
    assert (j["timezone"], j["is_running"], j["last_run_at"]) == ("UTC", False, None)
    assert j["created_at"] == j["updated_at"] == now
    assert rows["script_http_endpoints"]["is_active"] is True
    d = rows["script_event_dead_letters"]
    assert (d["retry_count"], d["last_retry_at"]) == (0, None)
    for t in SEED_TABLES:
        assert isinstance(rows[t]["id"], uuid.UUID)
        created = "started_at" if t == "script_executions" else "created_at"
        assert rows[t][created] == now, t


async def test_jsonb_and_array_columns_have_the_seeds_types(conn: asyncpg.Connection) -> None:
    rows = await conn.fetch(
        "SELECT table_name || '.' || column_name AS c, udt_name FROM information_schema.columns "
        "WHERE table_schema = 'public' AND table_name = ANY($1::text[]) "
        "AND udt_name IN ('jsonb', '_text')",
        list(SEED_TABLES),
    )
    assert {r["c"]: r["udt_name"] for r in rows} == {
        "scripts.resource_limits": "jsonb",
        "scripts.metadata": "jsonb",
        "scripts.http_methods": "_text",
        "scripts.event_types": "_text",
        "scripts.tags": "_text",
        "script_executions.trigger_data": "jsonb",
        "script_executions.input": "jsonb",
        "script_executions.output": "jsonb",
        "script_executions.metrics": "jsonb",
        "script_http_endpoints.http_methods": "_text",
        "script_event_dead_letters.event_data": "jsonb",
    }


# ---------------------------------------------------------------- indexes
async def index_defs(conn: asyncpg.Connection) -> dict[str, str]:
    rows = await conn.fetch(
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = ANY($1::text[])",
        list(SEED_TABLES),
    )
    return {r["indexname"]: r["indexdef"] for r in rows}


async def test_every_table_has_a_tenant_leading_index(conn: asyncpg.Connection) -> None:
    rows = await conn.fetch(
        "SELECT DISTINCT indrelid::regclass::text AS t FROM pg_index x "
        "JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = x.indkey[0] "
        "WHERE x.indrelid = ANY($1::regclass[]) AND a.attname = 'tenant_id'",
        list(SEED_TABLES),
    )
    assert sorted(r["t"] for r in rows) == sorted(SEED_TABLES)


async def test_gin_partial_and_fulltext_indexes_exist(conn: asyncpg.Connection) -> None:
    defs = await index_defs(conn)
    gin = {n for n, d in defs.items() if " USING gin " in d}
    assert gin == {
        "idx_scripts_event_types", "idx_scripts_metadata", "idx_scripts_tags",
        "idx_scripts_fulltext",
    }
    partial = {n: d.split(" WHERE ", 1)[1] for n, d in defs.items() if " WHERE " in d}
    assert partial == {
        "idx_scripts_http_path": "(http_path IS NOT NULL)",
        "idx_scripts_event_types": "(array_length(event_types, 1) > 0)",
        "idx_scripts_cron_expression": "(cron_expression IS NOT NULL)",
        "idx_executions_pending": "((status)::text = 'pending'::text)",
        "idx_executions_running": "((status)::text = 'running'::text)",
        "idx_event_subs_tenant_event": "(is_active = true)",
        "idx_scheduled_jobs_next_run": "(is_running = false)",
        "idx_http_endpoints_path": "(is_active = true)",
        "idx_dead_letters_retry_count": "(retry_count < 3)",
    }
    assert "to_tsvector('english'::regconfig" in defs["idx_scripts_fulltext"]
    for composite, cols in {
        "idx_scripts_tenant_status": "(tenant_id, status)",
        "idx_scripts_tenant_type_status": "(tenant_id, type, status)",
        "idx_executions_tenant_script": "(tenant_id, script_id)",
        "idx_executions_tenant_started_at": "(tenant_id, started_at DESC)",
    }.items():
        assert defs[composite].endswith(cols), composite


async def plan(conn: asyncpg.Connection, sql: str, *args: Any) -> str:
    rows = await conn.fetch("EXPLAIN " + sql, *args)
    return "\n".join(r[0] for r in rows)


@pytest_asyncio.fixture(loop_scope="module")
async def planned(conn: asyncpg.Connection, world: World) -> World:
    """A few rows of each lookup shape, analysed, and sequential scans off."""
    for i in range(30):
        kind = ("scheduled", "http", "event")[i % 3]
        script = await conn.fetchval(
            "INSERT INTO scripts (tenant_id, name, source, type, status, cron_expression, "
            "http_path, event_types, description, metadata, tags) "
            "VALUES ($1, $2, 'x', $3, 'active', $4, $5, $6, 'nightly report', "
            "jsonb_build_object('team', $7::text), ARRAY[$7::text]) RETURNING id",
            world.tenant, f"s{i}", kind, f"{i} * * * *", f"/p{i}", [f"e{i}"], f"s{i}",
        )
        await conn.execute(
            "INSERT INTO script_executions (script_id, tenant_id, trigger_type) "
            "SELECT $1, $2, 'manual' FROM generate_series(1, 5)",
            script, world.tenant,
        )
    await conn.execute("ANALYZE")
    await conn.execute("SET LOCAL enable_seqscan = off")
    return world


QUERY_PLANS = [
    (
        "idx_scripts_tenant_type_status",
        "SELECT id, name, source, resource_limits, cron_expression FROM scripts "
        "WHERE tenant_id = $1 AND type = 'scheduled' AND status = 'active'",
    ),
    (
        "idx_http_endpoints_path",
        "SELECT s.id, s.name, s.source, s.resource_limits FROM scripts s "
        "JOIN script_http_endpoints e ON e.script_id = s.id "
        "WHERE e.tenant_id = $1 AND e.http_path = '/p1' AND e.is_active = true "
        "AND s.status = 'active'",
    ),
    (
        "idx_event_subs_tenant_event",
        "SELECT s.id, s.name, s.source, s.resource_limits FROM scripts s "
        "JOIN script_event_subscriptions sub ON sub.script_id = s.id "
        "WHERE sub.tenant_id = $1 AND sub.event_type = 'e1' AND sub.is_active = true "
        "AND s.status = 'active'",
    ),
    (
        "idx_executions_tenant_started_at",
        "SELECT id, script_id, status, trigger_type, started_at, completed_at, error "
        "FROM script_executions WHERE tenant_id = $1 ORDER BY started_at DESC LIMIT 20 OFFSET 0",
    ),
]


@pytest.mark.parametrize(("index", "sql"), QUERY_PLANS, ids=[i for i, _ in QUERY_PLANS])
async def test_seed_queries_use_their_index(
    conn: asyncpg.Connection, planned: World, index: str, sql: str
) -> None:
    assert index in await plan(conn, sql, planned.tenant)


GIN_PLANS = [
    ("idx_scripts_event_types",
     "SELECT id FROM scripts "
     "WHERE event_types @> ARRAY['e1'] AND array_length(event_types, 1) > 0"),
    ("idx_scripts_metadata", """SELECT id FROM scripts WHERE metadata @> '{"team": "s1"}'"""),
    ("idx_scripts_tags", "SELECT id FROM scripts WHERE tags @> ARRAY['s1']"),
    ("idx_scripts_fulltext",
     "SELECT id FROM scripts WHERE to_tsvector('english', coalesce(name, '') || ' ' || "
     "coalesce(description, '')) @@ plainto_tsquery('english', 'report')"),
]


@pytest.mark.parametrize(("index", "sql"), GIN_PLANS, ids=[i for i, _ in GIN_PLANS])
async def test_gin_indexes_serve_their_queries(
    conn: asyncpg.Connection, planned: World, index: str, sql: str
) -> None:
    assert index in await plan(conn, sql)
