"""`jsrt scripts` and `jsrt executions` against a real PostgreSQL: every kind of bad input is
rejected with one clear message and nothing written; the happy paths do what they say."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from support.factories import make_tenant

from consumer.cli import build_parser
from consumer.errors import NotFound, ValidationError
from consumer.settings import Settings

HANDLER = "async function handler(input, ctx) { return { v: 1, input } }"


@pytest.fixture
def handler(tmp_path: Path) -> Path:
    path = tmp_path / "handler.js"
    path.write_text(HANDLER)
    return path


async def jsrt(db_url: str, *argv: str) -> int:
    args = build_parser().parse_args(list(argv))
    code: int = await args.func(args, Settings.from_env(env={"DATABASE_URL": db_url}))
    return code


BAD_CREATE = [
    (["--type", "scheduled", "--cron", "61 * * * *"], "minute field '61' is not valid"),
    (["--type", "scheduled", "--cron", "0 9 * * *", "--timezone", "Mars/Base"],
     "unknown timezone 'Mars/Base'"),
    (["--type", "scheduled"], "a scheduled script needs --cron"),
    (["--type", "http", "--http-path", "hooks/x"], "--http-path must start with '/'"),
    (["--type", "http", "--http-path", "/hooks/../admin"], "must not contain '..'"),
    (["--type", "http", "--http-path", "/t/other"], "must not start with /t/"),
    (["--type", "http", "--http-path", "/a b"], "characters or empty segments"),
    (["--type", "http", "--http-path", "/x", "--methods", "GET,FETCH"],
     "--methods must be among GET, POST, PUT, PATCH, DELETE (got FETCH)"),
    (["--type", "http"], "an http script needs --http-path"),
    (["--type", "event", "--event-types", "a,,b"], "--event-types must be non-empty strings"),
    (["--type", "event"], "an event script needs --event-types"),
    (["--type", "event", "--event-types", "a", "--limits", '{"max_cpu": 1}'],
     "unknown key 'max_cpu'"),
    (["--type", "event", "--event-types", "a", "--limits", '{"max_memory_bytes": "64MB"}'],
     "max_memory_bytes must be a positive integer"),
    (["--type", "event", "--event-types", "a", "--limits", '{"max_concurrent_runs": 0}'],
     "max_concurrent_runs must be a positive integer"),
    (["--type", "event", "--event-types", "a", "--limits", '{"max_execution_time_ms": 1e12}'],
     "max_execution_time_ms must be a positive integer"),
    (["--type", "event", "--event-types", "a", "--limits", '{"max_execution_time_ms": 99999999}'],
     "max_execution_time_ms must be at most 900000"),
    (["--type", "event", "--event-types", "a", "--limits", "[1]"],
     "--limits must be a JSON object"),
    (["--type", "oneoff", "--cron", "* * * * *"], "--cron and --timezone apply only to scheduled"),
    (["--type", "oneoff", "--http-path", "/x"], "--http-path and --methods apply only to http"),
]


@pytest.mark.parametrize("extra, message", BAD_CREATE, ids=[m for _, m in BAD_CREATE])
async def test_create_rejects_bad_input_before_writing(
    conn: asyncpg.Connection, db_url: str, handler: Path, extra: list[str], message: str
) -> None:
    tenant = await make_tenant(conn)
    with pytest.raises(ValidationError) as caught:
        await jsrt(db_url, "scripts", "create", "--tenant", str(tenant), "--name", "s",
                   "--file", str(handler), *extra)
    assert message in str(caught.value)
    assert ";" not in str(caught.value) and "\n" not in str(caught.value)  # one message
    assert await conn.fetchval("SELECT count(*) FROM scripts") == 0


async def test_source_and_tenant_are_checked_too(
    conn: asyncpg.Connection, db_url: str, tmp_path: Path
) -> None:
    tenant = await make_tenant(conn)
    broken = tmp_path / "broken.js"
    broken.write_text("function handler(input) {\n  return input +;\n}")
    cases = [
        (["--tenant", str(tenant), "--file", str(broken)],
         "the source does not parse: SyntaxError: Unexpected token ';' at line 2"),
        (["--tenant", str(tenant), "--file", str(tmp_path / "missing.js")], "cannot read --file"),
        (["--tenant", "acme", "--file", str(broken)], "--tenant must be a UUID (got 'acme')"),
    ]
    for extra, message in cases:
        with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
            await jsrt(db_url, "scripts", "create", "--name", "s", "--type", "oneoff", *extra)
    assert await conn.fetchval("SELECT count(*) FROM scripts") == 0


async def test_lifecycle(conn: asyncpg.Connection, db_url: str, handler: Path, tmp_path: Path,
                         capsys: pytest.CaptureFixture[str]) -> None:
    tenant = await make_tenant(conn)
    assert await jsrt(db_url, "scripts", "create", "--tenant", str(tenant), "--name", "hook",
                      "--type", "http", "--http-path", "/hooks/in", "--methods", "post,get",
                      "--limits", '{"max_concurrent_runs": 2}', "--file", str(handler),
                      "--json") == 0
    script_id = json.loads(capsys.readouterr().out)["id"]
    row = await conn.fetchrow("SELECT * FROM scripts WHERE id = $1", script_id)
    assert (row["status"], row["http_methods"]) == ("draft", ["GET", "POST"])
    limits = json.loads(row["resource_limits"])
    assert limits["max_concurrent_runs"] == 2 and limits["max_execution_time_ms"] == 30000
    ref = f"{tenant}/hook"

    await jsrt(db_url, "scripts", "activate", ref)
    assert await conn.fetchval("SELECT is_active FROM script_http_endpoints WHERE script_id = $1",
                               script_id)
    v2 = tmp_path / "v2.js"
    v2.write_text("function handler() { return 2 }")
    await jsrt(db_url, "scripts", "update", ref, "--file", str(v2), "--message", "second")
    await jsrt(db_url, "scripts", "update", script_id, "--limits", '{"max_memory_bytes": 33554432}')
    limits = json.loads(await conn.fetchval("SELECT resource_limits FROM scripts WHERE id = $1",
                                            script_id))
    assert (limits["max_memory_bytes"], limits["max_concurrent_runs"]) == (33554432, 2)
    await jsrt(db_url, "scripts", "rollback", ref, "1")
    assert await conn.fetchval("SELECT source FROM scripts WHERE id = $1", script_id) == HANDLER
    capsys.readouterr()

    await jsrt(db_url, "scripts", "versions", ref, "--json")
    versions = json.loads(capsys.readouterr().out)
    assert [(v["version_number"], v["current"]) for v in versions] == [
        (3, True), (2, False), (1, False)]  # version 1's source, but version 3 is current
    assert versions[0]["change_description"] == "rollback to version 1"
    assert versions[1]["change_description"] == "second"
    for again in ("1", "3"):  # the source already: nothing to roll back, no new version
        assert await jsrt(db_url, "scripts", "rollback", ref, again) == 0
        assert capsys.readouterr().out == (
            f"{script_id} already has the source of version {again} (current version 3): "
            "nothing changed\n")
    assert await conn.fetchval(
        "SELECT max(version_number) FROM script_versions WHERE script_id = $1", script_id) == 3
    await jsrt(db_url, "scripts", "rollback", ref, "2")
    assert capsys.readouterr().out == (
        f"{script_id} rolled back to the source of version 2, as version 4\n")
    await jsrt(db_url, "scripts", "rollback", ref, "1")
    capsys.readouterr()

    await jsrt(db_url, "scripts", "pause", ref)
    await jsrt(db_url, "scripts", "list", "--tenant", str(tenant))
    out = capsys.readouterr().out
    assert "hook" in out and "paused" in out and "/hooks/in" in out
    await jsrt(db_url, "scripts", "show", "hook", "--tenant", str(tenant))
    assert HANDLER in capsys.readouterr().out
    await jsrt(db_url, "scripts", "archive", ref)
    assert await conn.fetchval("SELECT status FROM scripts WHERE id = $1", script_id) == "archived"


async def test_update_checks_the_merged_script(
    conn: asyncpg.Connection, db_url: str, handler: Path
) -> None:
    tenant = await make_tenant(conn)
    for name, path in (("a", "/a"), ("b", "/b")):
        await jsrt(db_url, "scripts", "create", "--tenant", str(tenant), "--name", name,
                   "--type", "http", "--http-path", path, "--file", str(handler))
    before = await conn.fetch("SELECT * FROM scripts ORDER BY name")
    cases = [
        (["--http-path", "/b"], "--http-path /b is taken in this tenant"),
        (["--name", "b"], "a script named 'b' exists in this tenant"),
        (["--type", "scheduled"], "a scheduled script needs --cron"),
        (["--methods", "TRACE"], "--methods must be among"),
        (["--limits", '{"max_api_calls_per_minute": -5}'], "must be a positive integer"),
        ([], "nothing to change"),
    ]
    for extra, message in cases:
        with pytest.raises(ValidationError, match=message):
            await jsrt(db_url, "scripts", "update", f"{tenant}/a", *extra)
    assert await conn.fetch("SELECT * FROM scripts ORDER BY name") == before
    # a change of type drops the old type's trigger settings
    await jsrt(db_url, "scripts", "update", f"{tenant}/a", "--type", "scheduled",
               "--cron", "*/5 * * * *", "--timezone", "Europe/Paris")
    row = await conn.fetchrow("SELECT * FROM scripts WHERE name = 'a'")
    assert (row["type"], row["http_path"], row["cron_expression"]) == ("scheduled", None,
                                                                       "*/5 * * * *")
    assert await conn.fetchval("SELECT timezone FROM script_scheduled_jobs WHERE script_id = $1",
                               row["id"]) == "Europe/Paris"


async def test_unknown_scripts_and_tenants(conn: asyncpg.Connection, db_url: str,
                                           handler: Path) -> None:
    tenant = await make_tenant(conn)
    with pytest.raises(NotFound):
        await jsrt(db_url, "scripts", "show", f"{tenant}/nope")
    with pytest.raises(NotFound):
        await jsrt(db_url, "scripts", "create", "--tenant", "00000000-0000-0000-0000-000000000001",
                   "--name", "x", "--type", "oneoff", "--file", str(handler))
    with pytest.raises(ValidationError, match="a bare name needs --tenant"):
        await jsrt(db_url, "scripts", "show", "nope")


async def test_executions_list_and_show(conn: asyncpg.Connection, db_url: str, handler: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    from consumer.runtime import Runtime

    tenant = await make_tenant(conn)
    await jsrt(db_url, "scripts", "create", "--tenant", str(tenant), "--name", "job",
               "--type", "oneoff", "--file", str(handler))
    script_id = await conn.fetchval("SELECT id FROM scripts WHERE name = 'job'")
    async with Runtime(db_url, workers=1) as rt:
        ok = await rt.execute(script_id, {"n": 1}, tenant_id=tenant)
        bad = await rt.execute_source(tenant, "function handler() { console.log('hi');"
                                      " throw new Error('boom') }")
    capsys.readouterr()

    await jsrt(db_url, "executions", "list", "--tenant", str(tenant), "--json")
    listed = json.loads(capsys.readouterr().out)
    assert {r["id"] for r in listed} == {str(ok.execution_id), str(bad.execution_id)}
    await jsrt(db_url, "executions", "list", "--script", f"{tenant}/job", "--status",
               "completed", "--since", "1h")
    out = capsys.readouterr().out
    assert str(ok.execution_id) in out and str(bad.execution_id) not in out
    await jsrt(db_url, "executions", "list", "--since", "2999-01-01T00:00:00", "--json")
    assert json.loads(capsys.readouterr().out) == []

    await jsrt(db_url, "executions", "show", str(bad.execution_id), "--json")
    shown: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert shown["status"] == "failed" and shown["error"].startswith("Error: boom")
    assert [line["message"] for line in shown["logs"]] == ["hi"]
    await jsrt(db_url, "executions", "show", str(ok.execution_id))
    out = capsys.readouterr().out
    assert '"n": 1' in out and "duration_ms" in out
    with pytest.raises(ValidationError, match="--since"):
        await jsrt(db_url, "executions", "list", "--since", "yesterday")
    with pytest.raises(NotFound):
        await jsrt(db_url, "executions", "show", str(ok.execution_id), "--tenant",
                   "00000000-0000-0000-0000-000000000001")


def run_cli(db_url: str, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": db_url, "JSRT_LOG_FORMAT": "json"}
    return subprocess.run([sys.executable, "-m", "consumer.cli", *argv], env=env,
                          capture_output=True, text=True, timeout=60)


async def test_cli_prints_one_error_line_and_exits_2(
    conn: asyncpg.Connection, db_url: str, handler: Path
) -> None:
    tenant = await make_tenant(conn)
    done = run_cli(db_url, "scripts", "create", "--tenant", str(tenant), "--name", "n",
                   "--type", "scheduled", "--cron", "* * *", "--file", str(handler))
    assert done.returncode == 2  # a usage error: nothing was attempted
    assert done.stderr.strip().splitlines() == [
        "jsrt: error: --cron: invalid cron expression '* * *': expected 5 fields "
        "(minute hour day-of-month month day-of-week), got 3"]
    assert await conn.fetchval("SELECT count(*) FROM scripts") == 0


async def test_cli_prints_every_problem_on_a_line_of_its_own(
    conn: asyncpg.Connection, db_url: str, tmp_path: Path
) -> None:
    tenant = await make_tenant(conn)
    broken = tmp_path / "broken.js"
    broken.write_text("function handler(input) {\n  return input +;\n}")
    done = run_cli(db_url, "scripts", "create", "--tenant", str(tenant), "--name", "a/b",
                   "--type", "scheduled", "--cron", "61 * * * *", "--timezone", "Mars/Base",
                   "--http-path", "/x", "--file", str(broken))
    assert done.stderr.splitlines() == [
        "jsrt: error: --name must not contain '/' or control characters",
        "jsrt: error: --cron: invalid cron expression '61 * * * *': minute field '61' is not "
        "valid (allowed: 0-59)",
        "jsrt: error: --timezone: unknown timezone 'Mars/Base'",
        "jsrt: error: --http-path and --methods apply only to http scripts",
        "jsrt: error: the source does not parse: SyntaxError: Unexpected token ';' at line 2"]
    (tmp_path / "ok.js").write_text(HANDLER)
    await jsrt(db_url, "scripts", "create", "--tenant", str(tenant), "--name", "hook",
               "--type", "http", "--http-path", "/hook", "--file", str(tmp_path / "ok.js"))
    done = run_cli(db_url, "scripts", "update", f"{tenant}/hook", "--methods", "GET,FETCH",
                   "--http-path", "/t/x", "--event-types", "a")
    assert done.stderr.splitlines() == [
        "jsrt: error: --methods must be among GET, POST, PUT, PATCH, DELETE (got FETCH)",
        "jsrt: error: --http-path must not start with /t/ (reserved for /t/{tenant_id}/...)",
        "jsrt: error: --event-types applies only to event scripts"]
    assert await conn.fetchval("SELECT count(*) FROM scripts") == 1


async def test_errors_say_what_to_do(db_url: str, empty_db_url: str, tmp_path: Path) -> None:
    """A server that is down, a database never migrated: where, and what to do."""
    embedded = tmp_path / ".jsrt" / "pgdata"
    embedded.mkdir(parents=True)
    down = run_cli(f"postgresql://postgres:@/postgres?host={embedded}", "executions", "list")
    assert down.returncode == 1
    assert down.stderr.splitlines() == [
        f"jsrt: error: cannot reach the database at the socket in {embedded}: no server is "
        "listening there; the embedded server runs only while `make run` (`jsrt dev`) does"]
    with socket.create_server(("127.0.0.1", 0)) as free:  # a port nobody answers on
        port = free.getsockname()[1]
    refused = run_cli(f"postgresql://postgres:secret@127.0.0.1:{port}/x", "scripts", "list")
    assert refused.stderr.splitlines() == [
        f"jsrt: error: cannot reach the database at 127.0.0.1:{port}: no server is listening "
        "there; is PostgreSQL running there, and is DATABASE_URL right?"]

    for argv in (("executions", "list"), ("publish", str(uuid.uuid4()), "x.y"),
                 ("dead-letters", "list")):
        bare = run_cli(empty_db_url, *argv)
        assert bare.returncode == 1, argv
        [line] = bare.stderr.splitlines()
        assert line.startswith("jsrt: error: database error: ") and line.endswith(
            "does not exist: the jsruntime schema is missing or out of date here; run "
            "`jsrt migrate up`"), line

    usage = run_cli(db_url, "exec", "--help")
    assert "not in a running daemon: the daemon's settings do not apply" in " ".join(
        usage.stdout.split())


async def test_exec_exit_codes(conn: asyncpg.Connection, db_url: str) -> None:
    from support.factories import make_script

    tenant = await make_tenant(conn)
    await make_script(conn, tenant, "function handler(i) { return { twice: i.n * 2 } }",
                      name="double", type="oneoff", status="draft")
    await make_script(conn, tenant, "function handler() { console.warn('careful');"
                      " throw new RangeError('too far') }", name="fails", type="oneoff")
    await make_script(conn, tenant, "function handler() { while (true) {} }", name="spins",
                      type="oneoff", limits={"max_execution_time_ms": 200})

    ok = run_cli(db_url, "exec", f"{tenant}/double", "--input", '{"n": 21}')
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout) == {"twice": 42}

    failed = run_cli(db_url, "exec", "fails", "--tenant", str(tenant))
    assert failed.returncode == 1 and failed.stdout == ""
    assert "failed: RangeError: too far" in failed.stderr
    assert "[warn] careful" in failed.stderr

    slow = run_cli(db_url, "exec", f"{tenant}/spins", "--json")
    assert slow.returncode == 1
    assert json.loads(slow.stdout)["status"] == "timeout"

    bad_input = run_cli(db_url, "exec", f"{tenant}/double", "--input", "{nope")
    assert bad_input.returncode == 2 and "--input is not valid JSON" in bad_input.stderr

    rows = await conn.fetch("SELECT status, trigger_type FROM script_executions "
                            "WHERE tenant_id = $1 ORDER BY started_at", tenant)
    assert [(r["status"], r["trigger_type"]) for r in rows] == [
        ("completed", "manual"), ("failed", "manual"), ("timeout", "manual")]
    assert await conn.fetchval("SELECT count(*) FROM jsrt_daemons") == 0
