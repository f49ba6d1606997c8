"""The run queue's own vacuum: `VACUUM (SKIP_LOCKED, TRUNCATE false)` of the small, hot tables
of the run path every JSRT_QUEUE_VACUUM_INTERVAL seconds, by every daemon and HTTP server.

Each run inserts, updates and deletes its jsrt_runs row, so the table's live rows stay few
while its dead ones pile up at thousands a second; leases turn over as fast. Autovacuum visits
a database once per autovacuum_naptime (a minute by default) and may be off altogether (it is
on the development machine): meanwhile the claim's and the completion's scans read every dead
tuple, and the table's size grows with the number of runs ever made. Measured (limits raised,
one daemon, autovacuum off, 10 x 50,000 events): jsrt_runs about 500 pages with it, 8,806
without; the first 400,000 about 10% faster with it; each VACUUM 13-73 ms (README).

SKIP_LOCKED: a table another process is vacuuming is skipped, not waited for (several
daemons share the work). TRUNCATE false: no ACCESS EXCLUSIVE lock at the end, ever; the pages
freed are reused through the free space map instead of given back. The big tables
(script_executions, jsrt_events) stay autovacuum's, and retention's (retention.py).
"""

from __future__ import annotations

import random

import anyio

from consumer import log
from consumer.errors import StoreError
from consumer.queue import Queue

_LOG = log.get("jsrt.vacuum")


class QueueVacuum:
    def __init__(self, queue: Queue, interval: float) -> None:
        self._queue = queue
        self.interval = interval

    async def run(self) -> None:
        while True:
            await anyio.sleep(self.interval * random.uniform(0.8, 1.2))
            await self.once()

    async def once(self) -> None:
        try:
            await self._queue.vacuum()
        except StoreError as exc:  # never fatal: autovacuum is still there
            _LOG.warning("queue_vacuum_failed", error=str(exc).splitlines()[0][:300])
