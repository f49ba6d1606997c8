"""The executor: a supervised pool of worker processes that run tenants' JavaScript.

The daemon's process never runs JavaScript. It sends requests to workers, serves their host
calls, and watches them: a worker that crashes, overruns a deadline by more than the grace,
stops its heartbeat or outgrows its memory is killed and replaced. The execution it was
running at that moment (named by the worker's slot) gets the verdict; every other execution
it held is re-run on another worker, not failed.
"""

from __future__ import annotations

import asyncio
import bisect
import dataclasses
import itertools
import json
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import httpx
import structlog

from consumer import jsontext
from consumer.sandbox import protocol
from consumer.sandbox.backlog import Backlog, Placement
from consumer.sandbox.crashes import REFUSE_AFTER, REFUSE_FOR_S, WINDOW_S, Crashes
from consumer.sandbox.errors import (
    ExecutorClosed,
    HostCallError,
    WorkerStartError,
)
from consumer.sandbox.fetch import Fetcher
from consumer.sandbox.host import HostApi
from consumer.sandbox.process import KillReason, WorkerProcess, WorkerSettings
from consumer.sandbox.slot import CLOSING_AFTER_MEMORY, SlotState
from consumer.sandbox.types import (
    ApiLimiter,
    DataHost,
    ExecutionRequest,
    ExecutionResult,
    Publisher,
    SecretReader,
    Status,
)

log = structlog.get_logger("jsrt.sandbox")
_ARGS_DEPTH = 4 * jsontext.MAX_DEPTH
_DB_QUERY_OPS = frozenset({"db.query", "db.queryOne", "db.execute"})
_LOG_LEVELS = {"warn": "warning", "error": "error", "debug": "debug"}


@dataclass(frozen=True, slots=True)
class ExecutorOptions:
    workers: int
    max_inflight_per_worker: int = 32
    rlimit_data_bytes: int = 2 << 30
    max_worker_rss_bytes: int = 2 << 30
    kill_grace_s: float = 1.0
    heartbeat_timeout_s: float = 5.0
    max_idle_contexts: int = 32
    max_context_runs: int = 1000
    max_attempts: int = 3
    fetch_max_response_bytes: int = 1 << 20
    fetch_timeout_s: float = 10.0
    # ctx.http.fetch's connections, shared by every tenant, and the most fetches one tenant
    # has in flight at once (the rest of its fetches wait for one of its own)
    fetch_connections: int = 256
    fetch_tenant_connections: int = 16
    supervise_interval_s: float = 0.05
    respawn_backoff_s: float = 1.0
    # A step running longer than this takes its worker out of the rotation until it ends, and
    # the runs waiting behind it there move to other workers (one tenant's long synchronous
    # step never holds up another tenant's run that has not started).
    long_step_s: float = 0.1
    # Extra workers started while every worker is in a long step, and stopped after being
    # idle for burst_idle_s: a tenant whose runs burn CPU within their limits (30 s each, 5 at
    # once) took every worker, and every other tenant's run waited for them (4-24 s measured).
    # A burst worker takes no run of a tenant that has a step running long: it is for the
    # others, and the OS shares the cores between all. 0: none.
    burst_workers: int = 0
    burst_idle_s: float = 10.0
    # The most of the workers' places (max_inflight_per_worker each) one tenant's runs hold at
    # once; the rest of its runs wait, and other tenants' go first. 0: the places shared out
    # among the tenants holding some, plus one (Executor._at_share).
    tenant_places: int = 0


@dataclass(frozen=True, slots=True)
class WorkerStats:
    index: int
    pid: int
    rss_bytes: int
    inflight: int
    executions: int
    started_at: float
    step_ms: int = 0  # how long the step running now has run (0: none is running)


@dataclass(frozen=True, slots=True)
class ExecutorStats:
    workers: tuple[WorkerStats, ...]
    restarts: int
    last_respawn_ms: float | None
    executions: int
    bursts: int = 0  # burst workers started


@dataclass(eq=False)
class _Pending:
    request: ExecutionRequest
    future: asyncio.Future[ExecutionResult]
    info_json: str  # what the script's ctx says of the execution (ids, trigger, depth)
    attempts: int = 0
    dispatched_at: float = 0.0
    # When the executor took the run: its recorded duration counts from here, so that time
    # spent waiting for a worker, or behind another execution's step, shows.
    submitted_at: float = field(default_factory=time.monotonic)
    api_calls: int = 0
    db_queries: int = 0  # ctx.db statements (database_query_count)
    calls: set[asyncio.Task[None]] = field(default_factory=set)
    chain: _Chain | None = None  # its serial group, if it has one
    index: int = 0  # its place in that group
    placed: bool = False  # on a worker now (what a chain counts in `inflight`)
    # its version cost a worker lately (crashes.py): it runs alone, as a re-run does
    alone: bool = False

    def __lt__(self, other: _Pending) -> bool:  # a chain's queue is kept in its order
        return self.index < other.index

    @property
    def tenant(self) -> str:
        return self.request.tenant_id

    def cancel_calls(self) -> None:
        for task in self.calls:
            task.cancel()
        self.calls.clear()

    def message(self, seq: int, sources: protocol.Sources) -> protocol.Run:
        """This attempt's RUN, under the seq that names it on the worker it goes to (which
        `sources` says holds what)."""
        r, limits = self.request, self.request.limits
        return protocol.Run(
            seq, r.tenant_id, r.script_id, r.version_id,
            sources.outgoing((r.tenant_id, r.script_id, r.version_id), r.source), r.input_json,
            self.info_json, limits.max_execution_time_ms, limits.max_memory_bytes,
            limits.max_output_size_bytes, self.attempts,
            0 if self.chain is None else self.chain.id,
        )


@dataclass(eq=False)
class _Chain:
    """A serial group (submit_serial): its runs execute one after another, never two at once.
    The runs waiting for their turn stay here; the ones on a worker are all on one worker,
    which runs them in order (batching them when it can), and the next go out only when
    those have all ended or come back."""

    id: int
    queue: list[_Pending]  # not on a worker, in the group's order
    tenant: str = ""  # the tenant of its runs (a group is one script's)
    inflight: int = 0  # on a worker now
    backlogged: bool = False  # in the executor's backlog, waiting for a worker


CHAIN_WINDOW = 16  # at most this many of a chain's runs on a worker at once
# A worker idle this long gets a warm-up on a wake-up (Executor.warm): after a few
# milliseconds of idleness its process and engine thread take hundreds of microseconds to
# answer; within them they answer at once, and a warm-up would only cost CPU.
WARM_AFTER_S = 0.005


def _key(request: ExecutionRequest) -> tuple[str, str, str]:
    return (request.tenant_id, request.script_id, request.version_id)


def _refusal(seconds: float) -> str:
    return (f"refused: runs of this script version cost the sandbox a worker {REFUSE_AFTER}"
            f" times within {WINDOW_S:.0f} s (crashed the engine, or had to be killed); its"
            f" runs are refused for another {math.ceil(seconds)} s")


def _blame_uncertain(reason: KillReason, pending: _Pending) -> bool:
    """V8 can abort from a background thread (GC, teardown of an earlier script's isolate)
    while another execution holds the step: a crash is pinned on an execution only when it
    crashes again running alone."""
    return reason.kind == "crash" and pending.attempts == 0 and not pending.alone


def _load(worker: WorkerProcess) -> int:
    """Executions a worker holds that may be in progress at once: a chain counts once (its
    runs wait for each other, holding no context), any other execution once each."""
    chains = set()
    alone = 0
    for pending in worker.inflight.values():
        if pending.chain is None:
            alone += 1
        else:
            chains.add(pending.chain.id)
    return alone + len(chains)


def _isolated(worker: WorkerProcess) -> bool:
    """Running a re-run, or a run of a version that cost a worker lately: nothing may join."""
    return any(p.attempts > 0 or p.alone for p in worker.inflight.values())


class Executor:
    def __init__(
        self,
        workers: int | None = None,
        publisher: Publisher | None = None,
        fetch_allowlist: Sequence[str] = (),
        api_limiter: ApiLimiter | None = None,
        data: DataHost | None = None,
        secrets: SecretReader | None = None,
        **options: Any,
    ) -> None:
        self.options = ExecutorOptions(workers=workers or os.cpu_count() or 1, **options)
        self._publisher = publisher
        self._api_limiter = api_limiter
        self._data = data
        self._secrets = secrets
        self._allowlist = tuple(fetch_allowlist)
        # the regular workers, then the places of burst workers (None while not running)
        self._workers: list[WorkerProcess | None] = [None] * self._places
        self._bursting: asyncio.Task[None] | None = None  # a burst worker starting
        self._hogs: dict[int, str] = {}  # worker index → tenant whose step runs long there
        self.bursts = 0  # burst workers started
        self._pressed_at = 0.0  # (monotonic) when no regular worker was out of a long step
        self._backlog: Backlog[_Pending | _Chain] = Backlog()
        self._seq = itertools.count(1)
        self._chain_ids = itertools.count(1)
        self._running = False
        self._supervisor: asyncio.Task[None] | None = None
        self._respawns: set[asyncio.Task[None]] = set()
        self._lost: set[WorkerProcess] = set()  # workers gone whose process is not reaped yet
        self._client: httpx.AsyncClient | None = None
        self._fetcher: Fetcher | None = None
        self._host: HostApi | None = None
        self.restarts = 0
        self.warmups = 0  # warm-ups sent (Executor.warm)
        self._crashes = Crashes()  # versions that cost a worker: alone, then refused a while
        self.executions = 0
        self.last_respawn_ms: float | None = None

    # lifecycle
    async def __aenter__(self) -> Executor:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def start(self) -> None:
        o = self.options
        self._client = httpx.AsyncClient(
            trust_env=False, follow_redirects=False,
            limits=httpx.Limits(max_connections=o.fetch_connections,
                                max_keepalive_connections=32))
        self._fetcher = Fetcher(self._client, self._allowlist, o.fetch_max_response_bytes,
                                o.fetch_timeout_s, o.fetch_tenant_connections)
        self._host = HostApi(self._publisher, self._fetcher, self._api_limiter, self._data,
                             self._secrets)
        self._running = True
        try:
            started = await asyncio.gather(*(self._spawn(i) for i in range(self.options.workers)))
        except BaseException:
            await self.aclose()
            raise
        for worker in started:
            self._workers[worker.index] = worker
        self._supervisor = asyncio.create_task(self._supervise())

    async def aclose(self) -> None:
        self._running = False
        tasks = [t for t in (self._supervisor, self._bursting, *self._respawns)
                 if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # lost workers whose replacement was cancelled before it reaped them
        lost, self._lost = list(self._lost), set()
        await asyncio.gather(*(w.stop() for w in lost), return_exceptions=True)
        workers = [w for w in self._workers if w is not None]
        self._workers = [None] * self._places
        self._hogs.clear()
        for worker in workers:
            for pending in worker.inflight.values():
                self._abandon(pending)
            worker.inflight.clear()
        while self._backlog:
            item = self._backlog.popleft()
            for pending in item.queue if isinstance(item, _Chain) else (item,):
                self._abandon(pending)
        await asyncio.gather(*(w.stop() for w in workers))
        if self._data is not None:
            await self._data.aclose()
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        if self._fetcher is not None:
            self._fetcher.close()
            self._fetcher = None

    # executing
    async def execute(self, request: ExecutionRequest) -> ExecutionResult:
        return await self.submit(request)

    def submit(self, request: ExecutionRequest) -> asyncio.Future[ExecutionResult]:
        """Start an execution; its result arrives on the future (for callers that run many
        at once and would rather not pay a task each). Raises ExecutorClosed."""
        if not self._running:
            raise ExecutorClosed
        pending = self._pending(request)
        # Behind anything already waiting (a re-run waiting for an idle worker must not be
        # overtaken forever by new work).
        if not pending.future.done() and (self._backlog or not self._dispatch(pending)):
            self._backlog.append(pending)
            self._drain_backlog()
        return pending.future

    def submit_serial(
        self, requests: Sequence[ExecutionRequest]
    ) -> list[asyncio.Future[ExecutionResult]]:
        """A serial group: these executions run one after another, in this order, never two
        at once (a slot of a script's max_concurrent_runs pushing its queue), without a round
        trip through the caller between two of them. Raises ExecutorClosed."""
        if not self._running:
            raise ExecutorClosed
        chain = _Chain(next(self._chain_ids), [],
                       requests[0].tenant_id if requests else "")
        futures = []
        for i, request in enumerate(requests):
            pending = self._pending(request)
            futures.append(pending.future)
            if not pending.future.done():
                pending.chain, pending.index = chain, i
                chain.queue.append(pending)
        if chain.queue and (self._backlog or not self._dispatch_chain(chain)):
            chain.backlogged = True
            self._backlog.append(chain)
            self._drain_backlog()
        return futures

    def _pending(self, request: ExecutionRequest) -> _Pending:
        future: asyncio.Future[ExecutionResult] = asyncio.get_running_loop().create_future()
        try:
            info_json = protocol.to_json_text(
                {
                    "tenantId": request.tenant_id,
                    "scriptId": request.script_id,
                    "executionId": request.execution_id,
                    "trigger": dict(request.trigger),
                    "depth": request.event_depth,
                    "auth": dict(request.auth) if request.auth is not None else None,
                }
            )
        except (TypeError, ValueError):
            error = "trigger data is not JSON-serialisable"
            future.set_result(ExecutionResult("failed", error=error, metrics=_metrics()))
            info_json = ""
        key = _key(request)
        refused = self._crashes.refused_for(key)
        if refused and not future.done():
            future.set_result(ExecutionResult("failed", error=_refusal(refused),
                                              metrics=_metrics()))
        return _Pending(request, future, info_json, alone=self._crashes.alone(key))

    def cancel(self, execution_id: str, error: str = "cancelled") -> bool:
        """End an execution now as 'cancelled' (#19): one still waiting here (alone, or in a
        serial group's queue) never starts; one on a worker gets its verdict at once, and the
        worker terminates its step (closing its context, keeping the worker) or, if it has not
        begun, lets it end at once when its turn comes (a chain goes on behind it); a run inside
        another's batch step runs on to the batch's end, unseen. False when this executor does
        not hold it."""
        result = ExecutionResult("cancelled", error=error, metrics=_metrics())
        for pending, item in self._queued_runs():
            if pending.request.execution_id == execution_id and not pending.future.done():
                if item is pending:
                    self._backlog.remove(item)
                # (a chain drops runs with a result when it dispatches the next ones)
                self._resolve_cancelled(pending, result)
                return True
        for worker in (w for w in self._workers if w is not None):
            for seq, pending in list(worker.inflight.items()):
                if pending.request.execution_id == execution_id:
                    del worker.inflight[seq]
                    if worker.alive:
                        worker.send(protocol.Cancel(seq))
                    self._resolve_cancelled(pending, result)  # (the chain goes on: _resolve)
                    return True
        return False

    def _queued_runs(self) -> Iterator[tuple[_Pending, _Pending | _Chain]]:
        """Every run waiting here, with what holds it: alone in the backlog, or in a serial
        group's queue (the group in the backlog, or with runs on a worker)."""
        for item in list(self._backlog):
            for pending in item.queue if isinstance(item, _Chain) else [item]:
                yield pending, item
        for worker in (w for w in self._workers if w is not None):
            for pending in list(worker.inflight.values()):
                if pending.chain is not None:
                    for queued in list(pending.chain.queue):
                        yield queued, pending.chain

    def _resolve_cancelled(self, pending: _Pending, result: ExecutionResult) -> None:
        pending.cancel_calls()
        metrics = _metrics(_since(pending.submitted_at), 0, pending.api_calls)
        self._resolve(pending, dataclasses.replace(result, metrics=metrics))
        self._drain_backlog()

    def _dispatch(self, pending: _Pending, held: dict[str, int] | None = None) -> bool:
        alone = pending.attempts > 0 or pending.alone
        worker = self._pick(pending.request.tenant_id, alone, held)
        if worker is None:
            return False
        self._send_to(worker, pending)
        return True

    def warm(self) -> None:
        """A run is likely soon (the daemon was woken by a new event): the worker the next
        run would go to, when idle for a while, wakes its engine now, while the claim is in
        the database (protocol.Warm). Never more than once per WARM_AFTER_S of idleness,
        and never to a worker with work: under load this sends nothing."""
        if not self._running:
            return
        # the worker the next run would go to when one is idle (_pick's choice at load 0),
        # found without counting loads: this runs on every wake-up, busy or not
        worker = next((w for w in self._workers if w is not None and w.alive
                       and not w.inflight and not w.long_step), None)
        now = time.monotonic()
        if worker is None or now - worker.active_at < WARM_AFTER_S:
            return
        worker.active_at = now
        self.warmups += 1
        worker.send(protocol.Warm())

    def _send_to(self, worker: WorkerProcess, pending: _Pending) -> None:
        seq = next(self._seq)
        worker.active_at = time.monotonic()
        worker.inflight[seq] = pending
        pending.placed = True
        pending.dispatched_at = time.monotonic()
        pending.api_calls = 0
        pending.db_queries = 0
        worker.send(pending.message(seq, worker.sources))

    def _dispatch_chain(self, chain: _Chain, held: dict[str, int] | None = None) -> bool:
        """The next of a chain's runs onto one worker; False: no worker can take them now.
        A re-run (after a worker was lost) goes alone to an idle worker, and the chain waits
        for it."""
        chain.queue = [p for p in chain.queue if not p.future.done()]
        if not chain.queue:
            return True
        head = chain.queue[0]
        alone = head.attempts > 0 or head.alone
        worker = self._pick(head.request.tenant_id, alone, held)
        if worker is None:
            return False
        count = 1
        if not alone:
            while (count < min(CHAIN_WINDOW, len(chain.queue))
                   and chain.queue[count].attempts == 0):
                count += 1
        taken, chain.queue = chain.queue[:count], chain.queue[count:]
        chain.inflight += len(taken)
        for pending in taken:
            self._send_to(worker, pending)
        return True

    def _chain_step(self, pending: _Pending, back: bool) -> None:
        """A chain's run left its worker: ended (back=False) or came back not run, to go again
        in its place. The chain goes on once none of it is on a worker."""
        chain = pending.chain
        if chain is None or not pending.placed:  # a run resolved while queued (cancelled):
            return  # the chain drops it when it dispatches its next runs
        pending.placed = False
        chain.inflight -= 1
        if back:
            bisect.insort(chain.queue, pending)
        if chain.inflight == 0 and chain.queue and not chain.backlogged:
            chain.backlogged = True
            # a chain that already waited goes first, like a run given back
            (self._backlog.appendleft if back else self._backlog.append)(chain)

    def _pick(self, tenant: str, alone: bool = False, held: dict[str, int] | None = None
              ) -> WorkerProcess | None:
        """The least busy worker; for a re-run, an idle one it will have to itself, so that
        an innocent execution is never killed twice by other scripts' bombs. Never a burst
        worker for a tenant that has a step running long."""
        if self._at_share(tenant, self._tenant_held() if held is None else held):
            return None
        best: WorkerProcess | None = None
        best_load = 0
        hog = tenant in self._hogs.values()
        for worker in self._workers:
            if worker is None or not worker.alive or _isolated(worker) or worker.long_step:
                continue
            if hog and worker.index >= self.options.workers:
                continue
            if alone:
                if not worker.inflight:
                    return worker
                continue
            load = _load(worker)
            if load < self.options.max_inflight_per_worker and (best is None or load < best_load):
                best, best_load = worker, load
        return best

    def _drain_backlog(self) -> None:
        """Dispatch what waits, the tenants in turn (backlog.py)."""
        if not self._backlog:
            return
        held = self._tenant_held()  # counted once, kept up to date as runs are placed
        self._backlog.drain(lambda item: self._place(item, held))

    def _place(self, item: _Pending | _Chain, held: dict[str, int]) -> Placement:
        if isinstance(item, _Chain):
            if self._dispatch_chain(item, held):
                item.backlogged = False
                if item.inflight:
                    held[item.tenant] = held.get(item.tenant, 0) + 1
                return Placement.PLACED
            head = item.queue[0]
        elif item.future.done():
            return Placement.PLACED
        elif self._dispatch(item, held):
            held[item.tenant] = held.get(item.tenant, 0) + 1
            return Placement.PLACED
        else:
            head = item
        if self._tenant_waits(head.tenant, held):
            return Placement.TENANT_WAITS
        return Placement.FULL  # it waits for a worker (a re-run, for an idle one): the round stops

    def _tenant_waits(self, tenant: str, held: dict[str, int]) -> bool:
        """Whether this tenant's runs wait for a reason of its own: it holds its share of
        the workers, or it has a step running long and the room left is on burst workers."""
        if self._at_share(tenant, held):
            return True
        if tenant not in self._hogs.values():
            return False
        return any(w is not None and w.alive and not w.long_step and not _isolated(w)
                   and _load(w) < self.options.max_inflight_per_worker
                   for w in self._workers[self.options.workers:])

    def _at_share(self, tenant: str, held: dict[str, int]) -> bool:
        """The tenant holds its share of the workers' places (`held`: _tenant_held): runs
        that wait on timers or host calls hold their place as long as they last (30 s), and
        one tenant's took every place. The share is `tenant_places`, or by default the places
        divided among the tenants holding some, this one included, plus one more: a single
        tenant may hold half, two a third each, ..., and there is always room for a tenant
        that holds nothing yet (unless the holders got theirs before the others came:
        nothing is taken back)."""
        mine = held.get(tenant, 0)
        if not mine:
            return False
        share = self.options.tenant_places or max(
            1, self.options.workers * self.options.max_inflight_per_worker // (len(held) + 1))
        return mine >= share

    def _tenant_held(self) -> dict[str, int]:
        """The places each tenant's runs hold on the workers (a serial group once)."""
        held: dict[str, int] = {}
        for worker in self._workers:
            if worker is None or not worker.inflight:
                continue
            chains: set[int] = set()
            for pending in worker.inflight.values():
                if pending.chain is None:
                    held[pending.tenant] = held.get(pending.tenant, 0) + 1
                elif pending.chain.id not in chains:
                    chains.add(pending.chain.id)
                    held[pending.tenant] = held.get(pending.tenant, 0) + 1
        return held

    # messages from workers
    def _on_message(
        self, worker: WorkerProcess, message: protocol.Done | protocol.Call | protocol.Revoked
    ) -> None:
        """A message the worker sent, parsed and checked already (a malformed one got the
        worker killed in process.py). Never an exception into the pipe's callback: a result
        that nobody resolves would hold its script's slot forever, so a failure to handle a
        message kills the worker too, and what it held is re-run or failed by _on_lost."""
        try:
            match message:
                case protocol.Done():
                    self._on_done(worker, message)
                case protocol.Call():
                    self._on_call(worker, message)
                case protocol.Revoked(seq=seq):
                    self._on_revoked(worker, seq)
        except Exception as exc:
            log.error("worker_protocol_error", index=worker.index, pid=worker.pid,
                      error=f"{type(exc).__name__}: {exc}"[:300])
            worker.kill(KillReason("protocol", None))

    def _on_done(self, worker: WorkerProcess, done: protocol.Done) -> None:
        pending = worker.inflight.pop(done.seq, None)
        worker.active_at = time.monotonic()
        worker.executions += 1
        if pending is None:
            return
        self._end_calls(pending)
        result = ExecutionResult(
            status=done.status,
            output_json=done.output_json,
            error=done.error,
            stack=done.stack,
            logs=done.log_lines(),
            metrics=_metrics(_since(pending.submitted_at), done.memory_bytes, done.api_calls,
                             pending.db_queries),
            started=done.started,
            finished=done.finished,
        )
        if self._host is not None:  # secrets masked before anything is logged or kept
            result = self._host.redacted(pending.request, result)
        try:
            self._emit_logs(pending.request, result)
        finally:  # the result is the run's whatever happens to its log lines
            self._resolve(pending, result)
        if self._backlog:
            self._drain_backlog()

    def _on_revoked(self, worker: WorkerProcess, seq: int) -> None:
        """A run given back untouched by a worker stuck in a long step: first in line."""
        pending = worker.inflight.pop(seq, None)
        if pending is not None:
            if pending.chain is None:
                self._backlog.appendleft(pending)
            else:
                self._chain_step(pending, back=True)
            self._drain_backlog()

    def _on_call(self, worker: WorkerProcess, call: protocol.Call) -> None:
        pending = worker.inflight.get(call.seq)
        if pending is None:
            return
        pending.api_calls += 1
        if call.op in _DB_QUERY_OPS:
            pending.db_queries += 1
        task = asyncio.create_task(self._serve_call(worker, pending, call))
        pending.calls.add(task)
        task.add_done_callback(pending.calls.discard)

    async def _serve_call(
        self, worker: WorkerProcess, pending: _Pending, call: protocol.Call
    ) -> None:
        assert self._host is not None
        seq, call_id, op = call.seq, call.call_id, call.op
        try:
            # Decoded here only as deep as Python can safely go; the host operation checks
            # its values against the runtime's limits and says which one is wrong.
            if jsontext.depth_exceeds(call.args_json, _ARGS_DEPTH):
                raise HostCallError(
                    f"{op[:32]}: arguments nested deeper than {jsontext.MAX_DEPTH} levels")
            args = json.loads(call.args_json)
            value = await self._host.call(pending.request, op, args, call.remaining_ms / 1000)
            reply = protocol.Ret(seq, call_id, True, value)
        except HostCallError as exc:
            reply = protocol.Ret(seq, call_id, False, [exc.name, str(exc)])
        except Exception:
            log.exception(
                "host_call_failed",
                op=op,
                tenant_id=pending.request.tenant_id,
                script_id=pending.request.script_id,
                execution_id=pending.request.execution_id,
            )
            reply = protocol.Ret(seq, call_id, False, ["Error", f"{op} failed"])
        if worker.inflight.get(seq) is pending:
            worker.send(reply)

    @staticmethod
    def _emit_logs(request: ExecutionRequest, result: ExecutionResult) -> None:
        if not result.logs:
            return
        bound = log.bind(
            tenant_id=request.tenant_id,
            script_id=request.script_id,
            execution_id=request.execution_id,
        )
        for line in result.logs:
            # console.warn/error reach the log at warning/error: operators alert on those
            emit = getattr(bound, _LOG_LEVELS.get(line["level"], "info"))
            if "metadata" in line:  # sdk.log's: a field of its own, never merged over ours
                emit("script_console", level=line["level"], message=line["message"],
                     metadata=line["metadata"])
            else:
                emit("script_console", level=line["level"], message=line["message"])

    def _resolve(self, pending: _Pending, result: ExecutionResult) -> None:
        self.executions += 1
        if self._host is not None:
            result = self._host.redacted(pending.request, result, done=True)
        if not pending.future.done():
            pending.future.set_result(result)
        self._chain_step(pending, back=False)

    def _end_calls(self, pending: _Pending) -> None:
        """The one hook at the end of every execution (and of every attempt that will be
        re-run): its host calls are cancelled, and what it holds (an open ctx.db
        transaction) is released."""
        pending.cancel_calls()
        if self._host is not None:
            self._host.end(pending.request)

    def _abandon(self, pending: _Pending) -> None:
        self._end_calls(pending)
        if not pending.future.done():
            pending.future.set_exception(ExecutorClosed())

    # supervision
    async def _spawn(self, index: int) -> WorkerProcess:
        started = time.monotonic()
        worker = await WorkerProcess.spawn(index, self._settings(), self._on_message, self._on_lost)
        log.info(
            "worker_started",
            index=index,
            pid=worker.pid,
            startup_ms=round((time.monotonic() - started) * 1000, 1),
        )
        return worker

    def _settings(self) -> WorkerSettings:
        o = self.options
        return WorkerSettings(o.rlimit_data_bytes, o.max_idle_contexts, o.max_context_runs)

    def _on_lost(self, worker: WorkerProcess) -> None:
        if self._workers[worker.index] is worker:
            self._workers[worker.index] = None
            self._hogs.pop(worker.index, None)
        reason = worker.kill_reason or KillReason("crash", worker.slot.read().seq or None)
        if reason.kind == "shutdown":
            return
        for seq, pending in list(worker.inflight.items()):
            self._end_calls(pending)
            if seq == reason.guilty_seq and not _blame_uncertain(reason, pending):
                self._resolve(pending, self._verdict(reason.kind, pending, worker))
                self._cost_a_worker(pending.request, reason.kind)
            else:
                self._rerun(pending)
        worker.inflight.clear()
        log.warning(
            "worker_lost",
            index=worker.index,
            pid=worker.pid,
            reason=reason.kind,
            detail=worker.describe_exit(),
        )
        if self._running and worker.index >= self.options.workers:
            # a burst worker is not replaced: the supervisor starts one when one is needed
            self._lost.add(worker)
            task = asyncio.create_task(self._reap(worker))
            self._respawns.add(task)
            task.add_done_callback(self._respawns.discard)
        elif self._running:
            self._lost.add(worker)
            task = asyncio.create_task(self._replace(worker))
            self._respawns.add(task)
            task.add_done_callback(self._respawns.discard)
        self._drain_backlog()

    def _cost_a_worker(self, request: ExecutionRequest, kind: str) -> None:
        """A run got the verdict of its worker's loss (a crash it caused running alone, or a
        limit only a kill could enforce): its version runs alone from now on, and is refused a
        while when this keeps happening (crashes.py)."""
        if self._crashes.pinned(_key(request)):
            log.warning("script_version_refused", tenant_id=request.tenant_id,
                        script_id=request.script_id, version_id=request.version_id,
                        reason=kind, workers_lost=REFUSE_AFTER, within_s=WINDOW_S,
                        refused_for_s=REFUSE_FOR_S)

    def _rerun(self, pending: _Pending) -> None:
        pending.attempts += 1
        if pending.attempts >= self.options.max_attempts:
            self._resolve(
                pending,
                ExecutionResult(
                    "failed",
                    error="sandbox worker failed repeatedly while running this execution",
                    metrics=_metrics(),
                ),
            )
        elif pending.chain is None:
            self._backlog.appendleft(pending)
        else:
            self._chain_step(pending, back=True)

    def _verdict(self, kind: str, pending: _Pending, worker: WorkerProcess) -> ExecutionResult:
        limits = pending.request.limits
        status: Status = "failed"
        if kind in ("timeout", "unresponsive"):
            status, error = (
                "timeout",
                f"timeout: exceeded max_execution_time_ms={limits.max_execution_time_ms}",
            )
        elif kind == "memory":
            error = f"memory limit exceeded (max_memory_bytes={limits.max_memory_bytes})"
        elif kind == "crash":
            error = f"script crashed the engine: {worker.describe_exit()}"
        else:
            error = "sandbox protocol error"
        return ExecutionResult(
            status, error=error, metrics=_metrics(_since(pending.submitted_at), 0,
                                                  pending.api_calls, pending.db_queries)
        )

    async def _reap(self, old: WorkerProcess) -> None:
        await old.stop()
        self._lost.discard(old)

    async def _replace(self, old: WorkerProcess) -> None:
        await old.stop()
        self._lost.discard(old)
        while self._running:
            started = time.monotonic()
            try:
                worker = await self._spawn(old.index)
            except WorkerStartError as exc:
                log.error("worker_start_failed", index=old.index, error=str(exc))
                await asyncio.sleep(self.options.respawn_backoff_s)
                continue
            if not self._running:
                await worker.stop()
                return
            self._workers[old.index] = worker
            self.restarts += 1
            self.last_respawn_ms = round((time.monotonic() - started) * 1000, 1)
            log.warning(
                "worker_replaced",
                index=old.index,
                old_pid=old.pid,
                pid=worker.pid,
                reason=(old.kill_reason or KillReason("crash", None)).kind,
                respawn_ms=self.last_respawn_ms,
            )
            self._drain_backlog()
            return

    async def _supervise(self) -> None:
        while True:
            await asyncio.sleep(self.options.supervise_interval_s)
            now = time.monotonic_ns()
            for worker in self._workers:
                if worker is not None and worker.alive:
                    self._check(worker, now)
            self._burst()

    def _check(self, worker: WorkerProcess, now_ns: int) -> None:
        o = self.options
        state = worker.slot.read()
        if state.seq and now_ns > state.deadline_ns + int(o.kill_grace_s * 1e9):
            kind = "memory" if state.phase == CLOSING_AFTER_MEMORY else "timeout"
            worker.kill(KillReason(kind, state.seq))
        elif worker.inflight and now_ns - state.heartbeat_ns > int(o.heartbeat_timeout_s * 1e9):
            worker.kill(KillReason("unresponsive", state.seq or None))
        elif worker.rss_bytes() > o.max_worker_rss_bytes:
            worker.kill(KillReason("memory", state.seq or None))
        else:
            self._watch_long_step(worker, state, now_ns)

    def _watch_long_step(self, worker: WorkerProcess, state: SlotState, now_ns: int) -> None:
        """Out of the rotation while a step runs long; ask for the runs waiting behind it back
        (each tick: a run may only start to wait after the first ask)."""
        long_ns = self.options.long_step_s * 1e9
        worker.long_step = bool(state.seq) and now_ns - state.since_ns > long_ns
        stepping = worker.inflight.get(state.seq) if worker.long_step else None
        if stepping is not None:
            self._hogs[worker.index] = stepping.request.tenant_id
        else:
            self._hogs.pop(worker.index, None)
        if worker.long_step and any(w is not worker and w is not None and w.alive
                                    and not w.long_step for w in self._workers):
            for seq in worker.inflight:
                if seq != state.seq:
                    worker.send(protocol.Revoke(seq))
        elif self._backlog:
            self._drain_backlog()

    @property
    def _places(self) -> int:
        return self.options.workers + self.options.burst_workers

    def _burst(self) -> None:
        """Every worker in a long step: start a burst worker (one at a time, up to
        burst_workers), so that other tenants' runs have somewhere to go while those steps
        run. A burst worker stops once idle for burst_idle_s, and no regular worker has been
        in a long step for as long."""
        if not self._running or not self.options.burst_workers:
            return
        now = time.monotonic()
        if not any(w is not None and w.alive and not w.long_step
                   for w in self._workers[:self.options.workers]):
            self._pressed_at = now
        live = [w for w in self._workers if w is not None and w.alive]
        if live and all(w.long_step for w in live):
            free = next((i for i in range(self.options.workers, self._places)
                         if self._workers[i] is None), None)
            if free is not None and self._bursting is None:
                self._bursting = asyncio.create_task(self._start_burst(free))
            return
        if now - self._pressed_at < self.options.burst_idle_s:
            return
        for index in range(self.options.workers, self._places):
            worker = self._workers[index]
            if (worker is not None and worker.alive and not worker.inflight
                    and now - worker.active_at >= self.options.burst_idle_s):
                self._workers[index] = None  # nothing is sent to it from here on
                log.info("worker_burst_stopped", index=index, pid=worker.pid,
                         executions=worker.executions)
                task = asyncio.create_task(worker.stop())
                self._respawns.add(task)
                task.add_done_callback(self._respawns.discard)

    async def _start_burst(self, index: int) -> None:
        try:
            worker = await self._spawn(index)
        except WorkerStartError as exc:
            log.error("worker_start_failed", index=index, error=str(exc))
            await asyncio.sleep(self.options.respawn_backoff_s)
            return
        finally:
            self._bursting = None
        if not self._running:
            await worker.stop()
            return
        worker.active_at = time.monotonic()
        self._workers[index] = worker
        self.bursts += 1
        log.warning("worker_burst_started", index=index, pid=worker.pid,
                    long_steps_of=sorted(set(self._hogs.values()))[:8])
        self._drain_backlog()

    def stats(self) -> ExecutorStats:
        workers = tuple(
            WorkerStats(w.index, w.pid, w.rss_bytes(), len(w.inflight), w.executions,
                        w.started_at, _step_ms(w.slot.read()))
            for w in self._workers
            if w is not None
        )
        return ExecutorStats(workers, self.restarts, self.last_respawn_ms, self.executions,
                             self.bursts)


def _step_ms(state: SlotState) -> int:
    return (time.monotonic_ns() - state.since_ns) // 1_000_000 if state.seq else 0


def _since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def _metrics(duration_ms: int = 0, memory_bytes: int = 0, api_calls: int = 0,
             db_queries: int = 0) -> dict[str, int]:
    return {
        "duration_ms": duration_ms,
        "memory_used_bytes": memory_bytes,
        "api_call_count": api_calls,
        "database_query_count": db_queries,
    }
