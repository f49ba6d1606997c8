"""Replay (#19) against a real PostgreSQL and real V8: finished executions run again as new
executions with the same input and trigger data, linked by trigger_data.replay_of, with the
script's current source or the version that ran the original; and dead letters retried with
the version they recorded."""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

import asyncpg
from support.cli import run_cli
from support.daemons import drain
from support.factories import make_script, make_tenant, publish

from consumer.sandbox import Executor

V1 = 'function handler(i) { throw new Error("v1 " + i.n) }'
V2 = 'function handler(i) { return "v2 " + i.n }'


async def failed_once(conn: asyncpg.Connection, db_url: str,
                      executor: Executor) -> tuple[UUID, UUID, UUID]:
    """A script whose version 1 failed on an event, then changed to a version 2 that works:
    (tenant, script, the failed execution)."""
    tenant = await make_tenant(conn)
    script = await make_script(conn, tenant, V1, name="orders")
    await publish(conn, tenant, "thing.happened", {"n": 7})
    await drain(db_url, executor)
    failed = await conn.fetchval("SELECT id FROM script_executions WHERE status = 'failed'")
    assert failed is not None
    await conn.execute("UPDATE scripts SET source = $1 WHERE id = $2", V2, script)
    return tenant, script, failed


async def row(conn: asyncpg.Connection, execution: str | UUID) -> dict[str, Any]:
    r = await conn.fetchrow(
        "SELECT status, output, error, input, trigger_data, trigger_type FROM script_executions "
        "WHERE id = $1::uuid", str(execution))
    assert r is not None
    return {k: json.loads(v) if k in ("output", "input", "trigger_data") and v is not None
            else v for k, v in r.items()}


async def test_replay_with_the_current_and_the_original_version(
        conn: asyncpg.Connection, db_url: str, executor: Executor) -> None:
    tenant, script, failed = await failed_once(conn, db_url, executor)
    original = await row(conn, failed)

    current = run_cli(db_url, "executions", "replay", str(failed), "--json")
    assert current.returncode == 0, current.stderr
    [made] = json.loads(current.stdout)
    assert (made["original"], made["version"], made["dry_run"]) == (str(failed), 2, False)
    again = run_cli(db_url, "executions", "replay", str(failed), "--version", "original",
                    "--json")
    [made_v1] = json.loads(again.stdout)
    assert made_v1["version"] == 1
    # queued with their inputs' size (a claim reserves a script's queued runs within a budget)
    sizes = await conn.fetch("SELECT r.input_bytes, pg_column_size(e.input) AS stored"
                             " FROM jsrt_runs r JOIN script_executions e ON e.id = r.execution_id")
    assert len(sizes) == 2 and all(r["input_bytes"] == r["stored"] > 0 for r in sizes)
    await drain(db_url, executor)

    new = await row(conn, made["execution_id"])
    assert (new["status"], new["output"]) == ("completed", "v2 7")
    old = await row(conn, made_v1["execution_id"])
    assert (old["status"], old["error"].splitlines()[0]) == ("failed", "Error: v1 7")
    for r in (new, old):
        assert r["input"] == original["input"] == {"n": 7}
        assert r["trigger_type"] == "event"
        assert r["trigger_data"]["replay_of"] == str(failed)
        for key in ("event_id", "event_type", "published_at", "depth"):
            assert r["trigger_data"][key] == original["trigger_data"][key]
    assert old["trigger_data"]["replay_version"] == 1
    # the script itself is unchanged: still version 2's source
    assert await conn.fetchval("SELECT source FROM scripts WHERE id = $1", script) == V2
    assert tenant


async def test_replay_by_script_dry_run_and_filters(conn: asyncpg.Connection, db_url: str,
                                                    executor: Executor) -> None:
    tenant, script, failed = await failed_once(conn, db_url, executor)
    await publish(conn, tenant, "thing.happened", {"n": 8})
    await drain(db_url, executor)  # version 2: completed

    dry = run_cli(db_url, "executions", "replay", "--script", f"{tenant}/orders",
                  "--since", "1h", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    planned = json.loads(dry.stdout)
    assert [(p["original"], p["status"], p["execution_id"]) for p in planned] == \
        [(str(failed), "failed", None)]
    text = run_cli(db_url, "executions", "replay", "--script", str(script), "--dry-run")
    assert text.stdout.splitlines()[0] == "would replay 1 execution(s)"
    assert await conn.fetchval("SELECT count(*) FROM script_executions") == 2  # none made

    none = run_cli(db_url, "executions", "replay", "--script", str(script), "--until", "1h",
                   "--json")
    assert json.loads(none.stdout) == []
    both = run_cli(db_url, "executions", "replay", "--script", str(script), "--status",
                   "failed", "--status", "completed", "--dry-run", "--json")
    assert sorted(p["status"] for p in json.loads(both.stdout)) == ["completed", "failed"]

    bad = run_cli(db_url, "executions", "replay", str(failed), "--status", "failed")
    assert bad.returncode == 2 and "go with --script" in bad.stderr
    unknown = run_cli(db_url, "executions", "replay", "00000000-0000-4000-8000-000000000001")
    assert unknown.returncode == 1 and "no finished execution" in unknown.stderr


async def test_dead_letter_retry_with_the_original_version(
        conn: asyncpg.Connection, db_url: str, executor: Executor) -> None:
    _tenant, _script, failed = await failed_once(conn, db_url, executor)
    letter = await conn.fetchval("SELECT id FROM script_event_dead_letters")

    out = run_cli(db_url, "dead-letters", "retry", str(letter), "--version", "original",
                  "--json")
    assert out.returncode == 0, out.stderr
    await drain(db_url, executor)
    retry = await conn.fetchrow(
        "SELECT status, error FROM script_executions WHERE trigger_data->>'dead_letter_id' = $1",
        str(letter))
    assert (retry["status"], retry["error"].splitlines()[0]) == ("failed", "Error: v1 7")

    out = run_cli(db_url, "dead-letters", "retry", str(letter), "--version", "current")
    assert out.returncode == 0, out.stderr
    await drain(db_url, executor)
    assert await conn.fetchval(
        "SELECT resolution FROM jsrt_dead_letter_state WHERE dead_letter_id = $1",
        letter) == "succeeded"
    assert failed
