"""Per-key ordering (#19) with two real daemons on one database and real V8: runs of a
script with the same metadata.concurrency_key value run one at a time in publish order,
different keys in parallel; a failed run that will be retried holds its key until it succeeds
or is exhausted; a payload without the key runs unordered."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from itertools import pairwise
from typing import Any
from uuid import UUID

import anyio
import asyncpg
from support.cli import run_cli
from support.daemons import daemon_for
from support.factories import make_script, make_tenant, publish
from support.waiting import row_becomes

from consumer.daemon import Daemon
from consumer.sandbox import Executor

SLOW = """async function handler(i, ctx) {
  await new Promise(r => setTimeout(r, 150));
  if (i.fail === 'always' || (i.fail === 'once' && ctx.trigger.attempt === 1)) {
    throw new Error('failing ' + i.seq);
  }
  return { k: i.k, seq: i.seq };
}"""


@asynccontextmanager
async def two_daemons(db_url: str, executor: Executor,
                      **overrides: Any) -> AsyncIterator[tuple[Daemon, Daemon]]:
    async with daemon_for(db_url, executor, **overrides) as a, \
            daemon_for(db_url, executor, **overrides) as b, anyio.create_task_group() as tg:
        tg.start_soon(a.run)
        tg.start_soon(b.run)
        try:
            yield a, b
        finally:
            a.stop()
            b.stop()


async def runs(conn: asyncpg.Connection, script: UUID) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT id, status, input, trigger_data, started_at, completed_at FROM script_executions "
        "WHERE script_id = $1 ORDER BY started_at", script)
    return [{**dict(r), "input": json.loads(r["input"]),
             "trigger_data": json.loads(r["trigger_data"])} for r in rows]


def assert_one_at_a_time_in_order(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    by_key: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in sorted(rows, key=lambda r: r["started_at"]):
        if "k" in r["input"]:
            by_key[r["input"]["k"]].append(r)
    for key, key_rows in by_key.items():
        seqs = [r["input"]["seq"] for r in key_rows if r["trigger_data"]["attempt"] == 1]
        assert seqs == sorted(seqs), f"key {key} ran out of publish order: {seqs}"
        for before, after in pairwise(key_rows):
            assert after["started_at"] >= before["completed_at"], f"key {key} overlapped"
    return by_key


async def test_same_key_in_order_different_keys_in_parallel(
        conn: asyncpg.Connection, db_url: str, executor: Executor) -> None:
    tenant = await make_tenant(conn)
    script = await make_script(conn, tenant, SLOW, limits={"max_concurrent_runs": 5},
                               metadata={"concurrency_key": "$.k"})
    n = 12
    async with two_daemons(db_url, executor):
        for seq in range(n):  # a 3-way interleaving, each event its own transaction
            await publish(conn, tenant, "thing.happened", {"k": "abc"[seq % 3], "seq": seq})
        await publish(conn, tenant, "thing.happened", {"seq": n})  # no key: unordered
        await row_becomes(conn, "SELECT count(*) FROM script_executions "
                          "WHERE script_id = $1 AND status = 'completed'", script,
                          expect=n + 1)
    rows = await runs(conn, script)
    by_key = assert_one_at_a_time_in_order(rows)
    assert {k: len(v) for k, v in by_key.items()} == {"a": 4, "b": 4, "c": 4}
    # different keys ran side by side (each run sleeps 150 ms: serial would be 1.8 s)
    keyed = [r for r in rows if "k" in r["input"]]
    overlaps = sum(1 for x in keyed for y in keyed
                   if x["input"]["k"] < y["input"]["k"]
                   and x["started_at"] < y["completed_at"] and y["started_at"] < x["completed_at"])
    assert overlaps > 0
    assert await conn.fetchval("SELECT count(*) FROM jsrt_runs") == 0


async def test_a_keys_events_published_in_one_transaction_run_in_publish_order(
        conn: asyncpg.Connection, db_url: str, executor: Executor) -> None:
    tenant = await make_tenant(conn)
    script = await make_script(conn, tenant, SLOW, limits={"max_concurrent_runs": 5},
                               metadata={"concurrency_key": "$.k"})
    n = 8
    async with conn.transaction():  # one transaction: the same NOW() for every event
        for seq in range(n):
            await publish(conn, tenant, "thing.happened", {"k": "a", "seq": seq})
    async with two_daemons(db_url, executor):
        await row_becomes(conn, "SELECT count(*) FROM script_executions "
                          "WHERE script_id = $1 AND status = 'completed'", script, expect=n)
    by_key = assert_one_at_a_time_in_order(await runs(conn, script))
    assert [r["input"]["seq"] for r in by_key["a"]] == list(range(n))


async def test_a_failed_run_holds_its_key_until_its_retry_succeeds(
        conn: asyncpg.Connection, db_url: str, executor: Executor) -> None:
    tenant = await make_tenant(conn)
    script = await make_script(conn, tenant, SLOW, metadata={"concurrency_key": "$.k"})
    async with two_daemons(db_url, executor, retry_base_seconds=0.3):
        await publish(conn, tenant, "thing.happened", {"k": "a", "seq": 0, "fail": "once"})
        await publish(conn, tenant, "thing.happened", {"k": "a", "seq": 1})
        await publish(conn, tenant, "thing.happened", {"k": "b", "seq": 2})
        await row_becomes(conn, "SELECT count(*) FROM script_executions "
                          "WHERE script_id = $1 AND status = 'completed'", script, expect=3)
    rows = await runs(conn, script)
    assert_one_at_a_time_in_order(rows)
    retry = next(r for r in rows if r["trigger_data"]["attempt"] == 2)
    second = next(r for r in rows if r["input"]["seq"] == 1)
    other = next(r for r in rows if r["input"]["seq"] == 2)
    assert retry["input"]["seq"] == 0 and retry["status"] == "completed"
    assert second["started_at"] >= retry["completed_at"]  # held behind the retry
    assert other["started_at"] < retry["started_at"]  # another key is not held
    assert await conn.fetchval(
        "SELECT resolution FROM jsrt_dead_letter_state") == "succeeded"


async def test_an_exhausted_letter_lets_its_key_go(
        conn: asyncpg.Connection, db_url: str, executor: Executor) -> None:
    tenant = await make_tenant(conn)
    script = await make_script(conn, tenant, SLOW, metadata={"concurrency_key": "$.k"})
    async with two_daemons(db_url, executor, retry_base_seconds=0.1):
        await publish(conn, tenant, "thing.happened", {"k": "a", "seq": 0, "fail": "always"})
        await publish(conn, tenant, "thing.happened", {"k": "a", "seq": 1})
        await row_becomes(conn, "SELECT count(*) FROM script_executions "
                          "WHERE script_id = $1 AND status = 'completed'", script, expect=1,
                          timeout=90)
    rows = await runs(conn, script)
    failures = [r for r in rows if r["status"] == "failed"]
    assert [r["trigger_data"]["attempt"] for r in failures] == [1, 2, 3, 4]
    second = next(r for r in rows if r["input"]["seq"] == 1)
    assert second["started_at"] >= failures[-1]["completed_at"]


CLAIM = ("SELECT (c).runs FROM jsrt_claim_v2($1, 10, 10, NULL, 4, 4, NULL, 1, "
         "'{}'::uuid[], '{}'::int[]) c")


async def test_a_key_waits_for_an_earlier_event_another_claim_is_fanning_out(
        conn: asyncpg.Connection, db_url: str) -> None:
    """Events are claimed FOR UPDATE SKIP LOCKED: while one claim holds the key's first event
    (its fan-out not committed), another fans out the second; its next claim must not reserve
    the second, though its snapshot has no run of the first yet."""
    tenant = await make_tenant(conn)
    script = await make_script(conn, tenant, "function handler(i) { return i }",
                               limits={"max_concurrent_runs": 5},
                               metadata={"concurrency_key": "$.k"})
    await conn.execute("INSERT INTO jsrt_daemons (id, hostname, pid) VALUES ('b', 'h', 1)")
    await publish(conn, tenant, "thing.happened", {"k": "a", "seq": 0})
    await publish(conn, tenant, "thing.happened", {"k": "a", "seq": 1})
    other = await asyncpg.connect(db_url)
    try:
        async with other.transaction():  # the other claim, mid-fan-out of seq 0
            await other.fetch("SELECT id FROM jsrt_events WHERE payload->>'seq' = '0' FOR UPDATE")
            assert await conn.fetchval(CLAIM, "b") == []  # fans out seq 1 only
            assert await conn.fetchval(
                "SELECT count(*) FROM jsrt_runs WHERE script_id = $1", script) == 1
            assert await conn.fetchval(CLAIM, "b") == []  # seq 1 waits for seq 0
    finally:
        await other.close()
    assert await conn.fetchval(CLAIM, "b") == []  # seq 0 fanned out now
    [run] = await conn.fetchval(CLAIM, "b")
    assert json.loads(run["input"])["seq"] == 0


async def test_cli_sets_the_key_and_refuses_a_bad_one(conn: asyncpg.Connection, db_url: str,
                                                      tmp_path: Any) -> None:
    tenant = await make_tenant(conn)
    handler = tmp_path / "h.js"
    handler.write_text("function handler(i) { return i }")
    made = run_cli(db_url, "scripts", "create", "--tenant", str(tenant), "--name", "o",
                   "--type", "event", "--event-types", "order.paid", "--file", str(handler),
                   "--concurrency-key", "$.order_id", "--json")
    assert made.returncode == 0, made.stderr
    script = json.loads(made.stdout)["id"]
    assert await conn.fetchval("SELECT path::text FROM jsrt_concurrency_keys") == '$."order_id"'
    shown = run_cli(db_url, "scripts", "show", script)
    assert "concurrency_key" in shown.stdout and "$.order_id" in shown.stdout
    bad = run_cli(db_url, "scripts", "update", script, "--concurrency-key", "$.order_id[")
    assert bad.returncode == 2 and "jsrt: error: --concurrency-key: syntax error" in bad.stderr
    off = run_cli(db_url, "scripts", "update", script, "--concurrency-key", "")
    assert off.returncode == 0, off.stderr
    assert await conn.fetchval("SELECT count(*) FROM jsrt_concurrency_keys") == 0
