"""The web console's sign-in, sessions, CSRF and security headers, against a real
PostgreSQL (the ASGI app through httpx; no server, no browser)."""

from __future__ import annotations

import asyncpg
from support.console import READ_ONLY, console_for, csrf_of

from consumer.console import CSP


async def test_sign_in_lands_on_a_page_with_the_security_headers(db_url: str) -> None:
    async with console_for(db_url, sandbox=True) as c:
        _, key = await c.tenant_key()
        anonymous = c.client()
        r = await anonymous.get("/console/scripts")
        assert r.status_code == 303 and r.headers["location"].startswith("/console/login")

        user = await c.signed_in(key)
        r = await user.get("/console/scripts")
        assert r.status_code == 200
        assert r.headers["content-security-policy"] == CSP
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "same-origin"
        assert r.headers["cache-control"] == "no-store"
        assert "<script>" not in r.text and " style=" not in r.text
        assert csrf_of(r.text) == user.csrf


async def test_cookie_flags(db_url: str, conn: asyncpg.Connection) -> None:
    async with console_for(db_url) as c:
        _, key = await c.tenant_key(scopes=READ_ONLY)
        client = c.client()
        form = await client.get("/console/login")
        r = await client.post("/console/login", data={"key": key, "csrf": csrf_of(form.text)},
                              headers={"x-forwarded-proto": "https"})
        assert r.status_code == 303
        [cookie] = [h for h in r.headers.get_list("set-cookie")
                    if h.startswith("jsrt_session=")]
        flags = {p.strip().lower() for p in cookie.split(";")[1:]}
        assert {"httponly", "secure", "samesite=lax", "path=/console"} <= flags
        token = cookie.split(";")[0].split("=", 1)[1]
        # only the hash is stored
        assert await conn.fetchval("SELECT count(*) FROM jsrt_console_sessions") == 1
        assert await conn.fetchval(
            "SELECT count(*) FROM jsrt_console_sessions WHERE id_hash = $1", token.encode()) == 0
