"""Cron through the database: real PostgreSQL, real V8, the daemon in drain mode with a fake
clock (scheduling decisions follow the injected clock; nothing here sleeps)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import anyio
import asyncpg
import pytest
from structlog.testing import capture_logs
from support.daemons import daemon_for, drain
from support.factories import executions, make_script, make_tenant
from support.waiting import eventually

from consumer.clock import FakeClock
from consumer.sandbox import Executor
from consumer.scheduler import decide, log_decisions
from consumer.store import Store

Logs = list[dict[str, Any]]


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


START = utc(2026, 12, 1, 10, 0, 30)


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    s = await Store.open(db_url)
    yield s
    await s.close()


async def scheduled(conn: asyncpg.Connection, tenant: UUID, cron: str, **kw: Any) -> UUID:
    return await make_script(conn, tenant, type="scheduled", cron=cron, **kw)


async def job(conn: asyncpg.Connection, script_id: UUID) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT * FROM script_scheduled_jobs WHERE script_id = $1", script_id)
    return row


async def cron_runs(conn: asyncpg.Connection, script_id: UUID) -> list[dict[str, Any]]:
    return [r for r in await executions(conn) if r["script_id"] == script_id]


def events(logs: Logs, name: str, script_id: UUID | None = None) -> Logs:
    return [e for e in logs if e["event"] == name
            and (script_id is None or e.get("script_id") == str(script_id))]


async def drain_logged(db_url: str, executor: Executor, clock: FakeClock) -> Logs:
    with capture_logs() as logs:
        await drain(db_url, executor, clock=clock)
    return logs


# ------------------------------------------------------------------ one tick


@pytest.mark.parametrize(("cron", "first", "second"), [
    ("* * * * *", utc(2026, 12, 1, 10, 1), utc(2026, 12, 1, 10, 2)),
    ("0 * * * *", utc(2026, 12, 1, 11, 0), utc(2026, 12, 1, 12, 0)),
])
async def test_a_new_job_is_planned_then_fires_at_its_tick(
    conn: asyncpg.Connection, db_url: str, executor: Executor,
    cron: str, first: datetime, second: datetime,
) -> None:
    tenant = await make_tenant(conn)
    script = await scheduled(conn, tenant, cron)
    clock = FakeClock(START)

    await drain(db_url, executor, clock=clock)
    j = await job(conn, script)
    assert j is not None
    assert (j["next_run_at"], j["is_running"], j["last_run_at"]) == (first, False, None)
    assert await cron_runs(conn, script) == []  # planning never fires

    clock.set(first + timedelta(seconds=2))
    logs = await drain_logged(db_url, executor, clock)
    [run] = await cron_runs(conn, script)
    assert run["status"] == "completed", run["error"]
    assert run["trigger_type"] == "cron"
    assert run["input"] == {"scheduled_for": first.isoformat()}
    assert run["trigger_data"] == {"type": "cron", "scheduled_for": first.isoformat(),
                                   "missed_ticks": 0}
    assert run["output"] == {"echo": {"scheduled_for": first.isoformat()}, "tenant": str(tenant)}
    j = await job(conn, script)
    assert j is not None
    assert (j["next_run_at"], j["is_running"], j["last_run_status"]) == (second, False,
                                                                         "completed")
    assert j["last_run_at"] >= run["started_at"]
    [fired] = events(logs, "cron_fired", script)
    assert (fired["scheduled_for"], fired["missed_ticks"]) == (first.isoformat(), 0)

    await drain(db_url, executor, clock=clock)  # same instant again: nothing more
    assert len(await cron_runs(conn, script)) == 1


async def test_a_failing_run_is_recorded_as_the_jobs_last_status(
    conn: asyncpg.Connection, db_url: str, executor: Executor
) -> None:
    tenant = await make_tenant(conn)
    script = await scheduled(conn, tenant, "* * * * *",
                             source="function handler() { throw new Error('boom'); }")
    clock = FakeClock(START)
    await drain(db_url, executor, clock=clock)
    clock.set(utc(2026, 12, 1, 10, 1))
    logs = await drain_logged(db_url, executor, clock)
    [run] = await cron_runs(conn, script)
    assert run["status"] == "failed"
    [failed] = events(logs, "execution_failed", script)
    assert failed["trigger"] == "cron" and "attempt" not in failed  # never "attempt=None"
    j = await job(conn, script)
    assert j is not None
    assert (j["last_run_status"], j["is_running"]) == ("failed", False)
    # cron failures are not event dead letters: the next tick is the retry
    assert await conn.fetchval("SELECT count(*) FROM script_event_dead_letters") == 0


# ------------------------------------------------------------------ downtime, overlap


async def test_three_hours_down_gives_one_catch_up_run(
    conn: asyncpg.Connection, db_url: str, executor: Executor
) -> None:
    tenant = await make_tenant(conn)
    script = await scheduled(conn, tenant, "0 * * * *")
    clock = FakeClock(START)
    await drain(db_url, executor, clock=clock)  # planned for 11:00; then no daemon until 14:00:30

    clock.set(utc(2026, 12, 1, 14, 0, 30))
    logs = await drain_logged(db_url, executor, clock)
    [run] = await cron_runs(conn, script)
    assert run["status"] == "completed"
    assert run["input"] == {"scheduled_for": utc(2026, 12, 1, 14).isoformat()}
    assert run["trigger_data"]["missed_ticks"] == 3  # 11:00, 12:00, 13:00 folded into 14:00
    [caught] = events(logs, "cron_caught_up", script)
    assert caught["missed_ticks"] == 3
    assert caught["log_level"] == "warning"
    j = await job(conn, script)
    assert j is not None
    assert j["next_run_at"] == utc(2026, 12, 1, 15)  # the normal schedule resumes

    clock.set(utc(2026, 12, 1, 15, 0, 1))
    await drain(db_url, executor, clock=clock)
    runs = await cron_runs(conn, script)
    assert [r["trigger_data"]["missed_ticks"] for r in runs] == [3, 0]


async def test_a_tick_while_the_job_is_running_is_skipped(
    conn: asyncpg.Connection, db_url: str, executor: Executor
) -> None:
    tenant = await make_tenant(conn)
    script = await scheduled(conn, tenant, "* * * * *")
    clock = FakeClock(START)
    await drain(db_url, executor, clock=clock)
    await conn.execute("UPDATE script_scheduled_jobs SET is_running = true WHERE script_id = $1",
                       script)

    clock.set(utc(2026, 12, 1, 10, 1))
    logs = await drain_logged(db_url, executor, clock)
    assert await cron_runs(conn, script) == []
    [skipped] = events(logs, "cron_tick_skipped", script)
    assert skipped["scheduled_for"] == utc(2026, 12, 1, 10, 1).isoformat()
    assert skipped["reason"] == "previous run still going"
    j = await job(conn, script)
    assert j is not None
    assert (j["next_run_at"], j["is_running"]) == (utc(2026, 12, 1, 10, 2), True)

    await conn.execute("UPDATE script_scheduled_jobs SET is_running = false WHERE script_id = $1",
                       script)
    clock.set(utc(2026, 12, 1, 10, 2))
    await drain(db_url, executor, clock=clock)
    [run] = await cron_runs(conn, script)
    assert run["trigger_data"]["missed_ticks"] == 0  # a skipped tick is not "missed"


async def wait_for(pred: Callable[[], Any], timeout: float = 30) -> None:
    await eventually(pred, timeout=timeout)


async def test_a_long_run_is_never_overlapped_by_its_next_tick(
    conn: asyncpg.Connection, db_url: str, executor: Executor
) -> None:
    tenant = await make_tenant(conn)
    script = await scheduled(
        conn, tenant, "* * * * *",
        source="async function handler() { await new Promise(r => setTimeout(r, 1500)); "
               "return 'slow'; }")
    clock = FakeClock(START)
    await drain(db_url, executor, clock=clock)
    clock.set(utc(2026, 12, 1, 10, 1))

    async def status() -> Any:
        return await conn.fetchval(
            "SELECT string_agg(status, ',') FROM script_executions WHERE script_id = $1", script)

    with capture_logs() as logs:
        async with daemon_for(db_url, executor, clock) as d, anyio.create_task_group() as tg:
            tg.start_soon(d.run)
            await wait_for(lambda: _equals(status(), "running"))
            clock.set(utc(2026, 12, 1, 10, 2))  # the next tick comes while the run goes on

            async def skipped() -> bool:
                return bool(events(logs, "cron_tick_skipped", script))
            await wait_for(skipped)
            await wait_for(lambda: _equals(status(), "completed"))
            d.stop()
    [run] = await cron_runs(conn, script)
    assert run["output"] == "slow"
    assert run["input"] == {"scheduled_for": utc(2026, 12, 1, 10, 1).isoformat()}
    j = await job(conn, script)
    assert j is not None
    assert (j["next_run_at"], j["is_running"]) == (utc(2026, 12, 1, 10, 3), False)


async def _equals(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


# ------------------------------------------------------------------ several daemons


async def test_two_daemons_fire_each_tick_once(
    conn: asyncpg.Connection, db_url: str, executor: Executor
) -> None:
    tenants = [await make_tenant(conn) for _ in range(4)]
    scripts = [await scheduled(conn, t, "* * * * *") for t in tenants for _ in range(10)]
    clock = FakeClock(START)
    await drain(db_url, executor, clock=clock)
    ticks = [utc(2026, 12, 1, 10, m) for m in (1, 2, 3)]
    for tick in ticks:
        clock.set(tick)
        async with anyio.create_task_group() as tg:
            for _ in range(2):
                tg.start_soon(drain, db_url, executor, clock)
    rows = await conn.fetch(
        "SELECT script_id, input->>'scheduled_for' AS at, count(*) AS n FROM script_executions "
        "WHERE trigger_type = 'cron' GROUP BY 1, 2")
    assert {r["n"] for r in rows} == {1}
    assert sorted((r["script_id"], r["at"]) for r in rows) == sorted(
        (s, t.isoformat()) for s in scripts for t in ticks)
    assert await conn.fetchval("SELECT count(*) FROM jsrt_cron_firings") == len(scripts) * 3


async def test_a_tick_is_fired_once_even_when_a_job_is_seen_due_twice(
    conn: asyncpg.Connection, store: Store
) -> None:
    """The firing row is the rule, not the job's next_run_at: a daemon acting on a stale
    next_run_at (a replica lagging, a job re-planned to an already fired tick) fires nothing."""
    tenant = await make_tenant(conn)
    script = await scheduled(conn, tenant, "* * * * *")
    await store.schedules.schedule_due(START, 100, decide)
    tick = utc(2026, 12, 1, 10, 1)
    _, fired = await store.schedules.schedule_due(tick, 100, decide)
    assert fired == {script}
    await conn.execute(
        "UPDATE script_scheduled_jobs SET next_run_at = $2, is_running = false "
        "WHERE script_id = $1", script, tick)
    with capture_logs() as logs:
        decisions, fired = await store.schedules.schedule_due(tick, 100, decide)
        log_decisions(decisions, fired)
    assert [d.action for d in decisions] == ["fire"] and fired == set()
    assert events(logs, "cron_tick_already_fired", script)
    assert await conn.fetchval("SELECT count(*) FROM script_executions") == 1
    j = await job(conn, script)
    assert j is not None
    assert (j["next_run_at"], j["is_running"]) == (utc(2026, 12, 1, 10, 2), False)


# ------------------------------------------------------------------ invalid schedules


@pytest.mark.parametrize(("cron", "metadata", "reason", "fix"), [
    ("61 * * * *", {}, "invalid cron expression '61 * * * *'",
     "UPDATE scripts SET cron_expression = '* * * * *' WHERE id = $1"),
    ("* * * * *", {"timezone": "Mars/Base"}, "unknown timezone 'Mars/Base'",
     "UPDATE scripts SET metadata = '{\"timezone\": \"Europe/Berlin\"}' WHERE id = $1"),
])
async def test_an_invalid_job_is_parked_until_fixed_and_others_run_on(
    conn: asyncpg.Connection, db_url: str, executor: Executor,
    cron: str, metadata: dict[str, str], reason: str, fix: str,
) -> None:
    tenant = await make_tenant(conn)
    bad = await scheduled(conn, tenant, cron, metadata=metadata)  # plain SQL: no CLI checks
    good = await scheduled(conn, tenant, "* * * * *")
    clock = FakeClock(START)

    logs = await drain_logged(db_url, executor, clock)
    [line] = events(logs, "cron_job_invalid", bad)
    assert reason in line["reason"]
    assert line["log_level"] == "error"
    j = await job(conn, bad)
    assert j is not None
    assert j["last_run_status"] == "invalid"
    assert await conn.fetchval("SELECT next_run_at = 'infinity' FROM script_scheduled_jobs "
                               "WHERE script_id = $1", bad)

    clock.set(utc(2026, 12, 1, 10, 1))
    logs = await drain_logged(db_url, executor, clock)
    assert len(await cron_runs(conn, good)) == 1
    assert await cron_runs(conn, bad) == []
    assert not events(logs, "cron_job_invalid")  # parked: not re-examined every poll

    await conn.execute(fix, bad)  # the sync trigger re-plans the fixed job
    clock.set(utc(2026, 12, 1, 10, 1, 30))
    await drain(db_url, executor, clock=clock)
    j = await job(conn, bad)
    assert j is not None
    assert (j["next_run_at"], j["last_run_status"]) == (utc(2026, 12, 1, 10, 2), None)
    clock.set(utc(2026, 12, 1, 10, 2))
    await drain(db_url, executor, clock=clock)
    [run] = await cron_runs(conn, bad)
    assert run["status"] == "completed"


# ------------------------------------------------------------------ lifecycle


async def test_a_paused_job_stops_and_does_not_catch_up_its_pause(
    conn: asyncpg.Connection, db_url: str, executor: Executor
) -> None:
    tenant = await make_tenant(conn)
    script = await scheduled(conn, tenant, "* * * * *")
    clock = FakeClock(START)
    await drain(db_url, executor, clock=clock)
    clock.set(utc(2026, 12, 1, 10, 1))
    await drain(db_url, executor, clock=clock)
    assert len(await cron_runs(conn, script)) == 1

    await conn.execute("UPDATE scripts SET status = 'paused' WHERE id = $1", script)
    clock.set(utc(2026, 12, 1, 10, 5, 10))
    await drain(db_url, executor, clock=clock)
    assert len(await cron_runs(conn, script)) == 1

    await conn.execute("UPDATE scripts SET status = 'active' WHERE id = $1", script)
    clock.set(utc(2026, 12, 1, 10, 5, 30))
    await drain(db_url, executor, clock=clock)
    assert len(await cron_runs(conn, script)) == 1  # re-planned, not caught up
    clock.set(utc(2026, 12, 1, 10, 6))
    await drain(db_url, executor, clock=clock)
    runs = await cron_runs(conn, script)
    assert [(r["input"]["scheduled_for"], r["trigger_data"]["missed_ticks"]) for r in runs] == [
        (utc(2026, 12, 1, 10, 1).isoformat(), 0), (utc(2026, 12, 1, 10, 6).isoformat(), 0)]


async def test_deleting_or_retyping_a_scheduled_script_removes_its_job(
    conn: asyncpg.Connection, db_url: str, executor: Executor
) -> None:
    tenant = await make_tenant(conn)
    gone = await scheduled(conn, tenant, "* * * * *")
    retyped = await scheduled(conn, tenant, "* * * * *")
    clock = FakeClock(START)
    await drain(db_url, executor, clock=clock)
    await conn.execute("DELETE FROM scripts WHERE id = $1", gone)
    await conn.execute("UPDATE scripts SET type = 'event', event_types = '{a.b}' WHERE id = $1",
                       retyped)
    assert await job(conn, gone) is None
    assert await job(conn, retyped) is None
    clock.set(utc(2026, 12, 1, 10, 1))
    await drain(db_url, executor, clock=clock)
    assert await executions(conn, tenant) == []


# ------------------------------------------------------------------ DST


@pytest.mark.parametrize(("plan_at", "tick", "following"), [
    # spring forward: 02:30 does not exist on 2026-03-29; it fires at 03:00 CEST, once
    (utc(2026, 3, 28, 12), utc(2026, 3, 29, 1), utc(2026, 3, 30, 0, 30)),
    # fall back: 02:30 happens twice on 2026-10-25; it fires at the first (CEST), once
    (utc(2026, 10, 24, 12), utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)),
])
async def test_dst_in_europe_berlin_through_the_database(
    conn: asyncpg.Connection, db_url: str, executor: Executor,
    plan_at: datetime, tick: datetime, following: datetime,
) -> None:
    tenant = await make_tenant(conn)
    script = await scheduled(conn, tenant, "30 2 * * *", metadata={"timezone": "Europe/Berlin"})
    j = await job(conn, script)
    assert j is not None and j["timezone"] == "Europe/Berlin"
    clock = FakeClock(plan_at)
    await drain(db_url, executor, clock=clock)
    j = await job(conn, script)
    assert j is not None and j["next_run_at"] == tick

    clock.set(tick)
    await drain(db_url, executor, clock=clock)
    clock.set(tick + timedelta(hours=1, minutes=30))  # past the second 02:30 of a fold
    await drain(db_url, executor, clock=clock)
    [run] = await cron_runs(conn, script)
    assert run["input"] == {"scheduled_for": tick.isoformat()}
    j = await job(conn, script)
    assert j is not None and j["next_run_at"] == following


# ------------------------------------------------------------------ lost daemons


async def test_a_run_of_a_dead_daemon_clears_is_running(
    conn: asyncpg.Connection, db_url: str, executor: Executor, store: Store
) -> None:
    tenant = await make_tenant(conn)
    script = await scheduled(conn, tenant, "* * * * *")
    await store.schedules.schedule_due(START, 100, decide)
    await store.schedules.schedule_due(utc(2026, 12, 1, 10, 1), 100, decide)
    await store.leases.register("dead", "elsewhere", 1)
    [started] = await store.queue.start_runs("dead", 10, 5)
    assert started.trigger_type == "cron"
    await conn.execute(
        "UPDATE jsrt_daemons SET heartbeat_at = now() - interval '1 hour' WHERE id = 'dead'")
    j = await job(conn, script)
    assert j is not None and j["is_running"]

    lost = await store.queue.rescue_lost_runs(15, utc(2026, 12, 1, 10, 2))
    assert [f.execution_id for f in lost] == [started.execution_id]
    j = await job(conn, script)
    assert j is not None
    assert (j["is_running"], j["last_run_status"]) == (False, "failed")
    [run] = await cron_runs(conn, script)
    assert (run["status"], run["error"]) == ("failed", "worker lost")
    assert await conn.fetchval("SELECT count(*) FROM script_event_dead_letters") == 0

    clock = FakeClock(utc(2026, 12, 1, 10, 2))  # the schedule carries on
    await drain(db_url, executor, clock=clock)
    assert [r["status"] for r in await cron_runs(conn, script)] == ["failed", "completed"]
