"""The daemon: claim → execute → report, as small steps under one anyio task group.

    listener   LISTEN connection; a notification only wakes the claim loop
    claim loop fan events out into executions, start runs within the limits, start retries
    executions one task per run, on the sandbox executor
    completer  records results in batches (and dead-letters failures)
    heartbeat  keeps this daemon's lease alive and rescues runs of daemons that died
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import random
import signal
import socket
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any
from uuid import UUID

import anyio

from consumer import log, recording, retention
from consumer.clock import Clock, SystemClock
from consumer.errors import StoreError, StoreUnavailable
from consumer.listener import Listener
from consumer.records import Outcome, Run
from consumer.retry import next_retry_at
from consumer.sandbox import Executor
from consumer.sandbox.types import ExecutionResult, Publisher, PublishRequest
from consumer.scheduler import decide, log_decisions
from consumer.settings import Settings
from consumer.store import Store

_LOG = log.get("jsrt.daemon")

COMPLETE_BATCH = 256
RETRY_BATCH = 100
CRON_BATCH = 500


@dataclass
class Counters:
    dispatched_events: int = 0
    started: int = 0
    recorded: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    rescued: int = 0


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
        self._outcomes: deque[Outcome] = deque()  # results waiting to be recorded
        self._results = anyio.Event()  # set when _outcomes gets one
        self._unrecorded = 0
        self._next_retry_poll = 0.0
        self._maybe_events = True  # hints: skip round trips that would find nothing
        self._maybe_runs = True
        self._runs_waiting = True  # the last claim saw queued runs (a freed slot may start one)
        self._min_start = max(1, settings.concurrency // 8)
        self._next_cron_poll = 0.0
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

    async def run(self, until_idle: bool = False) -> None:
        await self.store.register_daemon(self.id, socket.gethostname(), os.getpid())
        _LOG.info("daemon_started", daemon_id=self.id, concurrency=self.settings.concurrency,
                  until_idle=until_idle)
        try:
            async with anyio.create_task_group() as tg:
                if not until_idle and self._listen:
                    self.listener = Listener(
                        self.settings.require_database(), self.store, self.wake,
                        self.settings.channels,
                    )
                    tg.start_soon(self.listener.run)
                tg.start_soon(self._heartbeat_loop)
                tg.start_soon(self._completer)
                if not until_idle:  # a drain takes retries and ticks when it runs dry
                    tg.start_soon(self._timers_loop)
                if not until_idle and self.settings.cleanup_interval > 0:
                    tg.start_soon(self._cleanup_loop)
                await self._claim_loop(until_idle)
                await self._finish_in_flight()
                await self._flush()
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                with contextlib.suppress(StoreUnavailable):
                    await self.store.unregister_daemon(self.id)
            _LOG.info("daemon_stopped", daemon_id=self.id, recorded=self.counters.recorded)

    # ------------------------------------------------------------ claim
    async def _claim_loop(self, until_idle: bool) -> None:
        backoff = 0.1
        while not self._stopping.is_set():
            try:
                progressed = await self._claim_once()
                backoff = 0.1
            except StoreUnavailable as exc:
                _LOG.warning("database_unavailable", error=str(exc)[:200], retry_in_s=backoff)
                await self._sleep_or_stop(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            except StoreError as exc:  # e.g. a deadlock or serialization failure: try again
                _LOG.error("claim_failed", error=str(exc).splitlines()[0][:300], retry_in_s=backoff)
                await self._sleep_or_stop(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if progressed:
                continue
            if until_idle and await self._idle():
                return
            await self._wait_for_work()

    async def _claim_once(self) -> bool:
        s = self.settings
        # A finished run holds its slot until its result is recorded: the database counts it
        # as running until then, and a claim sized beyond that would only queue new runs.
        free = s.concurrency - len(self._in_flight) - self._unrecorded
        # Start in batches, not one run per freed slot: fewer, larger round trips. Events are
        # dispatched just in time, no more than there are free slots, so that most new
        # executions start at once, and a busy daemon leaves the queue to the others.
        batch_ready = free >= self._min_start or not (self._in_flight or self._unrecorded)
        event_limit = min(s.claim_batch, free) if self._maybe_events and batch_ready else 0
        start_pending = self._maybe_runs and batch_ready
        if not (event_limit or start_pending):
            return False
        # Hints are cleared before the query, so a wake-up that arrives during it is kept.
        self._maybe_events = self._maybe_events and not event_limit
        self._maybe_runs = self._maybe_runs and not start_pending
        claimed = await self.store.claim(
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

    async def _timers_loop(self) -> None:
        """Due retries and cron ticks, polled beside the claim loop (never in front of an
        event's claim): what they queue wakes the claim loop."""
        backoff = 0.1
        while not self._stopping.is_set():
            try:
                queued = await self._claim_retries(force=False) + await self._schedule(force=False)
                backoff = 0.1
            except StoreError as exc:  # unavailable, or e.g. a deadlock: try again
                _LOG.warning("timers_failed", error=str(exc).splitlines()[0][:300],
                             retry_in_s=backoff)
                await self._sleep_or_stop(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if queued:
                self._maybe_runs = True
                self._wake.set()
            due = min(self._next_retry_poll, self._next_cron_poll)
            await self._sleep_or_stop(max(0.0, due - anyio.current_time()))

    async def _claim_retries(self, force: bool) -> int:
        now = anyio.current_time()
        if not force and now < self._next_retry_poll:
            return 0
        self._next_retry_poll = now + self.settings.poll_interval
        return await self.store.claim_retries(RETRY_BATCH, self.clock.now())

    async def _schedule(self, force: bool) -> int:
        now = anyio.current_time()
        if not force and now < self._next_cron_poll:
            return 0
        self._next_cron_poll = now + min(self.settings.poll_interval, 1.0)
        decisions, fired = await self.store.schedule_due(self.clock.now(), CRON_BATCH, decide)
        log_decisions(decisions, fired)
        if len(decisions) >= CRON_BATCH:  # more may be due: the next batch now, not next poll
            self._next_cron_poll = now
        return len(decisions)

    async def _idle(self) -> bool:
        if self._in_flight or self._unrecorded:
            return False
        if await self._claim_retries(force=True) or await self._schedule(force=True):
            self._maybe_runs = True
            return False
        self._maybe_events = self._maybe_runs = True
        return not await self.store.pending_work(self.clock.now())

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

    # ------------------------------------------------------------ execute
    def _start(self, run: Run) -> None:
        if log.enabled("debug"):
            _LOG.debug("execution_started", **_run_fields(run))
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
                       **_run_fields(run))
            outcome = Outcome(run, ExecutionResult("failed", error="sandbox result unreadable"),
                              self.clock.now())
        self._unrecorded += 1
        self._outcomes.append(outcome)
        self._results.set()
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
                   **_run_fields(run))
        return ExecutionResult(status="failed", error=f"executor error: {type(exc).__name__}")

    def _retry_at(self, run: Run) -> datetime:
        return self._next_retry(run.trigger_data)

    def _next_retry(self, trigger_data: Mapping[str, Any]) -> datetime:
        """When to retry after this attempt failed (trigger_data.retry = retries before it)."""
        count = int(trigger_data.get("retry", 0) or 0)
        return next_retry_at(self.clock.now(), count, base=self.settings.retry_base_seconds)

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
                released = await self.store.release_runs(self.id, left)
            _LOG.warning("executions_released", count=released)

    # ------------------------------------------------------------ report
    async def _completer(self) -> None:
        while True:
            while not self._outcomes:
                await self._results.wait()
                self._results = anyio.Event()
            take = min(len(self._outcomes), COMPLETE_BATCH)
            batch = [self._outcomes.popleft() for _ in range(take)]
            try:
                await self._record(batch)
            except Exception as exc:  # a bug in recording must not stop the daemon
                _LOG.error("completer_error", error=f"{type(exc).__name__}: {exc}"[:300],
                           executions=len(batch))
                self._unrecorded -= len(batch)

    async def _record(self, batch: list[Outcome]) -> None:
        recorded = {o.run.execution_id: o for o in await self._complete(batch)}
        for o in batch:
            self._log_outcome(recorded.get(o.run.execution_id, o), o.run.execution_id in recorded)
        self._unrecorded -= len(batch)
        self.counters.recorded += len(recorded)
        if self._runs_waiting:
            self._maybe_runs = True  # slots of these scripts are free again
        self._wake.set()

    async def _complete(self, batch: list[Outcome]) -> list[Outcome]:
        """Record a batch, waiting out an unreachable database; a result the database
        refuses becomes a failure saying why (consumer.recording)."""
        backoff = 0.1
        while True:
            try:
                with anyio.CancelScope(shield=True):
                    return await recording.complete(self.store, self.id, batch)
            except StoreUnavailable as exc:
                _LOG.warning("database_unavailable", error=str(exc)[:200], retry_in_s=backoff)
                await anyio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    def _log_outcome(self, o: Outcome, recorded: bool) -> None:
        r, run = o.result, o.run
        self.counters.by_status[r.status] = self.counters.by_status.get(r.status, 0) + 1
        if recorded and r.status == "completed":
            if log.enabled("info"):  # the fields cost more than a filtered-out line
                _LOG.info("execution_completed", status=r.status,
                          duration_ms=r.metrics.get("duration_ms"), **_run_fields(run))
        elif not recorded:
            _LOG.warning("execution_result_discarded", reason="run no longer owned",
                         status=r.status, **_run_fields(run))
        else:
            name = "execution_timed_out" if r.status == "timeout" else "execution_failed"
            _LOG.warning(name, status=r.status, error=r.error,
                         duration_ms=r.metrics.get("duration_ms"), **_run_fields(run))

    async def _flush(self) -> None:
        while self._unrecorded:
            await self._wait_for_work()

    # ------------------------------------------------------------ liveness
    async def _heartbeat_loop(self) -> None:
        s = self.settings
        while True:
            await anyio.sleep(s.heartbeat_interval)
            try:
                await self.store.heartbeat(self.id)
                lost = await self.store.rescue_lost_runs(
                    s.heartbeat_timeout, lambda f: self._next_retry(f.trigger_data))
            except StoreError as exc:  # unavailable, or e.g. a deadlock between rescuers
                _LOG.warning("heartbeat_failed", error=str(exc).splitlines()[0][:200])
                continue
            for f in lost:
                _LOG.warning("execution_worker_lost", tenant_id=str(f.tenant_id),
                             script_id=str(f.script_id), execution_id=str(f.execution_id))
            self.counters.rescued += len(lost)
            if self.listener is not None:
                await self.listener.try_lead()
            if lost:
                self.wake()


    # ------------------------------------------------------------ retention
    async def _cleanup_loop(self) -> None:
        # The first pass soon after start, so that daemons restarted often still clean up.
        delay = min(self.settings.cleanup_interval, 60.0)
        while True:
            await anyio.sleep(delay * random.uniform(0.9, 1.1))
            await self.cleanup()
            delay = self.settings.cleanup_interval

    async def cleanup(self) -> dict[str, int]:
        """Apply the retention policy once, at this daemon's clock (several daemons may: the
        batches of one skip what another already deleted)."""
        try:
            return await retention.cleanup(
                self.store, retention.Policy.from_settings(self.settings), self.clock.now())
        except StoreError as exc:
            _LOG.warning("cleanup_failed", error=str(exc).splitlines()[0][:300])
            return {}


def _run_fields(run: Run) -> dict[str, Any]:
    """What every log line about a run carries."""
    fields: dict[str, Any] = dict(
        tenant_id=str(run.tenant_id), script_id=str(run.script_id),
        execution_id=str(run.execution_id), trigger=run.trigger_type,
    )
    attempt = run.trigger_data.get("attempt")
    if attempt is not None:  # event runs only: a cron or manual run has no attempts
        fields["attempt"] = attempt
    if run.event_id:
        fields.update(event_id=str(run.event_id), event_type=run.trigger_data.get("event_type"))
    return fields


def store_publisher(store: Store) -> Publisher:
    """ctx.events.publish from a script: into the script's own tenant (the executor fills it
    in, never the script), through the same durable path as jsrt_publish."""

    async def publish(req: PublishRequest) -> str:
        event_id = await store.enqueue(
            req.tenant_id, req.event_type, req.payload, None, req.depth, "script"
        )
        return str(event_id)

    return publish


@asynccontextmanager
async def open_services(settings: Settings) -> AsyncIterator[tuple[Store, Executor]]:
    """The pool and the sandbox every long-running jsrt process needs."""
    pool_size = max(4, settings.concurrency // 4 + 4)
    store = await Store.open(settings.require_database(), max_size=pool_size)
    try:
        async with Executor(workers=settings.worker_count, publisher=store_publisher(store),
                            fetch_allowlist=settings.fetch_allowlist) as executor:
            yield store, executor
    finally:
        await store.close()


async def stop_on_signals(stop: Callable[[], None]) -> None:
    """SIGTERM and SIGINT ask for a graceful stop (run as a task; cancel it when done)."""
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            _LOG.info("signal_received", signal=signal.Signals(signum).name)
            stop()


async def run_daemon(settings: Settings, until_idle: bool = False, http: str | None = None,
                     ready: Callable[[str | None, str | None], None] | None = None) -> int:
    """`jsrt run`: the daemon with signal handling (and, given `http` = HOST:PORT, the HTTP
    trigger server on the same executor); returns the exit code. `ready(http, metrics)` is
    called with the addresses really bound, once both listen and before the daemon starts
    (`jsrt dev` prints its banner then, never before an address turned out to be taken)."""
    from consumer.http import start_http
    from consumer.metrics import start_metrics

    async with open_services(settings) as (store, executor), anyio.create_task_group() as tg:
        # What start-up built lives as long as the process: out of the collector's sight, a
        # full collection no longer walks it (a pause that would show in the latency tail).
        gc.freeze()
        daemon = Daemon(settings, store, executor)
        tg.start_soon(stop_on_signals, daemon.stop)
        metrics = None if until_idle else await start_metrics(tg, settings, store, executor, daemon)
        server = await start_http(tg, settings, store, executor, http) if http else None
        if ready is not None:
            ready(server.address if server else None, metrics.addr if metrics else None)
        await daemon.run(until_idle=until_idle)
        if server is not None:
            await server.shutdown()
        if metrics is not None:
            await metrics.shutdown()
        tg.cancel_scope.cancel()
    return 0
