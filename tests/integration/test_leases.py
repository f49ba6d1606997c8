"""Slot leases and local queues (#17) against a real PostgreSQL and real V8: the limits hold
at every instant, long runs show while they run, and nothing is lost when a daemon stops or
dies with runs reserved for it."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

import anyio
import asyncpg
import pytest
from support.daemons import daemon_for, drain
from support.factories import make_script, make_tenant, publish
from support.waiting import eventually

from consumer import daemon as daemon_module
from consumer.records import Finished
from consumer.sandbox import Executor
from consumer.store import Store

# A few milliseconds of real work, so that runs of different slots really overlap in time.
BUSY = """function handler(input) {
    const until = Date.now() + (input.n % 4); while (Date.now() < until) {}
    return input.n;
}"""


def most_at_once(rows: list[asyncpg.Record]) -> int:
    """The most executions in progress at one instant, by their own started_at/completed_at
    (half-open: a run that ends at t and one that starts at t do not overlap)."""
    edges = sorted([(r["started_at"], 1) for r in rows] + [(r["completed_at"], -1) for r in rows],
                   key=lambda e: (e[0], e[1]))
    now = most = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


def overlapping(rows: list[asyncpg.Record], limit: int) -> list[tuple[Any, Any]]:
    """The runs in progress at the first instant with more than `limit` (for the message)."""
    ordered = sorted(rows, key=lambda r: r["started_at"])
    for r in ordered:
        at = [(x["started_at"].time(), x["completed_at"].time()) for x in ordered
              if x["started_at"] <= r["started_at"] < x["completed_at"]]
        if len(at) > limit:
            return at
    return []


async def assert_all_ran_within(conn: asyncpg.Connection, script: uuid.UUID, n: int,
                                limit: int) -> None:
    """The script's n executions all completed, never more than `limit` at one instant."""
    rows = await conn.fetch(
        "SELECT started_at, completed_at, status, error FROM script_executions"
        " WHERE script_id = $1", script)
    assert len(rows) == n
    assert all(r["status"] == "completed" for r in rows), [r["error"] for r in rows][:3]
    assert most_at_once(rows) <= limit, overlapping(rows, limit)


async def publish_many(conn: asyncpg.Connection, tenant: uuid.UUID, n: int) -> None:
    await conn.execute(
        "SELECT jsrt_publish($1, 'thing.happened', jsonb_build_object('n', g))"
        " FROM generate_series(1, $2) g", tenant, n)


@pytest.mark.parametrize("limit", [1, 5])
async def test_max_concurrent_runs_holds_at_every_instant_across_two_daemons(
    conn: asyncpg.Connection, db_url: str, limit: int
) -> None:
    tenant = await make_tenant(conn)
    script = await make_script(conn, tenant, BUSY, limits={"max_concurrent_runs": limit})
    n = 150
    await publish_many(conn, tenant, n)
    async with Executor(workers=1) as ex1, Executor(workers=1) as ex2, \
            anyio.create_task_group() as tg:
        # small local queues and short periods: the slots change hands between the daemons
        for ex in (ex1, ex2):
            tg.start_soon(lambda ex=ex: drain(db_url, ex, reserve=2, lease_period=0.05))
    await assert_all_ran_within(conn, script, n, limit)
    assert await conn.fetchval("SELECT count(*) FROM jsrt_leases") == 0
    assert await conn.fetchval("SELECT count(*) FROM jsrt_runs") == 0


async def test_a_long_run_shows_as_running_while_it_runs(
    conn: asyncpg.Connection, db_url: str, executor: Executor
) -> None:
    tenant = await make_tenant(conn)
    await make_script(conn, tenant, """async function handler() {
        await new Promise((resolve) => setTimeout(resolve, 1500));
        return 'late';
    }""")
    await publish(conn, tenant, "thing.happened")
    async with daemon_for(db_url, executor) as d, anyio.create_task_group() as tg:
        tg.start_soon(d.run)

        async def running() -> asyncpg.Record | None:
            return await conn.fetchrow(
                "SELECT started_at, completed_at, clock_timestamp() AS seen"
                " FROM script_executions WHERE tenant_id = $1 AND status = 'running'", tenant)

        shown = await eventually(running, timeout=30, what="the run shown as running")
        assert shown["completed_at"] is None
        final = await eventually(lambda: conn.fetchrow(
            "SELECT started_at, completed_at FROM script_executions"
            " WHERE tenant_id = $1 AND status = 'completed'", tenant), timeout=30,
            what="the run completed")
        d.stop()
    # the times are the run's own: it started before it was seen, and lasted its 1.5 s
    assert final["started_at"] <= shown["seen"]
    assert (final["completed_at"] - final["started_at"]).total_seconds() >= 1.4


async def test_leased_slots_count_for_every_other_starter(conn: asyncpg.Connection,
                                                          db_url: str) -> None:
    tenant = await make_tenant(conn)
    script = await make_script(conn, tenant, limits={"max_concurrent_runs": 3})
    await conn.execute("INSERT INTO jsrt_daemons (id, hostname, pid) VALUES ('d1', 'h', 1)")
    await conn.execute("INSERT INTO jsrt_leases (script_id, daemon_id, tenant_id, slots)"
                       " VALUES ($1, 'd1', $2, 2)", script, tenant)
    assert await conn.fetchval("SELECT jsrt_free_slots($1)", script) == 1
    store = await Store.open(db_url)
    try:
        started = await store.queue.start_now("d1", tenant, script, "manual", {}, "{}")
        assert started is not None  # the third slot
        assert await store.queue.start_now("d1", tenant, script, "manual", {}, "{}") is None
    finally:
        await store.close()


async def test_a_claim_refills_only_scripts_whose_slots_it_holds(
    conn: asyncpg.Connection, db_url: str
) -> None:
    tenant = await make_tenant(conn)
    script = await make_script(conn, tenant, limits={"max_concurrent_runs": 2})
    await publish_many(conn, tenant, 10)
    store = await Store.open(db_url)
    try:
        await store.leases.register("d1", "h", 1)
        await store.leases.register("d2", "h", 2)
        first = await store.queue.claim_leased("d1", 10, 10, slot_limit=8, per_script=8,
                                               reserve=3, refill={})
        assert first.granted == {script: 2}
        assert len(first.runs) == 6 and first.queued == 4  # 2 slots x 3 reserved
        # d2 finds the script full: it takes nothing, and a refill of a lease it does not
        # hold is refused
        second = await store.queue.claim_leased("d2", 10, 10, slot_limit=8, per_script=8,
                                                reserve=3, refill={script: 5})
        assert (second.granted, second.runs, second.lost) == ({}, [], [script])
        again = await store.queue.claim_leased("d1", 0, 10, slot_limit=0, per_script=8,
                                               reserve=3, refill={script: 5})
        assert len(again.runs) == 4 and not again.waiting
        owners = await conn.fetch("SELECT DISTINCT state, daemon_id FROM jsrt_runs")
        assert [tuple(r) for r in owners] == [("reserved", "d1")]
        # the reserved executions still say 'pending': none of them has started
        assert await conn.fetchval(
            "SELECT count(*) FROM script_executions WHERE status <> 'pending'") == 0
    finally:
        await store.close()


async def test_new_runs_never_overtake_a_scripts_pending_runs(
    conn: asyncpg.Connection, db_url: str
) -> None:
    tenant = await make_tenant(conn)
    script = await make_script(conn, tenant, limits={"max_concurrent_runs": 1})
    for n in (1, 2, 3):  # one transaction each: published one after another
        await publish(conn, tenant, "thing.happened", {"n": n})
    store = await Store.open(db_url)
    try:
        await store.leases.register("d1", "h", 1)
        await store.queue.claim_leased("d1", 10, 10, slot_limit=0, per_script=8, reserve=1,
                                       refill={})  # fanned out, all pending (no slot asked)
        await publish(conn, tenant, "thing.happened", {"n": 4})
        got = await store.queue.claim_leased("d1", 10, 10, slot_limit=1, per_script=8,
                                             reserve=2, refill={})
        assert got.granted == {script: 1}
        assert [json.loads(r.input_json)["n"] for r in got.runs] == [1, 2]
    finally:
        await store.close()


async def test_a_dead_daemons_queue_goes_back_and_its_started_runs_are_lost(
    conn: asyncpg.Connection, db_url: str
) -> None:
    tenant = await make_tenant(conn)
    script = await make_script(conn, tenant, limits={"max_concurrent_runs": 2})
    await publish_many(conn, tenant, 4)
    store = await Store.open(db_url)
    try:
        await store.leases.register("ghost", "h", 1)
        got = await store.queue.claim_leased("ghost", 10, 10, slot_limit=2, per_script=2,
                                             reserve=2, refill={})
        assert len(got.runs) == 4
        started = got.runs[0]
        now = datetime.now().astimezone()
        await store.queue.mark_and_release("ghost", {started.execution_id: now}, {})
        assert await conn.fetchval("SELECT status FROM script_executions WHERE id = $1",
                                   started.execution_id) == "running"
        await conn.execute("UPDATE jsrt_daemons SET heartbeat_at = NOW() - interval '1 hour'")
        lost = await store.queue.rescue_lost_runs(60, lambda f: datetime.now().astimezone())
        assert [f.execution_id for f in lost] == [started.execution_id]
        assert isinstance(lost[0], Finished) and lost[0].error == "worker lost"
        rows = await conn.fetch("SELECT state, daemon_id FROM jsrt_runs")
        assert sorted(tuple(r) for r in rows) == [("pending", None)] * 3
        assert await conn.fetchval("SELECT count(*) FROM jsrt_leases") == 0
        assert await conn.fetchval("SELECT jsrt_free_slots($1)", script) == 2
    finally:
        await store.close()
    # and a live daemon runs what was given back
    async with Executor(workers=1) as ex:
        await drain(db_url, ex)
    statuses = await conn.fetch("SELECT status, count(*) FROM script_executions"
                                " WHERE script_id = $1 GROUP BY 1 ORDER BY 1", script)
    # the lost one is dead-lettered, and its retry (due at once here) completes
    assert {r["status"]: r["count"] for r in statuses} == {"completed": 4, "failed": 1}


async def test_stop_gives_the_local_queue_back_and_the_slots_with_it(
    conn: asyncpg.Connection, db_url: str, executor: Executor
) -> None:
    tenant = await make_tenant(conn)
    script = await make_script(conn, tenant, """function handler(input) {
        const until = Date.now() + 20; while (Date.now() < until) {} return input.n;
    }""", limits={"max_concurrent_runs": 2})
    n = 60
    await publish_many(conn, tenant, n)
    async with daemon_for(db_url, executor, reserve=8) as d, anyio.create_task_group() as tg:
        tg.start_soon(d.run)
        await eventually(lambda: conn.fetchval(
            "SELECT count(*) >= 4 FROM script_executions WHERE status = 'completed'"),
            timeout=30, what="a few runs done")
        d.stop()
    assert await conn.fetchval("SELECT count(*) FROM jsrt_leases") == 0
    left: list[Any] = await conn.fetch("SELECT state, daemon_id FROM jsrt_runs")
    assert left and all(tuple(r) == ("pending", None) for r in left)
    async with Executor(workers=1) as ex:
        await drain(db_url, ex)
    rows = await conn.fetch("SELECT status, (input->>'n')::int AS n FROM script_executions"
                            " WHERE script_id = $1", script)
    assert sorted(r["n"] for r in rows) == list(range(1, n + 1))  # each exactly once
    assert all(r["status"] == "completed" for r in rows)


class HeldDeliveries:
    """Delivery rows inserted by a transaction left open: a claim that fans out one of their
    events waits on the row's key until `release()` (a rollback: the claim then goes on), as a
    long fan-out would keep the claim in flight. Without its foreign-key checks the
    transaction locks no event, so the claim takes the event first, then waits."""

    def __init__(self, db_url: str, insert: str, *args: Any) -> None:
        self._db_url, self._insert, self._args = db_url, insert, args
        self._conn: asyncpg.Connection | None = None
        self._tx: Any = None

    async def __aenter__(self) -> HeldDeliveries:
        self._conn = await asyncpg.connect(self._db_url)
        self._tx = self._conn.transaction()
        await self._tx.start()
        await self._conn.execute("SET LOCAL session_replication_role = replica")
        await self._conn.execute(self._insert, *self._args)
        return self

    async def release(self) -> None:
        if self._tx is not None:
            await self._tx.rollback()
            self._tx = None

    async def __aexit__(self, *_: Any) -> None:
        await self.release()
        assert self._conn is not None
        await self._conn.close()


async def quiet_event_while_a_claim_waits(conn: asyncpg.Connection, tenant: uuid.UUID,
                                          script: uuid.UUID) -> asyncpg.Record:
    """Once a claim waits on a held delivery row: the tenant's event, published then, and its
    execution once it ended."""
    await eventually(lambda: conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = current_database()"
        " AND wait_event_type = 'Lock' AND query LIKE '%jsrt_claim_v5%')"),
        what="a claim waiting on a held delivery row")
    await publish(conn, tenant, "thing.happened")
    done: asyncpg.Record = await eventually(lambda: conn.fetchrow(
        "SELECT status, output FROM script_executions WHERE script_id = $1"
        " AND completed_at IS NOT NULL", script), what="the quiet tenant's run")
    return done


async def test_a_quiet_tenants_event_runs_while_a_claim_fans_out_a_backlog(
    conn: asyncpg.Connection, db_url: str, executor: Executor
) -> None:
    """The side claim (#17, fairness): a claim fanning out one tenant's backlog is held in
    the middle of its fan-out (on the delivery row of the backlog's fifth event); another
    tenant's event, published then, is claimed beside it and runs to its end while that claim
    still waits."""
    noisy, quiet = await make_tenant(conn, "noisy"), await make_tenant(conn, "quiet")
    loud = await make_script(conn, noisy, "function handler(input) { return input.n; }")
    calm = await make_script(conn, quiet, "function handler() { return 'calm'; }")
    await publish_many(conn, noisy, 6)
    events = [r["id"] for r in await conn.fetch(
        "SELECT id FROM jsrt_events WHERE tenant_id = $1 ORDER BY published_at", noisy)]
    held = HeldDeliveries(
        db_url, "INSERT INTO jsrt_deliveries (event_id, script_id, tenant_id, execution_id)"
        " VALUES ($1, $2, $3, gen_random_uuid())", events[4], loud, noisy)
    # two events of a tenant per claim: the claims before the fifth event's report a backlog
    async with held, daemon_for(db_url, executor, tenant_batch=2) as d, \
            anyio.create_task_group() as tg:
        tg.start_soon(d.run)
        done = await quiet_event_while_a_claim_waits(conn, quiet, calm)
        assert (done["status"], json.loads(done["output"])) == ("completed", "calm")
        assert d.counters.side_claims >= 1
        # the held claim has still written nothing of the fifth and sixth events
        assert await conn.fetchval(
            "SELECT count(*) FROM script_executions WHERE script_id = $1", loud) == 4
        await held.release()
        await eventually(lambda: conn.fetchval(
            "SELECT count(*) = 6 FROM script_executions WHERE script_id = $1"
            " AND status = 'completed'", loud), what="the backlog's end")
        d.stop()
    rows = await conn.fetch("SELECT (input->>'n')::int AS n FROM script_executions"
                            " WHERE script_id = $1", loud)
    assert sorted(r["n"] for r in rows) == list(range(1, 7))  # each exactly once
    assert await conn.fetchval("SELECT count(*) FROM jsrt_leases") == 0


async def test_a_side_claim_starts_at_the_tenant_whose_event_woke_it(
    conn: asyncpg.Connection, db_url: str, executor: Executor
) -> None:
    """Many tenants with a backlog: the side claim serves the tenant named by the wake-up,
    not a random one (it takes one event: the oldest of that tenant's not locked); a claim of
    the backlogs is held on a delivery row while the quiet tenant's event comes."""
    assert daemon_module.SIDE_EVENTS == 1  # (a random tenant's would fail this test)
    noisy = [await make_tenant(conn, f"noisy{i}") for i in range(60)]
    loud = [await make_script(conn, t, "function handler(input) { return input.n; }")
            for t in noisy]
    quiet = await make_tenant(conn, "quiet")
    calm = await make_script(conn, quiet, "function handler() { return 'calm'; }")
    for tenant in noisy:
        await publish_many(conn, tenant, 2)
    # every backlog's second event: a claim that reaches one waits, after claims that each
    # took first events (one per tenant, four tenants a claim) and left a backlog
    held = HeldDeliveries(
        db_url, "INSERT INTO jsrt_deliveries (event_id, script_id, tenant_id, execution_id)"
        " SELECT e.id, s.id, e.tenant_id, gen_random_uuid() FROM jsrt_events e"
        " JOIN scripts s ON s.tenant_id = e.tenant_id WHERE (e.payload->>'n')::int = 2")
    async with held, daemon_for(db_url, executor, tenant_batch=1, claim_batch=4) as d, \
            anyio.create_task_group() as tg:
        tg.start_soon(d.run)
        done = await quiet_event_while_a_claim_waits(conn, quiet, calm)
        assert done["status"] == "completed"
        await held.release()
        await eventually(lambda: conn.fetchval(
            "SELECT count(*) = 120 FROM script_executions WHERE script_id = ANY ($1)"
            " AND status = 'completed'", loud), what="the backlogs' end")
        d.stop()
    assert await conn.fetchval("SELECT count(*) FROM jsrt_deliveries") == 121


async def test_side_claims_of_two_daemons_keep_every_limit_at_every_instant(
    conn: asyncpg.Connection, db_url: str
) -> None:
    """Two running daemons (not draining: side claims happen), a backlog under a limit of 2,
    quiet tenants' events under a limit of 1 arriving while it is fanned out: no instant with
    more runs of a script than its limit, every event run exactly once."""
    noisy = await make_tenant(conn, "noisy")
    loud = await make_script(conn, noisy, BUSY, limits={"max_concurrent_runs": 2})
    quiet = [await make_tenant(conn, f"quiet{i}") for i in range(3)]
    calm = [await make_script(conn, t, BUSY, limits={"max_concurrent_runs": 1}) for t in quiet]
    await publish_many(conn, noisy, 200)
    daemons: list[Any] = []
    async with Executor(workers=1) as ex1, Executor(workers=1) as ex2, \
            daemon_for(db_url, ex1, tenant_batch=4) as d1, \
            daemon_for(db_url, ex2, tenant_batch=4) as d2, anyio.create_task_group() as tg:
        daemons += [d1, d2]
        tg.start_soon(d1.run)
        tg.start_soon(d2.run)
        for i in range(30):  # one at a time, each once the one before is claimed
            event = await publish(conn, quiet[i % 3], "thing.happened", {"n": i})
            await eventually(lambda event=event: conn.fetchval(
                "SELECT dispatched_at IS NOT NULL FROM jsrt_events WHERE id = $1", event))
        await eventually(lambda: conn.fetchval(
            "SELECT count(*) = 230 FROM script_executions WHERE completed_at IS NOT NULL"),
            timeout=60, what="every run ended")
        d1.stop()
        d2.stop()
    for script, limit, n in [(loud, 2, 200), *((s, 1, 10) for s in calm)]:
        await assert_all_ran_within(conn, script, n, limit)
    assert await conn.fetchval("SELECT count(*) FROM jsrt_deliveries") == 230
    assert await conn.fetchval("SELECT count(*) FROM jsrt_leases") == 0
    assert await conn.fetchval("SELECT count(*) FROM jsrt_runs") == 0


async def leases_of_d1(conn: asyncpg.Connection, tenant: uuid.UUID, scripts: list[uuid.UUID],
                      slots: int) -> None:
    """A daemon row 'd1' holding `slots` of each script (written as a claim would)."""
    await conn.execute("INSERT INTO jsrt_daemons (id, hostname, pid) VALUES ('d1', 'h', 1)")
    for script in scripts:
        await conn.execute("INSERT INTO jsrt_leases (script_id, daemon_id, tenant_id, slots)"
                           " VALUES ($1, 'd1', $2, $3)", script, tenant, slots)


async def test_a_release_and_a_grant_that_cross_keep_the_count(
        conn: asyncpg.Connection, db_url: str) -> None:
    """A daemon gives back every slot of a script while one of its claims, on another
    connection, grants it more: the grant commits while the release waits for the lease row.
    The release must count against what the row holds then - it once decided on its snapshot
    ("all of them: delete") and, finding more there, did nothing: the slots stayed held by a
    daemon that no longer knew of them, and the script ran short of them while it lived."""
    tenant = await make_tenant(conn)
    script = await make_script(conn, tenant, BUSY, limits={"max_concurrent_runs": 10})
    await leases_of_d1(conn, tenant, [script], 2)
    claim = await asyncpg.connect(db_url)
    store = await Store.open(db_url)
    try:
        tx = claim.transaction()
        await tx.start()
        await claim.execute(  # the claim's grant, as jsrt_claim_v2 writes it
            "INSERT INTO jsrt_leases (script_id, daemon_id, tenant_id, slots)"
            " VALUES ($1, 'd1', $2, 3) ON CONFLICT (script_id, daemon_id)"
            " DO UPDATE SET slots = jsrt_leases.slots + EXCLUDED.slots", script, tenant)
        async with anyio.create_task_group() as tg:
            tg.start_soon(store.queue.mark_and_release, "d1", {}, {script: 2})
            await eventually(lambda: conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock' AND query LIKE '%jsrt_release_slots_v3%')"))
            await tx.commit()
        assert await conn.fetchval(
            "SELECT slots FROM jsrt_leases WHERE script_id = $1 AND daemon_id = 'd1'", script) == 3
        await store.queue.mark_and_release("d1", {}, {script: 3})
        assert await conn.fetchval("SELECT count(*) FROM jsrt_leases") == 0
    finally:
        await store.close()
        await claim.close()



async def test_a_release_passes_over_a_script_a_claim_is_taking_slots_of(
        conn: asyncpg.Connection, db_url: str) -> None:
    """A claim holds a script's starter lock (it is taking slots of it, and may hold its lease
    row next): the release gives back the other scripts' slots, passes that one over without
    waiting - waiting could deadlock against the claim's order of scripts - and names it; it
    goes back once the claim is done."""
    tenant = await make_tenant(conn)
    busy = await make_script(conn, tenant, BUSY, limits={"max_concurrent_runs": 10})
    other = await make_script(conn, tenant, BUSY, limits={"max_concurrent_runs": 10})
    await leases_of_d1(conn, tenant, [busy, other], 2)
    claim = await asyncpg.connect(db_url)
    store = await Store.open(db_url)
    try:
        async with claim.transaction():  # the claim, until it commits
            await claim.execute("SELECT pg_advisory_xact_lock(jsrt_run_lock($1))", busy)
            with anyio.fail_after(5):  # no wait
                later = await store.queue.mark_and_release("d1", {}, {busy: 2, other: 2})
            assert later == [busy]
            leases = dict(await conn.fetch("SELECT script_id, slots FROM jsrt_leases"))
            assert leases == {busy: 2}
        assert await store.queue.mark_and_release("d1", {}, {busy: 2}) == []
        assert await conn.fetchval("SELECT count(*) FROM jsrt_leases") == 0
    finally:
        await store.close()
        await claim.close()


async def test_a_daemon_holds_at_most_its_share_of_slots_for_one_tenant(
    conn: asyncpg.Connection, db_url: str
) -> None:
    """jsrt_claim_v5's p_tenant_slots: of one tenant's three scripts, a daemon takes no more
    than 4 slots in all, by fan-out (step 3) or by pending runs (step 2), across claims;
    another tenant's script still gets its slots in the same claim."""
    greedy, other = await make_tenant(conn), await make_tenant(conn)
    scripts = [await make_script(conn, greedy, limits={"max_concurrent_runs": 5})
               for _ in range(3)]
    theirs = await make_script(conn, other, limits={"max_concurrent_runs": 5})
    await publish_many(conn, greedy, 10)
    await publish_many(conn, other, 3)
    store = await Store.open(db_url)
    try:
        await store.leases.register("d1", "h", 1)
        first = await store.queue.claim_leased("d1", 100, 100, slot_limit=32, per_script=8,
                                               reserve=2, refill={}, tenant_slots=4)
        assert sum(n for s, n in first.granted.items() if s in scripts) == 4
        assert first.granted[theirs] == 4  # its own share
        again = await store.queue.claim_leased("d1", 100, 100, slot_limit=32, per_script=8,
                                               reserve=2, refill={}, tenant_slots=4)
        assert not (set(again.granted) & set(scripts))  # step 2: the share is full
        held = await conn.fetchval("SELECT sum(slots) FROM jsrt_leases WHERE daemon_id = 'd1'"
                                   " AND tenant_id = $1", greedy)
        assert held == 4
        # without the cap (version 4's behaviour), the rest of the free slots go to it
        more = await store.queue.claim_leased("d1", 100, 100, slot_limit=32, per_script=8,
                                              reserve=2, refill={})
        assert sum(n for s, n in more.granted.items() if s in scripts) == 11
    finally:
        await store.close()
