"""Other tenants' runs while one tenant floods the sandbox with runs that crash V8.

    .venv/bin/python bench/crash_flood.py [--seconds 5] [--crashes 30] [--every 0.1] [--no-policy]

One executor (2 workers): innocent runs (a trivial handler, 32 at a time) alone for
--seconds, then while one tenant submits --crashes runs of a script version that aborts V8,
one after another, --every seconds apart. Prints the innocents' runs/s alone and during the
flood, the workers lost, and how the crashing runs ended. --no-policy turns off
consumer/sandbox/crashes.py's refusal (every crashing run then reaches a worker), for the
figure beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import structlog

from consumer.sandbox import ExecutionRequest, Executor, Limits, crashes

INNOCENT = "function handler(input) { return input.n }"
CRASHER = "'x'.repeat(2**29 - 30).split('')\nfunction handler() {}"


def request(source: str, n: int, tenant: str, script: str) -> ExecutionRequest:
    return ExecutionRequest(
        source=source, version_id="v1", input_json=f'{{"n": {n}}}', tenant_id=tenant,
        script_id=script, execution_id=f"{tenant}-{n}", trigger={"type": "event"},
        limits=Limits(max_execution_time_ms=10_000),
    )


async def innocents(ex: Executor, seconds: float, offset: int,
                    until: asyncio.Task[Counter[str]] | None = None) -> float:
    """Innocent runs/s, 32 at a time, for `seconds` (or until `until` ends)."""
    counter = iter(range(offset, offset + 10**9))
    done = 0
    deadline = time.perf_counter() + seconds

    def going() -> bool:
        return (until is not None and not until.done()) or (
            until is None and time.perf_counter() < deadline)

    async def client() -> None:
        nonlocal done
        while going():
            result = await ex.execute(request(INNOCENT, next(counter), "innocent", "s"))
            assert result.status == "completed", result
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(32)))
    return done / (time.perf_counter() - started)


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=5.0, help="innocents alone")
    p.add_argument("--crashes", type=int, default=30)
    p.add_argument("--every", type=float, default=0.1, help="seconds between two crashers")
    p.add_argument("--no-policy", action="store_true")
    args = p.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    if args.no_policy:
        crashes.REFUSE_AFTER = 10**9
        import consumer.sandbox.executor as executor_module
        executor_module.REFUSE_AFTER = 10**9
    async with Executor(workers=2) as ex:
        await innocents(ex, 1.0, 0)  # warm
        alone = await innocents(ex, args.seconds, 10**6)
        restarts = ex.restarts

        async def flood() -> Counter[str]:
            ends: Counter[str] = Counter()
            for i in range(args.crashes):
                result = await ex.execute(request(CRASHER, i, "flooder", "crash"))
                ends[(result.error or result.status).split(":")[0]] += 1
                await asyncio.sleep(args.every)
            return ends

        flooding = asyncio.create_task(flood())
        started = time.perf_counter()
        under = await innocents(ex, 0, 2 * 10**9, until=flooding)
        took = time.perf_counter() - started
        ends = await flooding
        print(f"innocent runs/s alone {alone:,.0f}; during a flood of {args.crashes} crashing"
              f" runs {under:,.0f} ({under / alone:.2f}x); workers lost"
              f" {ex.restarts - restarts} in {took:.1f} s; the crashing runs ended: {dict(ends)}"
              f"{' (policy off)' if args.no_policy else ''}")


if __name__ == "__main__":
    asyncio.run(main())
