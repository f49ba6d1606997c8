"""The console's Keys page against a real PostgreSQL: create (shown once), list, revoke, and
the rules: a tenant admin (keys:manage) keys its own tenant only, grants only scopes it holds,
never makes operator keys, and cannot see or revoke another tenant's keys or operator keys."""

from __future__ import annotations

import re
from typing import Any

import asyncpg
from support.console import ALL_TENANT_SCOPES, READ_ONLY, console_for

ADMIN = ("scripts:read", "keys:manage")


async def shown(user: Any, r: Any) -> Any:
    """The page a key's creation redirects to (post/redirect/get), where it is shown."""
    assert r.status_code == 303, r.text
    return await user.get(r.headers["location"])


async def test_a_tenant_admin_creates_lists_and_revokes(db_url: str,
                                                         conn: asyncpg.Connection) -> None:
    async with console_for(db_url) as c:
        tenant, key = await c.tenant_key(scopes=ADMIN)
        other, _ = await c.tenant_key(name="theirs")
        await c.operator_key(name="the operator")
        admin = await c.signed_in(key)
        page = await admin.get("/console/keys")
        assert page.status_code == 200
        assert "console-test" in page.text
        assert "theirs" not in page.text and "the operator" not in page.text
        assert 'id="key-tenant"' not in page.text  # no tenant choice for a tenant admin
        assert re.search(r'value="keys:manage"\s*>', page.text)  # held: offered
        assert re.search(r'value="scripts:write" disabled', page.text)  # not held: disabled

        # the tenant field is ignored: always the admin's own tenant
        r = await admin.post("/console/keys", {"name": "ci", "scopes": ["scripts:read"],
                                               "tenant": str(other)})
        assert r.status_code == 303
        location = r.headers["location"]
        r = await admin.get(location)
        made = re.search(r'id="new-key" type="text" readonly value="(jsrt_[^"]+)"', r.text)
        assert made and "shown this once" in r.text
        row = await conn.fetchrow("SELECT tenant_id, scopes FROM jsrt_api_keys WHERE name = 'ci'")
        assert (row["tenant_id"], row["scopes"]) == (tenant, ["scripts:read"])
        assert (await c.store.keys.verify(made[1])) is not None
        assert made[1] not in (await admin.get("/console/keys")).text  # shown once only
        # reloading the page that showed it neither shows it again nor makes another key
        again = await admin.get(location)
        assert made[1] not in again.text and "shown once and is not shown again" in again.text
        assert await conn.fetchval("SELECT count(*) FROM jsrt_api_keys WHERE name = 'ci'") == 1
        # nor can another session use the link
        other_admin = await c.signed_in(key)
        r = await admin.post("/console/keys", {"name": "ci2", "scopes": ["scripts:read"]})
        assert made[1] not in (await other_admin.get(r.headers["location"])).text

        r = await admin.post("/console/keys", {"name": "op", "scopes": ["scripts:read"],
                                               "tenant": "operator"})
        assert r.status_code == 303
        assert await conn.fetchval(
            "SELECT tenant_id FROM jsrt_api_keys WHERE name = 'op'") == tenant

        r = await admin.post("/console/keys", {"name": "", "scopes": ["scripts:read"]})
        assert r.status_code == 400 and "The name must be 1 to 255 characters" in r.text
        r = await admin.post("/console/keys", {"name": "none"})
        assert r.status_code == 400 and "at least one scope" in r.text

        ci_id = await conn.fetchval("SELECT id FROM jsrt_api_keys WHERE name = 'ci'")
        ci_user = await c.signed_in(made[1])
        r = await admin.post(f"/console/keys/{ci_id}/revoke")
        assert r.status_code == 303
        assert await conn.fetchval("SELECT revoked_at IS NOT NULL FROM jsrt_api_keys "
                                   "WHERE id = $1", ci_id)
        assert await conn.fetchval("SELECT count(*) FROM jsrt_console_sessions "
                                   "WHERE key_id = $1", ci_id) == 0
        assert (await ci_user.get("/console/scripts")).status_code == 303
        assert "revoked" in (await admin.get("/console/keys")).text


async def test_key_refusals(db_url: str, conn: asyncpg.Connection) -> None:
    async with console_for(db_url) as c:
        tenant, key = await c.tenant_key(scopes=ADMIN)
        _, reader_key = await c.tenant_key(tenant, scopes=READ_ONLY)
        other, theirs = await c.tenant_key(name="theirs")
        await c.operator_key(name="op")
        admin, reader = await c.signed_in(key), await c.signed_in(reader_key)
        their_id = await conn.fetchval("SELECT id FROM jsrt_api_keys WHERE tenant_id = $1", other)
        op_id = await conn.fetchval("SELECT id FROM jsrt_api_keys WHERE tenant_id IS NULL")

        # no session; no keys:manage
        assert (await c.client().get("/console/keys")).status_code == 303
        r = await reader.get("/console/keys")
        assert r.status_code == 403 and "keys:manage" in r.text
        assert 'href="/console/keys"' not in r.text  # not in the navigation either
        r = await reader.post("/console/keys", {"name": "x", "scopes": ["scripts:read"]})
        assert r.status_code == 403
        # scopes beyond the admin's own
        r = await admin.post("/console/keys", {"name": "x", "scopes": ["scripts:write"]})
        assert r.status_code == 403 and "scripts:write" in r.text
        # another tenant's key and an operator key: 404, as a key that does not exist
        for key_id in (their_id, op_id, "nosuchkey123"):
            r = await admin.post(f"/console/keys/{key_id}/revoke")
            assert r.status_code == 404, key_id
        assert await conn.fetchval("SELECT count(*) FROM jsrt_api_keys "
                                   "WHERE revoked_at IS NOT NULL") == 0
        # CSRF
        r = await admin.post("/console/keys", {"name": "x", "scopes": ["scripts:read"]},
                             csrf=None)
        assert r.status_code == 403
        own = await conn.fetchval("SELECT id FROM jsrt_api_keys WHERE tenant_id = $1 "
                                  "ORDER BY created_at LIMIT 1", tenant)
        r = await admin.post(f"/console/keys/{own}/revoke", csrf="wrong")
        assert r.status_code == 403
        assert await conn.fetchval("SELECT count(*) FROM jsrt_api_keys WHERE name = 'x'") == 0
        assert theirs


async def test_operators_key_any_tenant_and_make_operator_keys(
        db_url: str, conn: asyncpg.Connection) -> None:
    async with console_for(db_url) as c:
        tenant, _ = await c.tenant_key(name="tenant-key")
        operator = await c.signed_in(await c.operator_key(ALL_TENANT_SCOPES))
        page = await operator.get("/console/keys")
        assert 'id="key-tenant"' in page.text and "tenant-key" in page.text
        r = await operator.post("/console/keys", {"name": "new-op", "scopes": ["scripts:read"],
                                                  "tenant": "operator"})
        r = await shown(operator, r)
        assert "operator key (every tenant)" in r.text
        assert await conn.fetchval(
            "SELECT tenant_id IS NULL FROM jsrt_api_keys WHERE name = 'new-op'")
        r = await operator.post("/console/keys", {"name": "for-t", "scopes": ["keys:manage"],
                                                  "tenant": str(tenant)})
        assert r.status_code == 303
        r = await operator.post("/console/keys", {"name": "x", "scopes": ["invoke"],
                                                  "tenant": str(tenant)})
        assert r.status_code == 403  # the operator key itself does not hold invoke
        r = await operator.post("/console/keys", {"name": "x", "scopes": ["scripts:read"],
                                                  "tenant": "00000000-0000-4000-8000-000000000000"})
        assert r.status_code == 404
        their = await conn.fetchval("SELECT id FROM jsrt_api_keys WHERE name = 'tenant-key'")
        assert (await operator.post(f"/console/keys/{their}/revoke")).status_code == 303


async def test_a_new_key_is_shown_by_whichever_console_process_gets_the_page(
        db_url: str, conn: asyncpg.Connection) -> None:
    # Two console processes behind a load balancer that is not sticky: the POST that makes
    # the key lands on one, the GET it redirects to on the other.
    async with console_for(db_url) as one, console_for(db_url) as two:
        _, key = await one.tenant_key(scopes=ADMIN)
        admin = await one.signed_in(key)
        name = "reveal-across-processes"
        r = await admin.post("/console/keys", {"name": name, "scopes": ["scripts:read"]})
        assert r.status_code == 303
        sealed = await conn.fetchval("SELECT sealed FROM jsrt_console_reveals")
        elsewhere = two.client(cookies=admin.client.cookies)
        page = await elsewhere.get(r.headers["location"])
        made = re.search(r'id="new-key" type="text" readonly value="(jsrt_[^"]+)"', page.text)
        assert made and await one.store.keys.verify(made[1]) is not None
        # while it waited, the database held it sealed: neither the key nor its name (whole
        # strings: a short one turns up in a random token by chance - "ci" did, once)
        assert sealed is not None
        assert made[1].encode() not in sealed and name.encode() not in sealed
        # shown once, by either process
        assert await conn.fetchval("SELECT count(*) FROM jsrt_console_reveals") == 0
        again = await admin.get(r.headers["location"])
        assert made[1] not in again.text and "shown once and is not shown again" in again.text


async def test_a_held_key_goes_with_its_session(db_url: str, conn: asyncpg.Connection) -> None:
    async with console_for(db_url) as c:
        _, key = await c.tenant_key(scopes=ADMIN)
        admin = await c.signed_in(key)
        r = await admin.post("/console/keys", {"name": "ci", "scopes": ["scripts:read"]})
        assert r.status_code == 303
        assert (await admin.post("/console/logout")).status_code == 303
        assert await conn.fetchval("SELECT count(*) FROM jsrt_console_reveals") == 0
