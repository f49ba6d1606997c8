"""`jsrt keys`, `jsrt secrets` and the access options of `jsrt scripts` (#15), as a person runs
them: the real command in a subprocess, on a real PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import asyncpg
from cryptography.fernet import Fernet
from support.cli import run_cli
from support.factories import make_tenant

from consumer.secrets import Cipher
from consumer.settings import Settings
from consumer.store import Store

KEY1, KEY2 = Fernet.generate_key().decode(), Fernet.generate_key().decode()
PEPPER = {"JSRT_KEY_PEPPER": "cli-pepper"}


def with_stdin(db_url: str, stdin: str, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "DATABASE_URL": db_url, "JSRT_LOG_FORMAT": "json", **env}
    return subprocess.run([sys.executable, "-m", "consumer.cli", *argv], env=full, input=stdin,
                          capture_output=True, text=True, timeout=60)


async def test_keys_create_list_revoke(conn: asyncpg.Connection, db_url: str) -> None:
    tenant = await make_tenant(conn)
    made = run_cli(db_url, "keys", "create", "--tenant", str(tenant), "--name", "ci",
                   "--scopes", "invoke,executions:read", **PEPPER)
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip().splitlines()[-1]
    assert key.startswith("jsrt_")
    op = run_cli(db_url, "keys", "create", "--operator", "--name", "console", "--json", **PEPPER)
    assert json.loads(op.stdout)["tenant_id"] == "operator"

    listed = run_cli(db_url, "keys", "list", "--tenant", str(tenant), "--json", **PEPPER)
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert {r["name"] for r in rows} == {"ci", "console"}
    assert key not in listed.stdout and key.rsplit("_", 1)[1] not in listed.stdout
    assert "key_hash" not in rows[0]
    [ci] = [r for r in rows if r["name"] == "ci"]
    assert ci["scopes"] == ["invoke", "executions:read"] and ci["revoked_at"] is None

    settings = Settings.from_env(env={"DATABASE_URL": db_url, **PEPPER})
    async with Store.session(db_url, settings=settings) as store:
        assert (await store.keys.verify(key)) is not None
        revoked = run_cli(db_url, "keys", "revoke", ci["id"], **PEPPER)
        assert revoked.returncode == 0 and f"revoked {ci['id']}" in revoked.stdout
        assert await store.keys.verify(key) is None
    async with Store.session(db_url) as other_pepper:  # the pepper is part of the hash
        assert await other_pepper.keys.verify(op.stdout and json.loads(op.stdout)["key"]) is None

    bad = run_cli(db_url, "keys", "create", "--tenant", str(tenant), "--name", "x",
                  "--scopes", "everything")
    assert bad.returncode == 2 and "unknown scope 'everything'" in bad.stderr
    missing = run_cli(db_url, "keys", "revoke", "nosuchkey")
    assert missing.returncode == 1 and "no key nosuchkey" in missing.stderr


async def test_secrets_set_list_delete_never_show_a_value(conn: asyncpg.Connection, db_url: str,
                                                          tmp_path: Path) -> None:
    tenant = await make_tenant(conn)
    env = {"JSRT_SECRETS_KEY": KEY1}
    set_ = with_stdin(db_url, "value-from-stdin\n", "secrets", "set", "--tenant", str(tenant),
                      "API_TOKEN", **env)
    assert set_.returncode == 0, set_.stderr
    assert set_.stdout.strip() == "created secret API_TOKEN"
    file = tmp_path / "v"
    file.write_text("value-from-file")
    again = run_cli(db_url, "secrets", "set", "--tenant", str(tenant), "SIGNING",
                    "--from-file", str(file), **env)
    assert again.returncode == 0, again.stderr
    argv = run_cli(db_url, "secrets", "set", "--tenant", str(tenant), "X", "in-argv", **env)
    assert argv.returncode == 2  # a value is never taken from the command line

    listed = run_cli(db_url, "secrets", "list", "--tenant", str(tenant), **env)
    assert "API_TOKEN" in listed.stdout and "SIGNING" in listed.stdout
    assert "value-from" not in listed.stdout + listed.stderr
    stored = await conn.fetch("SELECT ciphertext FROM jsrt_secrets WHERE tenant_id = $1", tenant)
    assert all("value-from" not in r["ciphertext"] for r in stored)
    async with Store.session(db_url, settings=Settings(secrets_key=(KEY1,))) as store:
        assert await store.secrets.get(tenant, "API_TOKEN") == "value-from-stdin"

    gone = run_cli(db_url, "secrets", "delete", "--tenant", str(tenant), "SIGNING", **env)
    assert gone.returncode == 0
    assert "SIGNING" not in run_cli(db_url, "secrets", "list", **env).stdout

    nokey = with_stdin(db_url, "abcdefgh", "secrets", "set", "--tenant", str(tenant), "Y")
    assert nokey.returncode == 1
    assert nokey.stderr.strip() == ("jsrt: error: secrets are not available: JSRT_SECRETS_KEY "
                                    "is not set on this server")
    short = with_stdin(db_url, "ab", "secrets", "set", "--tenant", str(tenant), "Y", **env)
    assert short.returncode == 2 and "at least 4 characters" in short.stderr
    badkey = run_cli(db_url, "secrets", "list", JSRT_SECRETS_KEY="not-a-key")
    assert badkey.returncode == 1 and "JSRT_SECRETS_KEY must be Fernet keys" in badkey.stderr


async def test_secrets_rotate_reencrypts_under_the_first_key(conn: asyncpg.Connection,
                                                             db_url: str) -> None:
    tenant = await make_tenant(conn)
    assert with_stdin(db_url, "rotate-me-please", "secrets", "set", "--tenant", str(tenant),
                      "TOKEN", JSRT_SECRETS_KEY=KEY1).returncode == 0
    before = await conn.fetchval("SELECT ciphertext FROM jsrt_secrets")
    rotated = run_cli(db_url, "secrets", "rotate", JSRT_SECRETS_KEY=f"{KEY2},{KEY1}")
    assert rotated.returncode == 0, rotated.stderr
    assert "re-encrypted 1 secret(s)" in rotated.stdout
    after = await conn.fetchval("SELECT ciphertext FROM jsrt_secrets")
    assert after != before
    assert Cipher.from_keys([KEY2]).decrypt(tenant, "TOKEN", after) == "rotate-me-please"


async def test_scripts_access_options_are_validated_and_kept(conn: asyncpg.Connection,
                                                             db_url: str, tmp_path: Path) -> None:
    tenant = await make_tenant(conn)
    handler = tmp_path / "h.js"
    handler.write_text("async function handler(req) { return 1 }")
    base = ["scripts", "create", "--tenant", str(tenant), "--type", "http", "--file",
            str(handler)]
    refused = {
        ("--auth", "hmac"): "metadata.auth 'hmac' needs metadata.auth_secret",
        ("--access", '{"auth": "magic"}'): "metadata.auth must be one of key, hmac, jwt, public",
        ("--access", '{"rate_limit_per_minute": 0}'): "rate_limit_per_minute must be an integer",
        ("--access", '{"cors": {"origins": []}}'): "metadata.cors.origins must name at least one",
        ("--access", '{"colour": "red"}'): "--access must be a JSON object of",
    }
    for i, (opts, message) in enumerate(refused.items()):
        r = run_cli(db_url, *base, "--name", f"bad{i}", "--http-path", f"/bad{i}", *opts)
        assert r.returncode == 2 and message in r.stderr, (opts, r.stderr)
    assert await conn.fetchval("SELECT count(*) FROM scripts WHERE tenant_id = $1", tenant) == 0

    access = {"auth": "hmac", "auth_secret": "HOOK", "rate_limit_per_minute": 30,
              "cors": {"origins": "*"}}
    ok = run_cli(db_url, *base, "--name", "hook", "--http-path", "/hook", "--access",
                 json.dumps(access))
    assert ok.returncode == 0, ok.stderr
    meta = json.loads(await conn.fetchval("SELECT metadata::text FROM scripts WHERE name = 'hook'"))
    assert meta == access
    up = run_cli(db_url, "scripts", "update", f"{tenant}/hook", "--auth", "public",
                 "--access", '{"auth_secret": null}')
    assert up.returncode == 0, up.stderr
    meta = json.loads(await conn.fetchval("SELECT metadata::text FROM scripts WHERE name = 'hook'"))
    assert meta == {"auth": "public", "rate_limit_per_minute": 30, "cors": {"origins": "*"}}
