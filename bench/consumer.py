"""End-to-end consumer benchmark: a real `jsrt run` daemon, real PostgreSQL, real V8.

    .venv/bin/python bench/consumer.py [--events 20000] [--backlog 100000]

Prints: bulk throughput (events/s and executions/s until every execution is recorded),
publish -> recorded latency p50/p95/p99 at a low publish rate, the fairness figure (one
tenant's single event behind another tenant's backlog), and daemon/worker RSS."""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import asyncpg

# The repository first: this file is named like the `consumer` package it benchmarks.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import children, drop_database, fresh_database, machine, rss_mb

TRIVIAL = "function handler(input, ctx) { return {ok: true, n: input.n}; }"


FILTER: str | None = None  # --filter: every script's payload filter of bench.event (#19)


async def add_tenant_script(conn: asyncpg.Connection, max_concurrent: int) -> uuid.UUID:
    tenant = uuid.uuid4()
    await conn.execute("INSERT INTO tenants (id) VALUES ($1)", tenant)
    await conn.execute(
        """INSERT INTO scripts (tenant_id, name, source, type, status, event_types, resource_limits,
                                metadata)
           VALUES ($1, 'bench', $2, 'event', 'active', '{bench.event}',
                   jsonb_set('{"max_execution_time_ms": 30000, "max_memory_bytes": 67108864,
                     "max_concurrent_runs": 5, "max_api_calls_per_minute": 60,
                     "max_output_size_bytes": 1048576}'::jsonb,
                   '{max_concurrent_runs}', $3::jsonb),
                   CASE WHEN $4::text IS NULL THEN '{}'::jsonb ELSE jsonb_build_object(
                       'event_filters', jsonb_build_object('bench.event', $4::text)) END)""",
        tenant, TRIVIAL, str(max_concurrent), FILTER)
    return tenant


async def bulk_publish(conn: asyncpg.Connection, tenant: uuid.UUID, n: int) -> None:
    await conn.execute(
        """SELECT jsrt_publish($1, 'bench.event', jsonb_build_object('n', g))
           FROM generate_series(1, $2) g""", tenant, n)


async def wait_recorded(conn: asyncpg.Connection, tenant: uuid.UUID, n: int,
                        since: float | None = None, timeout: float = 600) -> float:
    """Wait until all n executions of the tenant are recorded; return the seconds from
    `since` (a time.time(), default now) to the last completed_at. The poll asks only
    whether anything is left (small partial index and in-flight table), so it does not
    steal the database's CPU from what is being measured; the end comes from the rows."""
    since = time.time() if since is None else since
    start = time.perf_counter()
    while await conn.fetchval(
        """SELECT EXISTS (SELECT 1 FROM jsrt_events
                          WHERE tenant_id = $1 AND dispatched_at IS NULL)
               OR EXISTS (SELECT 1 FROM jsrt_runs WHERE tenant_id = $1)""", tenant):
        if time.perf_counter() - start > timeout:
            raise TimeoutError(f"not all {n} executions recorded in {timeout}s")
        await asyncio.sleep(0.05)
    done, last = await conn.fetchrow(
        "SELECT count(*), extract(epoch FROM max(completed_at)) FROM script_executions "
        "WHERE tenant_id = $1 AND completed_at IS NOT NULL", tenant)
    if done < n:
        raise RuntimeError(f"only {done} of {n} executions recorded")
    return float(last) - since


async def latency(conn: asyncpg.Connection, tenant: uuid.UUID) -> tuple[float, float, float]:
    p50, p95, p99, _, _ = await latency_split(conn, tenant)
    return p50, p95, p99


async def latency_split(conn: asyncpg.Connection,
                        tenant: uuid.UUID) -> tuple[float, float, float, float, float]:
    """Publish -> recorded p50/p95/p99, and the p50s of its two halves: publish -> started
    (commit, wake-up, claim) and started -> recorded (sandbox, result)."""
    row = await conn.fetchrow(
        """SELECT percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (
                    ORDER BY extract(epoch FROM x.completed_at - e.published_at) * 1000) AS p,
                  percentile_cont(0.5) WITHIN GROUP (
                    ORDER BY extract(epoch FROM x.started_at - e.published_at) * 1000) AS claim,
                  percentile_cont(0.5) WITHIN GROUP (
                    ORDER BY extract(epoch FROM x.completed_at - x.started_at) * 1000) AS run
           FROM script_executions x
           JOIN jsrt_events e ON e.id = (x.trigger_data->>'event_id')::uuid
                              AND e.tenant_id = x.tenant_id
           WHERE x.tenant_id = $1""", tenant)
    p50, p95, p99 = row["p"]
    return p50, p95, p99, row["claim"], row["run"]


def start_daemon(url: str, args: argparse.Namespace) -> subprocess.Popen[bytes]:
    env = {**os.environ, "DATABASE_URL": url, "JSRT_CONCURRENCY": str(args.concurrency),
           "JSRT_LOG_LEVEL": args.log_level, "JSRT_POLL_INTERVAL": "1"}
    if args.workers:
        env["JSRT_WORKERS"] = str(args.workers)
    return subprocess.Popen([sys.executable, "-m", "consumer.cli", "run"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def memory(proc: subprocess.Popen[bytes]) -> str:
    workers = children(proc.pid)
    total = sum(rss_mb(p) for p in workers)
    return (f"daemon RSS {rss_mb(proc.pid):.0f} MB, {len(workers)} worker(s) "
            f"{total:.0f} MB in all")


async def main(args: argparse.Namespace) -> None:
    url = await fresh_database()
    conn = await asyncpg.connect(url)
    proc = start_daemon(url, args)
    try:
        print(f"machine: {machine()}")
        print(f"daemon: concurrency {args.concurrency}, log level {args.log_level}, "
              f"script max_concurrent_runs {args.max_concurrent}")
        if FILTER is not None:
            print(f"every script filters bench.event with {FILTER!r}")
        warm = await add_tenant_script(conn, args.max_concurrent)
        await bulk_publish(conn, warm, 200)
        await wait_recorded(conn, warm, 200, timeout=60)

        bulk = await add_tenant_script(conn, args.max_concurrent)
        await bulk_publish(conn, bulk, args.events)
        since = time.time()  # committed: the daemon can see them from now
        elapsed = await wait_recorded(conn, bulk, args.events, since)
        print(f"bulk: {args.events} events -> {args.events} executions recorded in "
              f"{elapsed:.2f} s = {args.events / elapsed:,.0f} events/s end to end")
        print(f"  {memory(proc)}")

        low = await add_tenant_script(conn, args.max_concurrent)
        for i in range(args.low_events):
            await conn.execute(
                "SELECT jsrt_publish($1, 'bench.event', jsonb_build_object('n', $2::int))", low, i)
            await asyncio.sleep(1 / args.low_rate)
        await wait_recorded(conn, low, args.low_events)
        p50, p95, p99, to_start, to_record = await latency_split(conn, low)
        print(f"low rate ({args.low_rate}/s, {args.low_events} events, one at a time): "
              f"publish -> recorded p50 {p50:.1f} ms, p95 {p95:.1f} ms, p99 {p99:.1f} ms")
        print(f"  p50 halves: publish -> started {to_start:.1f} ms (commit, wake-up, claim), "
              f"started -> recorded {to_record:.1f} ms (sandbox, result)")

        noisy = await add_tenant_script(conn, args.max_concurrent)
        quiet = await add_tenant_script(conn, args.max_concurrent)
        await bulk_publish(conn, noisy, args.backlog)
        await conn.execute("SELECT jsrt_publish($1, 'bench.event', '{\"n\": 0}')", quiet)
        await wait_recorded(conn, quiet, 1)
        (q50, _, _), done = await latency(conn, quiet), await conn.fetchval(
            "SELECT count(*) FROM script_executions "
            "WHERE tenant_id = $1 AND completed_at IS NOT NULL", noisy)
        print(f"fairness: one event of a quiet tenant published behind a {args.backlog:,}-event "
              f"backlog of another tenant ran after {q50:.0f} ms "
              f"({done:,} of the backlog done by then)")
        rest = await wait_recorded(conn, noisy, args.backlog)
        print(f"  backlog drained {rest:.1f} s later; {memory(proc)}")
    finally:
        proc.terminate()
        proc.wait(60)
        await conn.close()
        await drop_database(url)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--events", type=int, default=20_000)
    p.add_argument("--backlog", type=int, default=100_000)
    p.add_argument("--low-events", type=int, default=300)
    p.add_argument("--low-rate", type=float, default=50.0)
    p.add_argument("--concurrency", type=int, default=256)
    p.add_argument("--max-concurrent", type=int, default=256)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--log-level", default="warning")
    p.add_argument("--filter", help="a payload filter on every script, e.g. '$.n >= 0' (one "
                                    "that matches every event measures the filter's cost)")
    parsed = p.parse_args()
    FILTER = parsed.filter
    asyncio.run(main(parsed))
