"""The console's Scripts pages against a real PostgreSQL: the list (search, filters, paging),
a script's page, status actions, versions, diffs, rollback, the runs fragment, and every
refusal (no session, another tenant's script, missing scope, missing CSRF token)."""

from __future__ import annotations

import re
import uuid

import asyncpg
from support.console import ALL_TENANT_SCOPES, READ_ONLY, ConsoleApp, console_for
from support.factories import make_script

V1 = "function handler(input) {\n  return 1;\n}\n"
V2 = "function handler(input) {\n  console.log('two');\n  return 2;\n}\n"


async def _script(conn: asyncpg.Connection, tenant: uuid.UUID, name: str,
                  **kw: object) -> uuid.UUID:
    return await make_script(conn, tenant, name=name, **kw)  # type: ignore[arg-type]


async def test_the_list_searches_filters_and_pages(db_url: str, conn: asyncpg.Connection) -> None:
    async with console_for(db_url) as c:
        tenant, key = await c.tenant_key(scopes=READ_ONLY)
        other = await c.tenant()
        for i in range(23):
            await _script(conn, tenant, f"job-{i:02d}")
        await conn.execute("UPDATE scripts SET description = 'sends invoices to customers', "
                           "tags = '{billing}' WHERE name = 'job-07'")
        await _script(conn, tenant, "nightly", type="scheduled", cron="0 3 * * *",
                      status="paused")
        await _script(conn, other, "secret-of-another-tenant")
        user = await c.signed_in(key)

        r = await user.get("/console/scripts")
        assert r.status_code == 200
        assert "24 scripts" in r.text and "Page 1 of 2" in r.text
        assert "secret-of-another-tenant" not in r.text
        assert len(re.findall(r'href="/console/scripts/[0-9a-f-]{36}"', r.text)) == 20
        r = await user.get("/console/scripts?page=2")
        assert len(re.findall(r'href="/console/scripts/[0-9a-f-]{36}"', r.text)) == 4
        r = await user.get("/console/scripts?page=9")
        assert "nothing on page 9" in r.text

        await conn.execute(
            "INSERT INTO script_executions (script_id, tenant_id, status, trigger_type) "
            "SELECT id, tenant_id, 'completed', 'event' FROM scripts WHERE name = 'job-07'")
        r = await user.get("/console/scripts", params={"q": "invoices"})
        assert 'class="badge completed">completed' in r.text  # its last run
        assert "1 script match" in r.text and "job-07" in r.text and "job-08" not in r.text
        r = await user.get("/console/scripts", params={"q": "nightl"})  # a part of the name
        assert "nightly" in r.text
        r = await user.get("/console/scripts", params={"type": "scheduled"})
        assert "nightly" in r.text and "job-01" not in r.text
        r = await user.get("/console/scripts", params={"status": "paused"})
        assert "nightly" in r.text and "job-01" not in r.text
        r = await user.get("/console/scripts", params={"tag": "billing"})
        assert "job-07" in r.text and "job-01" not in r.text
        r = await user.get("/console/scripts", params={"q": "no such words at all"})
        assert "No script matches these filters" in r.text
        r = await user.get("/console/scripts", params={"q": "secret-of-another-tenant"})
        assert "No script matches" in r.text


async def test_empty_states_say_what_to_do(db_url: str) -> None:
    async with console_for(db_url) as c:
        _, key = await c.tenant_key()
        r = await (await c.signed_in(key)).get("/console/scripts")
        assert "This tenant has no scripts yet" in r.text and "/console/scripts/new" in r.text
        _, key = await c.tenant_key(scopes=READ_ONLY)
        r = await (await c.signed_in(key)).get("/console/scripts")
        assert "scripts:write scope can create one" in r.text


async def _two_versions(c: ConsoleApp, conn: asyncpg.Connection, tenant: uuid.UUID) -> uuid.UUID:
    script = await _script(conn, tenant, "versioned", source=V1)
    await conn.execute("UPDATE scripts SET source = $1 WHERE id = $2", V2, script)
    return script


async def test_a_scripts_page_and_its_diff(db_url: str, conn: asyncpg.Connection) -> None:
    async with console_for(db_url) as c:
        tenant, key = await c.tenant_key(scopes=READ_ONLY)
        script = await _two_versions(c, conn, tenant)
        user = await c.signed_in(key)
        r = await user.get(f"/console/scripts/{script}")
        assert r.status_code == 200
        assert "thing.happened" in r.text and "max_execution_time_ms" in r.text
        assert "Roll back" not in r.text and "Activate" not in r.text and "Archive" not in r.text
        assert "/edit\"" not in r.text  # no Edit button without scripts:write
        assert 'hx-trigger="every 2s"' in r.text

        r = await user.get(f"/console/scripts/{script}/diff", params={"a": 1, "b": 2})
        assert r.status_code == 200
        assert "2 lines added, 1 removed" in r.text
        assert "console.log(&#39;two&#39;);" in r.text
        r = await user.get(f"/console/scripts/{script}/diff",
                           params={"a": 1, "b": 2, "view": "unified"})
        assert "+ " in r.text and "- " in r.text
        r = await user.get(f"/console/scripts/{script}/diff", params={"a": 2, "b": 2})
        assert "Version 2's source" in r.text and "console.log(&#39;two&#39;)" in r.text
        r = await user.get(f"/console/scripts/{script}/diff", params={"a": 9})
        assert r.status_code == 404


async def test_status_actions_and_rollback(db_url: str, conn: asyncpg.Connection) -> None:
    async with console_for(db_url) as c:
        tenant, key = await c.tenant_key()
        script = await _two_versions(c, conn, tenant)
        user = await c.signed_in(key)
        page = await user.get(f"/console/scripts/{script}")
        assert "Pause" in page.text and "Archive" in page.text and "Roll back to 1" in page.text

        r = await user.post(f"/console/scripts/{script}/status", {"status": "paused"})
        assert r.status_code == 303
        assert r.headers["location"] == f"/console/scripts/{script}?done=status"
        assert "Status changed to paused." in (await user.get(r.headers["location"])).text
        assert await conn.fetchval("SELECT status FROM scripts WHERE id = $1", script) == "paused"
        r = await user.htmx("POST", f"/console/scripts/{script}/status", data={"status": "active"})
        assert r.status_code == 204
        assert r.headers["hx-redirect"] == f"/console/scripts/{script}?done=status"
        assert await conn.fetchval("SELECT status FROM scripts WHERE id = $1", script) == "active"
        r = await user.post(f"/console/scripts/{script}/status", {"status": "deleted"})
        assert r.status_code == 400

        r = await user.post(f"/console/scripts/{script}/rollback", {"version": "1"})
        assert r.status_code == 303
        assert await conn.fetchval("SELECT source FROM scripts WHERE id = $1", script) == V1
        assert await conn.fetchval(
            "SELECT change_description FROM script_versions WHERE script_id = $1 "
            "ORDER BY version_number DESC LIMIT 1", script) == "rollback to version 1"
        r = await user.post(f"/console/scripts/{script}/rollback", {"version": "1"})
        assert r.status_code == 200 and "nothing changed" in r.text
        r = await user.post(f"/console/scripts/{script}/rollback", {"version": "7"})
        assert r.status_code == 404


async def test_refusals(db_url: str, conn: asyncpg.Connection) -> None:
    async with console_for(db_url) as c:
        tenant, key = await c.tenant_key()
        _, reader_key = await c.tenant_key(tenant, scopes=READ_ONLY)
        other, other_key = await c.tenant_key()
        script = await _two_versions(c, conn, tenant)
        theirs = await _script(conn, other, "theirs")
        user, reader = await c.signed_in(key), await c.signed_in(reader_key)
        stranger = await c.signed_in(other_key)

        # no session
        anonymous = c.client()
        assert (await anonymous.get(f"/console/scripts/{script}")).status_code == 303
        assert (await anonymous.post(f"/console/scripts/{script}/status",
                                     data={"status": "paused"})).status_code == 401
        # another tenant's script is not found, exactly as one that does not exist
        for path in ("", "/diff", "/runs", "/edit"):
            mine = await stranger.get(f"/console/scripts/{script}{path}")
            missing = await stranger.get(f"/console/scripts/{uuid.uuid4()}{path}")
            assert mine.status_code == missing.status_code == 404, path
            assert mine.text == missing.text
        for action, form in (("status", {"status": "paused"}), ("rollback", {"version": "1"})):
            r = await stranger.post(f"/console/scripts/{script}/{action}", form)
            assert r.status_code == 404
        assert (await user.get(f"/console/scripts/{theirs}")).status_code == 404
        # missing scope
        r = await reader.post(f"/console/scripts/{script}/status", {"status": "paused"})
        assert r.status_code == 403 and "scripts:write" in r.text
        r = await reader.post(f"/console/scripts/{script}/rollback", {"version": "1"})
        assert r.status_code == 403
        _, runner_key = await c.tenant_key(tenant, scopes=("scripts:read",))
        runner = await c.signed_in(runner_key)
        assert (await runner.get(f"/console/scripts/{script}/runs")).status_code == 403
        assert "needs the executions:read scope" in (
            await runner.get(f"/console/scripts/{script}")).text
        # missing or wrong CSRF token
        r = await user.post(f"/console/scripts/{script}/status", {"status": "paused"}, csrf=None)
        assert r.status_code == 403
        r = await user.htmx("POST", f"/console/scripts/{script}/status",
                            data={"status": "paused"}, csrf=stranger.csrf)
        assert r.status_code == 403
        assert await conn.fetchval("SELECT status FROM scripts WHERE id = $1", script) == "active"


async def test_the_runs_fragment(db_url: str, conn: asyncpg.Connection) -> None:
    async with console_for(db_url) as c:
        tenant, key = await c.tenant_key(scopes=READ_ONLY)
        script = await _script(conn, tenant, "ran")
        user = await c.signed_in(key)
        r = await user.htmx("GET", f"/console/scripts/{script}/runs")
        assert r.status_code == 200 and "No runs yet" in r.text and "<html" not in r.text
        await conn.execute(
            "INSERT INTO script_executions (script_id, tenant_id, status, trigger_type, error, "
            "completed_at) VALUES ($1, $2, 'failed', 'event', 'TypeError: boom', NOW())",
            script, tenant)
        r = await user.htmx("GET", f"/console/scripts/{script}/runs")
        assert "TypeError: boom" in r.text and 'class="badge failed"' in r.text
        assert 'hx-trigger="every 2s"' in r.text


async def test_operators_see_every_tenant_until_they_choose_one(
        db_url: str, conn: asyncpg.Connection) -> None:
    async with console_for(db_url) as c:
        a, b = await c.tenant("a"), await c.tenant("b")
        in_a, in_b = await _script(conn, a, "in-a"), await _script(conn, b, "in-b")
        operator = await c.signed_in(await c.operator_key(ALL_TENANT_SCOPES))
        r = await operator.get("/console/scripts")
        assert "in-a" in r.text and "in-b" in r.text
        await operator.post("/console/tenant", {"tenant": str(a)})
        r = await operator.get("/console/scripts")
        assert "in-a" in r.text and "in-b" not in r.text
        assert (await operator.get(f"/console/scripts/{in_b}")).status_code == 200
        assert (await operator.get(f"/console/scripts/{in_a}")).status_code == 200


async def test_delete_says_what_goes_with_it(db_url: str, conn: asyncpg.Connection) -> None:
    async with console_for(db_url) as c:
        tenant, key = await c.tenant_key()
        _, reader_key = await c.tenant_key(tenant, scopes=READ_ONLY)
        _, stranger_key = await c.tenant_key()
        script = await _two_versions(c, conn, tenant)
        user = await c.signed_in(key)
        reader, stranger = await c.signed_in(reader_key), await c.signed_in(stranger_key)
        assert "Delete…" not in (await reader.get(f"/console/scripts/{script}")).text
        assert (await reader.get(f"/console/scripts/{script}/delete")).status_code == 403
        assert (await reader.post(f"/console/scripts/{script}/delete")).status_code == 403
        assert (await stranger.get(f"/console/scripts/{script}/delete")).status_code == 404
        assert (await stranger.post(f"/console/scripts/{script}/delete")).status_code == 404
        assert (await user.post(f"/console/scripts/{script}/delete", csrf=None)).status_code == 403

        r = await user.get(f"/console/scripts/{script}/delete")
        assert r.status_code == 200 and "2 versions" in r.text and "0 executions" in r.text
        assert await conn.fetchval("SELECT count(*) FROM scripts") == 1
        r = await user.post(f"/console/scripts/{script}/delete")
        assert r.status_code == 303 and r.headers["location"] == "/console/scripts"
        assert await conn.fetchval("SELECT count(*) FROM scripts") == 0
        assert (await user.get(f"/console/scripts/{script}")).status_code == 404
