"""Running one execution inside a worker: steps of JavaScript, host calls and timers between.

A step is one `run`/`resume` eval followed by one `collect` eval. Steps of different
executions never overlap in a worker (the engine lock, which creating and closing contexts
take too), which is what lets the memory ledger, the watchdog and the shared slot blame exactly
one execution. The execution's time limit counts from its first step; its recorded duration
from the moment the worker received it, so a wait behind another execution's step shows.

What the script produced is checked here, in Python, where no script can reach: the output's
size, nesting depth and storability, and the console's line and byte caps (the prelude checks
them too, to stop early; these checks are the ones that hold).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from consumer import jsontext
from consumer.sandbox import localcalls, protocol
from consumer.sandbox.contexts import ContextPool, Key
from consumer.sandbox.engine import (
    JsContext,
    MemoryLimitHit,
    ScriptError,
    StepTimeout,
    provisions,
)
from consumer.sandbox.errors import RuntimeCorrupted
from consumer.sandbox.fairlock import FairLock
from consumer.sandbox.ledger import Ledger
from consumer.sandbox.outbox import BatchState, Outbox, Returned, Threw, TooLarge
from consumer.sandbox.script import install_code
from consumer.sandbox.slot import CLOSING, CLOSING_AFTER_MEMORY, RUNNING, Slot
from consumer.sandbox.watchdog import MemoryWatchdog

# Off-heap memory is watched through RSS, which also holds the heap V8 already limits and
# V8's own slack; the margin keeps a script under its heap limit from being blamed for it.
MEMORY_MARGIN = 8 << 20
# A step never starts when the worker's memory above its empty state plus the step's budget
# would pass this: idle warm contexts are closed first (the worker's RLIMIT_DATA is 2 GiB).
MEMORY_CEILING = 1536 << 20
MAX_LOG_LINES = 1000
MAX_LOG_BYTES = 65536
TRUNCATED = "[console output truncated]"
POLL_MAX_S = 0.05
SALVAGE_S = 0.05
CLEANUP_NS = 2_000_000_000  # how long closing a context may take before the parent kills


WARM_TIMEOUT_S = 0.1  # a warm-up step of "0" (Runner.warm)


class StepCancelled(ScriptError):
    """The parent cancelled the run (protocol.Cancel): its step was terminated. A failure
    here, which the parent, holding its verdict already, never reads."""

    def __init__(self) -> None:
        super().__init__("cancelled", None)


def rss_budget(max_memory_bytes: int) -> int:
    return max_memory_bytes + max_memory_bytes // 4 + MEMORY_MARGIN


@dataclass(eq=False)
class Job:
    """The worker's mutable state for one execution (one attempt of it)."""

    seq: int
    key: Key
    source: str
    input_json: str
    info_json: str
    time_ms: int
    memory: int
    output: int
    batchable: bool = True  # a re-run (the parent counts attempts) always runs alone
    arrived: float = field(default_factory=time.monotonic)
    started: float = 0.0
    deadline: float = 0.0
    responses: list[protocol.Ret] = field(default_factory=list)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    outstanding: int = 0
    logs: list[Any] = field(default_factory=list)
    log_bytes: int = 0
    api_calls: int = 0
    memory_peak: int = 0
    memory_hit: bool = False
    cancelled: bool = False  # the parent cancelled it (#19): its step is terminated
    stepping: bool = False  # in a step of its own (not a batch's)
    waiting: bool = False  # between steps, waiting for a host call or a timer
    poll_s: float = 0.001
    source_lost: bool = False  # the RUN came without its source, and none was held: fails
    ctx: JsContext | None = None  # the context this job owns, once it owns one
    handoff: asyncio.Future[Start] | None = None  # set when another job's batch took it
    ended_at: float = 0.0  # when it ended inside a batch (0: measured when its result is made)
    # A serial group (protocol.Run.chain): the run before this one in the chain, while this
    # worker holds it; this run begins only once that one has ended (or inside its batch).
    chain: int = 0
    after: Job | None = None
    next: Job | None = None
    ended: bool = False
    turn: asyncio.Event = field(default_factory=asyncio.Event)  # `after` ended, or a batch took it

    @classmethod
    def from_run(cls, run: protocol.Run, source: str | None = None) -> Job:
        """`source`: the run's source, when the RUN came without it (protocol.Sources)."""
        source = run.source if source is None else source
        return cls(
            run.seq, (run.tenant_id, run.script_id, run.version_id), source or "",
            run.input_json, run.info_json, run.time_ms, run.memory_bytes, run.output_bytes,
            batchable=run.attempts == 0, chain=run.chain, source_lost=source is None,
        )

    def waits(self) -> bool:
        """A run of a chain whose run before it has not ended yet."""
        return self.after is not None and not self.after.ended

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def deliver(self, response: protocol.Ret) -> None:
        self.outstanding -= 1
        self.responses.append(response)
        self.wakeup.set()

    def limits(self) -> tuple[int, int, int]:
        return self.time_ms, self.memory, self.output

    def add_logs(self, lines: Any) -> None:
        """Console lines from the context, capped and cleaned here: the prelude caps them
        too, but only these caps are out of the script's reach."""
        if not isinstance(lines, list):
            return
        for line in lines:
            if self.log_bytes < 0:  # truncated already
                return
            if type(line) is not list or len(line) not in (3, 4):
                continue
            try:
                level, message, ts, *meta = line
                message = jsontext.clean_text(str(message))
                size = len(message.encode("utf-8"))
                metadata = _metadata(meta)
                size += 0 if metadata is _NO_METADATA else len(meta[0].encode("utf-8", "replace"))
            except (TypeError, ValueError):
                continue
            # What the parent's Done.parse accepts, whatever the context said: a bool is no
            # timestamp, and a malformed result message would cost the whole worker.
            ts = ts if type(ts) in (int, float) else 0
            if message == TRUNCATED or len(self.logs) >= MAX_LOG_LINES \
                    or self.log_bytes + size > MAX_LOG_BYTES:
                self.logs.append(["warn" if level == "warn" else "log", TRUNCATED, ts])
                self.log_bytes = -1
                return
            self.log_bytes += size
            if metadata is _NO_METADATA:
                self.logs.append([str(level)[:8], message, ts])
            else:
                self.logs.append([str(level)[:8], message, ts, metadata])

    def restart(self, *, alone: bool) -> None:
        """Forget a start that did not happen (the batch stopped before it, or failed)."""
        self.started = self.deadline = self.ended_at = 0.0
        self.logs, self.log_bytes, self.memory_peak, self.memory_hit = [], 0, 0, False
        self.batchable = self.batchable and not alone


# How a job's first step ended: one of these three.
@dataclass(frozen=True, slots=True)
class Own:
    """It ran in this context, which the job now holds, and goes on from this outbox."""

    ctx: JsContext
    outbox: Outbox


@dataclass(frozen=True, slots=True)
class Finished:
    """It ran to its end inside another job's batch: this is its result."""

    done: protocol.Done


@dataclass(frozen=True, slots=True)
class Retry:
    """It did not happen (the batch stopped before it, or failed): the job starts again."""


Start = Own | Finished | Retry
MAX_BATCH = 32
BATCH_BUDGET_S = 0.05  # a batch starts no new run after this; it may then run one full limit


class Runner:
    def __init__(
        self,
        send: Callable[[protocol.FromWorker], None],
        slot: Slot,
        pool: ContextPool,
        watchdog: MemoryWatchdog,
        lock: FairLock,
        ledger: Ledger,
    ) -> None:
        self._send = send
        self._slot = slot
        self._pool = pool
        self._watchdog = watchdog
        self._lock = lock  # the engine lock, shared with the pool
        self._ledger = ledger
        self._step_token = 0
        self._waiting: dict[Key, list[Job]] = {}  # batchable jobs queued for their first step
        self._salvaged: dict[int, str] = {}  # what a cut-short batch could still tell
        self._active: Counter[Key] = Counter()  # jobs of each script version in this worker
        self._solo_keys: set[Key] = set()  # versions whose runs do not end within one step
        self.arriving = 0  # runs received whose task has not started yet (they may batch)
        self._queued: set[int] = set()  # jobs waiting for the engine lock, nothing begun
        self._warming: asyncio.Task[None] | None = None

    def warm(self) -> None:
        """A run is likely soon (protocol.Warm): a no-op in the idle context used last, the
        likeliest to run it, so that the engine's thread (and this process) is awake when the
        run comes. Only while nothing at all runs or waits here: never in a run's way."""
        if self._warming is not None or self._lock.locked() or self._active or self.arriving:
            return
        ctx = self._pool.newest_idle()
        if ctx is not None:
            self._warming = asyncio.get_running_loop().create_task(self._warm(ctx))

    async def _warm(self, ctx: JsContext) -> None:
        try:
            async with self._lock:
                # still idle, still the pool's (a run may have taken it meanwhile): "0"
                # reads and changes nothing a run could see
                if ctx.closed or self._pool.newest_idle() is not ctx:
                    return
                # in the slot as a step of its own (-1: whatever waits behind it is re-run if
                # it kills the worker): the parent's deadline holds for it as for any step
                self._slot.enter(-1, time.monotonic_ns() + int(WARM_TIMEOUT_S * 1e9))
                try:
                    await ctx.step("0", "0", WARM_TIMEOUT_S)
                    return
                except Exception:
                    pass  # "0" did not evaluate cleanly (a callback of the script's own ran,
                finally:  # say): the context is not trusted with another run
                    self._slot.leave()
                if self._pool.drop_idle(ctx):
                    await self._close_named(-1, ctx, CLOSING)
        finally:
            self._warming = None

    def cancel(self, job: Job) -> bool:
        """Mark a job cancelled; True when its task is to be cancelled now (it runs a step of
        its own, or waits between steps): the step is terminated and its context closed,
        the worker kept. A job in another's batch step runs to the batch's end."""
        job.cancelled = True
        return job.stepping or job.waiting

    def revoke(self, job: Job) -> bool:
        """Take back a job that is still only waiting (for the engine lock, with nothing begun
        and no batch that counts on it; or, in a chain, for the run before it): the caller then
        cancels its task. Done at once, so that no batch leader can pick it as a mate before
        the cancellation lands. A chain is taken back from the job to its end, never a run
        out of its middle: the caller gives every job returned back, in order."""
        if job.handoff is not None or job.started:
            return False
        if not (job.seq in self._queued or job.waits()):
            return False
        self._queued.discard(job.seq)
        self._unwait(job)
        if job.after is not None:
            job.after.next = None  # the chain before it goes on without it
            job.after = None
        return True

    @staticmethod
    def chain_after(job: Job) -> list[Job]:
        """The runs after this one in its chain, in order (revoked with it)."""
        rest, follower = [], job.next
        while follower is not None:
            rest.append(follower)
            follower = follower.next
        return rest

    async def run(self, job: Job) -> None:
        self.arriving -= 1
        self._active[job.key] += 1
        try:
            if job.source_lost:  # never a guess at what to run (a bug of the parent's)
                fields = _fields(job, "failed", error="sandbox internal error: the run came"
                                                      " without its script's source")
            else:
                fields = await self._execute(job)
        except Exception:  # a bug here must fail one execution, not leave it hanging
            traceback.print_exc(file=sys.stderr)
            fields = _fields(job, "failed", error="sandbox internal error")
        finally:
            self._active[job.key] -= 1
            if not self._active[job.key]:
                del self._active[job.key]
            self._ended(job)
        self._send(fields)

    @staticmethod
    def _ended(job: Job) -> None:
        """The chain goes on: the run after this one may begin."""
        job.ended = True
        if job.next is not None:
            job.next.after = None
            job.next.turn.set()
            job.next = None

    async def _my_turn(self, job: Job) -> Start | None:
        """A run of a chain waits for the run before it to end, unless that run's batch takes
        it first: then its start is the batch's (None: begin as any run does)."""
        while job.waits() and job.handoff is None:
            job.turn.clear()
            await job.turn.wait()
        if job.handoff is None:
            return None
        start = await job.handoff
        job.handoff = None
        return start

    async def _execute(self, job: Job) -> protocol.Done:
        clean = False
        try:
            start = await self._my_turn(job) or await self._begin(job)
            while isinstance(start, Retry):
                start = await self._my_turn(job) or await self._begin(job)
            if isinstance(start, Finished):
                return start.done
            if start.outbox.quick():
                self._solo_keys.discard(job.key)
            outbox = await self._converse(job, start.ctx, start.outbox)
            fields, clean = self._finish(job, outbox)
        except StepTimeout:
            fields = _fields(
                job, "timeout", error=f"timeout: exceeded max_execution_time_ms={job.time_ms}"
            )
        except MemoryLimitHit:
            fields = self._memory_exceeded(job)
        except ScriptError as exc:
            fields = _fields(job, "failed", error=exc.error, stack=exc.stack)
        except RuntimeCorrupted as exc:
            # collect() returned something else than its outbox: the script broke the runtime
            # of its own context (it can reach nothing else).
            fields = _fields(job, "failed", error=str(exc))
        ctx = job.ctx
        if ctx is not None and not ctx.closed:
            if clean:
                self._pool.give(ctx)
            else:
                await self._discard(job, ctx)
        return fields

    async def _begin(self, job: Job) -> Start:
        """The first step: alone, or leading a batch, or inside another job's batch."""
        # A cold start's isolate is made before the lock, while other jobs' steps run; not when
        # a run of the same version is already here (it will lend its context or a batch).
        cold = not self._pool.has_idle(job.key) and not self._active[job.key]
        spare = await self._pool.spare(job.key[0]) if cold else None
        if job.batchable and job.key not in self._solo_keys:
            self._waiting.setdefault(job.key, []).append(job)
            if self.arriving > 0 and not self._lock.locked():
                # Runs that arrived in the same read start right after this one: one turn of
                # the loop lets them queue up, and this run leads them in one step.
                await asyncio.sleep(0)
        try:
            self._queued.add(job.seq)
            try:
                await self._lock.acquire(job.key[0])  # in its tenant's turn
            finally:
                self._queued.discard(job.seq)
            try:
                if job.handoff is None:
                    self._unwait(job)
                    return await self._first_step(job, spare)
            finally:
                self._lock.release()
        finally:
            self._unwait(job)
            if spare is not None and spare.key is None:
                self._pool.unused(spare)
        start = await job.handoff
        job.handoff = None
        return start

    def _unwait(self, job: Job) -> None:
        waiting = self._waiting.get(job.key)
        if waiting and job in waiting:
            waiting.remove(job)
            if not waiting:
                del self._waiting[job.key]

    async def _first_step(self, job: Job, spare: JsContext | None) -> Start:
        """With the lock held."""
        ctx = self._pool.take(job.key, job.source)
        if ctx is None:
            ctx = job.ctx = spare if spare is not None else await self._pool.spare_locked()
            self._pool.assign(ctx, job.key, job.source)
            # The script's top level gets entropy of its own (crypto at install time).
            code = (f'{ctx.api}.reseed("{secrets.token_hex(32)}");'
                    + provisions(job.source, ctx.api)
                    + install_code(job.source, ctx.api) + "\n" + self._run_code(job, ctx))
            return await self._single_step(job, ctx, code)
        mates = self._take_mates(job) if job.batchable and job.key not in self._solo_keys else []
        if not mates:
            job.ctx = ctx
            return await self._single_step(job, ctx, self._run_code(job, ctx))
        return await self._batch_step(ctx, [job, *mates])

    async def _single_step(self, job: Job, ctx: JsContext, code: str) -> Start:
        ctx.set_memory_limit(job.memory)
        ctx.runs += 1
        return Own(ctx, Outbox.from_json(await self._step_locked(job, ctx, code)))

    def _take_mates(self, leader: Job) -> list[Job]:
        """Jobs waiting for a first step of the same script version, with the same limits; then
        the runs after the leader in its chain, in their order (each would wait for the one
        before it anyway, and a batch runs its runs one after another)."""
        def alike(job: Job) -> bool:  # (a cancelled run ends on its own, never in a batch)
            return (job.source == leader.source and job.limits() == leader.limits()
                    and not job.cancelled)

        waiting = self._waiting.get(leader.key, [])
        mates = [j for j in waiting if alike(j)][: MAX_BATCH - 1]
        loop = asyncio.get_running_loop()
        for mate in mates:
            waiting.remove(mate)
            mate.handoff = loop.create_future()
        follower = leader.next
        while (follower is not None and len(mates) < MAX_BATCH - 1 and follower.batchable
               and follower.handoff is None and not follower.started and alike(follower)
               and follower.key == leader.key):
            follower.handoff = loop.create_future()
            follower.turn.set()
            mates.append(follower)
            follower = follower.next
        return mates

    async def _batch_step(self, ctx: JsContext, batch: list[Job]) -> Start:
        """Run a batch in one step; hand every job its Start; return the leader's."""
        leader = batch[0]
        seqs = [job.seq for job in batch]
        for job in batch:
            self._start_clock(job)
        items = ",".join(_run_args(j) for j in batch)
        code = f"{ctx.api}.runMany([{items}],{int(BATCH_BUDGET_S * 1000)})"
        deadline = leader.deadline + BATCH_BUDGET_S
        ctx.set_memory_limit(leader.memory)
        state: BatchState | None
        verdict: StepTimeout | MemoryLimitHit | None = None
        try:
            raw = await self._step_locked(
                leader, ctx, code, collect=f"{ctx.api}.collectMany()", deadline=deadline,
                batch=True,
            )
            state = BatchState.from_json(raw, seqs)
        except (StepTimeout, MemoryLimitHit) as exc:
            state, verdict = self._salvaged_state(leader, seqs), exc
        except (ScriptError, RuntimeCorrupted):
            state = None
            if not ctx.closed:
                await self._pool.close_locked(ctx)
        return self._distribute(ctx, batch, state, verdict)

    def _salvaged_state(self, leader: Job, seqs: list[int]) -> BatchState | None:
        """What a batch cut short said as it was closed, or None when it said nothing usable
        (every run then starts again, alone)."""
        text = self._salvaged.pop(leader.seq, None)
        try:
            return None if text is None else BatchState.from_json(text, seqs)
        except RuntimeCorrupted:
            return None

    def _distribute(
        self, ctx: JsContext, batch: list[Job], state: BatchState | None,
        verdict: StepTimeout | MemoryLimitHit | None,
    ) -> Start:
        by_seq = {job.seq: job for job in batch}
        starts: dict[int, Start] = {job.seq: Retry() for job in batch}
        if state is None:  # nothing known: every run starts again, alone
            for job in batch:
                job.restart(alone=True)
        else:
            # Each run began as the one before it ended (the engine clock's milliseconds).
            t0, began = batch[0].started, batch[0].started
            for (seq, outbox), end_ms in zip(state.finished, state.ends_ms, strict=True):
                ctx.runs += 1
                job = by_seq[seq]
                job.started, job.ended_at = began, min(t0 + end_ms / 1000, time.monotonic())
                began = max(began, job.ended_at)
                job.add_logs(outbox.logs)
                starts[seq] = Finished(self._finish(job, outbox)[0])
            current_seq, current_outbox = state.current
            current = by_seq[current_seq]
            current.started = began
            ctx.runs += 1
            if not state.finished and not current_outbox.quick():
                # Its runs wait for host calls or timers: batching them only delays the others.
                self._solo_keys.add(current.key)
            if verdict is None:
                current.ctx = ctx
                starts[current_seq] = Own(ctx, current_outbox)
            elif isinstance(verdict, StepTimeout):  # it ran a full limit: its own timeout
                current.ctx = None
                current.add_logs(current_outbox.logs)
                starts[current_seq] = Finished(
                    _fields(
                        current,
                        "timeout",
                        error=(f"timeout: exceeded max_execution_time_ms={current.time_ms}"),
                    ),
                )
            else:  # memory: maybe the batch's garbage, not its own; it runs again alone
                current.restart(alone=True)
            for job in batch:
                if isinstance(starts[job.seq], Retry) and job is not current:
                    job.restart(alone=False)
        for job in batch[1:]:
            assert job.handoff is not None
            job.handoff.set_result(starts[job.seq])
        return starts[batch[0].seq]

    async def _discard(self, job: Job, ctx: JsContext) -> None:
        """Close a context under the step lock and the job's name: a terminated script can still
        bring V8 down while it unwinds, and the parent must then know whom to blame."""
        async with self._lock.holding(job.key[0]):
            await self._close_named(job.seq, ctx)

    async def _close_named(self, seq: int, ctx: JsContext, phase: int = RUNNING) -> None:
        """Close a context, the lock held, in the slot under `seq` (whom a crash blames)."""
        self._slot.enter(seq, time.monotonic_ns() + CLEANUP_NS, phase)
        try:
            await self._pool.close_locked(ctx)
        finally:
            self._slot.leave()

    @staticmethod
    def _run_code(job: Job, ctx: JsContext) -> str:
        return f"{ctx.api}.run({_run_args(job)[1:-1]})"

    def _start_clock(self, job: Job) -> None:
        if not job.started:
            job.started = time.monotonic()
            job.deadline = job.started + job.time_ms / 1000

    async def _step(self, job: Job, ctx: JsContext, code: str) -> Outbox:
        async with self._lock.holding(job.key[0]):
            raw = await self._step_locked(job, ctx, code)
        return Outbox.from_json(raw)

    async def _step_locked(
        self,
        job: Job,
        ctx: JsContext,
        code: str,
        *,
        collect: str | None = None,
        deadline: float | None = None,
        batch: bool = False,
    ) -> str:
        """One step with the lock held: what its collect returned, as JSON text."""
        if job.cancelled:  # between two steps: the next one never begins
            raise StepCancelled
        self._start_clock(job)
        budget = rss_budget(job.memory)
        await self._prepare_memory(ctx, budget)
        deadline = job.deadline if deadline is None else deadline
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise StepTimeout
        collect = collect or f"{ctx.api}.collect()"
        self._step_token += 1
        token = self._step_token
        task = asyncio.current_task()
        assert task is not None
        # A batch is named -1: if it kills the worker, the parent re-runs all of it, alone.
        self._slot.enter(-1 if batch else job.seq, time.monotonic_ns() + int(remaining * 1e9))
        # What the context holds already counts: the step may grow by what is left.
        self._watchdog.arm(budget - ctx.held, lambda: self._on_memory(job, task, token))
        salvage = collect if batch else f"{ctx.api}.logs()"
        job.stepping = not batch
        try:
            raw = await ctx.step(code, collect, remaining)
        except asyncio.CancelledError:
            verdict: type[Exception] | None = (
                MemoryLimitHit if job.memory_hit else StepCancelled if job.cancelled else None)
            if verdict is None or task.uncancel() != 0:
                raise
            await self._terminate(job, ctx, salvage, batch, memory=verdict is MemoryLimitHit)
            raise verdict from None
        except (StepTimeout, MemoryLimitHit) as exc:
            await self._terminate(job, ctx, salvage, batch,
                                  memory=isinstance(exc, MemoryLimitHit))
            raise
        finally:
            job.stepping = False
            growth = self._watchdog.growth()
            self._watchdog.disarm()
            self._slot.leave()
            self._step_token += 1
            if not ctx.closed:  # a closed context's memory is nobody's (see _terminate)
                self._ledger.charge(ctx, growth)
                job.memory_peak = max(job.memory_peak, ctx.held)
        return raw

    async def _prepare_memory(self, ctx: JsContext, budget: int) -> None:
        """Before a step (lock held, context idle): keep the charges true, collect a context
        whose charge may be garbage, and make room under the worker's ceiling."""
        self._ledger.correct(self._pool.live())
        if self._ledger.wants_reclaim(ctx, budget):
            before = self._ledger.rss()
            await ctx.collect_garbage()
            self._ledger.reclaimed(ctx, self._ledger.rss() - before)
        await self._pool.make_room_locked(max(budget - ctx.held, 0), MEMORY_CEILING)

    def _on_memory(self, job: Job, task: asyncio.Task[Any], token: int) -> None:
        if token == self._step_token:  # still the step the watchdog measured
            job.memory_hit = True
            task.cancel()

    async def _converse(self, job: Job, ctx: JsContext, outbox: Outbox) -> Outbox:
        """Serve host calls and timers until the handler settles."""
        while True:
            self._absorb(job, outbox)
            if outbox.settled:
                await self._drain_calls(job)
                return outbox
            await self._wait(job, outbox.next_timer_ms, outbox.pending_calls)
            responses, job.responses = job.responses, []
            # resume() takes [call_id, ok, value] triples (prelude.js).
            answers = [[r.call_id, 1 if r.ok else 0, r.value] for r in responses]
            text = jsontext.string_literal(protocol.to_json_text(answers))
            outbox = await self._step(job, ctx, f"{ctx.api}.resume({text})")

    def _absorb(self, job: Job, outbox: Outbox) -> None:
        job.add_logs(outbox.logs)
        for call in outbox.calls:
            if call.op in localcalls.OPS:  # answered here, and no API call
                job.outstanding += 1
                job.deliver(_local(job.seq, call.call_id, call.op, call.args_json))
                continue
            job.api_calls += 1
            job.outstanding += 1
            remaining_ms = max(int(job.remaining() * 1000), 0)
            self._send(protocol.Call(job.seq, call.call_id, call.op, call.args_json,
                                     remaining_ms))

    async def _wait(self, job: Job, next_timer_ms: float, pending: int) -> None:
        if job.responses:
            return
        timeout = job.remaining()
        if next_timer_ms >= 0:
            timeout = min(timeout, next_timer_ms / 1000)
        elif pending == 0 or job.outstanding == 0:
            # Nothing we know of will wake the handler (it awaits V8-internal work, or a promise
            # that never settles): look again soon, backing off, until the deadline.
            timeout = min(timeout, job.poll_s)
            job.poll_s = min(job.poll_s * 2, POLL_MAX_S)
        job.wakeup.clear()
        job.waiting = True
        try:
            async with asyncio.timeout(max(timeout, 0)):
                await job.wakeup.wait()
        except TimeoutError:
            pass
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if job.cancelled and task is not None and task.uncancel() == 0:
                raise StepCancelled from None
            raise
        finally:
            job.waiting = False

    async def _drain_calls(self, job: Job) -> None:
        """Host calls a handler started but did not await still happen before the result."""
        while job.outstanding > 0 and job.remaining() > 0:
            job.wakeup.clear()
            try:
                async with asyncio.timeout(job.remaining()):
                    await job.wakeup.wait()
            except TimeoutError:
                break

    def _finish(self, job: Job, outbox: Outbox) -> tuple[protocol.Done, bool]:
        """A settled run's result, and whether its context may be reused."""
        if job.memory_peak > rss_budget(job.memory):
            return self._memory_exceeded(job), False
        match outbox.result:
            case Returned(output_json):
                refused = output_problem(output_json, job.output)
                if refused:
                    return _fields(job, "failed", error=refused), False
                return _fields(job, "completed", output=output_json), not outbox.leftover()
            case TooLarge(size):
                error = f"output too large: {size} bytes > max_output_size_bytes={job.output}"
                return _fields(job, "failed", error=error), False
            case Threw(name, message, stack):
                error = f"{name}: {message}" if name and message else (name or message)
                return _fields(job, "failed", error=error, stack=stack or None), False
        raise RuntimeCorrupted  # unreachable: Outbox and BatchState hand over settled runs only

    def _memory_exceeded(self, job: Job) -> protocol.Done:
        return _fields(
            job, "failed", error=f"memory limit exceeded (max_memory_bytes={job.memory})"
        )

    async def _terminate(
        self, job: Job, ctx: JsContext, salvage: str, batch: bool, *, memory: bool
    ) -> None:
        """End a context whose step was cut short, still holding the step lock and with the
        slot naming this execution: terminated JavaScript can go on allocating inside V8's
        runtime (or abort the process) until its thread is joined, and that must neither be
        measured against the next step nor blamed on it. (V8 keeps a closed isolate's heap
        pages for the next ones: what stays resident after the close is charged to nobody.)"""
        self._watchdog.disarm()
        # Tearing down a heap bomb's isolate can outlast CLEANUP_NS: the parent's kill then
        # says "memory", the true cause, not "timeout".
        phase = CLOSING_AFTER_MEMORY if memory else CLOSING
        self._slot.enter(-1 if batch else job.seq, time.monotonic_ns() + CLEANUP_NS, phase)
        try:
            raw = await ctx.eval(salvage, SALVAGE_S)
            if batch:
                self._salvaged[job.seq] = raw  # read by _salvaged_state
            else:
                job.add_logs(json.loads(raw) if raw else [])
        except Exception:
            pass
        finally:
            await self._pool.close_locked(ctx)


def output_problem(text: Any, limit: int) -> str | None:
    """Why an output (JSON text from V8) cannot be recorded, or None. Checked in the worker,
    out of the script's reach, whatever the prelude said."""
    if not isinstance(text, str):
        return "output is not JSON text"
    size = len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
    if size > limit:
        return f"output too large: {size} bytes > max_output_size_bytes={limit}"
    if jsontext.depth_exceeds(text):
        return f"output is nested deeper than {jsontext.MAX_DEPTH} levels"
    problem = jsontext.unstorable(text)
    return f"output cannot be stored: {problem}" if problem else None


def _run_args(job: Job) -> str:
    """[seq, input, info, output limit, seed]: the values as JSON *strings*, parsed in the
    context; the seed is 32 bytes of this process's entropy (hex), which keys the
    execution's crypto.getRandomValues."""
    return (f"[{job.seq},{jsontext.string_literal(job.input_json)},"
            f"{jsontext.string_literal(job.info_json)},{job.output},"
            f'"{secrets.token_hex(32)}"]')


def _local(seq: int, call_id: int, op: str, args_json: str) -> protocol.Ret:
    """A host call answered in the worker (localcalls.py)."""
    try:
        if len(args_json) > 3 * localcalls.MAX_INPUT_BYTES:
            raise localcalls.LocalCallError(
                f"crypto.subtle: input larger than {localcalls.MAX_INPUT_BYTES} bytes")
        return protocol.Ret(seq, call_id, True, localcalls.answer(op, json.loads(args_json)))
    except localcalls.LocalCallError as exc:
        return protocol.Ret(seq, call_id, False, ["Error", str(exc)])
    except (ValueError, RecursionError):
        return protocol.Ret(seq, call_id, False, ["Error", f"crypto.subtle: malformed {op} call"])


# sdk.log's metadata: JSON text from the context, kept when it is JSON the database can store
# and no deeper than this (the console line around it adds two levels).
_METADATA_DEPTH = 32
_NO_METADATA = object()


def _metadata(meta: list[Any]) -> Any:
    """The decoded metadata of a console line, or _NO_METADATA (none, or none usable)."""
    if len(meta) != 1 or type(meta[0]) is not str:
        return _NO_METADATA
    text = meta[0]
    if jsontext.depth_exceeds(text, _METADATA_DEPTH) or jsontext.unstorable(text):
        return _NO_METADATA
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return _NO_METADATA


def _fields(
    job: Job,
    status: str,
    *,
    output: str | None = None,
    error: str | None = None,
    stack: str | None = None,
) -> protocol.Done:
    finished = job.ended_at or time.monotonic()
    duration = int((finished - job.arrived) * 1000)
    return protocol.Done(
        job.seq,
        status,  # type: ignore[arg-type]
        output,
        None if error is None else jsontext.clean_text(error),
        None if stack is None else jsontext.clean_text(stack),
        job.logs,
        duration,
        max(job.memory_peak, 0),
        job.api_calls,
        job.started,
        finished if job.started else 0.0,
    )
