"""`jsrt tenants create | list` against a real PostgreSQL, through the real command; and a
host database whose tenants table asks for more than the runtime's minimal one."""

from __future__ import annotations

import json
import uuid

import asyncpg
from support.cli import run_cli


async def test_create_prints_the_new_id_and_list_shows_it(conn: asyncpg.Connection,
                                                          db_url: str) -> None:
    made = run_cli(db_url, "tenants", "create", "--name", "acme")
    assert made.returncode == 0, made.stderr
    acme = uuid.UUID(made.stdout.strip())
    assert await conn.fetchval("SELECT name FROM tenants WHERE id = $1", acme) == "acme"

    made = run_cli(db_url, "tenants", "create", "--json")
    nameless = json.loads(made.stdout)
    assert nameless["name"] is None
    assert await conn.fetchval("SELECT count(*) FROM tenants WHERE id = $1",
                               uuid.UUID(nameless["id"])) == 1
    await conn.execute(
        "INSERT INTO scripts (tenant_id, name, source, type) VALUES ($1, 'x', 'y', 'oneoff')",
        acme)

    listed = json.loads(run_cli(db_url, "tenants", "list", "--json").stdout)
    assert [(t["id"], t["name"], t["scripts"]) for t in listed] == [
        (nameless["id"], None, 0), (str(acme), "acme", 1)]
    text = run_cli(db_url, "tenants", "list").stdout.splitlines()
    assert text[0].split() == ["ID", "NAME", "SCRIPTS", "CREATED_AT"]
    assert text[2].split()[:3] == [str(acme), "acme", "1"]


async def test_a_host_tenants_table_with_more_required_columns(conn: asyncpg.Connection,
                                                               db_url: str) -> None:
    """An IOTA SDK host's tenants: a unique, required name, and maybe columns we don't know."""
    await conn.execute("ALTER TABLE tenants ALTER COLUMN name SET NOT NULL")
    await conn.execute("CREATE UNIQUE INDEX ON tenants (name)")
    await conn.execute("ALTER TABLE tenants ADD COLUMN is_active boolean NOT NULL DEFAULT true")
    nameless = run_cli(db_url, "tenants", "create")
    assert nameless.stderr.splitlines() == [
        "jsrt: error: this database's tenants need a name: give --name"]
    assert run_cli(db_url, "tenants", "create", "--name", "acme").returncode == 0
    again = run_cli(db_url, "tenants", "create", "--name", "acme")
    assert again.stderr.splitlines() == ["jsrt: error: a tenant named 'acme' exists"]

    await conn.execute("ALTER TABLE tenants ADD COLUMN domain text NOT NULL DEFAULT ''")
    await conn.execute("ALTER TABLE tenants ALTER COLUMN domain DROP DEFAULT")
    refused = run_cli(db_url, "tenants", "create", "--name", "other")
    assert refused.returncode == 1
    assert refused.stderr.splitlines() == [
        "jsrt: error: cannot create a tenant here: this database's tenants table requires "
        "'domain' (NOT NULL, no default), which jsrt does not know; create the tenant with the "
        "application that owns the table"]
    assert await conn.fetchval("SELECT count(*) FROM tenants") == 1
