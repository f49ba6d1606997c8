"""The daemon: claim → execute → report, for one process.

    claim loop  fan events out into executions and start runs within the limits (this module)
    execute     each started run on the sandbox executor; its result arrives on a future
    report      the completer records results in batches (completer.py)

beside the services it starts: the lease (heartbeat and rescue of dead processes' runs,
lease.py), the listener (NOTIFY only wakes the claim loop, listener.py), the timers (due
retries and cron ticks, timers.py) and the cleaner (retention.py). The process around it - the
pool, the sandbox, signals, the metrics and HTTP servers - is wired in app.py.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from uuid import UUID

import anyio

from consumer import log, recording
from consumer.backoff import Backoff
from consumer.clock import Clock, SystemClock
from consumer.completer import Completer
from consumer.errors import StoreError, StoreUnavailable
from consumer.lease import Lease
from consumer.listener import Listener
from consumer.records import Finished, Outcome, Run
from consumer.retention import Cleaner, Policy
from consumer.retry import retry_at_after
from consumer.sandbox import Executor
from consumer.sandbox.types import ExecutionResult
from consumer.settings import Settings
from consumer.store import Store
from consumer.timers import Timers

_LOG = log.get("jsrt.daemon")


@dataclass
class Counters:
    dispatched_events: int = 0
    started: int = 0
    recorded: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    rescued: int = 0


@dataclass(frozen=True, slots=True)
class DaemonStatus:
    """What the daemon shows the metrics collector: numbers, never its fields."""

    rescued: int
    events_rejected: int
    listener_reconnects: int
    listening: bool


class Daemon:
    def __init__(
        self, settings: Settings, store: Store, executor: Executor,
        clock: Clock | None = None, daemon_id: str | None = None, listen: bool = True,
    ) -> None:
        self.settings = settings
        self.store = store
        self.executor = executor
        self.clock = clock or SystemClock()
        self.id = daemon_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.counters = Counters()
        self._stopping = anyio.Event()
        self._wake = anyio.Event()
        # Runs on the executor, by execution id, with the future their result arrives on: a
        # callback, not a task per run, hands each result to the completer.
        self._in_flight: dict[UUID, tuple[Run, asyncio.Future[ExecutionResult]]] = {}
        self._completer = Completer(store, self.id, self._recorded)
        self._timers = Timers(store, self.clock, settings.poll_interval, self._queued)
        self._maybe_events = True  # hints: skip round trips that would find nothing
        self._maybe_runs = True
        self._runs_waiting = True  # the last claim saw queued runs (a freed slot may start one)
        self._min_start = max(1, settings.concurrency // 8)
        self.listener: Listener | None = None
        self._listen = listen  # False: polling only (tests of the loop without a database)

    # ------------------------------------------------------------ public
    def stop(self) -> None:
        """Stop claiming; running executions get the grace period, then are released."""
        self._stopping.set()
        self.wake()

    def wake(self) -> None:
        """Something may be due: a notification, a poll tick, a script change."""
        self._maybe_events = self._maybe_runs = True
        self._wake.set()

    def status(self) -> DaemonStatus:
        listener = self.listener
        return DaemonStatus(self.counters.rescued, listener.rejected if listener else 0,
                            listener.reconnects if listener else 0, listener is not None)

    async def run(self, until_idle: bool = False) -> None:
        s = self.settings
        lease = Lease(self.store, s.heartbeat_interval, owner=self.id,
                      rescue_after=s.heartbeat_timeout, retry_base=s.retry_base_seconds,
                      clock=self.clock, on_beat=self._beaten)
        async with lease:
            _LOG.info("daemon_started", daemon_id=self.id, concurrency=s.concurrency,
                      until_idle=until_idle)
            try:
                async with anyio.create_task_group() as tg:
                    self._start_services(tg, until_idle)
                    await self._claim_loop(until_idle)
                    await self._finish_in_flight()
                    await self._completer.flushed()
                    tg.cancel_scope.cancel()
            finally:
                _LOG.info("daemon_stopped", daemon_id=self.id, recorded=self.counters.recorded)

    def _start_services(self, tg: anyio.abc.TaskGroup, until_idle: bool) -> None:
        s = self.settings
        tg.start_soon(self._completer.run)
        if until_idle:  # a drain takes retries and ticks when it runs dry
            return
        if self._listen:
            self.listener = Listener(s.require_database(), self.store, self.wake, s.channels)
            tg.start_soon(self.listener.run)
        tg.start_soon(self._timers.run, self._stopping)
        if s.cleanup_interval > 0:
            cleaner = Cleaner(self.store.retention, Policy.from_settings(s),
                              s.cleanup_interval, self.clock)
            tg.start_soon(cleaner.run)

    async def cleanup(self) -> dict[str, int]:
        """Apply the retention policy once, at this daemon's clock."""
        cleaner = Cleaner(self.store.retention, Policy.from_settings(self.settings),
                          self.settings.cleanup_interval, self.clock)
        return await cleaner.once()

    # ------------------------------------------------------------ claim
    async def _claim_loop(self, until_idle: bool) -> None:
        backoff = Backoff()
        while not self._stopping.is_set():
            try:
                progressed = await self._claim_once()
                backoff.reset()
            except StoreUnavailable as exc:
                delay = backoff.next()
                _LOG.warning("database_unavailable", error=str(exc)[:200], retry_in_s=delay)
                await self._sleep_or_stop(delay)
                continue
            except StoreError as exc:  # e.g. a deadlock or serialization failure: try again
                delay = backoff.next()
                _LOG.error("claim_failed", error=str(exc).splitlines()[0][:300],
                           retry_in_s=delay)
                await self._sleep_or_stop(delay)
                continue
            if progressed:
                continue
            if until_idle and await self._idle():
                return
            await self._wait_for_work()

    async def _claim_once(self) -> bool:
        s = self.settings
        unrecorded = self._completer.unrecorded
        # A finished run holds its slot until its result is recorded: the database counts it
        # as running until then, and a claim sized beyond that would only queue new runs.
        free = s.concurrency - len(self._in_flight) - unrecorded
        # Start in batches, not one run per freed slot: fewer, larger round trips. Events are
        # dispatched just in time, no more than there are free slots, so that most new
        # executions start at once, and a busy daemon leaves the queue to the others.
        batch_ready = free >= self._min_start or not (self._in_flight or unrecorded)
        event_limit = min(s.claim_batch, free) if self._maybe_events and batch_ready else 0
        start_pending = self._maybe_runs and batch_ready
        if not (event_limit or start_pending):
            return False
        # Hints are cleared before the query, so a wake-up that arrives during it is kept.
        self._maybe_events = self._maybe_events and not event_limit
        self._maybe_runs = self._maybe_runs and not start_pending
        claimed = await self.store.queue.claim(
            self.id, event_limit, s.tenant_batch, free, max(1, s.concurrency // 2), start_pending)
        started = claimed.started
        self._maybe_events = self._maybe_events or claimed.more
        self._runs_waiting = claimed.waiting
        # queued executions may be startable, or blocked only until a slot frees
        self._maybe_runs = self._maybe_runs or (
            claimed.waiting and (claimed.queued > 0 or len(started) >= free))
        for run in started:
            self._start(run)
        self.counters.dispatched_events += claimed.events
        self.counters.started += len(started)
        return bool(claimed.events or started)

    async def _idle(self) -> bool:
        if self._in_flight or self._completer.unrecorded:
            return False
        if await self._timers.poll(force=True):
            self._maybe_runs = True
            return False
        self._maybe_events = self._maybe_runs = True
        return not await self.store.queue.pending_work(self.clock.now())

    async def _wait_for_work(self) -> None:
        # A notification, a freed slot or the jittered poll timer, whichever comes first:
        # a lost notification costs latency, never an event.
        timeout = self.settings.poll_interval * random.uniform(0.8, 1.2)
        with anyio.move_on_after(timeout) as scope:
            await self._wake.wait()
        if scope.cancelled_caught:
            self._maybe_events = self._maybe_runs = True
        self._wake = anyio.Event()

    async def _sleep_or_stop(self, seconds: float) -> None:
        with anyio.move_on_after(seconds):
            await self._stopping.wait()

    def _queued(self) -> None:
        """The timers queued retries or cron runs: they may start now."""
        self._maybe_runs = True
        self._wake.set()

    async def _beaten(self, lost: Sequence[Finished]) -> None:
        """After each heartbeat: take over raw ingestion if its holder went away; runs
        rescued from a dead process may be retried, or free slots."""
        self.counters.rescued += len(lost)
        if self.listener is not None:
            await self.listener.try_lead()
        if lost:
            self.wake()

    # ------------------------------------------------------------ execute
    def _start(self, run: Run) -> None:
        if log.enabled("debug"):
            _LOG.debug("execution_started", **recording.run_fields(run))
        future = self._submit(run)
        self._in_flight[run.execution_id] = (run, future)
        future.add_done_callback(partial(self._executed, run))

    def _submit(self, run: Run) -> asyncio.Future[ExecutionResult]:
        refused = run.refused()  # e.g. unusable resource_limits: fails, sandbox untouched
        if refused is None:
            try:
                return self.executor.submit(run.request())
            except Exception as exc:  # the executor must never take the daemon down
                future = asyncio.get_running_loop().create_future()
                future.set_exception(exc)
                return future
        future = asyncio.get_running_loop().create_future()
        future.set_result(refused)
        return future

    def _executed(self, run: Run, future: asyncio.Future[ExecutionResult]) -> None:
        if future.cancelled() or self._in_flight.pop(run.execution_id, None) is None:
            return  # released at shutdown: the run is queued again for any daemon
        try:
            result = self._result_of(run, future)
            outcome = Outcome(run, result, self._retry_at(run))
        except Exception as exc:  # a callback must fail this run only, never the daemon
            _LOG.error("execution_result_broken", error=f"{type(exc).__name__}: {exc}"[:300],
                       **recording.run_fields(run))
            outcome = Outcome(run, ExecutionResult("failed", error="sandbox result unreadable"),
                              self.clock.now())
        self._completer.add(outcome)
        self._wake.set()

    @staticmethod
    def _result_of(run: Run, future: asyncio.Future[ExecutionResult]) -> ExecutionResult:
        exc = future.exception()
        if exc is None:
            result = future.result()
            if not isinstance(result, ExecutionResult):
                raise TypeError(f"the executor returned a {type(result).__name__}")
            return result
        _LOG.error("executor_error", error=f"{type(exc).__name__}: {exc}"[:300],
                   **recording.run_fields(run))
        return ExecutionResult(status="failed", error=f"executor error: {type(exc).__name__}")

    def _retry_at(self, run: Run) -> datetime:
        return retry_at_after(run.trigger_data, self.clock.now(),
                              self.settings.retry_base_seconds)

    async def _finish_in_flight(self) -> None:
        if not self._in_flight:
            return
        _LOG.info("draining", in_flight=len(self._in_flight), grace_s=self.settings.grace_period)
        with anyio.move_on_after(self.settings.grace_period):
            while self._in_flight:
                await self._wait_for_work()
        if self._in_flight:
            left = list(self._in_flight)
            for _run, future in self._in_flight.values():
                future.cancel()  # its result, should it come, is no longer ours to record
            self._in_flight.clear()
            with anyio.CancelScope(shield=True):
                released = await self.store.queue.release_runs(self.id, left)
            _LOG.warning("executions_released", count=released)

    # ------------------------------------------------------------ report
    def _recorded(self, batch: Sequence[Outcome], recorded: Sequence[Outcome]) -> None:
        """After each batch of the completer: log each outcome as recorded, free slots."""
        by_id = {o.run.execution_id: o for o in recorded}
        for o in batch:
            shown = by_id.get(o.run.execution_id, o)
            status = shown.result.status
            self.counters.by_status[status] = self.counters.by_status.get(status, 0) + 1
            recording.log_outcome(shown.run, shown.result, o.run.execution_id in by_id)
        self.counters.recorded += len(recorded)
        if self._runs_waiting:
            self._maybe_runs = True  # slots of these scripts are free again
        self._wake.set()
