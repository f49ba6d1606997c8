"""Where a run's CPU goes: `jsrt run` on a bench database of 20,000 events, and the CPU time
of the daemon, its sandbox workers and its PostgreSQL backends over the run, per execution.

    .venv/bin/python bench/cpu_per_run.py [default|raised] [--n 20000]

`default`: one script with the seed's default resource_limits (max_concurrent_runs 5), the
daemon's default settings; `raised`: max_concurrent_runs 256, JSRT_CONCURRENCY 256, warnings
only (as bench/compare.py). CPU is read from /proc (utime + stime), so it counts only what
each process really ran, whatever else shares the machine; throughput does not.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import asyncpg

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

import compare  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICK


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("mode", choices=("default", "raised"), nargs="?", default="default")
    p.add_argument("--n", type=int, default=20_000)
    args = p.parse_args()
    limits, env = dict(compare.DEFAULT_LIMITS), {}
    if args.mode == "raised":
        limits["max_concurrent_runs"] = 256
        env = {"JSRT_CONCURRENCY": "256", "JSRT_LOG_LEVEL": "warning"}
    url, [tenant] = await compare.jsrt_database(limits)
    dbname = url.rsplit("/", 1)[1]
    conn = await asyncpg.connect(url)
    try:
        await compare.publish_bulk(conn, tenant, args.n)
        await conn.execute("CHECKPOINT")
        me = await conn.fetchval("SELECT pg_backend_pid()")
        proc = compare.start_jsrt(url, env, compare.RESULTS / "cpu-per-run.log")
        seen: dict[tuple[str, int], float] = {}

        async def sample() -> None:
            pg = await conn.fetch("SELECT pid FROM pg_stat_activity WHERE datname = $1"
                                  " AND pid <> $2", dbname, me)
            groups = {"daemon": [proc.pid], "workers": children(proc.pid),
                      "postgres": [r["pid"] for r in pg]}
            for group, pids in groups.items():
                for pid in pids:
                    if (v := cpu_s(pid)) is not None:
                        seen[(group, pid)] = v

        # from the moment both workers are up: start-up is not a run's cost
        while len([k for k in seen if k[0] == "workers"]) < 2:
            await sample()
            await asyncio.sleep(0.1)
        await sample()
        base, started = dict(seen), time.monotonic()
        done0 = await conn.fetchval("SELECT count(*) FROM script_executions")
        while await conn.fetchval(compare.REMAINING):
            await sample()
            await asyncio.sleep(0.2)
        await sample()
        elapsed = time.monotonic() - started
        done = await conn.fetchval("SELECT count(*) FROM script_executions") - done0
        compare.stop(proc)
    finally:
        await conn.close()
        await compare._drop(url)
    per: dict[str, float] = {}
    for (group, pid), v in seen.items():
        per[group] = per.get(group, 0.0) + v - base.get((group, pid), 0.0)
    parts = ", ".join(f"{g} {v / done * 1e6:.0f}" for g, v in per.items())
    print(f"{args.mode}: {done} runs in {elapsed:.1f} s = {done / elapsed:,.0f}/s; CPU µs per run:"
          f" {parts}; all {sum(per.values()) / done * 1e6:.0f}")


if __name__ == "__main__":
    asyncio.run(main())
