"""The console's editor against a real PostgreSQL and real V8: create and save with the
CLI's validation shown inline (the parse error's line and column), the JSON validation
endpoint, Run now through the on-demand path, and the refusals."""

from __future__ import annotations

import json
import uuid

import asyncpg
from support.console import READ_ONLY, console_for
from support.factories import make_script

BROKEN = "function handler(input) {\n  let x = ;\n  return x;\n}\n"
GOOD = ("async function handler(input, ctx) {\n  console.log('got', input.n);\n"
        "  return { doubled: input.n * 2, tenant: ctx.tenantId };\n}\n")
THROWS = "function handler(input) {\n  throw new TypeError('no ' + input.n);\n}\n"


def _form(**kw: str) -> dict[str, str]:
    return {"name": "editor-made", "type": "event", "event_types": "order.created",
            "source": GOOD, "description": "", **kw}


async def test_create_with_a_parse_error_then_fixed(db_url: str, conn: asyncpg.Connection) -> None:
    async with console_for(db_url) as c:
        tenant, key = await c.tenant_key()
        user = await c.signed_in(key)
        r = await user.get("/console/scripts/new")
        assert r.status_code == 200
        assert 'id="source"' in r.text and "codemirror.js" in r.text and 'for="source"' in r.text

        r = await user.post("/console/scripts/new", _form(source=BROKEN))
        assert r.status_code == 400
        assert "nothing was saved" in r.text
        assert 'data-error-line="2"' in r.text and 'data-error-column="11"' in r.text
        assert "line 2, column 11" in r.text and "Unexpected token" in r.text
        assert "let x = ;" in r.text  # what was typed is kept
        assert await conn.fetchval("SELECT count(*) FROM scripts") == 0

        r = await user.post("/console/scripts/new", _form(event_types="", cron="* * * * *"))
        assert r.status_code == 400
        assert "Event types" in r.text or "event type" in r.text

        r = await user.post("/console/scripts/new", _form(activate="1", message="first"))
        assert r.status_code == 303
        row = await conn.fetchrow("SELECT id, tenant_id, status, event_types FROM scripts")
        assert (row["tenant_id"], row["status"], row["event_types"]) == (
            tenant, "active", ["order.created"])
        assert r.headers["location"] == f"/console/scripts/{row['id']}?done=created"
        shown = await user.get(r.headers["location"])
        assert "Script created (version 1)." in shown.text
        r = await user.post("/console/scripts/new", _form())
        assert r.status_code == 400 and "exists in this tenant" in r.text


async def test_edit_saves_a_new_version(db_url: str, conn: asyncpg.Connection) -> None:
    async with console_for(db_url) as c:
        tenant, key = await c.tenant_key()
        script = await make_script(conn, tenant, name="edited")
        user = await c.signed_in(key)
        r = await user.get(f"/console/scripts/{script}/edit")
        assert r.status_code == 200 and "Save (a new version)" in r.text
        r = await user.post(f"/console/scripts/{script}/edit",
                            _form(name="edited", event_types="thing.happened", source=BROKEN))
        assert r.status_code == 400 and 'data-error-line="2"' in r.text
        r = await user.post(f"/console/scripts/{script}/edit", _form(
            name="edited", event_types="thing.happened, other.thing", source=GOOD,
            limits='{"max_concurrent_runs": 2}', message="doubles now"))
        assert r.status_code == 303
        assert "the current source is version 2" in (await user.get(r.headers["location"])).text
        row = await conn.fetchrow("SELECT source, event_types, resource_limits::text AS l "
                                  "FROM scripts WHERE id = $1", script)
        assert row["source"] == GOOD and row["event_types"] == ["thing.happened", "other.thing"]
        assert json.loads(row["l"])["max_concurrent_runs"] == 2
        assert await conn.fetchval(
            "SELECT change_description FROM script_versions WHERE script_id = $1 "
            "ORDER BY version_number DESC LIMIT 1", script) == "doubles now"
        r = await user.post(f"/console/scripts/{script}/edit", _form(
            name="edited", event_types="thing.happened", limits='{"max_memory_bytes": -1}'))
        assert r.status_code == 400 and "max_memory_bytes" in r.text


async def test_the_validate_endpoint(db_url: str, conn: asyncpg.Connection) -> None:
    async with console_for(db_url) as c:
        _, key = await c.tenant_key(scopes=READ_ONLY)
        user = await c.signed_in(key)
        r = await user.htmx("POST", "/console/scripts/validate", data=_form(source=BROKEN),
                            headers={"accept": "application/json"})
        assert r.status_code == 200
        body = r.json()
        assert body["ok"] is False
        [error] = body["errors"]
        assert (error["line"], error["column"]) == (2, 11)
        assert error["message"].startswith("the source does not parse: SyntaxError")
        r = await user.htmx("POST", "/console/scripts/validate", data=_form())
        assert r.json() == {"ok": True, "errors": []}
        r = await user.htmx("POST", "/console/scripts/validate",
                            data=_form(type="http", http_path="no-slash", source=""))
        messages = [e["message"] for e in r.json()["errors"]]
        assert "the source is empty" in messages and any("path" in m for m in messages)
        # an id of another tenant: as one that does not exist
        other = await make_script(conn, await c.tenant(), name="theirs")
        for script_id in (other, uuid.uuid4()):
            r = await user.htmx("POST", "/console/scripts/validate",
                                data={**_form(), "script_id": str(script_id)})
            assert r.status_code == 404
        r = await user.htmx("POST", "/console/scripts/validate", data=_form(), csrf=None)
        assert r.status_code == 403


async def test_run_now(db_url: str, conn: asyncpg.Connection) -> None:
    async with console_for(db_url, sandbox=True) as c:
        tenant, key = await c.tenant_key()
        script = await make_script(conn, tenant, GOOD, name="runner", status="draft")
        user = await c.signed_in(key)
        page = await user.get(f"/console/scripts/{script}/edit")
        assert "Run the saved version" in page.text

        r = await user.htmx("POST", f"/console/scripts/{script}/execute",
                            data={"input": '{"n": 21}'})
        assert r.status_code == 200, r.text
        assert 'id="run-status">completed' in r.text and "&#34;doubled&#34;: 42" in r.text
        assert "[log] got 21" in r.text and "duration_ms" in r.text and "<html" not in r.text
        row = await conn.fetchrow("SELECT status, trigger_type, trigger_data::text AS td, "
                                  "output::text AS out FROM script_executions")
        assert (row["status"], row["trigger_type"]) == ("completed", "manual")
        assert json.loads(row["td"])["via"] == "console"
        assert json.loads(row["out"])["doubled"] == 42

        r = await user.post(f"/console/scripts/{script}/execute", {"input": '{"n": 1}'},
                            headers={"accept": "application/json"})
        assert r.json()["output"]["doubled"] == 2 and r.json()["logs"][0]["message"] == "got 1"
        r = await user.post(f"/console/scripts/{script}/execute", {"input": "{oops"})
        assert r.status_code == 400 and "not valid JSON" in r.text and "<html" in r.text

        await conn.execute("UPDATE scripts SET source = $1 WHERE id = $2", THROWS, script)
        r = await user.htmx("POST", f"/console/scripts/{script}/execute",
                            data={"input": '{"n": 3}'})
        assert 'id="run-status">failed' in r.text and "TypeError: no 3" in r.text
        assert "at handler" in r.text  # the stack

        await conn.execute("UPDATE scripts SET status = 'archived' WHERE id = $1", script)
        r = await user.htmx("POST", f"/console/scripts/{script}/execute", data={"input": "{}"})
        assert r.status_code == 400 and "activate it first" in r.text


async def test_editor_refusals(db_url: str, conn: asyncpg.Connection) -> None:
    async with console_for(db_url, sandbox=True) as c:
        tenant, key = await c.tenant_key()
        _, reader_key = await c.tenant_key(tenant, scopes=READ_ONLY)
        _, stranger_key = await c.tenant_key()
        script = await make_script(conn, tenant, GOOD, name="mine")
        reader, stranger = await c.signed_in(reader_key), await c.signed_in(stranger_key)
        user = await c.signed_in(key)

        assert (await c.client().get("/console/scripts/new")).status_code == 303
        r = await reader.get("/console/scripts/new")
        assert r.status_code == 403 and "scripts:write" in r.text
        assert (await reader.post("/console/scripts/new", _form())).status_code == 403
        page = await reader.get(f"/console/scripts/{script}/edit")
        assert page.status_code == 200
        assert "Save (a new version)" not in page.text and "Run the saved version" not in page.text
        assert "readonly" in page.text
        r = await reader.post(f"/console/scripts/{script}/edit", _form(name="mine"))
        assert r.status_code == 403
        r = await reader.post(f"/console/scripts/{script}/execute", {"input": "{}"})
        assert r.status_code == 403 and "scripts:execute" in r.text

        for path in ("edit", "execute"):
            r = await stranger.post(f"/console/scripts/{script}/{path}",
                                    {**_form(name="mine"), "input": "{}"})
            assert r.status_code == 404
        assert (await stranger.get(f"/console/scripts/{script}/edit")).status_code == 404

        r = await user.post(f"/console/scripts/{script}/execute", {"input": "{}"}, csrf=None)
        assert r.status_code == 403
        r = await user.post("/console/scripts/new", _form(name="x"), csrf="forged")
        assert r.status_code == 403
        assert await conn.fetchval("SELECT count(*) FROM script_executions") == 0
        assert await conn.fetchval("SELECT count(*) FROM scripts") == 1


async def test_run_now_without_a_sandbox_says_so(db_url: str, conn: asyncpg.Connection) -> None:
    async with console_for(db_url) as c:
        tenant, key = await c.tenant_key()
        script = await make_script(conn, tenant, GOOD, name="mine")
        user = await c.signed_in(key)
        page = await user.get(f"/console/scripts/{script}/edit")
        assert "This server has no sandbox" in page.text
        r = await user.htmx("POST", f"/console/scripts/{script}/execute", data={"input": "{}"})
        assert r.status_code == 400 and "no sandbox" in r.text


async def test_an_operator_chooses_the_tenant_before_creating(db_url: str,
                                                              conn: asyncpg.Connection) -> None:
    async with console_for(db_url) as c:
        tenant = await c.tenant("acme")
        operator = await c.signed_in(await c.operator_key())
        page = await operator.get("/console/scripts/new")
        assert "Choose the tenant the script is for" in page.text
        r = await operator.post("/console/scripts/new", _form())
        assert r.status_code == 400 and "choose a tenant first" in r.text
        await operator.post("/console/tenant", {"tenant": str(tenant)})
        r = await operator.post("/console/scripts/new", _form())
        assert r.status_code == 303
        assert await conn.fetchval("SELECT tenant_id FROM scripts") == tenant


async def test_embedded_scripts_are_read_only_here(db_url: str,
                                                   conn: asyncpg.Connection) -> None:
    async with console_for(db_url) as c:
        tenant, key = await c.tenant_key()
        script = await c.store.scripts.embedded(tenant, GOOD, None)
        user = await c.signed_in(key)
        page = await user.get(f"/console/scripts/{script}/edit")
        assert page.status_code == 200 and "belongs to the embedded API" in page.text
        assert "Save (a new version)" not in page.text
        assert '<option value="embedded" selected>' in page.text
        r = await user.post(f"/console/scripts/{script}/edit",
                            _form(name="x", type="event", event_types="a.b"))
        assert r.status_code == 400
        assert await conn.fetchval("SELECT type FROM scripts WHERE id = $1", script) == "embedded"


async def test_a_source_near_the_limit_is_checked_not_refused_by_the_form_parser(
        db_url: str) -> None:
    async with console_for(db_url) as c:
        _, key = await c.tenant_key()
        user = await c.signed_in(key)
        big = "function handler() { return 1 }\n" + "// é%&=+ comment\n" * 60_000  # > 1 MiB
        r = await user.post("/console/scripts/new", _form(source=big))
        assert r.status_code == 400 and "larger than 1048576 bytes" in r.text
        r = await user.htmx("POST", "/console/scripts/validate", data=_form(source=big))
        assert r.status_code == 200 and not r.json()["ok"]
