"""Scheduler benchmark: N scheduled scripts over M tenants, all due at the same instant.

    .venv/bin/python bench/scheduler.py [--scripts 10000] [--tenants 1000]
                                        [--concurrency 64] [--workers N] [--keep]

A fresh database is created and migrated (consumer.migrate.Migrator), the scripts are inserted
with ``* * * * *`` (the sync trigger creates their jobs), every job's next_run_at is set to one
common instant a moment ahead, and the real daemon (in process, real Executor, real time, the
per-script limits left at the seed defaults) runs until every script's tick is recorded.

Printed: ticks fired per second (claim + fire, i.e. Store.schedule_due, and wall time from the
due instant to the last firing), executions completed per second, p50/p99 lag between the
scheduled time and the execution start (script_executions.started_at - scheduled_for), and the
peak RSS of the daemon process and of its sandbox workers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import anyio
import asyncpg
from _common import drop_database, fresh_database

from consumer import log
from consumer.app import store_publisher
from consumer.daemon import Daemon
from consumer.db import Db
from consumer.queue import Queue
from consumer.sandbox import Executor
from consumer.scheduler import Decision, decide
from consumer.schedules import Schedules
from consumer.settings import Settings
from consumer.store import Store
from consumer.timers import CRON_BATCH

SOURCE = "function handler(input, ctx) { return { at: input.scheduled_for }; }"
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


class TimedSchedules(Schedules):
    """The real cron repository, timing each claim + fire transaction."""

    calls: int = 0
    ticks: int = 0
    seconds: float = 0.0

    async def schedule_due(self, now: datetime, limit: int, decide: Any,
                           ) -> tuple[list[Decision], set[uuid.UUID]]:
        started = time.perf_counter()
        decisions, fired = await super().schedule_due(now, limit, decide)
        if decisions:
            self.calls += 1
            self.ticks += len(fired)
            self.seconds += time.perf_counter() - started
        return decisions, fired


class TimedQueue(Queue):
    """The real queue, timing each claim."""

    claim_calls: int = 0
    claim_seconds: float = 0.0

    async def claim(self, *args: Any) -> Any:
        started = time.perf_counter()
        try:
            return await super().claim(*args)
        finally:
            self.claim_calls += 1
            self.claim_seconds += time.perf_counter() - started


class TimedStore(Store):
    """The real store with timed cron and claim repositories."""

    schedules: TimedSchedules
    queue: TimedQueue

    def __init__(self, db: Db) -> None:
        super().__init__(db)
        self.schedules = TimedSchedules(db)
        self.queue = TimedQueue(db, self.on_dispatched, self.on_recorded)


@dataclass
class Peaks:
    daemon_rss: int = 0
    workers_rss: int = 0
    samples: list[int] = field(default_factory=list)


def _rss(pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


async def sample_rss(ex: Executor, peaks: Peaks) -> None:
    while True:
        peaks.daemon_rss = max(peaks.daemon_rss, _rss())
        peaks.workers_rss = max(peaks.workers_rss,
                                sum(w.rss_bytes for w in ex.stats().workers))
        await anyio.sleep(0.25)


# ---------------------------------------------------------------------- database


async def populate(conn: asyncpg.Connection, scripts: int, tenants: int) -> None:
    await conn.execute(
        "INSERT INTO tenants (id, name) SELECT gen_random_uuid(), 'bench-' || i "
        "FROM generate_series(1, $1) i", tenants)
    await conn.execute(
        """INSERT INTO scripts (tenant_id, name, source, type, status, cron_expression)
           SELECT t.id, 'cron-' || i, $2, 'scheduled', 'active', '* * * * *'
           FROM generate_series(0, $1 - 1) i
           JOIN (SELECT id, row_number() OVER (ORDER BY id) - 1 AS n FROM tenants) t
             ON t.n = i % $3""", scripts, SOURCE, tenants)
    await conn.execute("ANALYZE")


async def make_due(conn: asyncpg.Connection, ahead_s: float) -> datetime:
    due: datetime = await conn.fetchval(
        "UPDATE script_scheduled_jobs SET next_run_at = now() + make_interval(secs => $1) "
        "RETURNING next_run_at", ahead_s)
    return due


async def recorded(conn: asyncpg.Connection) -> int:
    n: int = await conn.fetchval(
        "SELECT count(DISTINCT script_id) FROM script_executions "
        "WHERE trigger_type = 'cron' AND status NOT IN ('pending', 'running')")
    return n


async def results(conn: asyncpg.Connection, due: datetime) -> asyncpg.Record:
    """Each script's first run: lag from its scheduled time (and from the common due
    instant) to its start; the firing and completion spans."""
    row: asyncpg.Record = await conn.fetchrow(
        """WITH first AS (
               SELECT DISTINCT ON (script_id) script_id, started_at, completed_at, status,
                      (input->>'scheduled_for')::timestamptz AS scheduled_for
               FROM script_executions WHERE trigger_type = 'cron'
               ORDER BY script_id, (input->>'scheduled_for')::timestamptz)
           SELECT count(*) AS runs,
                  count(*) FILTER (WHERE status = 'completed') AS completed,
                  count(*) FILTER (WHERE scheduled_for = $1) AS on_due_tick,
                  percentile_cont(0.5) WITHIN GROUP (
                      ORDER BY extract(epoch FROM started_at - scheduled_for)) AS lag_p50,
                  percentile_cont(0.99) WITHIN GROUP (
                      ORDER BY extract(epoch FROM started_at - scheduled_for)) AS lag_p99,
                  max(extract(epoch FROM started_at - scheduled_for)) AS lag_max,
                  percentile_cont(0.99) WITHIN GROUP (
                      ORDER BY extract(epoch FROM started_at - $1)) AS due_lag_p99,
                  extract(epoch FROM max(completed_at) - min(started_at)) AS exec_span,
                  (SELECT extract(epoch FROM max(fired_at) - $1) FROM jsrt_cron_firings
                   WHERE scheduled_for = $1) AS fire_span,
                  (SELECT count(*) FROM jsrt_cron_firings) AS firings,
                  (SELECT percentile_cont(0.5) WITHIN GROUP (
                       ORDER BY extract(epoch FROM fired_at - $1))
                   FROM jsrt_cron_firings WHERE scheduled_for = $1) AS fire_p50,
                  (SELECT count(*) FROM script_executions
                   WHERE status NOT IN ('pending', 'running')) AS executions,
                  (SELECT extract(epoch FROM max(completed_at) - min(started_at))
                   FROM script_executions) AS all_span
           FROM first""", due)
    return row


async def fire_only(dsn: str, scripts: int) -> tuple[float, int]:
    """The scheduler alone: claim + decide + fire every due job in CRON_BATCH transactions
    (no executions competing for the CPU), then undo it all for the daemon run."""
    from datetime import UTC

    store = await Store.open(dsn)
    conn = await asyncpg.connect(dsn)
    try:
        await make_due(conn, 0)
        now = datetime.now(UTC)
        fired = calls = 0
        started = time.perf_counter()
        while fired < scripts:
            _, done = await store.schedules.schedule_due(now, CRON_BATCH, decide)
            fired, calls = fired + len(done), calls + 1
        elapsed = time.perf_counter() - started
        await conn.execute("TRUNCATE jsrt_cron_firings, jsrt_runs, script_executions CASCADE; "
                           "UPDATE script_scheduled_jobs SET is_running = false")
        await conn.execute("VACUUM ANALYZE")
        return elapsed, calls
    finally:
        await conn.close()
        await store.close()


# ---------------------------------------------------------------------- run


async def run(args: argparse.Namespace, dsn: str, logfile: Path) -> None:
    settings = Settings.from_env(
        env={"DATABASE_URL": dsn}, concurrency=args.concurrency, workers=args.workers,
        grace_period=5.0)
    with logfile.open("w") as stream:
        log.configure("json", "info", stream)
        store = await TimedStore.open(dsn, max_size=max(4, settings.concurrency // 4 + 4))
        conn = await asyncpg.connect(dsn)
        peaks = Peaks()
        try:
            async with Executor(workers=settings.worker_count,
                                publisher=store_publisher(store)) as ex:
                daemon = Daemon(settings, store, ex)
                due = await make_due(conn, 1.0)
                t0 = time.perf_counter()
                async with anyio.create_task_group() as tg:
                    tg.start_soon(sample_rss, ex, peaks)
                    tg.start_soon(daemon.run)
                    while await recorded(conn) < args.scripts:
                        await anyio.sleep(0.2)
                    elapsed = time.perf_counter() - t0
                    daemon.stop()
                    with anyio.fail_after(30):
                        while daemon.counters.recorded < daemon.counters.started:
                            await anyio.sleep(0.05)
                    tg.cancel_scope.cancel()
            report(args, settings, store, peaks, await results(conn, due), elapsed, logfile)
        finally:
            await conn.close()
            await store.close()


def report(args: argparse.Namespace, settings: Settings, store: TimedStore, peaks: Peaks,
           r: asyncpg.Record, elapsed: float, logfile: Path) -> None:
    lines = [json.loads(ln) for ln in logfile.read_text().splitlines() if ln.startswith("{")]
    skipped = sum(ln["event"] == "cron_tick_skipped" for ln in lines)
    problems = Counter(ln["event"] for ln in lines
                       if ln.get("level") in ("warning", "error")
                       and ln["event"] not in ("cron_tick_skipped", "cron_caught_up"))
    mib = 2**20
    print(f"machine: {os.cpu_count()} cores, {_mem_gib():.0f} GiB RAM; "
          f"{args.scripts} scripts over {args.tenants} tenants, '* * * * *'; "
          f"concurrency {settings.concurrency}, {settings.worker_count} sandbox workers, "
          f"cron batch {CRON_BATCH}; load average now {os.getloadavg()[1]:.1f} (5 min)")
    cron, queue = store.schedules, store.queue
    print(f"claim+fire   {cron.ticks / cron.seconds:8.0f} ticks/s inside schedule_due while "
          f"executing ({cron.calls} transactions, {cron.seconds:.2f} s)")
    print(f"start runs   {queue.claim_calls} claims, {queue.claim_seconds:.2f} s in all")
    print(f"fired all    {float(r['fire_span']):8.2f} s after the due instant "
          f"({args.scripts / max(float(r['fire_span']), 1e-9):.0f} ticks/s wall); "
          f"{r['on_due_tick']}/{r['runs']} ran for the due tick itself")
    print(f"executions   {r['executions'] / float(r['all_span']):8.0f} completed/s "
          f"({r['executions']} executions in {float(r['all_span']):.1f} s; every script's first "
          f"tick recorded {elapsed:.1f} s after the start, {r['completed']}/{r['runs']} "
          f"completed)")
    print(f"lag          p50 {float(r['lag_p50']):.2f} s   p99 {float(r['lag_p99']):.2f} s   "
          f"max {float(r['lag_max']):.2f} s  (started_at - scheduled_for, first tick)")
    print(f"RSS peak     daemon {peaks.daemon_rss / mib:.0f} MiB, "
          f"sandbox workers {peaks.workers_rss / mib:.0f} MiB in total")
    print(f"firings      {r['firings']} rows; {skipped} ticks skipped as overlapping "
          f"(a next minute came before its run finished)")
    print(f"fired at     p50 {float(r['fire_p50']):.2f} s after the due instant; "
          f"other warnings/errors: {dict(problems) or 'none'}")


def _mem_gib() -> float:
    with open("/proc/meminfo") as f:
        return int(f.readline().split()[1]) / 2**20


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scripts", type=int, default=10_000)
    parser.add_argument("--tenants", type=int, default=1_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--workers", type=int, default=0, help="0: one per core")
    parser.add_argument("--dsn", default=os.environ.get("DATABASE_URL", DEFAULT_DSN),
                        help="an admin DSN; a fresh database is created next to it")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args()

    print("creating and migrating a fresh database ...", flush=True)
    dsn = await fresh_database(admin_dsn=args.dsn)
    try:
        conn = await asyncpg.connect(dsn)
        try:
            started = time.perf_counter()
            await populate(conn, args.scripts, args.tenants)
            print(f"inserted {args.scripts} scripts in {time.perf_counter() - started:.1f} s",
                  flush=True)
        finally:
            await conn.close()
        elapsed, calls = await fire_only(dsn, args.scripts)
        print(f"scheduler alone: {args.scripts} ticks claimed and fired in {elapsed:.2f} s = "
              f"{args.scripts / elapsed:.0f} ticks/s ({calls} transactions, no executions)",
              flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            await run(args, dsn, Path(tmp) / "daemon.log")
    finally:
        if args.keep:
            print(f"database kept: {dsn}")
        else:
            await drop_database(dsn, args.dsn)


if __name__ == "__main__":
    asyncio.run(main())
