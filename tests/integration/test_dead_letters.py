"""Dead letters against a real PostgreSQL and real V8, in drain mode, with an injected clock:
the backoff schedule, exhaustion, resolution, timeouts and lost workers, paused scripts, two
daemons, manual retry/discard, the `jsrt dead-letters` CLI and the review views."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import anyio
import asyncpg
import pytest
import structlog
from structlog.testing import capture_logs
from support.daemons import daemon_for, drain
from support.factories import executions, make_script, make_tenant, publish

from consumer import cli
from consumer import dead_letters as dl
from consumer.clock import FakeClock
from consumer.db import Db
from consumer.sandbox import Executor
from consumer.store import Store

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


async def test_letters_created_exhausted_and_resolved_are_logged(
    conn: asyncpg.Connection, db_url: str, executor: Executor, clock: FakeClock
) -> None:
    """The lines operators alert on, with the letter's and the execution's ids."""
    tenant = await make_tenant(conn)
    broken = await make_script(conn, tenant, ALWAYS_FAILS, name="broken")
    flaky = await make_script(conn, tenant, FAILS_ONCE, name="flaky")
    await publish(conn, tenant, "thing.happened")
    logged: list[dict[str, Any]] = []
    with capture_logs() as logs:
        await drain(db_url, executor, clock)
    logged += logs
    for _ in range(3):
        planned = [r for r in await letters(conn, tenant) if r["next_retry_at"] is not None]
        due(clock, max(planned, key=lambda r: r["next_retry_at"]))
        with capture_logs() as logs:
            await drain(db_url, executor, clock)
        logged += logs

    rows = {r["script_id"]: r for r in await letters(conn, tenant)}
    runs = await executions(conn, tenant)

    def lines(event: str) -> list[tuple[Any, ...]]:
        return [(e["log_level"], e["script_id"], e["dead_letter_id"], e["execution_id"],
                 e["retry_count"], e["tenant_id"]) for e in logged if e["event"] == event]

    def first_run(script: UUID) -> str:
        return str(next(r["id"] for r in runs if r["script_id"] == script))

    def last_run(script: UUID) -> str:
        return str([r["id"] for r in runs if r["script_id"] == script][-1])

    t = str(tenant)
    assert sorted(lines("dead_letter_created")) == sorted([
        ("warning", str(s), str(rows[s]["id"]), first_run(s), 0, t) for s in (broken, flaky)])
    assert lines("dead_letter_resolved") == [
        ("info", str(flaky), str(rows[flaky]["id"]), last_run(flaky), 1, t)]
    assert lines("dead_letter_exhausted") == [
        ("error", str(broken), str(rows[broken]["id"]), last_run(broken), 3, t)]


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
        assert (await store.queue.dispatch_events(10, 10))[1] == 1
        [run] = await store.queue.start_runs("ghost", 10, 10)
        lost = await store.queue.rescue_lost_runs(
            2.0, lambda f: clock.now() + timedelta(seconds=30))
        assert [f.execution_id for f in lost] == [run.execution_id]
        [row] = await executions(conn, tenant)
        assert (row["status"], row["error"]) == ("failed", "worker lost")
        letter = await one_letter(conn, tenant)
        assert (letter["retry_count"], letter["error"]) == (0, "worker lost")

        # its retry is lost too: counted as a failed attempt, the letter keeps going
        due(clock, letter)
        assert await store.dead_letters.claim_retries(10, clock.now()) == 1
        await conn.execute("INSERT INTO jsrt_daemons (id, hostname, pid, heartbeat_at) "
                           "VALUES ('ghost2', 'gone', 2, NOW() - INTERVAL '1 hour')")
        [retry_run] = await store.queue.start_runs("ghost2", 10, 10)
        assert retry_run.dead_letter_id == letter["id"]
        assert len(await store.queue.rescue_lost_runs(2.0, lambda f: clock.now())) == 1
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
        assert await store.dead_letters.claim_retries(10, clock.now()) == 1
        await store.queue.start_runs("ghost", 10, 10)
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
    [listed] = await Store(Db(conn)).dead_letters.search(dl.Filters(tenant=tenant))
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

    applied = await Store(Db(conn)).dead_letters.retry([letter["id"]], tenant)
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
    await Store(Db(conn)).dead_letters.retry([letter["id"]], tenant)
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
    await Store(Db(conn)).dead_letters.retry([letter["id"]], None, now=clock.now())
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

    with capture_logs() as logs:
        discarded = await Store(Db(conn)).dead_letters.discard([a, foreign, unknown], tenant,
                                                               by="key abc")
    assert discarded.done == [a]
    # an operator's action is one line: what, where, by whom, and what it could not change
    [line] = [x for x in logs if x["event"] == "dead_letters_discarded"]
    assert (line["tenant_id"], line["by"], line["count"], line["refused"],
            line["dead_letter_ids"]) == (str(tenant), "key abc", 1, 2, [str(a)])
    assert discarded.skipped == {foreign: "not found", unknown: "not found"}
    row = (await letters(conn, tenant))[0]
    assert (row["id"], row["resolution"], row["next_retry_at"]) == (a, "discarded", None)
    assert row["resolved_at"] is not None

    await conn.execute("UPDATE jsrt_dead_letter_state SET in_flight = true "
                       "WHERE dead_letter_id = $1", b)
    with capture_logs() as logs:
        again = await Store(Db(conn)).dead_letters.retry([a, b], tenant, by="key abc")
        await Store(Db(conn)).dead_letters.retry([a], tenant)  # (the CLI: it prints its own)
    assert [(x["event"], x["by"], x["count"], x["refused"]) for x in logs
            if x["event"].startswith("dead_letters_")] == [
        ("dead_letters_retried", "key abc", 0, 2)]
    assert again.done == []
    assert again.skipped == {a: "already resolved (discarded)", b: "a retry is in flight"}
    assert (await Store(Db(conn)).dead_letters.discard([b])).skipped == {b: "a retry is in flight"}

    clock.advance(86400)  # the discarded letter is never retried
    await conn.execute("UPDATE jsrt_dead_letter_state SET in_flight = false "
                       "WHERE dead_letter_id = $1", b)
    await drain(db_url, executor, clock)
    assert len([r for r in await executions(conn, tenant)
                if r["trigger_data"].get("dead_letter_id") == str(a)]) == 0


# ---------------------------------------------------------------- the CLI
async def insert_letter(
    conn: asyncpg.Connection, tenant: UUID, script: UUID, *, retry_count: int = 0,
    error: str = "Error: boom\n    at handler", created_ago: timedelta = timedelta(minutes=5),
    resolution: str | None = None, in_flight: bool = False, max_retries: int = 3,
    next_retry_in: timedelta | None = timedelta(seconds=30), event_type: str = "thing.happened",
) -> UUID:
    """A letter as the runtime leaves it, written directly (fast, for output and views)."""
    when = datetime.now(UTC) - created_ago
    execution = await conn.fetchval(
        """INSERT INTO script_executions (script_id, tenant_id, status, trigger_type, trigger_data,
                                          input, error, started_at, completed_at)
           VALUES ($1, $2, 'failed', 'event', $3::jsonb, '{"k": 1}', $4, $5, $5) RETURNING id""",
        script, tenant, json.dumps({"event_id": str(uuid.uuid4()), "event_type": event_type,
                                    "attempt": retry_count + 1}), error, when)
    letter = await conn.fetchval(
        """INSERT INTO script_event_dead_letters (script_id, tenant_id, execution_id, event_type,
               event_data, error, retry_count, last_retry_at, created_at)
           VALUES ($1, $2, $3, $4, '{"k": 1}', $5, $6, CASE WHEN $6 > 0 THEN $7::timestamptz END,
                   $7::timestamptz)
           RETURNING id""", script, tenant, execution, event_type, error, retry_count, when)
    exhausted = retry_count >= max_retries
    await conn.execute(
        """INSERT INTO jsrt_dead_letter_state (dead_letter_id, tenant_id, next_retry_at, in_flight,
               resolved_at, resolution, max_retries, script_version)
           VALUES ($1, $2, $3, $4, CASE WHEN $5::text IS NOT NULL THEN NOW() END, $5, $6, 1)""",
        letter, tenant,
        None if resolution or exhausted or next_retry_in is None else when + next_retry_in,
        in_flight, resolution, max_retries)
    return letter


async def jsrt(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], db_url: str,
               *argv: str) -> tuple[int, str, str]:
    """`jsrt ...` in-process (on its own event loop, in a thread): exit code, stdout, stderr."""
    monkeypatch.setenv("DATABASE_URL", db_url)
    capsys.readouterr()
    try:
        code = await anyio.to_thread.run_sync(cli.main, list(argv))
    except SystemExit as exc:  # argparse rejected the arguments
        code = int(exc.code or 0)
    finally:
        structlog.reset_defaults()  # main() logged to the captured stderr, closed after the test
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
async def cli_letters(conn: asyncpg.Connection) -> dict[str, Any]:
    tenant, other = await make_tenant(conn, "acme"), await make_tenant(conn, "other")
    script = await make_script(conn, tenant, ALWAYS_FAILS, name="billing")
    mailer = await make_script(conn, tenant, ALWAYS_FAILS, name="mailer",
                               event_types=["mail.bounced"])
    fresh = await insert_letter(conn, tenant, script, created_ago=timedelta(minutes=1))
    spent = await insert_letter(conn, tenant, script, retry_count=3, error="TypeError: x is null",
                                created_ago=timedelta(hours=3))
    mail = await insert_letter(conn, tenant, mailer, event_type="mail.bounced",
                               created_ago=timedelta(days=2))
    foreign = await insert_letter(conn, other, await make_script(conn, other, ALWAYS_FAILS))
    return dict(tenant=tenant, other=other, script=script, fresh=fresh, spent=spent, mail=mail,
                foreign=foreign)


async def test_cli_list_table_and_json(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], db_url: str,
    cli_letters: dict[str, Any],
) -> None:
    c = cli_letters
    code, out, _ = await jsrt(monkeypatch, capsys, db_url, "dead-letters", "list",
                              "--tenant", str(c["tenant"]))
    assert code == 0
    header, *lines = out.splitlines()
    assert header.split() == ["ID", "TENANT", "SCRIPT", "EVENT", "TYPE", "RETRIES", "STATE",
                              "NEXT", "RETRY", "CREATED", "ERROR"]
    assert [ln.split()[0] for ln in lines] == [str(c["fresh"]), str(c["spent"]), str(c["mail"])]
    fresh, spent, _ = lines
    assert fresh.split()[1:6] == ["acme", "billing", "thing.happened", "0/3", "scheduled"]
    assert "Error: boom" in fresh and "at handler" not in fresh  # first line of the error only
    assert spent.split()[4:6] == ["3/3", "exhausted"]

    code, out, _ = await jsrt(monkeypatch, capsys, db_url, "dead-letters", "list", "--json",
                              "--tenant", str(c["tenant"]), "--exhausted")
    [row] = json.loads(out)
    assert row["id"] == str(c["spent"]) and row["tenant_id"] == str(c["tenant"])
    assert (row["state"], row["retry_count"], row["max_retries"]) == ("exhausted", 3, 3)
    assert row["next_retry_at"] is None and row["error"] == "TypeError: x is null"
    datetime.fromisoformat(row["created_at"])

    async def ids(*args: str) -> list[str]:
        _, text, _ = await jsrt(monkeypatch, capsys, db_url, "dead-letters", "list", "--json",
                                *args)
        return [r["id"] for r in json.loads(text)]

    assert await ids("--script", "mailer") == [str(c["mail"])]
    assert await ids("--script", str(c["script"])) == [str(c["fresh"]), str(c["spent"])]
    assert await ids("--event-type", "mail.bounced") == [str(c["mail"])]
    assert await ids("--tenant", str(c["tenant"]), "--since", "1h") == [str(c["fresh"])]
    assert len(await ids()) == 4  # every tenant
    assert await ids("--tenant", str(c["tenant"]), "--limit", "1") == [str(c["fresh"])]
    code, out, _ = await jsrt(monkeypatch, capsys, db_url, "dead-letters", "list",
                              "--tenant", str(uuid.uuid4()))
    assert (code, out) == (0, "no dead letters\n")


async def test_cli_show_every_attempt_table_and_json(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    conn: asyncpg.Connection, db_url: str, executor: Executor, clock: FakeClock,
) -> None:
    tenant = await make_tenant(conn)
    await make_script(conn, tenant, SECOND_RETRY_WORKS, name="flaky")
    await publish(conn, tenant, "thing.happened", {"order": 42})
    await drain(db_url, executor, clock)
    for _ in range(2):
        due(clock, await one_letter(conn, tenant))
        await drain(db_url, executor, clock)
    letter = await one_letter(conn, tenant)
    rows = await executions(conn, tenant)

    code, out, _ = await jsrt(monkeypatch, capsys, db_url, "dead-letters", "show", "--json",
                              str(letter["id"]))
    assert code == 0
    shown = json.loads(out)
    assert shown["event_data"] == {"order": 42}
    assert (shown["state"], shown["resolution"], shown["script_name"]) == (
        "succeeded", "succeeded", "flaky")
    assert "attempt 2" in shown["error"]
    assert [(a["attempt"], a["id"], a["status"]) for a in shown["attempts"]] == [
        (1, str(rows[0]["id"]), "failed"), (2, str(rows[1]["id"]), "failed"),
        (3, str(rows[2]["id"]), "completed")]
    assert all(a["started_at"] and a["completed_at"] for a in shown["attempts"])
    assert "attempt 1" in shown["attempts"][0]["error"]

    code, out, _ = await jsrt(monkeypatch, capsys, db_url, "dead-letters", "show",
                              str(letter["id"]), "--tenant", str(tenant))
    assert code == 0
    assert f"dead letter  {letter['id']}" in out
    assert "state        succeeded, 2/3 retries used" in out  # one failed, one that worked
    assert '"order": 42' in out
    attempts = out[out.index("\nattempts\n"):].splitlines()[3:]  # after the header
    assert [ln.split()[:3] for ln in attempts] == [
        ["1", str(rows[0]["id"]), "failed"], ["2", str(rows[1]["id"]), "failed"],
        ["3", str(rows[2]["id"]), "completed"]]

    code, _, err = await jsrt(monkeypatch, capsys, db_url, "dead-letters", "show",
                              str(letter["id"]), "--tenant", str(uuid.uuid4()))
    assert code == 1 and "jsrt: error: no dead letter" in err


async def test_cli_show_counts_an_operator_retry_that_succeeded(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    conn: asyncpg.Connection, db_url: str, executor: Executor, clock: FakeClock,
) -> None:
    tenant = await make_tenant(conn)
    script = await make_script(conn, tenant, ALWAYS_FAILS)
    letter = await make_exhausted(conn, db_url, executor, clock, tenant)
    await conn.execute("UPDATE scripts SET source = $2 WHERE id = $1", script,
                       "function handler(i) { return i; }")
    await Store(Db(conn)).dead_letters.retry([letter["id"]], tenant)
    await drain(db_url, executor, clock)

    code, out, _ = await jsrt(monkeypatch, capsys, db_url, "dead-letters", "show", "--json",
                              str(letter["id"]))
    shown = json.loads(out)
    last = shown["attempts"][-1]
    assert (code, last["attempt"], last["status"]) == (0, 5, "completed")
    assert (shown["retries_used"], shown["max_retries"]) == (4, 4)
    assert shown["last_retry_at"] == last["completed_at"]  # the retry that worked
    code, out, _ = await jsrt(monkeypatch, capsys, db_url, "dead-letters", "show",
                              str(letter["id"]))
    assert "state        succeeded, 4/4 retries used" in out
    completed = datetime.fromisoformat(last["completed_at"]).astimezone(UTC)
    assert f"last retry   {completed:%Y-%m-%dT%H:%M:%SZ}" in out
    code, out, _ = await jsrt(monkeypatch, capsys, db_url, "dead-letters", "list",
                              "--resolved", "--tenant", str(tenant))
    assert out.splitlines()[1].split()[4:6] == ["4/4", "succeeded"]


async def test_cli_retry_and_discard(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    conn: asyncpg.Connection, db_url: str, cli_letters: dict[str, Any],
) -> None:
    c = cli_letters
    code, out, err = await jsrt(monkeypatch, capsys, db_url, "dead-letters", "retry",
                                str(c["spent"]))
    assert (code, out, err) == (0, "retried 1 dead letter(s): due now\n", "")
    st = await conn.fetchrow("SELECT next_retry_at, max_retries FROM jsrt_dead_letter_state "
                             "WHERE dead_letter_id = $1", c["spent"])
    assert st["max_retries"] == 4
    assert abs((st["next_retry_at"] - datetime.now(UTC)).total_seconds()) < 60

    code, out, _ = await jsrt(monkeypatch, capsys, db_url, "dead-letters", "discard", "--json",
                              str(c["fresh"]), str(c["foreign"]), "--tenant", str(c["tenant"]))
    assert code == 1  # one was skipped
    assert json.loads(out) == {"discarded": [str(c["fresh"])],
                               "skipped": {str(c["foreign"]): "not found"}}
    code, out, err = await jsrt(monkeypatch, capsys, db_url, "dead-letters", "retry",
                                str(c["fresh"]))
    assert code == 1
    assert out == "retried 0 dead letter(s): due now\n"
    assert err == f"jsrt: skipped {c['fresh']}: already resolved (discarded)\n"
    code, out, _ = await jsrt(monkeypatch, capsys, db_url, "dead-letters", "list", "--json",
                              "--resolved", "--tenant", str(c["tenant"]))
    assert {r["id"]: r["state"] for r in json.loads(out)}[str(c["fresh"])] == "discarded"

    code, _, err = await jsrt(monkeypatch, capsys, db_url, "dead-letters", "retry")
    assert code == 2 and "give dead letter ids, or --all" in err
    code, _, err = await jsrt(monkeypatch, capsys, db_url, "dead-letters", "retry", "nope")
    assert code == 2 and "not a UUID" in err


async def test_cli_retry_all_with_filters_shows_progress(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    conn: asyncpg.Connection, db_url: str,
) -> None:
    tenant, other = await make_tenant(conn), await make_tenant(conn)
    script = await make_script(conn, tenant, ALWAYS_FAILS)
    many = [await insert_letter(conn, tenant, script, retry_count=3) for _ in range(120)]
    await insert_letter(conn, tenant, script, event_type="other.type", retry_count=3)
    await insert_letter(conn, other, await make_script(conn, other, ALWAYS_FAILS), retry_count=3)

    code, out, err = await jsrt(monkeypatch, capsys, db_url, "dead-letters", "retry", "--all",
                                "--tenant", str(tenant), "--event-type", "thing.happened",
                                "--exhausted", "--json")
    assert code == 0
    assert sorted(json.loads(out)["retried"]) == sorted(str(i) for i in many)
    assert err.endswith("\rretrying dead letters: 120/120\n")
    assert "retrying dead letters: 100/120" in err
    due_now = await conn.fetchval(
        "SELECT count(*) FROM jsrt_dead_letter_state WHERE next_retry_at IS NOT NULL")
    assert due_now == 120

    code, out, err = await jsrt(monkeypatch, capsys, db_url, "dead-letters", "retry", "--all",
                                "--tenant", str(other))
    assert (code, out, err) == (0, "retried 1 dead letter(s): due now\n", "")


# ---------------------------------------------------------------- review views
async def test_view_failures_24h_by_script_and_error(conn: asyncpg.Connection) -> None:
    tenant, other = await make_tenant(conn), await make_tenant(conn)
    a = await make_script(conn, tenant, name="a")
    b = await make_script(conn, other, name="b")

    async def execution(tenant_id: UUID, script: UUID, status: str, error: str | None,
                        ago: timedelta = timedelta(hours=1), trigger: str = "event") -> None:
        await conn.execute(
            """INSERT INTO script_executions (script_id, tenant_id, status, trigger_type, error,
                                              started_at)
               VALUES ($1, $2, $3, $4, $5, NOW() - $6::interval)""",
            script, tenant_id, status, trigger, error, ago)

    await execution(tenant, a, "failed", "Error: a\n    at handler (1)")
    await execution(tenant, a, "failed", "Error: a\n    at handler (2)", timedelta(hours=20))
    await execution(tenant, a, "timeout", None)
    await execution(tenant, a, "failed", "Error: a", timedelta(hours=25))  # too old
    await execution(tenant, a, "completed", None)
    await execution(tenant, a, "failed", "Error: cron", trigger="cron")  # not an event
    await execution(other, b, "failed", "Error: b")
    rows = await conn.fetch(
        "SELECT script_name, status, error, failures FROM jsrt_dl_failures_24h "
        "WHERE tenant_id = $1 ORDER BY failures DESC", tenant)
    assert [tuple(r) for r in rows] == [("a", "failed", "Error: a", 2),
                                        ("a", "timeout", "timeout", 1)]
    assert await conn.fetchval("SELECT count(*) FROM jsrt_dl_failures_24h") == 3


async def test_view_exhausted_by_tenant(conn: asyncpg.Connection) -> None:
    tenant, other = await make_tenant(conn, "acme"), await make_tenant(conn, "other")
    s1, s2 = await make_script(conn, tenant), await make_script(conn, tenant)
    await insert_letter(conn, tenant, s1, retry_count=3, created_ago=timedelta(days=3))
    await insert_letter(conn, tenant, s2, retry_count=3)
    await insert_letter(conn, tenant, s1, retry_count=4, max_retries=4)
    await insert_letter(conn, tenant, s1, retry_count=3, resolution="discarded")  # resolved
    await insert_letter(conn, tenant, s1, retry_count=1)  # retries left
    await insert_letter(conn, tenant, s1, retry_count=3, max_retries=4,
                        next_retry_in=timedelta(0))  # granted one more
    await insert_letter(conn, tenant, s1, retry_count=3, in_flight=True)
    await insert_letter(conn, other, await make_script(conn, other), retry_count=3)
    row = await conn.fetchrow("SELECT * FROM jsrt_dl_exhausted_by_tenant WHERE tenant_id = $1",
                              tenant)
    assert (row["tenant_name"], row["exhausted"], row["scripts"]) == ("acme", 3, 2)
    assert row["oldest_created_at"] < datetime.now(UTC) - timedelta(days=2)
    assert await conn.fetchval(
        "SELECT exhausted FROM jsrt_dl_exhausted_by_tenant WHERE tenant_id = $1", other) == 1


async def test_view_oldest_unresolved(conn: asyncpg.Connection) -> None:
    tenant = await make_tenant(conn)
    active = await make_script(conn, tenant, name="active")
    paused = await make_script(conn, tenant, name="paused", status="paused")
    old = await insert_letter(conn, tenant, active, retry_count=3, created_ago=timedelta(days=9))
    waiting = await insert_letter(conn, tenant, paused, created_ago=timedelta(days=5))
    flying = await insert_letter(conn, tenant, active, retry_count=1, in_flight=True,
                                 created_ago=timedelta(days=1))
    new = await insert_letter(conn, tenant, active, created_ago=timedelta(minutes=1))
    await insert_letter(conn, tenant, active, resolution="succeeded",
                        created_ago=timedelta(days=20))
    rows = await conn.fetch(
        "SELECT dead_letter_id, script_name, state, age FROM jsrt_dl_oldest_unresolved "
        "WHERE tenant_id = $1 ORDER BY created_at LIMIT 10", tenant)
    assert [(r["dead_letter_id"], r["state"]) for r in rows] == [
        (old, "exhausted"), (waiting, "waiting_for_script"), (flying, "in_flight"),
        (new, "scheduled")]
    assert rows[0]["age"] > timedelta(days=8)


async def test_view_retry_success_rate(conn: asyncpg.Connection) -> None:
    tenant = await make_tenant(conn)
    script = await make_script(conn, tenant, name="s")
    quiet = await make_script(conn, tenant, name="quiet")
    await insert_letter(conn, tenant, script, retry_count=1, resolution="succeeded")
    await insert_letter(conn, tenant, script, retry_count=3)  # exhausted
    await insert_letter(conn, tenant, script, retry_count=0, resolution="discarded")
    await insert_letter(conn, tenant, script, retry_count=0)  # waiting for its first retry
    await insert_letter(conn, tenant, quiet)
    rows = {r["script_name"]: r for r in await conn.fetch(
        "SELECT * FROM jsrt_dl_retry_success_rate WHERE tenant_id = $1", tenant)}
    r = rows["s"]
    assert (r["letters"], r["recovered"], r["discarded"], r["exhausted"], r["retries"]) == (
        4, 1, 1, 1, 5)  # retries: 1 failed + 1 succeeded, 3 failed
    assert float(r["retry_success_rate"]) == 0.2
    assert float(r["recovery_rate"]) == 0.5
    q = rows["quiet"]
    assert (q["retries"], q["retry_success_rate"], q["recovery_rate"]) == (0, None, None)
