"""Executor throughput and latency through the full supervised path.

    .venv/bin/python bench/executor.py [--workers N] [--n N] [--concurrency N]

Warm: every execution reuses its script's context. Cold: every execution has its own script
version, so each one creates a fresh V8 context (and evicts an old one).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import structlog

from consumer.sandbox import ExecutionRequest, Executor, Limits

HANDLER = "async function handler(input, ctx) { return { ok: true, n: input.n } }"


def request(n: int, version: str, script: str = "bench") -> ExecutionRequest:
    return ExecutionRequest(
        source=HANDLER,
        version_id=version,
        input_json=f"{{\"n\": {n}}}",
        tenant_id="bench",
        script_id=script,
        execution_id=f"e{n}",
        trigger={"type": "manual"},
        limits=Limits(max_execution_time_ms=5000),
    )


async def measure(ex: Executor, label: str, n: int, concurrency: int, *, cold: bool) -> None:
    latencies: list[float] = []
    queue = iter(range(n))

    async def client() -> None:
        for i in queue:
            req = request(i, f"v{i}" if cold else "v1")
            started = time.perf_counter()
            result = await ex.execute(req)
            latencies.append(time.perf_counter() - started)
            assert result.status == "completed", result

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[int(len(latencies) * 0.99) - 1] * 1000
    print(
        f"{label:5} {n / elapsed:8.0f} executions/s   p50 {p50:6.2f} ms   p99 {p99:6.2f} ms"
        f"   (n={n}, concurrency={concurrency})"
    )


async def respawn_cost(ex: Executor) -> None:
    before = ex.restarts
    crash = ExecutionRequest(
        source="'x'.repeat(2**29-30).split('')",
        version_id="crash",
        input_json="null",
        tenant_id="bench",
        script_id="crash",
        execution_id="crash",
        trigger={"type": "manual"},
        limits=Limits(max_execution_time_ms=5000),
    )
    result = await ex.execute(crash)
    while ex.restarts == before:
        await asyncio.sleep(0.01)
    print(f"crash: {result.error}")
    print(f"respawn: {ex.last_respawn_ms:.0f} ms from kill to a ready replacement worker")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    async with Executor(workers=args.workers) as ex:
        await measure(ex, "warmup", 2000, args.concurrency, cold=False)
        await measure(ex, "warm", args.n, args.concurrency, cold=False)
        await measure(ex, "cold", max(args.n // 4, 1000), args.concurrency, cold=True)
        stats = ex.stats()
        for w in stats.workers:
            print(
                f"worker {w.index}: pid {w.pid}, RSS {w.rss_bytes / 2**20:.0f} MiB, "
                f"{w.executions} executions"
            )
        await respawn_cost(ex)


if __name__ == "__main__":
    asyncio.run(main())
