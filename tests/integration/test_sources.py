"""A version's source travels once (#17, fairness): a tenant's 1 MiB script used to come
with an md5 and a copy of itself for every run of a claim, and every other tenant's events
waited behind those claims (1.2-5.5 s instead of 6-18 ms). Now the digest is kept beside the
script (jsrt_script_digests), a claim or a start brings each version's source with its first
run only, and none when the process holds it; the worker pipe does the same. Real PostgreSQL,
real V8: the runs still run exactly their version's source."""

from __future__ import annotations

import hashlib
import json
import uuid

import asyncpg
from support.daemons import drain
from support.factories import make_script, make_tenant

from consumer.records import StartNow
from consumer.sandbox import Executor
from consumer.store import Store

PAD = "x" * 300_000


def big(tag: str) -> str:
    return (f"const PAD = {json.dumps(PAD)};\n"
            f"function handler(input) {{ return {{tag: {json.dumps(tag)}, n: PAD.length}}; }}")


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


async def publish_many(conn: asyncpg.Connection, tenant: uuid.UUID, n: int) -> None:
    await conn.execute(
        "SELECT jsrt_publish($1, 'thing.happened', jsonb_build_object('n', g))"
        " FROM generate_series(1, $2) g", tenant, n)


CLAIM = ("SELECT (c.runs) FROM jsrt_claim_v4($1, 10, 10, NULL, 8, 8, NULL, 3, '{}', '{}', 8,"
         " $2::uuid[], $3::text[], NULL) c")


async def test_the_digest_follows_the_source(conn: asyncpg.Connection) -> None:
    tenant = await make_tenant(conn)
    script = await make_script(conn, tenant, big("a"))

    async def digest() -> str | None:
        return await conn.fetchval(  # type: ignore[no-any-return]
            "SELECT digest FROM jsrt_script_digests WHERE script_id = $1", script)

    assert await digest() == md5(big("a"))
    await conn.execute("UPDATE scripts SET source = $2 WHERE id = $1", script, big("b"))
    assert await digest() == md5(big("b"))
    await conn.execute("UPDATE scripts SET description = 'd' WHERE id = $1", script)
    assert await digest() == md5(big("b"))
    await conn.execute("DELETE FROM scripts WHERE id = $1", script)
    assert await digest() is None


async def test_a_claim_brings_a_versions_source_with_its_first_run_only(
    conn: asyncpg.Connection
) -> None:
    tenant = await make_tenant(conn)
    script = await make_script(conn, tenant, big("a"), limits={"max_concurrent_runs": 2})
    await conn.execute("INSERT INTO jsrt_daemons (id, hostname, pid) VALUES ('d1', 'h', 1),"
                       " ('d2', 'h', 2)")
    await publish_many(conn, tenant, 12)
    runs = await conn.fetchval(CLAIM, "d1", [], [])
    assert len(runs) == 6  # 2 slots x 3
    assert [r["source"] is not None for r in runs] == [True] + [False] * 5
    assert {r["version_id"] for r in runs} == {md5(big("a"))}
    # the version named: none of them brings it
    await conn.execute("DELETE FROM jsrt_leases")
    runs = await conn.fetchval(CLAIM, "d2", [script], [md5(big("a"))])
    assert len(runs) == 6 and all(r["source"] is None for r in runs)
    # as released (jsrt_claim_v3): every run with its source
    await conn.execute("DELETE FROM jsrt_leases; UPDATE jsrt_runs SET state = 'pending',"
                       " daemon_id = NULL")
    row = await conn.fetchrow("SELECT * FROM jsrt_claim_v3('d1', 10, 10, NULL, 8, 8, NULL, 3,"
                              " '{}', '{}', 8)")
    assert len(row["runs"]) == 6 and all(r["source"] == big("a") for r in row["runs"])


async def test_a_held_version_is_never_taken_for_a_changed_source(
    conn: asyncpg.Connection, db_url: str
) -> None:
    """The daemon holds version a; the script changes to b: the next claim brings b, and its
    runs run b. The same digest in another tenant's script is another version."""
    tenant, other = await make_tenant(conn), await make_tenant(conn)
    script = await make_script(conn, tenant, big("a"), limits={"max_concurrent_runs": 8})
    store = await Store.open(db_url)
    try:
        await store.leases.register("d1", "h", 1)
        await publish_many(conn, tenant, 3)
        first = await store.queue.claim_leased("d1", 10, 10, slot_limit=8, per_script=8,
                                               reserve=1, refill={})
        assert [r.source for r in first.runs] == [big("a")] * 3
        assert len(store.queue.sources) == 1
        await conn.execute("DELETE FROM jsrt_runs; DELETE FROM jsrt_leases")
        await conn.execute("UPDATE scripts SET source = $2 WHERE id = $1", script, big("b"))
        twin = await make_script(conn, other, big("a"), limits={"max_concurrent_runs": 8})
        await publish_many(conn, tenant, 2)
        await publish_many(conn, other, 2)
        second = await store.queue.claim_leased("d1", 10, 10, slot_limit=8, per_script=2,
                                                reserve=1, refill={})
        got = {(r.script_id, r.version_id, r.source) for r in second.runs}
        assert got == {(script, md5(big("b")), big("b")), (twin, md5(big("a")), big("a"))}
    finally:
        await store.close()


async def test_a_batch_of_starts_brings_the_source_once(
    conn: asyncpg.Connection, db_url: str
) -> None:
    tenant = await make_tenant(conn)
    script = await make_script(conn, tenant, big("h"), limits={"max_concurrent_runs": 8})
    await conn.execute("INSERT INTO jsrt_daemons (id, hostname, pid) VALUES ('s', 'h', 1)")
    rows = await conn.fetch(
        "SELECT (n.run).source FROM jsrt_start_now_v3('s', $1::uuid[], $2::uuid[],"
        " '{api,api,api}', $3::text[], $3::text[], '{}', '{}') n",
        [tenant] * 3, [script] * 3, ["{}"] * 3)
    assert [r["source"] is not None for r in rows] == [True, False, False]
    store = await Store.open(db_url)
    try:
        starts = [StartNow(tenant, script, "api", {}, "{}") for _ in range(3)]
        got = await store.queue.start_many("s", starts)
        assert [(state, run and run.source) for state, run in got] == [("started", big("h"))] * 3
        again = await store.queue.start_many("s", starts[:1])
        assert again[0][1] is not None and again[0][1].source == big("h")
    finally:
        await store.close()


async def test_runs_of_a_large_script_run_its_source_through_the_daemon(
    conn: asyncpg.Connection, db_url: str
) -> None:
    """Through the daemon and the sandbox: every run of the large script runs it (the worker
    holds the source after the first RUN; later ones come without it), then a new version."""
    tenant = await make_tenant(conn)
    script = await make_script(conn, tenant, big("a"), limits={"max_concurrent_runs": 4})
    async with Executor(workers=2) as executor:
        await publish_many(conn, tenant, 40)
        await drain(db_url, executor)
        await conn.execute("UPDATE scripts SET source = $2 WHERE id = $1", script, big("b"))
        await publish_many(conn, tenant, 10)
        await drain(db_url, executor)
    rows = await conn.fetch("SELECT status, output->>'tag' AS tag, output->>'n' AS n, error"
                            " FROM script_executions WHERE script_id = $1", script)
    assert len(rows) == 50
    assert all(r["status"] == "completed" and r["n"] == str(len(PAD)) for r in rows), rows[:3]
    assert sorted(r["tag"] for r in rows) == ["a"] * 40 + ["b"] * 10


async def test_a_claim_fans_out_a_budget_of_each_tenants_payload_bytes(
    conn: asyncpg.Connection
) -> None:
    """jsrt_claim_v4's p_tenant_bytes: of each tenant's due events, those whose payloads
    before them stay within the budget (its oldest always), the rest for the next claim;
    another tenant's event is not cut by the first one's."""
    loud, quiet = await make_tenant(conn), await make_tenant(conn)
    for tenant in (loud, quiet):
        await make_script(conn, tenant, limits={"max_concurrent_runs": 50})
    await conn.execute("INSERT INTO jsrt_daemons (id, hostname, pid) VALUES ('d', 'h', 1)")
    await conn.execute(
        "SELECT jsrt_publish($1, 'thing.happened', jsonb_build_object('pad', repeat('z', 990)))"
        " FROM generate_series(1, 5)", loud)
    await conn.execute("SELECT jsrt_publish($1, 'thing.happened', '{}')", quiet)
    sizes = await conn.fetch("SELECT tenant_id, bytes FROM jsrt_events_due")
    assert sorted(r["bytes"] for r in sizes) == [2] + [1001] * 5
    claim = ("SELECT c.events, c.more FROM jsrt_claim_v4('d', 100, 100, NULL, 0, 0, NULL, 1,"
             " '{}', '{}', 0, NULL, NULL, $1) c")
    assert tuple(await conn.fetchrow(claim, 2500)) == (4, True)  # 3 of loud's, quiet's
    assert await conn.fetchval("SELECT count(*) FROM jsrt_events_due WHERE tenant_id = $1",
                               quiet) == 0
    assert tuple(await conn.fetchrow(claim, 1)) == (1, True)  # the oldest always
    assert tuple(await conn.fetchrow(claim, None)) == (1, False)
    assert await conn.fetchval("SELECT count(*) FROM jsrt_events WHERE dispatched_at IS NULL") == 0


async def test_queued_runs_are_reserved_within_the_budget_and_never_overtaken(
    conn: asyncpg.Connection
) -> None:
    """Steps 1-2 of jsrt_claim_v4 reserve a script's queued runs within the same budget, by
    their inputs' size (jsrt_runs.input_bytes; a replay of 1,000 executions of 250 KB inputs
    would make claims of 20 MB): the oldest always, the rest queued; a new event's run of that
    script then waits behind them (first in, first out), and the daemon is told there is more."""
    tenant = await make_tenant(conn)
    script = await make_script(conn, tenant, limits={"max_concurrent_runs": 4})
    await conn.execute("INSERT INTO jsrt_daemons (id, hostname, pid) VALUES ('d', 'h', 1)")
    noise = "(SELECT string_agg(md5(k::text || random()::text), '') FROM generate_series(1, 60) k)"
    await conn.execute(f"SELECT jsrt_publish($1, 'thing.happened', jsonb_build_object('pad',"
                       f" {noise}, 'n', g)) FROM generate_series(1, 6) g", tenant)
    fan_out_only = ("SELECT c.created FROM jsrt_claim_v4('d', 100, 100, NULL, 0, 0, NULL, 1,"
                    " '{}', '{}', 0, NULL, NULL, NULL) c")
    assert await conn.fetchval(fan_out_only) == 6
    size = await conn.fetchval("SELECT max(input_bytes) FROM jsrt_runs")
    assert size >= await conn.fetchval("SELECT max(pg_column_size(input)) FROM script_executions")
    await conn.execute("SELECT jsrt_publish($1, 'thing.happened', '{\"n\": 7}')", tenant)
    row = await conn.fetchrow(
        "SELECT c.runs, c.more FROM jsrt_claim_v4('d', 100, 100, NULL, 4, 4, NULL, 2, '{}',"
        " '{}', 4, NULL, NULL, $1) c", int(size * 2.5))
    assert [r["input"] and json.loads(r["input"])["n"] for r in row["runs"]] == [1, 2, 3]
    assert row["more"]
    queued = await conn.fetch(
        "SELECT (e.input->>'n')::int AS n FROM jsrt_runs r JOIN script_executions e"
        " ON e.id = r.execution_id WHERE r.state = 'pending' ORDER BY r.created_at")
    assert [r["n"] for r in queued] == [4, 5, 6, 7]  # the new one behind, not reserved
    refill = ("SELECT c.runs, c.more FROM jsrt_claim_v4('d', 0, 100, NULL, 0, 0, NULL, 2,"
              " $1::uuid[], '{8}', 0, NULL, NULL, $2) c")
    again = await conn.fetchrow(refill, [script], int(size * 2.5))
    assert [json.loads(r["input"])["n"] for r in again["runs"]] == [4, 5, 6]
    assert again["more"]
    last = await conn.fetchrow(refill, [script], int(size * 2.5))
    assert [json.loads(r["input"])["n"] for r in last["runs"]] == [7] and not last["more"]
