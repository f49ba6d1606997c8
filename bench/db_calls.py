"""ctx.db.queryOne by primary key, through the whole path: V8 → pipe → daemon → parser check →
pooled connection (BEGIN READ ONLY, bind tenant/timeout/role, prepare, execute, COMMIT) → back.

    .venv/bin/python bench/db_calls.py [--calls N] [--per-run N] [--concurrency N] [--db-limiter]

Prints calls/s at the given concurrency, and the p50/p99 of one call as the host serves it
(from the host call's arrival to its answer) and as the script sees it (one run alone, its
sequential calls timed in JavaScript). By default max_api_calls_per_minute is counted in
process; --db-limiter counts it in the database as jsrt processes do (one more statement per
call).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncpg
import structlog
from _common import drop_database, fresh_database

from consumer.app import store_api_limiter
from consumer.cache import PgCache
from consumer.sandbox import ExecutionRequest, Executor, Limits
from consumer.sandbox.types import ExecutionRequest as Request
from consumer.scriptdata import ScriptData
from consumer.store import Store

HANDLER = """async function handler(input, ctx) {
  const took = [];
  for (let i = 0; i < input.calls; i++) {
    const t = Date.now();
    const row = await ctx.db.queryOne('SELECT id, name FROM items WHERE id = $1', [1 + i % 100]);
    took.push(Date.now() - t);
    if (row === null) throw new Error('missing row');
  }
  return took;
}"""


class TimedData(ScriptData):
    """ScriptData that records how long each db.queryOne took to serve."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.served: list[float] = []

    async def call(self, request: Request, op: str, args: Sequence[Any],
                   remaining_s: float) -> Any:
        started = time.perf_counter()
        try:
            return await super().call(request, op, args, remaining_s)
        finally:
            self.served.append(time.perf_counter() - started)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def main(calls: int, per_run: int, concurrency: int, db_limiter: bool) -> None:
    url = await fresh_database("jsrt_bench_db")
    tenant = str(uuid.uuid4())
    try:
        conn = await asyncpg.connect(url)
        await conn.execute("CREATE TABLE items (id INT PRIMARY KEY, tenant_id UUID NOT NULL,"
                           " name TEXT)")
        await conn.execute("INSERT INTO items SELECT g, $1, 'item ' || g"
                           " FROM generate_series(1, 100) g", uuid.UUID(tenant))
        await conn.close()
        store = await Store.open(url, max_size=max(4, concurrency + 2))
        await store.tenant_data.expose("items", False, None)
        data = TimedData(store.tenant_data, PgCache(store.db))
        limiter = store_api_limiter(store) if db_limiter else None
        limits = Limits(max_execution_time_ms=120_000, max_api_calls_per_minute=100_000)
        script = str(uuid.uuid4())

        def req(n: int) -> ExecutionRequest:
            return ExecutionRequest(HANDLER, "v1", f'{{"calls": {n}}}', tenant, script,
                                    str(uuid.uuid4()), {"type": "manual"}, limits)

        async with Executor(workers=2, data=data, api_limiter=limiter) as ex:
            await ex.execute(req(10))  # warm: contexts, pool, prepared plans
            data.served.clear()
            runs = max(1, calls // per_run)
            queue = iter(range(runs))

            async def client() -> None:
                for _ in queue:
                    r = await ex.execute(req(per_run))
                    assert r.status == "completed", r.error

            started = time.perf_counter()
            await asyncio.gather(*(client() for _ in range(concurrency)))
            wall = time.perf_counter() - started
            done = runs * per_run
            print(f"ctx.db.queryOne by primary key: {done / wall:,.0f} calls/s "
                  f"({done} calls, {concurrency} concurrent runs of {per_run} sequential calls, "
                  f"2 workers, limiter {'in the database' if db_limiter else 'in process'})")
            print(f"  served by the host: p50 {pct(data.served, 0.5):.2f} ms, "
                  f"p99 {pct(data.served, 0.99):.2f} ms")
            alone = await ex.execute(req(500))
            assert alone.status == "completed", alone.error
            seen = alone.output
            print(f"  seen by a script running alone: mean {statistics.mean(seen):.2f} ms "
                  f"per call (Date.now() resolution 1 ms; {len(seen)} calls)")
        await store.close()
    finally:
        await drop_database(url)


if __name__ == "__main__":
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=5000)
    p.add_argument("--per-run", type=int, default=50)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--db-limiter", action="store_true")
    a = p.parse_args()
    asyncio.run(main(a.calls, a.per_run, a.concurrency, a.db_limiter))
