"""The daemon: claim → execute → report, for one process.

    claim loop  take slots of scripts (leases), reserve their queued runs into local queues,
                fan events out - one round trip (this module, jsrt_claim_v5); beside it, the
                side lane: a small claim when an event comes while a claim fans out a backlog
    execute     each slot pushes its script's local queue through the sandbox, a serial group
                of runs at a time (slots.py): no round trip between two runs of a slot
    report      the completer records results, starts of long runs and given-back slots in
                batches (completer.py)

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
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from uuid import UUID

import anyio

from consumer import log, recording
from consumer.backoff import Backoff
from consumer.cancel import CancelWatcher
from consumer.clock import Clock, SystemClock, wall
from consumer.completer import Completer
from consumer.errors import StoreError, StoreUnavailable
from consumer.lease import Lease, memory_report
from consumer.listener import Listener
from consumer.records import Finished, Leased, Outcome, Run
from consumer.retention import Cleaner, Policy
from consumer.retry import retry_at_after
from consumer.sandbox import Executor
from consumer.sandbox.types import ExecutionRequest, ExecutionResult
from consumer.settings import Settings
from consumer.slots import SideHints, Slots
from consumer.store import Store
from consumer.timers import Timers
from consumer.vacuum import QueueVacuum

_LOG = log.get("jsrt.daemon")

# A run of a local queue that has run this long is shown as 'running' in the database (its
# execution row stays 'pending' until then): operators see long runs within about 100 ms,
# and a short run is written once, when it ends.
SHOW_STARTED_AFTER_S = 0.05
# The side claim's bounds: small, so that it takes a few milliseconds whatever the backlog.
SIDE_EVENTS = 1  # the oldest due event of the tenant the wake-up named (none locked)
SIDE_PER_TENANT = 1


@dataclass(eq=False)
class _Group:
    """A serial group in one slot: its runs execute one after another."""

    script_id: UUID
    runs: list[Run]
    since: float  # monotonic: when the run in progress started (or the group was handed over)
    left: int  # results still to come
    current: int = 0  # index of the run in progress
    shown: int = -1  # index of the last run shown as started


@dataclass
class Counters:
    dispatched_events: int = 0
    started: int = 0
    recorded: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    rescued: int = 0
    side_claims: int = 0


@dataclass(frozen=True, slots=True)
class DaemonStatus:
    """What the daemon shows the metrics collector: numbers, never its fields."""

    rescued: int
    events_rejected: int
    listener_reconnects: int
    listening: bool
    side_claims: int = 0


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
        self._slots = Slots(settings.concurrency, settings.reserve, settings.lease_period,
                            linger=settings.lease_linger)
        self._groups: set[_Group] = set()
        self._grouped = anyio.Event()  # a group started: the start-showing ticker has work
        # Runs handed to the executor, by execution id, with the future their result arrives
        # on: a callback, not a task per run, hands each result to the completer.
        self._in_flight: dict[UUID, tuple[Run, asyncio.Future[ExecutionResult]]] = {}
        self._completer = Completer(store, self.id, self._recorded, self._released,
                                    self._roomier)
        self._timers = Timers(store, self.clock, settings.poll_interval, self._queued)
        self._cancels = CancelWatcher(store, self.id, self._cancel_run,
                                      settings.heartbeat_interval)
        self._maybe_events = True  # hints: skip round trips that would find nothing
        self._maybe_runs = True
        self._runs_waiting = True  # the last claim saw pending runs (a freed slot may start one)
        # The side claim: while a claim fans out a backlog, a wake-up (a new event) starts a
        # small claim beside it, so that the event waits for neither that claim nor the next.
        self._claiming: int | None = None  # slots the claim in flight asked for (None: none)
        self._side_asked = 0  # slots the side claim in flight asked for
        self._hints = SideHints()  # which tenants side claims serve (and: is there a backlog)
        self._side = anyio.Event()
        self._lanes_closed = False
        self.listener: Listener | None = None
        self._listen = listen  # False: polling only (tests of the loop without a database)

    # ------------------------------------------------------------ public
    def stop(self) -> None:
        """Stop claiming; running executions get the grace period, then are released."""
        self._stopping.set()
        self.wake()

    def wake(self, tenant: UUID | None = None) -> None:
        """Something may be due: a notification (of this tenant's event, when it names one),
        a poll tick, a script change."""
        self._maybe_events = self._maybe_runs = True
        self._slots.hint()
        self._wake.set()
        # The run this wake-up may bring finds the sandbox awake (its claim takes a few
        # milliseconds, in which an idle worker is woken off the run's path).
        warm = getattr(self.executor, "warm", None)
        if warm is not None and not self._stopping.is_set():
            warm()
        # While a backlog is fanned out, the event may wait behind its claims: the side lane
        # takes it (unless its tenant's own backlog is what the claims serve).
        if self._hints.woke(tenant) and self._claiming is not None:
            self._side.set()

    def status(self) -> DaemonStatus:
        listener = self.listener
        return DaemonStatus(self.counters.rescued, listener.rejected if listener else 0,
                            listener.reconnects if listener else 0, listener is not None,
                            self.counters.side_claims)

    async def run(self, until_idle: bool = False) -> None:
        s = self.settings
        lease = Lease(self.store, s.heartbeat_interval, owner=self.id,
                      rescue_after=s.heartbeat_timeout, retry_base=s.retry_base_seconds,
                      clock=self.clock, on_beat=self._beaten,
                      memory=memory_report(self.executor))
        if until_idle:  # a drain ends when nothing is held: no slot lingers
            self._slots.linger = 0.0
        async with lease:
            _LOG.info("daemon_started", daemon_id=self.id, concurrency=s.concurrency,
                      until_idle=until_idle)
            try:
                async with anyio.create_task_group() as tg:
                    self._start_services(tg, until_idle)
                    await self._claim_loop(until_idle)
                    await self._finish_in_flight()
                    tg.cancel_scope.cancel()
            finally:
                _LOG.info("daemon_stopped", daemon_id=self.id, recorded=self.counters.recorded)

    def _start_services(self, tg: anyio.abc.TaskGroup, until_idle: bool) -> None:
        s = self.settings
        tg.start_soon(self._completer.run)
        tg.start_soon(self._show_started)
        tg.start_soon(self._cancels.run)
        if until_idle:  # a drain takes retries and ticks when it runs dry
            return
        if self._listen:
            self.listener = Listener(s.require_database(), self.store, self.wake, s.channels,
                                     on_cancel=self._cancels.notified)
            tg.start_soon(self.listener.run)
        tg.start_soon(self._timers.run, self._stopping)
        if s.cleanup_interval > 0:
            cleaner = Cleaner(self.store.retention, Policy.from_settings(s),
                              s.cleanup_interval, self.clock)
            tg.start_soon(cleaner.run)
        if s.queue_vacuum_interval > 0:
            tg.start_soon(QueueVacuum(self.store.queue, s.queue_vacuum_interval).run)

    async def cleanup(self) -> dict[str, int]:
        """Apply the retention policy once, at this daemon's clock."""
        cleaner = Cleaner(self.store.retention, Policy.from_settings(self.settings),
                          self.settings.cleanup_interval, self.clock)
        return await cleaner.once()

    # ------------------------------------------------------------ claim
    async def _claim_loop(self, until_idle: bool) -> None:
        async with anyio.create_task_group() as lanes:
            if not until_idle:  # (a drain has no listener, nothing wakes it mid-claim)
                lanes.start_soon(self._side_lane)
            try:
                await self._main_lane(until_idle)
            finally:  # the side claim in flight ends, and its runs are queued, first
                self._lanes_closed = True
                self._side.set()

    async def _main_lane(self, until_idle: bool) -> None:
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
        slots = self._slots
        # Policy here, rows in SQL: how many slots to take (what this daemon can still hold,
        # at most half of it for one script per claim), how many runs to reserve per slot,
        # which local queues need more - and events no more than there is room for, so that
        # a busy daemon leaves the queue to the others.
        free = 0 if self._stopping.is_set() else slots.free()
        # slots whenever some may be had: a hint, or pending runs seen by the last claim
        slot_limit = (0 if self._stopping.is_set() or not (self._maybe_runs or self._runs_waiting)
                      else slots.claim_ask(self._hints.backlog, self._side_asked))
        per_script = max(1, s.concurrency // 2)
        reserve = slots.reserve_per_slot(free)
        refill = slots.refill()
        # events for the local queues' room, and for the slots this claim may take (more
        # would only be queued 'pending', and reserved by a second write later)
        room = sum(refill.values()) + min(free, per_script) * reserve
        event_limit = min(s.claim_batch, room) if self._maybe_events else 0
        if not (event_limit or slot_limit or slots.wants_refill()):
            return False
        # Hints are cleared before the query, so a wake-up that arrives during it is kept.
        self._maybe_events = self._maybe_events and not event_limit
        self._maybe_runs = self._maybe_runs and not slot_limit
        self._claiming = slot_limit
        if self._hints:  # wake-ups between two claims: beside this one
            self._side.set()
        try:
            leased = await self.store.queue.claim_leased(
                self.id, event_limit, s.tenant_batch, slot_limit, per_script, reserve, refill,
                tenant_slots=s.tenant_slot_count)
        finally:
            self._claiming = None
        self._hints.claimed(leased.runs, leased.more, s.tenant_batch)
        await self._take(leased, refill)
        # pending runs may be startable: every slot asked for was taken
        self._runs_waiting = leased.waiting
        self._maybe_runs = self._maybe_runs or (
            leased.waiting and slot_limit > 0 and sum(leased.granted.values()) >= slot_limit)
        return bool(leased.events or leased.runs or leased.granted)

    async def _side_lane(self) -> None:
        """Side claims, one at a time, each when a wake-up comes while a claim fans out a
        backlog. Failures are the main claim's to report: a side claim is only a shortcut."""
        while True:
            await self._side.wait()
            self._side = anyio.Event()
            if self._lanes_closed or self._stopping.is_set():
                return
            # while a claim is in flight (else the next claim's start asks again)
            while (self._claiming is not None and not self._lanes_closed
                   and (tenant := self._hints.next()) is not None):
                after = UUID(int=(tenant.int - 1) % (1 << 128))  # the tenant visited first
                try:
                    await self._claim_side(self._claiming, after)
                except (StoreUnavailable, StoreError) as exc:
                    _LOG.warning("side_claim_failed", error=str(exc).splitlines()[0][:300])
                    break

    async def _claim_side(self, claiming: int, after: UUID) -> None:
        """A small claim beside the one in flight: the oldest due event of the first tenant
        after `after` that has one not locked (the backlog's are, by the big claim), one slot
        for each script it goes to, out of the share that claim left free - a new event of a
        quiet tenant runs now, not after the backlog's fan-out and the claim after it. No
        refill, and its slots only for the scripts of the event it fans out: the local queues
        and the pending runs are the main claim's. Its new leases are one-shot."""
        slot_limit = self._slots.side_ask(claiming)
        per_script = 1
        reserve = self._slots.reserve_per_slot(max(slot_limit, 1))
        self._side_asked = slot_limit  # (a claim that starts meanwhile leaves them)
        try:
            leased = await self.store.queue.claim_leased(
                self.id, SIDE_EVENTS, SIDE_PER_TENANT, slot_limit, per_script, reserve, {},
                after, pending_slots=0, tenant_slots=self.settings.tenant_slot_count)
        finally:
            self._side_asked = 0
        self.counters.side_claims += 1
        await self._take(leased, {}, one_shot=True)
        self._runs_waiting = self._runs_waiting or leased.waiting
        self._wake.set()  # the main loop looks again (the side claim may have left more)

    async def _take(self, leased: Leased, refill: dict[UUID, int], one_shot: bool = False
                    ) -> None:
        """A claim's result into the local bookkeeping: leases lost and granted, runs queued,
        runs reserved under a lease given back meanwhile given back; then the slots run."""
        slots = self._slots
        # Leases gone first, grants after: a lease given back while this claim ran (the
        # completer's release commits on another connection) may be granted again by the same
        # claim, and the new one must not be forgotten with the old. Runs still queued under a
        # lost lease are reserved for this daemon in the database: given back below, or they
        # would wait for it forever.
        dropped = slots.lost(leased.lost) if leased.lost else []
        if leased.lost:
            _LOG.warning("leases_lost", daemon_id=self.id, scripts=len(leased.lost))
        for script_id, n in leased.granted.items():
            slots.granted(script_id, n, one_shot)
        orphans = [r.execution_id for r in dropped]
        orphans += [r.execution_id for r in leased.runs if not slots.reserved(r)]
        slots.filled(refill, Counter(r.script_id for r in leased.runs), leased.more)
        self._maybe_events = self._maybe_events or leased.more
        if orphans:  # reserved for a lease given back meanwhile: for whoever comes next
            with anyio.CancelScope(shield=True):
                await self.store.queue.unreserve_runs(self.id, orphans)
        self.counters.dispatched_events += leased.events
        self._pump()

    async def _idle(self) -> bool:
        if self._in_flight or self._groups or not self._slots.idle() \
                or self._completer.unrecorded:
            return False
        if await self._timers.poll(force=True):
            self._maybe_runs = True
            return False
        self._maybe_events = self._maybe_runs = True
        return not await self.store.queue.pending_work(self.clock.now())

    async def _wait_for_work(self) -> None:
        # A notification, a freed slot or the jittered poll timer, whichever comes first:
        # a lost notification costs latency, never an event.
        # A lingering slot due back before the poll shortens the wait; it is given back then,
        # without a claim.
        poll = self.settings.poll_interval * random.uniform(0.8, 1.2)
        release_at = self._slots.next_release()
        timeout = poll if release_at is None else min(poll, release_at - time.monotonic())
        with anyio.move_on_after(max(timeout, 0.0)) as scope:
            await self._wake.wait()
        if scope.cancelled_caught:
            if timeout < poll:
                self._pump()
            else:
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

    def _cancel_run(self, execution_id: UUID, error: str) -> None:
        """A run of this daemon was cancelled (cancel.py): out of its local queue, or its
        step terminated. Its execution is 'cancelled' already, and its result, recorded
        nowhere (the run is gone), frees the slot as any result does."""
        if self._slots.drop(execution_id):
            return
        held = self._in_flight.get(execution_id)
        if held is None:
            return
        cancel = getattr(self.executor, "cancel", None)
        if cancel is None or not cancel(str(execution_id), error):
            future = held[1]  # not (or no longer) the executor's: ends here
            if not future.done():
                future.set_result(ExecutionResult("cancelled", error=error))

    # ------------------------------------------------------------ execute
    def _pump(self) -> None:
        """Start a group in every idle slot with queued runs; give back the slots that have
        nothing left to run."""
        while groups := self._slots.next_groups(self._completer.heavy):
            for script_id, runs in groups:
                self._start_group(script_id, runs)
        for script_id, n in self._slots.releases().items():
            self._completer.release(script_id, n)  # then _released

    def _start_group(self, script_id: UUID, runs: list[Run]) -> None:
        runnable: list[Run] = []
        for run in runs:
            refused = run.refused()  # e.g. unusable resource_limits: fails, sandbox untouched
            if refused is None:
                runnable.append(run)
            else:
                at = wall(time.monotonic())
                self._completer.add(Outcome(run, refused, self._retry_at(run), at, at))
        self.counters.started += len(runs)
        if not runnable:
            self._slots.group_done(script_id)
            return
        group = _Group(script_id, runnable, time.monotonic(), len(runnable))
        futures = self._submit_serial([run.request() for run in runnable])
        self._groups.add(group)
        self._grouped.set()
        for i, (run, future) in enumerate(zip(runnable, futures, strict=True)):
            if log.enabled("debug"):
                _LOG.debug("execution_queued", **recording.run_fields(run))
            self._in_flight[run.execution_id] = (run, future)
            future.add_done_callback(partial(self._executed, group, i))

    def _submit_serial(self, requests: list[ExecutionRequest]
                       ) -> list[asyncio.Future[ExecutionResult]]:
        """The executor's serial group: one run after another, never two at once."""
        loop = asyncio.get_running_loop()
        try:
            serial = getattr(self.executor, "submit_serial", None)
            if serial is not None:
                futures: list[asyncio.Future[ExecutionResult]] = serial(requests)
                return futures
            return _one_after_another(self.executor, requests, loop)
        except Exception as exc:  # the executor must never take the daemon down
            failed = []
            for _ in requests:
                future = loop.create_future()
                future.set_exception(exc)
                failed.append(future)
            return failed

    def _executed(self, group: _Group, i: int, future: asyncio.Future[ExecutionResult]) -> None:
        run = group.runs[i]
        now = time.monotonic()
        if not future.cancelled() and self._in_flight.pop(run.execution_id, None) is not None:
            try:
                result = self._result_of(run, future)
                # true times from the worker; else what this process saw
                started = result.started or (group.since if i == group.current else now)
                finished = result.finished or now
                outcome = Outcome(run, result, self._retry_at(run), wall(started),
                                  wall(finished))
            except Exception as exc:  # a callback must fail this run only, never the daemon
                _LOG.error("execution_result_broken",
                           error=f"{type(exc).__name__}: {exc}"[:300], **recording.run_fields(run))
                outcome = Outcome(run, ExecutionResult("failed",
                                                       error="sandbox result unreadable"),
                                  self.clock.now())
                finished = now
            self._completer.add(outcome)
            if i >= group.current:  # the next run starts after it (results of a batch may
                group.current, group.since = i + 1, finished  # come in any order)
        # (otherwise released at shutdown: the run is queued again for any daemon)
        group.left -= 1
        if group.left == 0:
            self._groups.discard(group)
            self._slots.group_done(group.script_id)
            try:
                self._pump()
            except Exception as exc:  # a callback must never take the daemon down
                _LOG.error("pump_failed", error=f"{type(exc).__name__}: {exc}"[:300])
        self._wake.set()

    async def _show_started(self) -> None:
        """Runs of a group that have run SHOW_STARTED_AFTER_S are shown as started."""
        while True:
            if not self._groups:
                self._grouped = anyio.Event()
                await self._grouped.wait()
            await anyio.sleep(SHOW_STARTED_AFTER_S / 2)
            now = time.monotonic()
            for g in list(self._groups):
                i = g.current
                if i < len(g.runs) and g.shown < i and now - g.since >= SHOW_STARTED_AFTER_S:
                    g.shown = i
                    self._completer.started(g.runs[i].execution_id, wall(g.since))

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
        # The local queues go back first, for other daemons to take while these runs end.
        queued = self._slots.drain()
        if queued:
            with anyio.CancelScope(shield=True):
                given = await self.store.queue.unreserve_runs(
                    self.id, [r.execution_id for r in queued])
            _LOG.info("queued_runs_released", count=given)
        if self._in_flight:
            _LOG.info("draining", in_flight=len(self._in_flight),
                      grace_s=self.settings.grace_period)
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
        await self._completer.flushed()
        with anyio.CancelScope(shield=True):
            await self.store.queue.release_leases(self.id)

    # ------------------------------------------------------------ report
    def _released(self) -> None:
        """Slots given back are written: free in the database for every starter, this daemon
        included (asking before the write committed would find them still held here)."""
        if self._runs_waiting:
            self._maybe_runs = True
            self._wake.set()

    def _roomier(self) -> None:
        """A script's unrecorded outcomes no longer hold it back (Completer.heavy)."""
        self._pump()
        self._wake.set()

    def _recorded(self, batch: Sequence[Outcome], recorded: Sequence[Outcome]) -> None:
        """After each batch of the completer: log each outcome as recorded, free slots."""
        by_id = {o.run.execution_id: o for o in recorded}
        for o in batch:
            shown = by_id.get(o.run.execution_id, o)
            status = shown.result.status
            self.counters.by_status[status] = self.counters.by_status.get(status, 0) + 1
            recording.log_outcome(shown.run, shown.result, o.run.execution_id in by_id)
        self.counters.recorded += len(recorded)
        self._wake.set()


def _one_after_another(executor: Executor, requests: list[ExecutionRequest],
                       loop: asyncio.AbstractEventLoop) -> list[asyncio.Future[ExecutionResult]]:
    """A serial group on an executor without them: each run submitted when the one before
    it has its result."""
    futures: list[asyncio.Future[ExecutionResult]] = [loop.create_future() for _ in requests]

    def submit(i: int) -> None:
        i = _next_open(futures, i)  # skipping runs cancelled before their turn
        if i == len(requests):
            return
        try:
            inner = executor.submit(requests[i])
        except Exception as exc:
            for f in futures[i:]:
                if not f.done():
                    f.set_exception(exc)
            return
        inner.add_done_callback(lambda done: settle(i, done))

    def settle(i: int, done: asyncio.Future[ExecutionResult]) -> None:
        target = futures[i]
        if not target.done():
            if done.cancelled():
                target.cancel()
            elif (exc := done.exception()) is not None:
                target.set_exception(exc)
            else:
                target.set_result(done.result())
        submit(i + 1)

    submit(0)
    return futures


def _next_open(futures: list[asyncio.Future[ExecutionResult]], i: int) -> int:
    """The first run from i on that has no result yet (a cancelled one has: _cancel_run)."""
    while i < len(futures) and futures[i].done():
        i += 1
    return i
