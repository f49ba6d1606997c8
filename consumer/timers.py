"""The timers: due dead-letter retries and cron ticks, polled beside the claim loop (never
in front of an event's claim). What they queue becomes pending runs, which the claim loop
starts: `on_queued` wakes it. A drain (`jsrt run --until-idle`) calls `poll(force=True)` when
it runs dry instead of running the loop."""

from __future__ import annotations

from collections.abc import Callable

import anyio

from consumer import log
from consumer.backoff import Backoff
from consumer.clock import Clock
from consumer.errors import StoreError
from consumer.scheduler import decide, log_decisions
from consumer.store import Store

_LOG = log.get("jsrt.timers")

RETRY_BATCH = 100
CRON_BATCH = 500


class Timers:
    def __init__(self, store: Store, clock: Clock, poll_interval: float,
                 on_queued: Callable[[], None]) -> None:
        self.store = store
        self.clock = clock
        self.poll_interval = poll_interval
        self._on_queued = on_queued
        self._next_retry_poll = 0.0
        self._next_cron_poll = 0.0

    async def run(self, stopping: anyio.Event) -> None:
        backoff = Backoff()
        while not stopping.is_set():
            try:
                queued = await self.poll(force=False)
                backoff.reset()
            except StoreError as exc:  # unavailable, or e.g. a deadlock: try again
                delay = backoff.next()
                _LOG.warning("timers_failed", error=str(exc).splitlines()[0][:300],
                             retry_in_s=delay)
                await _sleep_or(stopping, delay)
                continue
            if queued:
                self._on_queued()
            due = min(self._next_retry_poll, self._next_cron_poll)
            await _sleep_or(stopping, max(0.0, due - anyio.current_time()))

    async def poll(self, force: bool) -> int:
        """Claim due retries and fire due ticks (when their poll is due, or `force`); returns
        how many were queued or decided."""
        return await self._claim_retries(force) + await self._schedule(force)

    async def _claim_retries(self, force: bool) -> int:
        now = anyio.current_time()
        if not force and now < self._next_retry_poll:
            return 0
        self._next_retry_poll = now + self.poll_interval
        return await self.store.dead_letters.claim_retries(RETRY_BATCH, self.clock.now())

    async def _schedule(self, force: bool) -> int:
        now = anyio.current_time()
        if not force and now < self._next_cron_poll:
            return 0
        self._next_cron_poll = now + min(self.poll_interval, 1.0)
        decisions, fired = await self.store.schedules.schedule_due(
            self.clock.now(), CRON_BATCH, decide)
        log_decisions(decisions, fired)
        if len(decisions) >= CRON_BATCH:  # more may be due: the next batch now, not next poll
            self._next_cron_poll = now
        return len(decisions)


async def _sleep_or(stopping: anyio.Event, seconds: float) -> None:
    with anyio.move_on_after(seconds):
        await stopping.wait()
