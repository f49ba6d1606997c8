"""HTTP endpoint access (#15) against a real PostgreSQL and real V8: API keys, HMAC, JWT,
public endpoints, tenant secrets and their masking, the per-endpoint rate limit across two
servers, CORS."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import httpx
import jwt
import pytest
import structlog
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from starlette.applications import Starlette
from support.cli import run_cli
from support.factories import executions, make_script, make_tenant

from consumer import keys as keys_module
from consumer.access import sign
from consumer.app import sandbox
from consumer.clock import FakeClock
from consumer.http import build_app
from consumer.lease import Lease
from consumer.ondemand import OnDemand
from consumer.sandbox import Executor
from consumer.settings import Settings
from consumer.store import Store

WHO = "async function handler(req, ctx) { return { auth: ctx.auth, body: req.body } }"
SECRETS_KEY = Fernet.generate_key().decode()
# a fixed instant, mid-minute: the HMAC window and the rate-limit windows are read on it
NOW = datetime.now(UTC).replace(second=20, microsecond=0)


@dataclass
class Access:
    client: httpx.AsyncClient
    store: Store
    executor: Executor
    settings: Settings
    clock: FakeClock
    ondemand: OnDemand


def _settings(db_url: str, **over: Any) -> Settings:
    return Settings.from_env(env={"DATABASE_URL": db_url}, secrets_key=(SECRETS_KEY,),
                             key_pepper="pepper-for-tests", **over)


@pytest.fixture
async def rsa_key(tmp_path: Path) -> tuple[rsa.RSAPrivateKey, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    path = tmp_path / "jwt.pem"
    path.write_bytes(pem)
    return key, path


@pytest.fixture
async def acc(db_url: str, rsa_key: tuple[rsa.RSAPrivateKey, Path]) -> AsyncIterator[Access]:
    settings = _settings(db_url, jwt_public_key_file=str(rsa_key[1]))
    store = await Store.open(db_url, settings=settings)
    clock = FakeClock(NOW)
    try:
        async with sandbox(settings, store, workers=1) as ex, \
                Lease(store, 0.5, kind="http-test") as lease:
            ondemand = OnDemand(store, ex, lease.id)
            app = build_app(store, ondemand, settings, clock)
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                         base_url="http://jsrt") as client:
                yield Access(client, store, ex, settings, clock, ondemand)
    finally:
        await store.close()


async def endpoint(conn: asyncpg.Connection, tenant: UUID, path: str, source: str = WHO,
                   **metadata: Any) -> UUID:
    return await make_script(conn, tenant, source, type="http", http_path=path,
                             http_methods=["GET", "POST"], metadata=metadata)


def row_text(row: asyncpg.Record) -> str:
    return json.dumps({k: row[k] for k in row}, default=str)


# ------------------------------------------------------------------ API keys
async def test_key_mode_accepts_a_key_of_the_tenant_with_invoke(
        conn: asyncpg.Connection, acc: Access) -> None:
    tenant = await make_tenant(conn)
    await endpoint(conn, tenant, "/who")  # no metadata.auth: "key" is the default
    key = await acc.store.keys.create(tenant, "ci", ["invoke"])

    r = await acc.client.get(f"/t/{tenant}/who", headers={"authorization": f"Bearer {key.key}"})
    assert r.status_code == 200, r.text
    assert r.json()["auth"] == {"type": "key", "key_id": key.id, "key_name": "ci",
                                "operator": False}
    r2 = await acc.client.post(f"/t/{tenant}/who", headers={"x-api-key": key.key}, json={})
    assert r2.status_code == 200, r2.text

    rows = await executions(conn, tenant)
    assert len(rows) == 2
    for row in rows:
        assert row["trigger_data"]["auth"] == {"type": "key", "key_id": key.id}
        assert key.key not in row_text(row)  # the key is in no stored column
        assert key.key.rsplit("_", 1)[1] not in row_text(row)
    stored = await conn.fetchrow("SELECT * FROM jsrt_api_keys WHERE id = $1", key.id)
    assert key.key.encode() not in bytes(stored["key_hash"]) and len(stored["key_hash"]) == 32
    assert stored["last_used_at"] is not None


async def test_key_mode_refusals(conn: asyncpg.Connection, acc: Access) -> None:
    tenant, other = await make_tenant(conn), await make_tenant(conn)
    await endpoint(conn, tenant, "/who")
    good = await acc.store.keys.create(tenant, "good")
    revoked = await acc.store.keys.create(tenant, "old")
    await acc.store.keys.revoke(revoked.id)
    foreign = await acc.store.keys.create(other, "theirs")
    reader = await acc.store.keys.create(tenant, "reader", ["scripts:read"])
    url = f"/t/{tenant}/who"

    async def status(headers: dict[str, str]) -> tuple[int, httpx.Headers]:
        r = await acc.client.get(url, headers=headers)
        return r.status_code, r.headers

    code, headers = await status({})
    assert code == 401 and headers["www-authenticate"].startswith("Bearer realm=")
    tampered = good.key[:-2] + ("AA" if not good.key.endswith("AA") else "BB")
    for wrong in ("nonsense", "jsrt_aaaaaaaaaaaa_" + "A" * 43, tampered, revoked.key):
        code, headers = await status({"authorization": f"Bearer {wrong}"})
        assert code == 401, wrong
        assert 'error="invalid_token"' in headers["www-authenticate"]
    assert (await status({"x-api-key": foreign.key}))[0] == 403
    assert (await status({"x-api-key": reader.key}))[0] == 403
    assert await executions(conn, tenant) == []  # nothing refused reached the script

    operator = await acc.store.keys.create(None, "console")
    r = await acc.client.get(url, headers={"x-api-key": operator.key})
    assert r.status_code == 200 and r.json()["auth"]["operator"] is True


async def test_unknown_tenant_and_path_stay_a_plain_404(conn: asyncpg.Connection,
                                                        acc: Access) -> None:
    tenant = await make_tenant(conn)
    await endpoint(conn, tenant, "/who")
    a = await acc.client.get(f"/t/{tenant}/nope")
    b = await acc.client.get("/t/00000000-0000-4000-8000-000000000001/who")
    assert a.status_code == b.status_code == 404
    assert a.content == b.content and "www-authenticate" not in a.headers


async def test_keys_are_compared_in_constant_time(conn: asyncpg.Connection, acc: Access,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    tenant = await make_tenant(conn)
    key = await acc.store.keys.create(tenant, "ci")
    calls: list[tuple[bytes, bytes]] = []
    real = keys_module.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(keys_module.hmac, "compare_digest", spy)
    assert await acc.store.keys.verify(key.key) is not None
    assert await acc.store.keys.verify("jsrt_bbbbbbbbbbbb_" + "B" * 43) is None  # unknown id
    assert await acc.store.keys.verify("not a key") is None
    assert len(calls) == 3  # every answer went through the one constant-time comparison


# ------------------------------------------------------------------ HMAC
async def test_hmac_mode(conn: asyncpg.Connection, acc: Access) -> None:
    tenant = await make_tenant(conn)
    await acc.store.secrets.set(tenant, "HOOK_KEY", "whsec-0123456789")
    await endpoint(conn, tenant, "/hook", auth="hmac", auth_secret="HOOK_KEY")
    url, body = f"/t/{tenant}/hook", b'{"order": 7}'
    t = int(NOW.timestamp())

    def signed(sig: str, ts: int = t) -> dict[str, str]:
        return {"x-jsrt-signature": f"t={ts},v1={sig}", "content-type": "application/json"}

    good = sign("whsec-0123456789", t, body)
    r = await acc.client.post(url, content=body, headers=signed(good))
    assert r.status_code == 200, r.text
    assert r.json() == {"auth": {"type": "hmac", "secret": "HOOK_KEY", "timestamp": t},
                        "body": {"order": 7}}

    replay = await acc.client.post(url, content=body, headers=signed(good))
    assert replay.status_code == 401 and "replay" in replay.json()["error"]
    missing = await acc.client.post(url, content=body)
    assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith(
        "Jsrt-HMAC")
    wrong = sign("another-secret", t + 1, body)
    assert (await acc.client.post(url, content=body, headers=signed(wrong, t + 1))).status_code \
        == 401
    tampered = await acc.client.post(url, content=b'{"order": 8}',
                                     headers=signed(sign("whsec-0123456789", t + 2, body), t + 2))
    assert tampered.status_code == 401
    stale_t = t - 301
    stale = await acc.client.post(url, content=body,
                                  headers=signed(sign("whsec-0123456789", stale_t, body),
                                                 stale_t))
    assert stale.status_code == 401 and "tolerance" in stale.json()["error"]
    assert len(await executions(conn, tenant)) == 1


# ------------------------------------------------------------------ JWT
async def test_jwt_hs256_with_a_tenant_secret(conn: asyncpg.Connection, acc: Access) -> None:
    tenant = await make_tenant(conn)
    await acc.store.secrets.set(tenant, "JWT_KEY", "jwt-signing-key-0123456789abcdef")
    await endpoint(conn, tenant, "/api", auth="jwt", auth_secret="JWT_KEY",
                   jwt_audience="orders")
    url = f"/t/{tenant}/api"
    now = int(time.time())

    def token(key: str = "jwt-signing-key-0123456789abcdef", **claims: Any) -> str:
        base = {"sub": "user-7", "aud": "orders", "exp": now + 300, "role": "admin"}
        return jwt.encode({**base, **claims}, key, algorithm="HS256")

    def bearer(t: str) -> dict[str, str]:
        return {"authorization": f"Bearer {t}"}

    r = await acc.client.get(url, headers=bearer(token()))
    assert r.status_code == 200, r.text
    assert r.json()["auth"] == {"type": "jwt", "claims": {
        "sub": "user-7", "aud": "orders", "exp": now + 300, "role": "admin"}}
    [row] = await executions(conn, tenant)
    assert row["trigger_data"]["auth"] == {"type": "jwt", "sub": "user-7"}
    assert token() not in row_text(row)

    none_token = jwt.encode({"sub": "x", "aud": "orders", "exp": now + 300}, None,
                            algorithm="none")
    refused = {
        "expired": token(exp=now - 10),
        "not yet valid": token(nbf=now + 3600),
        "wrong audience": token(aud="billing"),
        "wrong key": token(key="another-key-0123456789abcdef0123"),
        "alg none": none_token,
        "no exp": jwt.encode({"sub": "x", "aud": "orders"}, "jwt-signing-key-0123456789abcdef",
                             algorithm="HS256"),
        "garbage": "a.b.c",
    }
    for why, t in refused.items():
        r = await acc.client.get(url, headers=bearer(t))
        assert r.status_code == 401, why
        assert 'error="invalid_token"' in r.headers["www-authenticate"], why
    assert (await acc.client.get(url)).status_code == 401
    assert len(await executions(conn, tenant)) == 1


async def test_jwt_rs256_with_the_configured_public_key(
        conn: asyncpg.Connection, acc: Access, rsa_key: tuple[rsa.RSAPrivateKey, Path]) -> None:
    tenant = await make_tenant(conn)
    await endpoint(conn, tenant, "/api", auth="jwt")
    url, exp = f"/t/{tenant}/api", int(time.time()) + 60
    good = jwt.encode({"sub": "svc", "exp": exp}, rsa_key[0], algorithm="RS256")
    r = await acc.client.get(url, headers={"authorization": f"Bearer {good}"})
    assert r.status_code == 200, r.text
    assert r.json()["auth"]["claims"]["sub"] == "svc"
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    bad = jwt.encode({"sub": "svc", "exp": exp}, other, algorithm="RS256")
    assert (await acc.client.get(url, headers={"authorization": f"Bearer {bad}"})
            ).status_code == 401
    # an HS256 token "signed" with the public key itself (the classic confusion) is refused
    pem = rsa_key[1].read_text()
    confused = jwt.api_jws.PyJWS(algorithms=["HS256"])
    forged = confused.encode(json.dumps({"sub": "svc", "exp": exp}).encode(),
                             b"not-the-pem-" + pem.encode()[:20], algorithm="HS256")
    assert (await acc.client.get(url, headers={"authorization": f"Bearer {forged}"})
            ).status_code == 401


async def test_jwt_es256_with_a_jwks_file(conn: asyncpg.Connection, db_url: str,
                                         tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{**jwk, "kid": "k1", "alg": "ES256", "use": "sig"}]}))
    settings = _settings(db_url, jwt_jwks_file=str(jwks))
    tenant = await make_tenant(conn)
    await endpoint(conn, tenant, "/api", auth="jwt")
    exp = int(time.time()) + 60
    store = await Store.open(db_url, settings=settings)
    try:
        async with sandbox(settings, store, workers=1) as ex, Lease(store, 0.5) as lease:
            app = build_app(store, OnDemand(store, ex, lease.id), settings)
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                         base_url="http://jsrt") as client:
                good = jwt.encode({"sub": "svc", "exp": exp}, key, algorithm="ES256",
                                  headers={"kid": "k1"})
                r = await client.get(f"/t/{tenant}/api",
                                     headers={"authorization": f"Bearer {good}"})
                assert r.status_code == 200, r.text
                unknown = jwt.encode({"sub": "svc", "exp": exp}, key, algorithm="ES256",
                                     headers={"kid": "k2"})
                r = await client.get(f"/t/{tenant}/api",
                                     headers={"authorization": f"Bearer {unknown}"})
                assert r.status_code == 401
    finally:
        await store.close()


# ------------------------------------------------------------------ public, misconfigured
async def test_public_mode_asks_nothing(conn: asyncpg.Connection, acc: Access) -> None:
    tenant = await make_tenant(conn)
    await endpoint(conn, tenant, "/open", auth="public")
    r = await acc.client.get(f"/t/{tenant}/open")
    assert r.status_code == 200 and r.json()["auth"] == {"type": "public"}


async def test_metadata_written_by_sql_that_cannot_be_used_fails_closed(
        conn: asyncpg.Connection, acc: Access) -> None:
    tenant = await make_tenant(conn)
    await endpoint(conn, tenant, "/odd", auth="maybe")
    await endpoint(conn, tenant, "/nosecret", auth="hmac", auth_secret="MISSING")
    r = await acc.client.get(f"/t/{tenant}/odd")
    assert r.status_code == 500 and r.json() == {"error": "endpoint is misconfigured"}
    r = await acc.client.get(f"/t/{tenant}/nosecret",
                             headers={"x-jsrt-signature": f"t={int(NOW.timestamp())},v1=00"})
    assert r.status_code == 500 and "not configured" in r.json()["error"]
    assert await executions(conn, tenant) == []


# ------------------------------------------------------------------ secrets
LEAKY = """
async function handler(req, ctx) {
  const s = await ctx.secrets.get('API_TOKEN');
  console.log('token is', s, JSON.stringify({s}));
  if (req.query.throw) throw new Error('bad token ' + s);
  return { token: s, nested: [{ [s]: s + '!' }], same: s === 'tok-\\"quoted\\"-1234' };
}
"""


async def test_secrets_are_read_by_the_script_and_masked_everywhere(
        conn: asyncpg.Connection, acc: Access) -> None:
    tenant = await make_tenant(conn)
    value = 'tok-"quoted"-1234'
    await acc.store.secrets.set(tenant, "API_TOKEN", value)
    await endpoint(conn, tenant, "/leak", LEAKY, auth="public")
    with structlog.testing.capture_logs() as logs:
        ok = await acc.client.get(f"/t/{tenant}/leak")
        failed = await acc.client.get(f"/t/{tenant}/leak?throw=1")
    assert ok.status_code == 200, ok.text
    assert ok.json() == {"token": "[redacted]", "nested": [{"[redacted]": "[redacted]!"}],
                         "same": True}
    assert failed.status_code == 500
    rows = await executions(conn, tenant)
    assert len(rows) == 2
    escaped = json.dumps(value)[1:-1]
    for row in rows:
        text = row_text(row)
        assert value not in text and escaped not in text
        assert "[redacted]" in text
    [bad] = [r for r in rows if r["status"] == "failed"]
    assert bad["error"].startswith("Error: bad token [redacted]")
    console = await conn.fetchval("SELECT string_agg(lines::text, ' ') FROM jsrt_execution_logs "
                                  "WHERE tenant_id = $1", tenant)
    assert "token is [redacted]" in console
    assert value not in console and escaped not in console
    shown = json.dumps(logs, default=str)
    assert value not in shown and escaped not in shown
    assert any(e.get("event") == "script_console" for e in logs)
    ciphertext = await conn.fetchval("SELECT ciphertext FROM jsrt_secrets")
    assert value not in ciphertext

    cli = run_cli(acc.settings.database_url, "executions", "show", str(bad["id"]), "--json")
    assert cli.returncode == 0, cli.stderr
    assert value not in cli.stdout and escaped not in cli.stdout
    listed = run_cli(acc.settings.database_url, "secrets", "list", "--tenant", str(tenant),
                     JSRT_SECRETS_KEY=SECRETS_KEY)
    assert "API_TOKEN" in listed.stdout and value not in listed.stdout


async def test_a_tenant_cannot_read_another_tenants_secret(conn: asyncpg.Connection,
                                                          acc: Access) -> None:
    a, b = await make_tenant(conn), await make_tenant(conn)
    await acc.store.secrets.set(a, "API_TOKEN", "only-for-tenant-a")
    await endpoint(conn, b, "/steal", LEAKY, auth="public")
    r = await acc.client.get(f"/t/{b}/steal")
    assert r.status_code == 500
    [row] = await executions(conn, b)
    assert row["error"].startswith("Error: secret API_TOKEN is not set")
    # a ciphertext copied into B's row by SQL does not decrypt there
    await conn.execute("INSERT INTO jsrt_secrets (tenant_id, name, ciphertext) "
                       "SELECT $1, name, ciphertext FROM jsrt_secrets WHERE tenant_id = $2", b, a)
    await acc.client.get(f"/t/{b}/steal")
    rows = await executions(conn, b)
    assert any("belongs elsewhere" in (r["error"] or "") for r in rows)
    assert all("only-for-tenant-a" not in row_text(r) for r in rows)


async def test_without_a_secrets_key_a_script_gets_one_clear_line(
        conn: asyncpg.Connection, db_url: str) -> None:
    settings = Settings.from_env(env={"DATABASE_URL": db_url})
    tenant = await make_tenant(conn)
    await conn.execute("INSERT INTO jsrt_secrets (tenant_id, name, ciphertext) "
                       "VALUES ($1, 'API_TOKEN', 'gAAAA-not-a-token')", tenant)
    await endpoint(conn, tenant, "/leak", LEAKY, auth="public")
    store = await Store.open(db_url, settings=settings)
    try:
        async with sandbox(settings, store, workers=1) as ex, Lease(store, 0.5) as lease:
            app = build_app(store, OnDemand(store, ex, lease.id), settings)
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                         base_url="http://jsrt") as client:
                assert (await client.get(f"/t/{tenant}/leak")).status_code == 500
    finally:
        await store.close()
    [row] = await executions(conn, tenant)
    assert row["error"].splitlines()[0] == (
        "Error: secrets are not available: JSRT_SECRETS_KEY is not set on this server")


async def test_an_undecryptable_secret_gives_one_clear_line(conn: asyncpg.Connection,
                                                           acc: Access) -> None:
    tenant = await make_tenant(conn)
    other = Fernet(Fernet.generate_key())
    await conn.execute("INSERT INTO jsrt_secrets (tenant_id, name, ciphertext) VALUES "
                       "($1, 'API_TOKEN', $2)", tenant, other.encrypt(b"x").decode())
    await endpoint(conn, tenant, "/leak", LEAKY, auth="public")
    await acc.client.get(f"/t/{tenant}/leak")
    [row] = await executions(conn, tenant)
    assert row["error"].splitlines()[0] == ("Error: secret API_TOKEN cannot be decrypted with "
                                            "JSRT_SECRETS_KEY (was its key rotated away?)")


# ------------------------------------------------------------------ rate limit, CORS
async def test_rate_limit_holds_across_two_servers(conn: asyncpg.Connection, acc: Access) -> None:
    tenant = await make_tenant(conn)
    await endpoint(conn, tenant, "/limited", auth="public", rate_limit_per_minute=3)
    second: Starlette = build_app(acc.store, acc.ondemand, acc.settings, acc.clock)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=second),
                                 base_url="http://jsrt") as other:
        codes = []
        for client in (acc.client, other, acc.client, other):
            r = await client.get(f"/t/{tenant}/limited")
            codes.append(r.status_code)
    assert codes == [200, 200, 200, 429]
    assert r.headers["retry-after"] == "40"  # NOW is 20 s into its minute
    assert len(await executions(conn, tenant)) == 3


async def test_rate_limit_holds_across_two_processes_on_one_database(
        conn: asyncpg.Connection, acc: Access, db_url: str) -> None:
    tenant = await make_tenant(conn)
    await endpoint(conn, tenant, "/limited", auth="public", rate_limit_per_minute=2)
    store = await Store.open(db_url, settings=acc.settings)  # a second server's own pool
    try:
        async with Executor(workers=1) as ex, Lease(store, 0.5) as lease:
            app = build_app(store, OnDemand(store, ex, lease.id), acc.settings, acc.clock)
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                         base_url="http://jsrt") as other:
                codes = [(await c.get(f"/t/{tenant}/limited")).status_code
                         for c in (acc.client, other, other)]
    finally:
        await store.close()
    assert codes == [200, 200, 429]


CORS = {"origins": ["https://app.example"], "methods": ["GET", "POST"],
        "headers": ["content-type", "authorization"], "max_age": 120}


async def test_cors_preflight_and_response_headers(conn: asyncpg.Connection,
                                                   acc: Access) -> None:
    tenant = await make_tenant(conn)
    await endpoint(conn, tenant, "/app", cors=CORS)
    key = await acc.store.keys.create(tenant, "web")
    url = f"/t/{tenant}/app"
    pre = await acc.client.options(url, headers={
        "origin": "https://app.example", "access-control-request-method": "POST",
        "access-control-request-headers": "authorization"})
    assert pre.status_code == 204
    assert pre.headers["access-control-allow-origin"] == "https://app.example"
    assert pre.headers["access-control-allow-methods"] == "GET, POST"
    assert pre.headers["access-control-allow-headers"] == "content-type, authorization"
    assert pre.headers["access-control-max-age"] == "120"
    refused = await acc.client.options(url, headers={
        "origin": "https://evil.example", "access-control-request-method": "POST"})
    assert refused.status_code == 403 and "access-control-allow-origin" not in refused.headers
    bad_method = await acc.client.options(url, headers={
        "origin": "https://app.example", "access-control-request-method": "DELETE"})
    assert bad_method.status_code == 403
    assert await executions(conn, tenant) == []  # preflights never reach the script

    r = await acc.client.get(url, headers={"origin": "https://app.example",
                                           "authorization": f"Bearer {key.key}"})
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "https://app.example"
    assert "x-execution-id" in r.headers["access-control-expose-headers"]
    denied = await acc.client.get(url, headers={"origin": "https://app.example"})
    assert denied.status_code == 401  # a browser can read why
    assert denied.headers["access-control-allow-origin"] == "https://app.example"
    foreign = await acc.client.get(url, headers={"origin": "https://evil.example",
                                                 "authorization": f"Bearer {key.key}"})
    assert "access-control-allow-origin" not in foreign.headers
