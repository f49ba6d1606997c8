"""Migrations against a real PostgreSQL: reversibility, the migrated tables compared with the
seed document's own DDL, an existing IOTA SDK database, `down`/`status` step by step,
concurrent runs, triggers.sql re-application and the gorp_migrations bookkeeping."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from catalog import diff, snapshot_schema, snapshot_tables
from support.databases import create_database, drop_database, with_database

from consumer.migrate import Migrator, load, parse, routines, routines_digest
from consumer.settings import REPO_ROOT

SCHEMA_DIR = REPO_ROOT / "schema"
TRIGGERS = REPO_ROOT / "triggers.sql"
SEED = REPO_ROOT / "tests" / "fixtures" / "seed_schema.md"
JSRT = Path(sys.executable).parent / "jsrt"  # the console script of this venv

SEED_TABLES = (
    "scripts",
    "script_executions",
    "script_versions",
    "script_event_subscriptions",
    "script_scheduled_jobs",
    "script_http_endpoints",
    "script_event_dead_letters",
)
MIGRATION_IDS = [m.id for m in load(SCHEMA_DIR)]
BASE_MIGRATION = next(i for i in MIGRATION_IDS if i.endswith("_create_base_tables.sql"))
SEED_MIGRATION = next(i for i in MIGRATION_IDS if i.endswith("_create_jsruntime_tables.sql"))
_SQL_BLOCK = re.compile(r"```sql\n(.*?)```", re.DOTALL)


# ---------------------------------------------------------------- the seed document's DDL
def _seed_section(title: str, next_title: str) -> str:
    text = SEED.read_text()
    start = text.index(title)
    return text[start : text.index(next_title, start)]


def seed_up_migration() -> str:
    """The seed's "Up Migration" block, without sql-migrate directives."""
    block = _SQL_BLOCK.findall(_seed_section("### Up Migration", "## Performance"))[0]
    up = block[block.index("-- +migrate Up") : block.index("-- +migrate Down")]
    return "\n".join(line for line in up.splitlines() if not line.startswith("-- +migrate"))


def seed_table_sections() -> list[str]:
    """The seed's per-table ("## Tables") blocks, in document order."""
    return _SQL_BLOCK.findall(_seed_section("## Tables", "## Migrations"))


def seed_comments() -> str:
    return "\n".join(
        line for block in seed_table_sections() for line in block.splitlines()
        if line.startswith("COMMENT ON ")
    )


def base_tables_up() -> str:
    """The Up section of our first migration (minimal tenants, organizations, users)."""
    return parse(BASE_MIGRATION, (SCHEMA_DIR / BASE_MIGRATION).read_text()).up


# ---------------------------------------------------------------- helpers
@pytest.fixture
async def empty_conn(empty_db_url: str) -> AsyncIterator[asyncpg.Connection]:
    c = await asyncpg.connect(empty_db_url)
    yield c
    await c.close()


def migrator(conn: asyncpg.Connection) -> Migrator:
    return Migrator(conn, SCHEMA_DIR, TRIGGERS)


async def public_tables(conn: asyncpg.Connection) -> set[str]:
    rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    return {r["tablename"] for r in rows}


async def applied(conn: asyncpg.Connection) -> list[str]:
    return [r["id"] for r in await conn.fetch("SELECT id FROM gorp_migrations ORDER BY id")]


async def assert_status(m: Migrator, applied_ids: list[str]) -> None:
    status = await m.status()
    assert [s.id for s in status] == MIGRATION_IDS
    assert [s.id for s in status if s.applied_at is not None] == applied_ids


# ---------------------------------------------------------------- file format
def test_migration_files_follow_sql_migrate_conventions() -> None:
    assert sorted(MIGRATION_IDS) == MIGRATION_IDS
    for path in sorted(SCHEMA_DIR.glob("*.sql")):
        assert re.fullmatch(r"\d{14}_[a-z0-9_]+\.sql", path.name), path.name
        text = path.read_text()
        directives = re.findall(r"^-- \+migrate (\w+)", text, re.MULTILINE)
        assert directives.count("Up") == 1 and directives.count("Down") == 1, path.name
        assert directives.index("Up") < directives.index("Down"), path.name
        assert directives.count("StatementBegin") == directives.count("StatementEnd"), path.name
        # PL/pgSQL bodies (semicolons inside $$) must sit inside StatementBegin/End.
        if "$$" in text:
            assert "StatementBegin" in directives, path.name


def test_seed_down_drops_tables_in_reverse_dependency_order() -> None:
    m = parse(SEED_MIGRATION, (SCHEMA_DIR / SEED_MIGRATION).read_text())
    created = re.findall(r"CREATE TABLE (\w+)", m.up)
    dropped = re.findall(r"DROP TABLE IF EXISTS (\w+)", m.down)
    assert created == list(SEED_TABLES)
    assert dropped == list(reversed(created))


def test_seed_document_blocks_are_parsed() -> None:
    assert len(re.findall(r"CREATE TABLE", seed_up_migration())) == 7
    assert len(seed_table_sections()) == 7
    assert len(seed_comments().splitlines()) == 28


# ---------------------------------------------------------------- reversibility
async def test_up_down_up_leaves_an_identical_catalog(empty_conn: asyncpg.Connection) -> None:
    m = migrator(empty_conn)
    assert await m.up() == MIGRATION_IDS
    first = await snapshot_schema(empty_conn)
    assert set(SEED_TABLES) <= set(first["relation"])
    assert any(name.startswith("jsrt_publish(") for name in first["function"])
    assert {"scripts.jsrt_scripts_sync", "scripts.jsrt_scripts_version"} <= set(first["trigger"])

    assert await m.down(all_=True) == list(reversed(MIGRATION_IDS))
    assert await m.up() == MIGRATION_IDS
    assert diff(first, await snapshot_schema(empty_conn)) == []


async def test_down_all_leaves_only_the_bookkeeping(empty_conn: asyncpg.Connection) -> None:
    m = migrator(empty_conn)
    await m.up()
    await m.down(all_=True)
    assert await public_tables(empty_conn) == {"gorp_migrations", "jsrt_schema_state"}
    functions = await empty_conn.fetch(
        "SELECT p.oid::regprocedure::text AS f FROM pg_proc p "
        "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public'"
    )
    assert [r["f"] for r in functions] == []
    assert await applied(empty_conn) == []


# ---------------------------------------------------------------- the seed, verbatim
@pytest.mark.parametrize("rendering", ["up_migration", "table_sections"])
async def test_migrated_tables_equal_the_seed(
    pg_server: str, conn: asyncpg.Connection, rendering: str
) -> None:
    name = await create_database(pg_server)
    try:
        seed = await asyncpg.connect(with_database(pg_server, name))
        try:
            await seed.execute(base_tables_up())
            if rendering == "up_migration":
                await seed.execute(seed_up_migration())
                await seed.execute(seed_comments())
            else:
                for block in seed_table_sections():
                    await seed.execute(block)
            expected = await snapshot_tables(seed, SEED_TABLES, triggers=False)
        finally:
            await seed.close()
    finally:
        await drop_database(pg_server, name)

    actual = await snapshot_tables(conn, SEED_TABLES, triggers=False)
    assert diff(expected, actual) == []
    # a sanity check that the comparison has teeth
    assert len(actual["comment"]) == 28
    assert len(actual["index"]) == 7 + 7 + 32  # primary keys, UNIQUEs, CREATE INDEX


# ---------------------------------------------------------------- inside an IOTA SDK database
IOTA_TABLES = """
CREATE TABLE tenants (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    name VARCHAR(255) NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);
CREATE TABLE users (
    id BIGSERIAL PRIMARY KEY,
    tenant_id UUID NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    email VARCHAR(255) NOT NULL UNIQUE
);
INSERT INTO tenants (id, name) VALUES ('00000000-0000-0000-0000-00000000000a', 'acme');
INSERT INTO users (tenant_id, email) VALUES ('00000000-0000-0000-0000-00000000000a', 'a@acme.io');
"""


async def test_base_migration_creates_only_what_is_missing(empty_conn: asyncpg.Connection) -> None:
    await empty_conn.execute(IOTA_TABLES)
    host_before = await snapshot_tables(empty_conn, ["tenants", "users"])
    m = migrator(empty_conn)

    await m.up()
    created = await empty_conn.fetch("SELECT table_name FROM jsrt_created_tables")
    assert [r["table_name"] for r in created] == ["organizations"]
    assert diff(host_before, await snapshot_tables(empty_conn, ["tenants", "users"])) == []
    # the seed's tables work against the host's tables (users.id is bigint there)
    user_id = await empty_conn.fetchval("SELECT id FROM users")
    await empty_conn.execute(
        "INSERT INTO scripts (tenant_id, name, source, type, created_by) "
        "VALUES ('00000000-0000-0000-0000-00000000000a', 's', 'x', 'oneoff', $1)",
        user_id,
    )

    await m.down(all_=True)
    assert await public_tables(empty_conn) == {
        "tenants", "users", "gorp_migrations", "jsrt_schema_state",
    }
    assert diff(host_before, await snapshot_tables(empty_conn, ["tenants", "users"])) == []
    assert await empty_conn.fetchval("SELECT count(*) FROM users") == 1
    assert await empty_conn.fetchval("SELECT count(*) FROM tenants") == 1


async def test_base_migration_standalone_creates_and_drops_all_three(
    empty_conn: asyncpg.Connection,
) -> None:
    m = migrator(empty_conn)
    await m.up()
    created = await empty_conn.fetch("SELECT table_name FROM jsrt_created_tables ORDER BY 1")
    assert [r["table_name"] for r in created] == ["organizations", "tenants", "users"]
    cols = await snapshot_tables(empty_conn, ["tenants", "organizations", "users"])
    assert cols["column"]["tenants.id"] == "#1 uuid NOT NULL DEFAULT gen_random_uuid()"
    assert cols["column"]["organizations.id"].startswith("#1 uuid NOT NULL")
    assert cols["column"]["organizations.tenant_id"].startswith("#2 uuid")
    assert cols["column"]["users.id"] == "#1 bigint NOT NULL IDENTITY(d)"
    assert cols["column"]["users.tenant_id"].startswith("#2 uuid")


# ---------------------------------------------------------------- down and status, step by step
async def test_down_undoes_only_the_latest_and_status_follows(
    empty_conn: asyncpg.Connection,
) -> None:
    m = migrator(empty_conn)
    await assert_status(m, [])

    assert await m.up() == MIGRATION_IDS
    await assert_status(m, MIGRATION_IDS)
    assert await m.up() == []  # nothing pending: a no-op
    await assert_status(m, MIGRATION_IDS)

    for n in range(len(MIGRATION_IDS), 0, -1):
        assert await m.down() == [MIGRATION_IDS[n - 1]]
        await assert_status(m, MIGRATION_IDS[: n - 1])
        assert await applied(empty_conn) == MIGRATION_IDS[: n - 1]
        seed_tables_left = set(SEED_TABLES) & await public_tables(empty_conn)
        expected = set(SEED_TABLES) if SEED_MIGRATION in MIGRATION_IDS[: n - 1] else set()
        assert seed_tables_left == expected
    assert await m.down() == []  # nothing applied: a no-op

    assert await m.up() == MIGRATION_IDS
    await assert_status(m, MIGRATION_IDS)
    # the triggers came back with the tables
    tenant = await empty_conn.fetchval("INSERT INTO tenants DEFAULT VALUES RETURNING id")
    await empty_conn.execute(
        "INSERT INTO scripts (tenant_id, name, source, type) VALUES ($1, 's', 'x', 'oneoff')",
        tenant,
    )
    assert await empty_conn.fetchval("SELECT count(*) FROM script_versions") == 1


async def test_status_lists_an_unknown_applied_migration_last(
    empty_conn: asyncpg.Connection,
) -> None:
    m = migrator(empty_conn)
    await m.up()
    await empty_conn.execute(
        "INSERT INTO gorp_migrations (id, applied_at) VALUES ('29990101000000_other.sql', now())"
    )
    status = await m.status()
    assert [s.id for s in status] == [*MIGRATION_IDS, "29990101000000_other.sql"]
    assert all(s.applied_at is not None for s in status)


# ---------------------------------------------------------------- concurrency
async def test_two_migrators_at_once_are_safe(empty_db_url: str) -> None:
    a, b = await asyncpg.connect(empty_db_url), await asyncpg.connect(empty_db_url)
    try:
        done = await asyncio.wait_for(
            asyncio.gather(migrator(a).up(), migrator(b).up()), timeout=30
        )
        assert sorted(done, key=len) == [[], MIGRATION_IDS]
        assert await applied(a) == MIGRATION_IDS
        assert await a.fetchval("SELECT count(*) FROM gorp_migrations") == len(MIGRATION_IDS)
    finally:
        await a.close()
        await b.close()


async def _jsrt(db_url: str, *args: str) -> tuple[int, str, str]:
    env = {**os.environ, "DATABASE_URL": db_url, "JSRT_LOG_FORMAT": "console"}
    proc = await asyncio.create_subprocess_exec(
        str(JSRT), *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_two_jsrt_migrate_up_processes_at_once(
    empty_db_url: str, empty_conn: asyncpg.Connection
) -> None:
    results = await asyncio.gather(
        _jsrt(empty_db_url, "migrate", "up"), _jsrt(empty_db_url, "migrate", "up")
    )
    for rc, _, err in results:
        assert rc == 0, err
    outputs = sorted(out.splitlines()[0] for _, out, _ in results)
    assert outputs == ["applied 0 migration(s)", f"applied {len(MIGRATION_IDS)} migration(s)"]
    assert await applied(empty_conn) == MIGRATION_IDS

    rc, out, err = await _jsrt(empty_db_url, "migrate", "status")
    assert rc == 0, err
    lines = out.splitlines()
    assert [line.split()[-1] for line in lines] == MIGRATION_IDS
    assert not any(line.startswith("pending") for line in lines)

    rc, out, err = await _jsrt(empty_db_url, "migrate", "down")
    assert rc == 0, err
    rc, out, err = await _jsrt(empty_db_url, "migrate", "status")
    assert rc == 0, err
    assert out.splitlines()[-1].split() == ["pending", MIGRATION_IDS[-1]]
    assert sum(line.startswith("pending") for line in out.splitlines()) == 1


# ---------------------------------------------------------------- triggers.sql
async def test_triggers_file_is_reapplied_when_its_content_changes(
    empty_conn: asyncpg.Connection, tmp_path: Path
) -> None:
    schema_dir = tmp_path / "schema"
    shutil.copytree(SCHEMA_DIR, schema_dir)
    triggers = tmp_path / "triggers.sql"
    triggers.write_text(TRIGGERS.read_text())
    m = Migrator(empty_conn, schema_dir, triggers)

    async def state() -> str | None:
        return await empty_conn.fetchval(
            "SELECT value FROM jsrt_schema_state WHERE key = 'triggers_sha256'"
        )

    async def publish_comment() -> str | None:
        return await empty_conn.fetchval(
            "SELECT obj_description('jsrt_publish(uuid, text, jsonb)'::regprocedure, 'pg_proc')"
        )

    await m.up()
    assert await state() == routines_digest(routines(schema_dir, triggers))
    original = await publish_comment()

    # unchanged file: not re-applied (a manual change in the database survives)
    await empty_conn.execute("COMMENT ON FUNCTION jsrt_publish(uuid, text, jsonb) IS 'manual'")
    assert await m.up() == []
    assert await publish_comment() == "manual"

    # changed file: re-applied although no migration is pending
    changed = triggers.read_text().replace(
        "it runs only if the calling transaction commits", "changed for the test"
    )
    assert changed != triggers.read_text()
    triggers.write_text(changed)
    assert await m.up() == []
    assert await publish_comment() == "Publish a domain event for a tenant; changed for the test"
    assert await state() == routines_digest(routines(schema_dir, triggers))
    assert original != await publish_comment()


async def test_broken_triggers_file_fails_cleanly(
    empty_conn: asyncpg.Connection, tmp_path: Path
) -> None:
    from consumer.errors import MigrationError

    triggers = tmp_path / "triggers.sql"
    triggers.write_text(TRIGGERS.read_text() + "\nSELECT no_such_function();\n")
    m = Migrator(empty_conn, SCHEMA_DIR, triggers)
    with pytest.raises(MigrationError, match=r"triggers\.sql failed"):
        await m.up()
    # the migrations stay applied; the triggers transaction rolled back as a whole
    assert await applied(empty_conn) == MIGRATION_IDS
    assert await empty_conn.fetchval("SELECT to_regprocedure('jsrt_publish(uuid,text,jsonb)')") \
        is None
    triggers.write_text(TRIGGERS.read_text())
    assert await m.up() == []
    assert await empty_conn.fetchval("SELECT to_regprocedure('jsrt_publish(uuid,text,jsonb)')") \
        is not None


# ---------------------------------------------------------------- gorp_migrations
async def test_gorp_migrations_has_sql_migrates_columns(conn: asyncpg.Connection) -> None:
    cols = await snapshot_tables(conn, ["gorp_migrations"])
    assert cols["column"] == {
        "gorp_migrations.id": "#1 text NOT NULL",
        "gorp_migrations.applied_at": "#2 timestamp with time zone",
    }
    assert cols["constraint"] == {"gorp_migrations.gorp_migrations_pkey": "PRIMARY KEY (id)"}
    rows = await conn.fetch("SELECT id, applied_at FROM gorp_migrations ORDER BY id")
    assert [r["id"] for r in rows] == MIGRATION_IDS
    assert all(r["applied_at"] is not None for r in rows)
