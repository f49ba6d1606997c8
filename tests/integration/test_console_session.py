"""The web console's sign-in, sessions, CSRF and security headers, against a real
PostgreSQL (the ASGI app through httpx; no server, no browser)."""

from __future__ import annotations

import re

import anyio
import asyncpg
import httpx
import pytest
from support.console import READ_ONLY, console_for, csrf_of

from consumer.app import store_publisher
from consumer.console import CSP, MAX_BODY
from consumer.errors import StoreUnavailable
from consumer.http import HttpServer
from consumer.sandbox import Executor
from consumer.scripts import Scripts
from consumer.settings import Settings
from consumer.store import Store


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


async def test_a_wrong_key_gets_the_same_words_whatever_is_wrong(db_url: str) -> None:
    async with console_for(db_url) as c:
        tenant, key = await c.tenant_key()
        revoked = await c.store.keys.create(tenant, "old", ["scripts:read"])
        await c.store.keys.revoke(revoked.id)
        client = c.client()
        answers = []
        for wrong in ("nonsense", "jsrt_aaaaaaaaaaaa_" + "A" * 43, key[:-1] + "x", revoked.key):
            form = await client.get("/console/login")
            r = await client.post("/console/login",
                                  data={"key": wrong, "csrf": csrf_of(form.text)})
            assert r.status_code == 401
            assert "jsrt_session" not in r.headers.get("set-cookie", "")
            answers.append(r.text.split('id="signin-error">')[1].split("<")[0])
        assert len(set(answers)) == 1 and "not accepted" in answers[0]


async def test_sign_in_needs_the_forms_own_token(db_url: str) -> None:
    async with console_for(db_url) as c:
        _, key = await c.tenant_key()
        client = c.client()
        r = await client.post("/console/login", data={"key": key})
        assert r.status_code == 403 and "sign in again" in r.text
        form = await client.get("/console/login")
        r = await client.post("/console/login", data={"key": key, "csrf": "forged"})
        assert r.status_code == 403
        assert csrf_of(form.text)


async def test_failed_sign_ins_are_rate_limited(db_url: str) -> None:
    async with console_for(db_url, console_signin_per_minute=3) as c:
        _, key = await c.tenant_key()
        client = c.client()
        for _ in range(3):
            form = await client.get("/console/login")
            r = await client.post("/console/login",
                                  data={"key": "wrong", "csrf": csrf_of(form.text)})
            assert r.status_code == 401
        form = await client.get("/console/login")
        r = await client.post("/console/login", data={"key": key, "csrf": csrf_of(form.text)})
        assert r.status_code == 429 and "wait a minute" in r.text
        assert r.headers["retry-after"] == "60"


async def test_no_session_and_refused_sessions(db_url: str, conn: asyncpg.Connection) -> None:
    async with console_for(db_url) as c:
        _, key = await c.tenant_key()
        anonymous = c.client()
        r = await anonymous.get("/console/scripts?q=x")
        assert r.status_code == 303
        assert r.headers["location"] == "/console/login?next=/console/scripts%3Fq%3Dx"
        r = await anonymous.get("/console/scripts", headers={"hx-request": "true"})
        assert r.status_code == 401 and r.headers["hx-redirect"] == "/console/login"
        r = await anonymous.post("/console/logout", data={"csrf": "x"})
        assert r.status_code == 401
        forged = c.client(cookies={"jsrt_session": "made-up"})
        r = await forged.get("/console/scripts")
        assert r.status_code == 303

        # absolute expiry
        user = await c.signed_in(key)
        await conn.execute("UPDATE jsrt_console_sessions SET expires_at = NOW() - interval '1 s'")
        r = await user.get("/console/scripts")
        assert r.status_code == 303 and r.headers["location"].startswith("/console/login")
        assert await conn.fetchval("SELECT count(*) FROM jsrt_console_sessions") == 0

        # idle expiry
        user = await c.signed_in(key)
        await conn.execute("UPDATE jsrt_console_sessions SET last_seen = NOW() - interval '2 h'")
        r = await user.get("/console/scripts")
        assert r.status_code == 303
        assert await conn.fetchval("SELECT count(*) FROM jsrt_console_sessions") == 0


async def test_a_revoked_key_ends_its_sessions(db_url: str, conn: asyncpg.Connection) -> None:
    async with console_for(db_url) as c:
        tenant, _ = await c.tenant_key()
        made = await c.store.keys.create(tenant, "soon revoked", ["scripts:read"])
        user = await c.signed_in(made.key)
        assert (await user.get("/console/scripts")).status_code == 200
        await c.store.keys.revoke(made.id)
        r = await user.get("/console/scripts")
        assert r.status_code == 303 and r.headers["location"].startswith("/console/login")
        assert await conn.fetchval("SELECT count(*) FROM jsrt_console_sessions") == 0


async def test_sign_out_needs_the_csrf_token_and_deletes_the_session(
        db_url: str, conn: asyncpg.Connection) -> None:
    async with console_for(db_url) as c:
        _, key = await c.tenant_key()
        user = await c.signed_in(key)
        r = await user.post("/console/logout", csrf=None)
        assert r.status_code == 403 and "CSRF" in r.text
        r = await user.post("/console/logout", csrf="wrong")
        assert r.status_code == 403
        r = await user.htmx("POST", "/console/logout", csrf="wrong")
        assert r.status_code == 403
        assert await conn.fetchval("SELECT count(*) FROM jsrt_console_sessions") == 1
        r = await user.post("/console/logout")
        assert r.status_code == 303 and r.headers["location"] == "/console/login"
        assert await conn.fetchval("SELECT count(*) FROM jsrt_console_sessions") == 0
        assert (await user.get("/console/scripts")).status_code == 303


async def test_operators_switch_tenants_and_tenant_keys_cannot(db_url: str,
                                                                conn: asyncpg.Connection) -> None:
    async with console_for(db_url) as c:
        tenant, key = await c.tenant_key()
        other = await c.tenant("other")
        operator = await c.signed_in(await c.operator_key())
        page = await operator.get("/console/scripts")
        assert 'id="tenant-select"' in page.text and "other" in page.text
        r = await operator.post("/console/tenant", {"tenant": str(other),
                                                    "next": "/console/scripts"})
        assert r.status_code == 303 and r.headers["location"] == "/console/scripts"
        assert await conn.fetchval("SELECT tenant_id FROM jsrt_console_sessions") == other
        r = await operator.post("/console/tenant", {"tenant": "", "next": "https://evil.example/"})
        assert r.status_code == 303 and r.headers["location"] == "/console/"
        assert await conn.fetchval("SELECT tenant_id FROM jsrt_console_sessions") is None
        r = await operator.post("/console/tenant",
                                {"tenant": "00000000-0000-4000-8000-000000000000"})
        assert r.status_code == 404

        user = await c.signed_in(key)
        assert 'id="tenant-select"' not in (await user.get("/console/scripts")).text
        r = await user.post("/console/tenant", {"tenant": str(other)})
        assert r.status_code == 403
        r = await user.post("/console/tenant", {"tenant": str(tenant)}, csrf=None)
        assert r.status_code == 403


async def test_sign_in_goes_back_where_it_was_asked_and_nowhere_else(db_url: str) -> None:
    async with console_for(db_url) as c:
        _, key = await c.tenant_key()
        for target, landing in (("/console/keys", "/console/keys"),
                                ("//evil.example/console/", "/console/"),
                                ("https://evil.example/", "/console/")):
            client = c.client()
            form = await client.get("/console/login", params={"next": target})
            r = await client.post("/console/login", data={
                "key": key, "csrf": csrf_of(form.text), "next": target})
            assert r.headers["location"] == landing


async def test_errors_are_pages_in_words(db_url: str) -> None:
    async with console_for(db_url) as c:
        _, key = await c.tenant_key(scopes=READ_ONLY)
        user = await c.signed_in(key)
        r = await user.get("/console/no-such-page")
        assert r.status_code == 404 and "no such page" in r.text
        assert r.headers["content-security-policy"] == CSP
        r = await user.get("/console/keys")
        assert r.status_code == 403 and "keys:manage" in r.text
        assert "Traceback" not in r.text


async def test_static_files_are_served_with_long_cache_headers(db_url: str) -> None:
    async with console_for(db_url) as c:
        client = c.client()
        r = await client.get("/console/static/console.css")
        assert r.status_code == 200 and "immutable" in r.headers["cache-control"]
        assert r.headers["x-content-type-options"] == "nosniff"
        r = await client.get("/console/static/nope.js")
        assert r.status_code == 404


async def test_missing_front_end_files_are_named_in_words(db_url: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from consumer.console import vendor

    monkeypatch.setattr(vendor, "missing", lambda: ("htmx.min.js",))
    async with console_for(db_url) as c:
        _, key = await c.tenant_key()
        user = await c.signed_in(key)
        r = await user.get("/console/scripts/new")
        assert r.status_code == 200
        assert "front-end files are missing" in r.text and "static/vendor/htmx.min.js" in r.text
        assert 'id="source"' in r.text  # the textarea: the form still works


async def test_every_page_has_the_security_headers_and_no_inline_script(db_url: str) -> None:
    async with console_for(db_url) as c:
        _, key = await c.tenant_key()
        user = await c.signed_in(key)
        for path in ("/console/login", "/console/scripts", "/console/scripts/new",
                     "/console/keys", "/console/overview", "/console/executions",
                     "/console/dead-letters"):
            r = await user.get(path, follow_redirects=True)
            assert r.status_code == 200, path
            assert r.headers["content-security-policy"] == CSP, path
            assert r.headers["cache-control"] == "no-store", path
            assert re.search(r"<script(?![^>]*\ssrc=)[^>]*>", r.text) is None, path
            assert " style=" not in r.text and "<style" not in r.text, path
            assert re.search(r"\son[a-z]+=", r.text) is None, path  # no inline handlers


async def test_an_unexpected_error_is_a_page_in_words_without_a_traceback(
        db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    async with console_for(db_url) as c:
        _, key = await c.tenant_key()
        user = await c.signed_in(key)

        async def broken(*args: object, **kw: object) -> None:
            raise RuntimeError("internal detail that must not leak")

        monkeypatch.setattr(Scripts, "browse", broken)
        r = await user.get("/console/scripts")
        assert r.status_code == 500
        assert "internal error" in r.text and "must not leak" not in r.text
        assert "Traceback" not in r.text
        assert r.headers["content-security-policy"] == CSP

        async def unavailable(*args: object, **kw: object) -> None:
            raise StoreUnavailable("database unavailable: ConnectionRefusedError")

        monkeypatch.setattr(Scripts, "browse", unavailable)
        r = await user.get("/console/scripts")
        assert r.status_code == 503 and "cannot be reached" in r.text
        assert r.headers["retry-after"] == "2"


async def test_bodies_are_bounded_before_anyone_is_signed_in(db_url: str) -> None:
    async with console_for(db_url) as c:
        client = c.client()
        r = await client.post("/console/login", content=b"k=" + b"a" * (MAX_BODY + 1),
                              headers={"content-type": "application/x-www-form-urlencoded"})
        assert r.status_code == 413 and "larger than" in r.text
        assert r.headers["content-security-policy"] == CSP

        async def chunks():  # no content-length: counted as it arrives (fields < 1 MiB each)
            for i in range(6):
                yield b"&f%d=" % i + b"a" * (MAX_BODY // 5)

        r = await client.post("/console/login", content=chunks(),
                              headers={"content-type": "application/x-www-form-urlencoded"})
        assert r.status_code == 413, r.text


async def test_the_http_server_serves_the_console_beside_the_triggers(db_url: str) -> None:
    """What `jsrt serve` and `jsrt run --http` run: uvicorn on a loopback port."""
    settings = Settings.from_env(env={"DATABASE_URL": db_url})
    store = await Store.open(db_url, settings=settings)
    try:
        tenant = await store.tenants.create("served")
        key = (await store.keys.create(tenant, "k", ["scripts:read"])).key
        async with Executor(workers=1, publisher=store_publisher(store)) as ex:
            server = HttpServer(settings, store, ex, "127.0.0.1:0")
            async with anyio.create_task_group() as tg:
                port = await tg.start(server.run)
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                    form = await client.get("/console/login")
                    signed = await client.post("/console/login", data={
                        "key": key, "csrf": csrf_of(form.text)})
                    page = await client.get("/console/scripts")
                    css = await client.get("/console/static/console.css")
                    trigger = await client.get(f"/t/{tenant}/nothing-here")
                await server.shutdown()
    finally:
        await store.close()
    assert form.status_code == 200 and form.headers["content-security-policy"] == CSP
    assert signed.status_code == 303
    cookie = signed.headers["set-cookie"].lower()
    assert "httponly" in cookie and "secure" not in cookie  # plain http: no Secure flag
    assert page.status_code == 200 and "This tenant has no scripts yet" in page.text
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert trigger.status_code == 404 and trigger.json() == {"error": "not found"}
