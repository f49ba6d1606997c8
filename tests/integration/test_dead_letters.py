"""Dead letters against a real PostgreSQL and real V8, in drain mode, with an injected clock:
the backoff schedule, exhaustion, resolution, timeouts and lost workers, paused scripts, two
daemons, manual retry/discard, the `jsrt dead-letters` CLI and the review views."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import anyio
import asyncpg
import pytest

from consumer import cli
from consumer import dead_letters as dl
from consumer.clock import FakeClock
from consumer.daemon import store_publisher
from consumer.sandbox import Executor
from consumer.store import Store
from support.daemons import daemon_for, drain
from support.factories import executions, make_script, make_tenant, publish

ALWAYS_FAILS = "function handler(i, ctx) { throw new Error('boom ' + ctx.trigger.attempt); }"
# Fails on the first attempt and the first retry, succeeds on the second retry.
SECOND_RETRY_WORKS = """function handler(i, ctx) {
    if (ctx.trigger.attempt < 3) throw new Error('attempt ' + ctx.trigger.attempt);
    return {ok: ctx.trigger.attempt};
}"""
FAILS_ONCE = """function handler(i, ctx) {
    if (ctx.trigger.attempt < 2) throw new Error('first time');
    return 'ok';
}"""

LETTER = """SELECT d.*, st.next_retry_at, st.in_flight, st.resolved_at, st.resolution,
                  st.max_retries, st.script_version, st.resource_limits, st.event_id
           FROM script_event_dead_letters d
           JOIN jsrt_dead_letter_state st ON st.dead_letter_id = d.id AND st.tenant_id = d.tenant_id
           WHERE d.tenant_id = $1 ORDER BY d.created_at"""


@pytest.fixture
async def executor(db_url: str) -> AsyncIterator[Executor]:
    store = await Store.open(db_url)
    async with Executor(workers=2, publisher=store_publisher(store)) as ex:
        yield ex
    await store.close()


@pytest.fixture
def clock() -> FakeClock:
    # Real now: timestamps the database writes itself (NOW()) stay comparable.
    return FakeClock(datetime.now(UTC))


async def letters(conn: asyncpg.Connection, tenant: UUID) -> list[asyncpg.Record]:
    return list(await conn.fetch(LETTER, tenant))


async def one_letter(conn: asyncpg.Connection, tenant: UUID) -> asyncpg.Record:
    [row] = await letters(conn, tenant)
    return row


def due(clock: FakeClock, letter: asyncpg.Record) -> None:
    """Move the clock just past the letter's next retry."""
    clock.set(letter["next_retry_at"] + timedelta(seconds=1))


def assert_backoff(letter: asyncpg.Record, failed_at: datetime, seconds: float) -> None:
    waited = (letter["next_retry_at"] - failed_at).total_seconds()
    assert seconds * 0.9 - 0.01 <= waited <= seconds * 1.1 + 0.01, (waited, seconds)


# ---------------------------------------------------------------- the automatic path
async def test_backoff_schedule_then_exhaustion_after_exactly_three_retries(
    conn: asyncpg.Connection, db_url: str, executor: Executor, clock: FakeClock
) -> None:
    tenant = await make_tenant(conn)
    script = await make_script(conn, tenant, ALWAYS_FAILS, limits={"max_execution_time_ms": 5000})
    event_id = await publish(conn, tenant, "thing.happened", {"order": 7})

    await drain(db_url, executor, clock)
    letter = await one_letter(conn, tenant)
    assert (letter["retry_count"], letter["script_id"], letter["event_type"]) == (
        0, script, "thing.happened")
    assert json.loads(letter["event_data"]) == {"order": 7}
    assert letter["script_version"] == 1
    assert json.loads(letter["resource_limits"])["max_execution_time_ms"] == 5000
    assert letter["event_id"] == event_id
    assert_backoff(letter, clock.now(), 30)

    for retry, wait in [(1, 60), (2, 120)]:
        due(clock, letter)
        await drain(db_url, executor, clock)
        letter = await one_letter(conn, tenant)
        assert letter["retry_count"] == retry
        assert not letter["in_flight"]
        assert_backoff(letter, clock.now(), wait)

    due(clock, letter)
    await drain(db_url, executor, clock)
    letter = await one_letter(conn, tenant)
    assert letter["retry_count"] == 3
    assert letter["next_retry_at"] is None
    assert letter["resolved_at"] is None  # exhausted: stays for review
    assert letter["last_retry_at"] is not None

    clock.advance(86400)  # a day later: never retried again
    await drain(db_url, executor, clock)
    rows = await executions(conn, tenant)
    assert len(rows) == 4
    assert [r["trigger_data"]["attempt"] for r in rows] == [1, 2, 3, 4]
    assert all(r["status"] == "failed" for r in rows)
    retries = rows[1:]
    assert all(r["trigger_data"]["dead_letter_id"] == str(letter["id"]) for r in retries)
    assert [r["trigger_data"]["retry"] for r in retries] == [1, 2, 3]
    assert all(r["trigger_data"]["event_id"] == str(event_id) for r in rows)
    assert all(r["input"] == {"order": 7} for r in rows)
    # the letter points at the newest attempt and its error
    assert letter["execution_id"] == rows[-1]["id"]
    assert "boom 4" in letter["error"]
    assert (await one_letter(conn, tenant))["retry_count"] == 3


async def test_success_on_the_second_retry_resolves_the_letter(
    conn: asyncpg.Connection, db_url: str, executor: Executor, clock: FakeClock
) -> None:
    tenant = await make_tenant(conn)
    await make_script(conn, tenant, SECOND_RETRY_WORKS)
    await publish(conn, tenant, "thing.happened")
    await drain(db_url, executor, clock)
    for _ in range(2):
        due(clock, await one_letter(conn, tenant))
        await drain(db_url, executor, clock)

    letter = await one_letter(conn, tenant)
    assert letter["resolution"] == "succeeded"
    assert letter["resolved_at"] is not None
    assert letter["next_retry_at"] is None and not letter["in_flight"]
    assert letter["retry_count"] == 1  # one failed retry, then the one that worked
    assert "attempt 2" in letter["error"]  # the last failure stays visible

    clock.advance(86400)
    await drain(db_url, executor, clock)
    rows = await executions(conn, tenant)
    assert [(r["trigger_data"]["attempt"], r["status"]) for r in rows] == [
        (1, "failed"), (2, "failed"), (3, "completed")]
    assert [r["trigger_data"].get("dead_letter_id") for r in rows] == [
        None, str(letter["id"]), str(letter["id"])]
    assert rows[-1]["output"] == {"ok": 3}


async def test_a_timeout_is_dead_lettered_like_a_failure(
    conn: asyncpg.Connection, db_url: str, executor: Executor, clock: FakeClock
) -> None:
    tenant = await make_tenant(conn)
    await make_script(conn, tenant, "function handler() { while (true) {} }",
                      limits={"max_execution_time_ms": 200})
    await publish(conn, tenant, "thing.happened")
    await drain(db_url, executor, clock)
    [row] = await executions(conn, tenant)
    assert row["status"] == "timeout"
    letter = await one_letter(conn, tenant)
    assert letter["execution_id"] == row["id"]
    assert letter["retry_count"] == 0
    assert letter["error"]
    assert_backoff(letter, clock.now(), 30)


async def test_a_lost_worker_is_dead_lettered_and_a_lost_retry_counts_as_a_failed_attempt(
    conn: asyncpg.Connection, db_url: str, executor: Executor, clock: FakeClock
) -> None:
    tenant = await make_tenant(conn)
    await make_script(conn, tenant)  # works: only the worker dies
    await publish(conn, tenant, "thing.happened", {"n": 1})
    await conn.execute("INSERT INTO jsrt_daemons (id, hostname, pid, heartbeat_at) "
                       "VALUES ('ghost', 'gone', 1, NOW() - INTERVAL '1 hour')")
    store = await Store.open(db_url)
    try:
        assert (await store.dispatch_events(10, 10))[1] == 1
        [run] = await store.start_runs("ghost", 10, 10)
        lost = await store.rescue_lost_runs(2.0, lambda f: clock.now() + timedelta(seconds=30))
        assert [f.execution_id for f in lost] == [run.execution_id]
        [row] = await executions(conn, tenant)
        assert (row["status"], row["error"]) == ("failed", "worker lost")
        letter = await one_letter(conn, tenant)
        assert (letter["retry_count"], letter["error"]) == (0, "worker lost")

        # its retry is lost too: counted as a failed attempt, the letter keeps going
        due(clock, letter)
        assert await store.claim_retries(10, clock.now()) == 1
        await conn.execute("INSERT INTO jsrt_daemons (id, hostname, pid, heartbeat_at) "
                           "VALUES ('ghost2', 'gone', 2, NOW() - INTERVAL '1 hour')")
        [retry_run] = await store.start_runs("ghost2", 10, 10)
        assert retry_run.dead_letter_id == letter["id"]
        assert len(await store.rescue_lost_runs(2.0, lambda f: clock.now())) == 1
    finally:
        await store.close()
    letter = await one_letter(conn, tenant)
    assert (letter["retry_count"], letter["error"]) == (1, "worker lost")
    assert letter["execution_id"] == retry_run.execution_id
    assert not letter["in_flight"] and letter["resolved_at"] is None

    due(clock, letter)
    await drain(db_url, executor, clock)
    letter = await one_letter(conn, tenant)
    assert letter["resolution"] == "succeeded"
    rows = await executions(conn, tenant)
    assert [(r["trigger_data"]["attempt"], r["status"]) for r in rows] == [
        (1, "failed"), (2, "failed"), (3, "completed")]


async def test_the_daemon_backs_off_a_lost_retry_by_its_count(
    conn: asyncpg.Connection, db_url: str, executor: Executor, clock: FakeClock
) -> None:
    """The heartbeat's rescue plans the next retry with the letter's backoff (60 s after a
    first retry), not a flat base."""
    tenant = await make_tenant(conn)
    await make_script(conn, tenant, FAILS_ONCE)
    await publish(conn, tenant, "thing.happened")
    await drain(db_url, executor, clock)
    letter = await one_letter(conn, tenant)
    due(clock, letter)
    await conn.execute("INSERT INTO jsrt_daemons (id, hostname, pid, heartbeat_at) "
                       "VALUES ('ghost', 'gone', 1, NOW() - INTERVAL '1 hour')")
    store = await Store.open(db_url)
    try:
        assert await store.claim_retries(10, clock.now()) == 1
        await store.start_runs("ghost", 10, 10)
    finally:
        await store.close()
    async with daemon_for(db_url, executor, clock) as d:
        with anyio.fail_after(30):
            await d.run(until_idle=True)  # waits for the in-flight retry: rescued by heartbeat
    letter = await one_letter(conn, tenant)
    assert letter["retry_count"] == 1 and letter["error"] == "worker lost"
    assert_backoff(letter, clock.now(), 60)


async def test_a_paused_scripts_letters_wait_and_run_after_reactivation(
    conn: asyncpg.Connection, db_url: str, executor: Executor, clock: FakeClock
) -> None:
    tenant = await make_tenant(conn)
    script = await make_script(conn, tenant, FAILS_ONCE)
    await publish(conn, tenant, "thing.happened")
    await drain(db_url, executor, clock)
    letter = await one_letter(conn, tenant)
    await conn.execute("UPDATE scripts SET status = 'paused' WHERE id = $1", script)

    clock.advance(3600)
    await drain(db_url, executor, clock)  # returns: nothing it may do
    assert len(await executions(conn, tenant)) == 1
    [listed] = await dl.list_letters(conn, dl.Filters(tenant=tenant))
    assert listed["state"] == "waiting_for_script"
    assert (await one_letter(conn, tenant))["retry_count"] == 0

    await conn.execute("UPDATE scripts SET status = 'active' WHERE id = $1", script)
    await drain(db_url, executor, clock)
    letter = await one_letter(conn, tenant)
    assert letter["resolution"] == "succeeded"
    assert [r["status"] for r in await executions(conn, tenant)] == ["failed", "completed"]


async def test_two_daemons_never_retry_the_same_letter_twice(
    conn: asyncpg.Connection, db_url: str, executor: Executor, clock: FakeClock
) -> None:
    tenant = await make_tenant(conn)
    for _ in range(3):
        await make_script(conn, tenant, ALWAYS_FAILS)
    for i in range(15):
        await publish(conn, tenant, "thing.happened", {"i": i})
    await drain(db_url, executor, clock)
    assert len(await letters(conn, tenant)) == 45

    async def both() -> None:
        async with anyio.create_task_group() as tg:
            for _ in range(2):
                tg.start_soon(drain, db_url, executor, clock)

    for _ in range(3):
        clock.advance(300)
        await both()
    per_attempt = await conn.fetch(
        """SELECT trigger_data->>'dead_letter_id' AS letter, trigger_data->>'attempt' AS attempt,
                  count(*) AS n
           FROM script_executions WHERE tenant_id = $1 AND trigger_data ? 'dead_letter_id'
           GROUP BY 1, 2""", tenant)
    assert len(per_attempt) == 45 * 3
    assert {r["n"] for r in per_attempt} == {1}
    assert {r["retry_count"] for r in await letters(conn, tenant)} == {3}


# ---------------------------------------------------------------- manual retry and discard
async def make_exhausted(conn: asyncpg.Connection, db_url: str, executor: Executor,
                         clock: FakeClock, tenant: UUID) -> asyncpg.Record:
    await publish(conn, tenant, "thing.happened", {"k": "v"})
    await drain(db_url, executor, clock)
    for _ in range(3):
        clock.advance(300)
        await drain(db_url, executor, clock)
    letter = await one_letter(conn, tenant)
    assert letter["retry_count"] == 3 and letter["next_retry_at"] is None
    return letter


async def test_manual_retry_of_an_exhausted_letter_grants_exactly_one_more_attempt(
    conn: asyncpg.Connection, db_url: str, executor: Executor, clock: FakeClock
) -> None:
    tenant = await make_tenant(conn)
    script = await make_script(conn, tenant, ALWAYS_FAILS)
    letter = await make_exhausted(conn, db_url, executor, clock, tenant)

    applied = await dl.retry(conn, [letter["id"]], tenant)
    assert applied.done == [letter["id"]] and applied.skipped == {}
    await drain(db_url, executor, clock)
    letter = await one_letter(conn, tenant)
    assert (letter["retry_count"], letter["max_retries"]) == (4, 4)
    assert letter["next_retry_at"] is None  # failed again: exhausted again, not retried more
    clock.advance(86400)
    await drain(db_url, executor, clock)
    assert len(await executions(conn, tenant)) == 5

    await conn.execute("UPDATE scripts SET source = $2 WHERE id = $1", script,
                       "function handler(i) { return i; }")
    await dl.retry(conn, [letter["id"]], tenant)
    await drain(db_url, executor, clock)
    letter = await one_letter(conn, tenant)
    assert letter["resolution"] == "succeeded"
    rows = await executions(conn, tenant)
    assert [r["trigger_data"]["attempt"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert rows[-1]["status"] == "completed"


async def test_manual_retry_of_a_letter_with_retries_left_only_makes_it_due_now(
    conn: asyncpg.Connection, db_url: str, executor: Executor, clock: FakeClock
) -> None:
    tenant = await make_tenant(conn)
    await make_script(conn, tenant, ALWAYS_FAILS)
    await publish(conn, tenant, "thing.happened")
    await drain(db_url, executor, clock)
    letter = await one_letter(conn, tenant)
    await dl.retry(conn, [letter["id"]], None, now=clock.now())
    await drain(db_url, executor, clock)  # the clock has not moved: it ran because it was due
    letter = await one_letter(conn, tenant)
    assert (letter["retry_count"], letter["max_retries"]) == (1, 3)
    assert_backoff(letter, clock.now(), 60)


async def test_retry_and_discard_skip_resolved_in_flight_unknown_and_foreign_letters(
    conn: asyncpg.Connection, db_url: str, executor: Executor, clock: FakeClock
) -> None:
    tenant, other = await make_tenant(conn), await make_tenant(conn)
    await make_script(conn, tenant, ALWAYS_FAILS)
    await make_script(conn, other, ALWAYS_FAILS)
    for t in (tenant, other):
        for _ in range(2):
            await publish(conn, t, "thing.happened")
    await drain(db_url, executor, clock)
    a, b = [r["id"] for r in await letters(conn, tenant)]
    [foreign, _] = [r["id"] for r in await letters(conn, other)]
    unknown = uuid.uuid4()

    discarded = await dl.discard(conn, [a, foreign, unknown], tenant)
    assert discarded.done == [a]
    assert discarded.skipped == {foreign: "not found", unknown: "not found"}
    row = (await letters(conn, tenant))[0]
    assert (row["id"], row["resolution"], row["next_retry_at"]) == (a, "discarded", None)
    assert row["resolved_at"] is not None

    await conn.execute("UPDATE jsrt_dead_letter_state SET in_flight = true "
                       "WHERE dead_letter_id = $1", b)
    again = await dl.retry(conn, [a, b], tenant)
    assert again.done == []
    assert again.skipped == {a: "already resolved (discarded)", b: "a retry is in flight"}
    assert (await dl.discard(conn, [b])).skipped == {b: "a retry is in flight"}

    clock.advance(86400)  # the discarded letter is never retried
    await conn.execute("UPDATE jsrt_dead_letter_state SET in_flight = false "
                       "WHERE dead_letter_id = $1", b)
    await drain(db_url, executor, clock)
    assert len([r for r in await executions(conn, tenant)
                if r["trigger_data"].get("dead_letter_id") == str(a)]) == 0
