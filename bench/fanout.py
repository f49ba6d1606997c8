"""The fan-out's own cost (#19): jsrt_claim_v2 fanning a batch of due events out into
executions, timed in the database (no daemon, no sandbox), for scripts without a payload
filter, with a filter every event matches, with one no event matches, and with a
concurrency key. The variants alternate over --rounds on one fresh database, so that a busy
machine slows them alike; the figure is the median server time per claim and per event.

    python bench/fanout.py [--events 512] [--rounds 15] [--baseline OTHER/runs_v2.sql]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import drop_database, fresh_database, machine

VARIANTS = {
    "no filter": {},
    "filter, every event matches": {
        "event_filters": {"bench.event": "$.n >= 0 && $.kind == \"a\""}},
    "filter, no event matches": {"event_filters": {"bench.event": "$.n < 0"}},
    "concurrency key": {"concurrency_key": "$.kind"},
}


async def claim_once(conn: asyncpg.Connection, metadata: dict[str, object], events: int,
                     function: str = "jsrt_claim_v2") -> float:
    tenant = uuid.uuid4()
    await conn.execute("INSERT INTO tenants (id) VALUES ($1)", tenant)
    await conn.execute(
        """INSERT INTO scripts (tenant_id, name, source, type, status, event_types, metadata)
           VALUES ($1, 'bench', 'function handler() {}', 'event', 'active', '{bench.event}',
                   $2::jsonb)""", tenant, json.dumps(metadata))
    await conn.execute(
        """SELECT jsrt_publish($1, 'bench.event', jsonb_build_object('n', g, 'kind', 'a'))
           FROM generate_series(1, $2) g""", tenant, events)
    start = time.perf_counter()
    await conn.fetchrow(
        f"SELECT * FROM {function}('bench', $1, $1, NULL, 0, 1, NULL, 1, '{{}}', '{{}}')", events)
    elapsed = time.perf_counter() - start
    # the next round starts from an empty queue
    await conn.execute("DELETE FROM tenants WHERE id = $1", tenant)
    return elapsed


async def main(args: argparse.Namespace) -> None:
    url = await fresh_database()
    conn = await asyncpg.connect(url)
    variants = {name: (m, "jsrt_claim_v2") for name, m in VARIANTS.items()}
    if args.baseline:
        # another version of the function (e.g. `git show main:schema/functions/runs_v2.sql`),
        # renamed, beside this one: the same events without a filter
        text = Path(args.baseline).read_text()
        await conn.execute(text.replace("FUNCTION jsrt_claim_v2(", "FUNCTION jsrt_claim_base(")
                               .replace("FUNCTION jsrt_start_now_v2(", "FUNCTION jsrt_start_base("))
        variants["baseline, no filter"] = ({}, "jsrt_claim_base")
    try:
        print(f"machine: {machine()}")
        await conn.execute("INSERT INTO jsrt_daemons (id, hostname, pid) VALUES ('bench', 'b', 1)")
        for metadata, function in variants.values():  # warm the plan cache and the tables
            await claim_once(conn, metadata, args.events, function)
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.rounds):
            for name, (metadata, function) in variants.items():
                times[name].append(await claim_once(conn, metadata, args.events, function))
        base = statistics.median(times["no filter"])
        print(f"one claim fanning {args.events} events out to one script, median of "
              f"{args.rounds} rounds:")
        for name, ts in times.items():
            med = statistics.median(ts)
            print(f"  {name:30} {med * 1000:7.2f} ms  {med / args.events * 1e6:6.1f} us/event"
                  f"  ({med / base:4.2f}x)")
    finally:
        await conn.close()
        await drop_database(url)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--events", type=int, default=512)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--baseline", help="a runs_v2.sql to compare with (its jsrt_claim_v2 renamed)")
    asyncio.run(main(p.parse_args()))
