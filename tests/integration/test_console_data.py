"""The console's data layer (#18) against a real PostgreSQL: executions and dead letters a
page at a time with their filters and counts, an execution's detail, bulk retry of a
filtered set, the overview - and, throughout, that tenant A's view never holds a row of
tenant B's (operators, tenant None, see both)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from support.console_rows import (
    LETTER_STATES,
    TenantRows,
    make_daemon,
    make_execution,
    make_letter,
    world,
)
from support.factories import make_script

from consumer.dead_letters import BULK_RETRY_MAX, RETRIABLE, UNRESOLVED, LetterQuery
from consumer.errors import NotFound
from consumer.executions import ExecutionQuery
from consumer.lease import Lease, memory_report
from consumer.overview import WINDOW_MINUTES
from consumer.paging import MATCH_CAP, PAGE_SIZE
from consumer.sandbox import Executor
from consumer.store import Store

NOW = datetime.now(UTC)


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    s = await Store.open(db_url)
    yield s
    await s.close()


@pytest.fixture
async def ab(conn: asyncpg.Connection) -> tuple[TenantRows, TenantRows]:
    return await world(conn, NOW)


# ---------------------------------------------------------------- executions
async def test_executions_pages_hold_the_tenants_own_rows_newest_first(
    store: Store, ab: tuple[TenantRows, TenantRows]
) -> None:
    a, b = ab
    first = await store.executions.page(a.tenant, ExecutionQuery())
    assert first.total == len(a.executions) == 37
    assert first.pages == 2 and len(first.rows) == PAGE_SIZE and not first.capped
    second = await store.executions.page(a.tenant, ExecutionQuery(page=2))
    assert len(second.rows) == 37 - PAGE_SIZE
    seen = [r["id"] for r in first.rows + second.rows]
    assert set(seen) == set(a.executions) and len(set(seen)) == 37
    starts = [r["started_at"] for r in first.rows + second.rows]
    assert starts == sorted(starts, reverse=True)
    assert {r["tenant_id"] for r in first.rows + second.rows} == {a.tenant}
    # a page past the end says so; the count stays
    past = await store.executions.page(a.tenant, ExecutionQuery(page=9))
    assert past.rows == [] and past.total == 37 and past.past_the_end
    # the operator sees both tenants
    everyone = await store.executions.page(None, ExecutionQuery())
    assert everyone.total == 74
    assert {r["tenant_id"] for r in everyone.rows} <= {a.tenant, b.tenant}


async def test_execution_filters(store: Store, ab: tuple[TenantRows, TenantRows]) -> None:
    a, b = ab

    async def ids(f: ExecutionQuery, tenant: uuid.UUID | None = a.tenant) -> set[uuid.UUID]:
        page = await store.executions.page(tenant, f)
        assert page.total == len(page.rows)  # every case here fits one page
        return {r["id"] for r in page.rows}

    assert await ids(ExecutionQuery(statuses=("failed",), started_from=NOW - timedelta(hours=1))) \
        == set(a.failed)
    assert len(await ids(ExecutionQuery(statuses=("failed", "timeout"),
                                        started_from=NOW - timedelta(hours=1)))) == 5
    assert len(await ids(ExecutionQuery(triggers=("cron",)))) == 2
    assert len(await ids(ExecutionQuery(script_id=a.paused))) == 2 + 1  # + its letter's run
    assert len(await ids(ExecutionQuery(script_name="beta"))) == 3
    # another tenant's script id finds nothing here, its name means this tenant's script
    assert await ids(ExecutionQuery(script_id=b.active)) == set()
    assert await ids(ExecutionQuery(script_name="beta", triggers=("cron",))) \
        <= set(a.executions)
    # time range: [from, before)
    window = await ids(ExecutionQuery(started_from=NOW - timedelta(minutes=10, seconds=30),
                                      started_before=NOW - timedelta(minutes=1)))
    assert len(window) == 5 + 2  # completed at -1s-{2,4,6,8,10} min; failed at -2, -3 min
    assert await ids(ExecutionQuery(statuses=("running",))) == {a.running}
    assert await ids(ExecutionQuery(statuses=("running",)), None) == {a.running, b.running}


async def test_the_pager_count_stops_at_the_cap(store: Store, conn: asyncpg.Connection) -> None:
    tenant = (await world(conn, NOW))[0].tenant
    script = await make_script(conn, tenant, name="busy")
    await conn.execute(
        """INSERT INTO script_executions (script_id, tenant_id, status, trigger_type, started_at)
           SELECT $1, $2, 'completed', 'api', NOW() - make_interval(secs => g)
           FROM generate_series(1, $3) g""", script, tenant, MATCH_CAP + 5)
    page = await store.executions.page(tenant, ExecutionQuery(script_id=script, page=10_000))
    assert page.total == MATCH_CAP and page.capped and page.page == MATCH_CAP // PAGE_SIZE
    assert len(page.rows) == PAGE_SIZE  # the last page of the capped match


async def test_execution_detail(store: Store, conn: asyncpg.Connection,
                                ab: tuple[TenantRows, TenantRows]) -> None:
    a, b = ab
    event_id = uuid.uuid4()
    now = datetime.now(UTC)  # after the script's version 1 was created
    failed = await make_execution(
        conn, a.tenant, a.active, status="failed", error="Error: no\n    at handler (x.js:2:3)",
        trigger_data={"type": "event", "event_id": str(event_id), "attempt": 1,
                      "event_type": "thing.happened"},
        input={"order": 7}, logs=[{"level": "info", "message": "hello", "ts": 1}],
        metrics={"duration_ms": 12, "memory_used_bytes": 1024, "api_call_count": 2,
                 "database_query_count": 1},
        started_at=now)
    letter = await make_letter(conn, a.tenant, a.active, failed, event_id=event_id)
    retry = await make_execution(
        conn, a.tenant, a.active, status="failed", started_at=now + timedelta(seconds=1),
        trigger_data={"type": "event", "event_id": str(event_id), "attempt": 2,
                      "dead_letter_id": str(letter), "retry": 1})
    await conn.execute("UPDATE script_event_dead_letters SET execution_id = $1, retry_count = 1 "
                       "WHERE id = $2", retry, letter)
    replay = await make_execution(conn, a.tenant, a.active, status="completed",
                                  trigger_data={"replay_of": str(failed), "replay_version": 1},
                                  started_at=now + timedelta(seconds=2))

    d = await store.executions.detail(failed, a.tenant)
    assert d["status"] == "failed" and d["error"].startswith("Error: no")
    assert d["input"] == {"order": 7} and d["logs"][0]["message"] == "hello"
    assert d["metrics"]["duration_ms"] == 12 and d["script_name"] == "alpha"
    assert d["version"] == 1 and d["current_version"] == 1
    # its letter, found from its event (the letter now points at the newer attempt)
    assert d["dead_letter_id"] == letter
    assert [r["id"] for r in d["replays"]] == [replay]
    assert (await store.executions.detail(retry, a.tenant))["dead_letter_id"] == letter
    replayed = await store.executions.detail(replay, a.tenant)
    assert replayed["replay_of"] == failed and replayed["dead_letter_id"] is None
    # a completed first attempt has no letter
    assert (await store.executions.detail(a.executions[0], a.tenant))["dead_letter_id"] is None
    # unfinished: its run's state
    assert (await store.executions.detail(a.running, a.tenant))["run_state"] == "running"
    # another tenant's id is not found, in words that say nothing of that tenant
    with pytest.raises(NotFound) as refused:
        await store.executions.detail(b.executions[0], a.tenant)
    assert str(b.tenant) not in str(refused.value)
    assert (await store.executions.detail(b.executions[0], None))["tenant_id"] == b.tenant


async def test_detail_links_never_cross_tenants(store: Store, conn: asyncpg.Connection,
                                                ab: tuple[TenantRows, TenantRows]) -> None:
    """trigger_data is jsonb that anyone with SQL may write: ids in it that belong to another
    tenant (or are not ids at all) link to nothing."""
    a, b = ab
    crafted = await make_execution(
        conn, a.tenant, a.active, status="failed",
        trigger_data={"replay_of": str(b.executions[0]),
                      "dead_letter_id": str(b.letters["exhausted"]),
                      "event_id": "not-a-uuid", "replay_version": "lots"})
    d = await store.executions.detail(crafted, a.tenant)
    assert d["replay_of"] is None and d["dead_letter_id"] is None


# ---------------------------------------------------------------- dead letters
async def test_dead_letter_pages_and_filters(store: Store,
                                             ab: tuple[TenantRows, TenantRows]) -> None:
    a, b = ab

    async def ids(f: LetterQuery, tenant: uuid.UUID | None = a.tenant) -> set[uuid.UUID]:
        page = await store.dead_letters.page(tenant, f)
        assert page.total == len(page.rows)
        return {r["id"] for r in page.rows}

    assert await ids(LetterQuery()) == set(a.letters.values())
    assert await ids(LetterQuery(states=UNRESOLVED)) == {a.letters[s] for s in UNRESOLVED}
    for state in LETTER_STATES:
        assert await ids(LetterQuery(states=(state,))) == {a.letters[state]}
        page = await store.dead_letters.page(a.tenant, LetterQuery(states=(state,)))
        assert page.rows[0]["state"] == state
    assert await ids(LetterQuery(script_id=a.paused)) == {a.letters["waiting_for_script"]}
    assert await ids(LetterQuery(script_name="beta")) == {a.letters["waiting_for_script"]}
    assert await ids(LetterQuery(script_id=b.active)) == set()
    assert await ids(LetterQuery(error="EXHAUSTED in a")) == {a.letters["exhausted"]}
    assert await ids(LetterQuery(error="in B")) == set()  # B's text, B's letters
    assert await ids(LetterQuery(error="%")) == set()  # a substring, not a pattern
    assert await ids(LetterQuery(event_type="thing.happened")) == set(a.letters.values())
    assert await ids(LetterQuery(created_from=NOW - timedelta(hours=1))) == set()
    assert await ids(LetterQuery(created_before=NOW - timedelta(hours=1))) \
        == set(a.letters.values())
    assert len(await ids(LetterQuery(), None)) == 12


async def test_bulk_retry_acts_on_the_filtered_set_of_the_viewers_tenant_only(
    store: Store, conn: asyncpg.Connection, ab: tuple[TenantRows, TenantRows]
) -> None:
    a, b = ab
    candidates = await store.dead_letters.bulk_candidates(a.tenant, LetterQuery())
    # resolved and in-flight letters are left out of what a retry can act on
    assert set(candidates.ids) == {a.letters[s] for s in RETRIABLE}
    assert candidates.total == 3 and not candidates.more
    # a filter naming tenant B's script, from tenant A: nothing
    crafted = LetterQuery(script_id=b.active)
    assert (await store.dead_letters.bulk_candidates(a.tenant, crafted)).total == 0
    _, applied = await store.dead_letters.bulk_retry(a.tenant, crafted)
    assert applied.done == []
    # a filter on resolved states only: nothing to retry
    assert (await store.dead_letters.bulk_candidates(
        a.tenant, LetterQuery(states=("succeeded", "discarded")))).total == 0

    before_b = await conn.fetch("SELECT * FROM jsrt_dead_letter_state WHERE tenant_id = $1 "
                                "ORDER BY dead_letter_id", b.tenant)
    counted, applied = await store.dead_letters.bulk_retry(a.tenant,
                                                           LetterQuery(states=("exhausted",)))
    assert counted.total == 1 and applied.done == [a.letters["exhausted"]]
    row = await conn.fetchrow("SELECT max_retries, next_retry_at FROM jsrt_dead_letter_state "
                              "WHERE dead_letter_id = $1", a.letters["exhausted"])
    assert row["max_retries"] == 4 and row["next_retry_at"] <= datetime.now(UTC)
    after_b = await conn.fetch("SELECT * FROM jsrt_dead_letter_state WHERE tenant_id = $1 "
                               "ORDER BY dead_letter_id", b.tenant)
    assert [dict(r) for r in after_b] == [dict(r) for r in before_b]


async def test_bulk_retry_takes_at_most_its_maximum(store: Store,
                                                    conn: asyncpg.Connection) -> None:
    a, _ = await world(conn, NOW)
    first = await store.dead_letters.bulk_candidates(a.tenant, LetterQuery(), limit=2)
    assert first.total == 3 and len(first.ids) == 2 and first.more
    assert BULK_RETRY_MAX == 1000  # as the README and the confirmation page say


# ---------------------------------------------------------------- overview
async def test_overview_is_the_tenants_own(store: Store, conn: asyncpg.Connection,
                                           ab: tuple[TenantRows, TenantRows]) -> None:
    a, b = ab
    snap = await store.overview.snapshot(a.tenant, now=NOW)
    assert len(snap.minutes) == WINDOW_MINUTES
    assert snap.minutes[-1].start == NOW.replace(second=0, microsecond=0)
    by_status: dict[str, int] = {}
    for m in snap.minutes:
        for status, n in m.counts.items():
            by_status[status] = by_status.get(status, 0) + n
    assert by_status == {"completed": 25, "failed": 3, "timeout": 2, "running": 1}
    assert snap.pending_events == 4
    assert snap.oldest_pending_age_s is not None and 85 <= snap.oldest_pending_age_s <= 120
    assert snap.running_runs == 1 and snap.pending_runs == 0
    assert [r["id"] for r in snap.running] == [a.running]
    assert snap.letters == {s: 1 for s in LETTER_STATES}
    # a tenant sees the process serving its run, without host or pid
    [worker] = snap.workers
    assert worker["hostname"] is None and worker["pid"] is None and worker["id"] is None
    assert worker["kind"] == "daemon" and worker["memory"]["workers"][0]["rss_bytes"] == 90 << 20

    everyone = await store.overview.snapshot(None, now=NOW)
    assert everyone.pending_events == 8 and everyone.running_runs == 2
    assert {r["id"] for r in everyone.running} == {a.running, b.running}
    assert everyone.letters == {s: 2 for s in LETTER_STATES}
    assert {w["hostname"] for w in everyone.workers} == {"host-A", "host-B"}
    assert sum(m.total for m in everyone.minutes) == 62


async def test_overview_workers_are_live_processes_once_each(
    store: Store, conn: asyncpg.Connection
) -> None:
    await make_daemon(conn, "daemon:h:1:a", "h", 1, {"rss_bytes": 1, "workers": []})
    await make_daemon(conn, "http:h:1:b", "h", 1, None)  # the same process's second lease
    await make_daemon(conn, "daemon:gone:2:c", "gone", 2, None,
                      heartbeat_at=NOW - timedelta(minutes=5))
    snap = await store.overview.snapshot(None, live_within_s=30)
    assert [(w["hostname"], w["memory"]) for w in snap.workers] == \
        [("h", {"rss_bytes": 1, "workers": []})]
    empty = await store.overview.snapshot(uuid.uuid4())
    assert empty.workers == [] and empty.pending_events == 0
    assert all(m.total == 0 for m in empty.minutes)


async def test_heartbeats_record_the_processes_memory(store: Store, conn: asyncpg.Connection,
                                                      executor: Executor) -> None:
    lease = Lease(store, 60, kind="daemon", memory=memory_report(executor))
    async with lease:
        memory = await conn.fetchval("SELECT memory FROM jsrt_daemons WHERE id = $1", lease.id)
    doc = json.loads(memory)
    assert doc["rss_bytes"] > 1 << 20
    assert len(doc["workers"]) == 2 and all(w["rss_bytes"] > 1 << 20 for w in doc["workers"])
    # a beat without a report keeps what the last one recorded
    await store.leases.register("x:h:1:z", "h", 1, {"rss_bytes": 5})
    await store.leases.register("x:h:1:z", "h", 1)
    assert json.loads(await conn.fetchval(
        "SELECT memory FROM jsrt_daemons WHERE id = 'x:h:1:z'")) == {"rss_bytes": 5}
