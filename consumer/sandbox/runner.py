"""Running one execution inside a worker: steps of JavaScript, host calls and timers between.

A step is one `run`/`resume` eval followed by one `collect` eval. Steps of different
executions never overlap in a worker (a lock), which is what lets the memory watchdog and the
shared slot blame exactly one execution. The clock of an execution starts with its first step.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from consumer.sandbox import protocol
from consumer.sandbox.contexts import ContextPool, Key
from consumer.sandbox.engine import JsContext, MemoryLimitHit, ScriptError, StepTimeout
from consumer.sandbox.script import install_code
from consumer.sandbox.slot import Slot
from consumer.sandbox.watchdog import MemoryWatchdog

# Off-heap memory is watched through RSS, which also holds the heap V8 already limits and
# V8's own slack; the margin keeps a script under its heap limit from being blamed for it.
MEMORY_MARGIN = 8 << 20
POLL_MAX_S = 0.05
SALVAGE_S = 0.05
CLEANUP_NS = 2_000_000_000  # how long closing a context may take before the parent kills


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
    started: float = 0.0
    deadline: float = 0.0
    responses: list[list[Any]] = field(default_factory=list)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    outstanding: int = 0
    logs: list[Any] = field(default_factory=list)
    api_calls: int = 0
    memory_peak: int = 0
    memory_hit: bool = False
    poll_s: float = 0.001
    ctx: JsContext | None = None  # the context this job owns, once it owns one
    handoff: asyncio.Future[Start] | None = None  # set when another job's batch took it

    @classmethod
    def from_message(cls, m: list[Any]) -> Job:
        job = cls(m[1], (m[2], m[3], m[4]), m[5], m[6], m[7], int(m[8]), int(m[9]), int(m[10]))
        job.batchable = len(m) < 12 or m[11] == 0
        return job

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def deliver(self, response: list[Any]) -> None:
        self.outstanding -= 1
        self.responses.append(response)
        self.wakeup.set()

    def limits(self) -> tuple[int, int, int]:
        return self.time_ms, self.memory, self.output

    def restart(self, *, alone: bool) -> None:
        """Forget a start that did not happen (the batch stopped before it, or failed)."""
        self.started = self.deadline = 0.0
        self.logs, self.memory_peak, self.memory_hit = [], 0, False
        self.batchable = self.batchable and not alone


Outbox = list[Any]  # [settled, result, calls, logs, next_timer_ms, pending_calls]
# How a job's first step ended: ("own", ctx, outbox) it continues with that context;
# ("done", fields) it finished inside a batch; ("retry",) it must start again.
Start = tuple[Any, ...]
MAX_BATCH = 32
BATCH_BUDGET_S = 0.05  # a batch starts no new run after this; it may then run one full limit


class Runner:
    def __init__(
        self,
        send: Callable[[list[Any]], None],
        slot: Slot,
        pool: ContextPool,
        watchdog: MemoryWatchdog,
    ) -> None:
        self._send = send
        self._slot = slot
        self._pool = pool
        self._watchdog = watchdog
        self._lock = asyncio.Lock()
        self._step_token = 0
        self._waiting: dict[Key, list[Job]] = {}  # batchable jobs queued for their first step
        self._salvaged: dict[int, Any] = {}  # what a cut-short batch could still tell
        self._active: Counter[Key] = Counter()  # jobs of each script version in this worker
        self._solo_keys: set[Key] = set()  # versions whose runs do not end within one step
        self.arriving = 0  # runs received whose task has not started yet (they may batch)

    async def run(self, job: Job) -> None:
        self.arriving -= 1
        self._active[job.key] += 1
        try:
            fields = await self._execute(job)
        except Exception:  # a bug here must fail one execution, not leave it hanging
            traceback.print_exc(file=sys.stderr)
            fields = _fields(job, "failed", error="sandbox internal error")
        finally:
            self._active[job.key] -= 1
            if not self._active[job.key]:
                del self._active[job.key]
        self._send([protocol.DONE, job.seq, *fields])

    async def _execute(self, job: Job) -> list[Any]:
        clean = False
        try:
            start = await self._begin(job)
            while start[0] == "retry":
                start = await self._begin(job)
            if start[0] == "done":
                fields: list[Any] = start[1]
                return fields
            if _quick(start[2]):
                self._solo_keys.discard(job.key)
            outbox = await self._converse(job, start[1], start[2])
            fields, clean = self._finish(job, outbox)
        except StepTimeout:
            fields = _fields(
                job, "timeout", error=f"timeout: exceeded max_execution_time_ms={job.time_ms}"
            )
        except MemoryLimitHit:
            fields = self._memory_exceeded(job)
        except ScriptError as exc:
            fields = _fields(job, "failed", error=exc.error, stack=exc.stack)
        except (ValueError, TypeError, IndexError, KeyError):
            # collect() returned something else than its outbox: the script broke the runtime
            # of its own context (it can reach nothing else).
            fields = _fields(job, "failed", error="sandbox runtime corrupted by the script")
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
        spare = await self._pool.spare() if cold else None
        if job.batchable and job.key not in self._solo_keys:
            self._waiting.setdefault(job.key, []).append(job)
            if self.arriving > 0 and not self._lock.locked():
                # Runs that arrived in the same read start right after this one: one turn of
                # the loop lets them queue up, and this run leads them in one step.
                await asyncio.sleep(0)
        try:
            async with self._lock:
                if job.handoff is None:
                    self._unwait(job)
                    return await self._first_step(job, spare)
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
            ctx = job.ctx = spare if spare is not None else await self._pool.spare()
            ctx.assign(job.key, job.source)
            code = install_code(job.source) + "\n" + self._run_code(job)
            return await self._single_step(job, ctx, code)
        mates = self._take_mates(job) if job.batchable and job.key not in self._solo_keys else []
        if not mates:
            job.ctx = ctx
            return await self._single_step(job, ctx, self._run_code(job))
        return await self._batch_step(ctx, [job, *mates])

    async def _single_step(self, job: Job, ctx: JsContext, code: str) -> Start:
        ctx.set_memory_limit(job.memory)
        ctx.runs += 1
        return ("own", ctx, await self._step_locked(job, ctx, code))

    def _take_mates(self, leader: Job) -> list[Job]:
        """Jobs waiting for a first step of the same script version, with the same limits."""
        waiting = self._waiting.get(leader.key, [])
        mates = [j for j in waiting if j.source == leader.source and j.limits() == leader.limits()][
            : MAX_BATCH - 1
        ]
        loop = asyncio.get_running_loop()
        for mate in mates:
            waiting.remove(mate)
            mate.handoff = loop.create_future()
        return mates

    async def _batch_step(self, ctx: JsContext, batch: list[Job]) -> Start:
        """Run a batch in one step; hand every job its Start; return the leader's."""
        leader = batch[0]
        for job in batch:
            self._start_clock(job)
        items = ",".join(f"[{j.seq},{j.input_json},{j.info_json},{j.output}]" for j in batch)
        code = f"__jsrt.runMany([{items}],{int(BATCH_BUDGET_S * 1000)})"
        deadline = leader.deadline + BATCH_BUDGET_S
        ctx.set_memory_limit(leader.memory)
        try:
            raw = await self._step_locked(
                leader, ctx, code, collect="__jsrt.collectMany()", deadline=deadline, batch=True
            )
            state = protocol.loads(raw)
            verdict = None
        except (StepTimeout, MemoryLimitHit) as exc:
            state, verdict = self._salvaged.pop(leader.seq, None), exc
        except (ScriptError, ValueError, TypeError):
            state, verdict = None, None
            if not ctx.closed:
                await ctx.aclose()
        return self._distribute(ctx, batch, state, verdict)

    def _distribute(
        self, ctx: JsContext, batch: list[Job], state: Any, verdict: Exception | None
    ) -> Start:
        by_seq = {job.seq: job for job in batch}
        starts: dict[int, Start] = {job.seq: ("retry",) for job in batch}
        if state is None:  # nothing known: every run starts again, alone
            for job in batch:
                job.restart(alone=True)
        else:
            done, _not_started = state
            *finished, (current_seq, current_outbox) = done
            for seq, outbox in finished:
                ctx.runs += 1
                by_seq[seq].logs.extend(outbox[3])
                starts[seq] = ("done", self._finish(by_seq[seq], outbox)[0])
            current = by_seq[current_seq]
            ctx.runs += 1
            if not finished and not _quick(current_outbox):
                # Its runs wait for host calls or timers: batching them only delays the others.
                self._solo_keys.add(current.key)
            if verdict is None:
                current.ctx = ctx
                starts[current_seq] = ("own", ctx, current_outbox)
            elif isinstance(verdict, StepTimeout):  # it ran a full limit: its own timeout
                current.ctx = None
                current.logs.extend(current_outbox[3])
                starts[current_seq] = (
                    "done",
                    _fields(
                        current,
                        "timeout",
                        error=(f"timeout: exceeded max_execution_time_ms={current.time_ms}"),
                    ),
                )
            else:  # memory: maybe the batch's garbage, not its own; it runs again alone
                current.restart(alone=True)
            for job in batch:
                if starts[job.seq] == ("retry",) and job is not current:
                    job.restart(alone=False)
        for job in batch[1:]:
            assert job.handoff is not None
            job.handoff.set_result(starts[job.seq])
        return starts[batch[0].seq]

    async def _discard(self, job: Job, ctx: JsContext) -> None:
        """Close a context under the step lock and the job's name: a terminated script can still
        bring V8 down while it unwinds, and the parent must then know whom to blame."""
        async with self._lock:
            self._slot.enter(job.seq, time.monotonic_ns() + CLEANUP_NS)
            try:
                await ctx.aclose()
            finally:
                self._slot.leave()

    @staticmethod
    def _run_code(job: Job) -> str:
        return f"__jsrt.run({job.seq},{job.input_json},{job.info_json},{job.output})"

    def _start_clock(self, job: Job) -> None:
        if not job.started:
            job.started = time.monotonic()
            job.deadline = job.started + job.time_ms / 1000

    async def _step(self, job: Job, ctx: JsContext, code: str) -> Outbox:
        async with self._lock:
            outbox: Outbox = await self._step_locked(job, ctx, code)
            return outbox

    async def _step_locked(
        self,
        job: Job,
        ctx: JsContext,
        code: str,
        *,
        collect: str = "__jsrt.collect()",
        deadline: float | None = None,
        batch: bool = False,
    ) -> Any:
        self._start_clock(job)
        deadline = job.deadline if deadline is None else deadline
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise StepTimeout
        self._step_token += 1
        token = self._step_token
        task = asyncio.current_task()
        assert task is not None
        # A batch is named -1: if it kills the worker, the parent re-runs all of it, alone.
        self._slot.enter(-1 if batch else job.seq, time.monotonic_ns() + int(remaining * 1e9))
        self._watchdog.arm(rss_budget(job.memory), lambda: self._on_memory(job, task, token))
        salvage = collect if batch else "__jsrt.logs()"
        try:
            raw = await ctx.step(code, collect, remaining)
        except asyncio.CancelledError:
            if not (job.memory_hit and task.uncancel() == 0):
                raise
            await self._terminate(job, ctx, salvage, batch)
            raise MemoryLimitHit from None
        except (StepTimeout, MemoryLimitHit):
            await self._terminate(job, ctx, salvage, batch)
            raise
        finally:
            self._watchdog.disarm()
            self._slot.leave()
            self._step_token += 1
            job.memory_peak = max(job.memory_peak, self._watchdog.growth())
        return raw if batch else protocol.loads(raw)

    def _on_memory(self, job: Job, task: asyncio.Task[Any], token: int) -> None:
        if token == self._step_token:  # still the step the watchdog measured
            job.memory_hit = True
            task.cancel()

    async def _converse(self, job: Job, ctx: JsContext, outbox: Outbox) -> Outbox:
        """Serve host calls and timers until the handler settles."""
        while True:
            self._absorb(job, outbox)
            if outbox[0]:
                await self._drain_calls(job)
                return outbox
            await self._wait(job, outbox[4], outbox[5])
            responses, job.responses = job.responses, []
            code = "__jsrt.resume(" + protocol.to_json_text(responses) + ")"
            outbox = await self._step(job, ctx, code)

    def _absorb(self, job: Job, outbox: Outbox) -> None:
        job.logs.extend(outbox[3])
        for call_id, op, args_json in outbox[2]:
            job.api_calls += 1
            job.outstanding += 1
            remaining_ms = max(int(job.remaining() * 1000), 0)
            self._send([protocol.CALL, job.seq, call_id, op, args_json, remaining_ms])

    async def _wait(self, job: Job, next_timer_ms: int, pending: int) -> None:
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
        try:
            async with asyncio.timeout(max(timeout, 0)):
                await job.wakeup.wait()
        except TimeoutError:
            pass

    async def _drain_calls(self, job: Job) -> None:
        """Host calls a handler started but did not await still happen before the result."""
        while job.outstanding > 0 and job.remaining() > 0:
            job.wakeup.clear()
            try:
                async with asyncio.timeout(job.remaining()):
                    await job.wakeup.wait()
            except TimeoutError:
                break

    def _finish(self, job: Job, outbox: Outbox) -> tuple[list[Any], bool]:
        result = outbox[1]
        leftover = outbox[4] >= 0 or outbox[5] > 0
        if job.memory_peak > rss_budget(job.memory):
            return self._memory_exceeded(job), False
        if result[0] == 1:
            return _fields(job, "completed", output=result[1]), not leftover
        if result[0] == 2:
            error = f"output too large: {result[1]} bytes > max_output_size_bytes={job.output}"
            return _fields(job, "failed", error=error), False
        name, message, stack = result[1]
        error = f"{name}: {message}" if name and message else (name or message)
        return _fields(job, "failed", error=error, stack=stack or None), False

    def _memory_exceeded(self, job: Job) -> list[Any]:
        return _fields(
            job, "failed", error=f"memory limit exceeded (max_memory_bytes={job.memory})"
        )

    async def _terminate(self, job: Job, ctx: JsContext, salvage: str, batch: bool) -> None:
        """End a context whose step was cut short, still holding the step lock and with the
        slot naming this execution: terminated JavaScript can go on allocating inside V8's
        runtime (or abort the process) until its thread is joined, and that must neither be
        measured against the next step nor blamed on it."""
        self._watchdog.disarm()
        self._slot.enter(-1 if batch else job.seq, time.monotonic_ns() + CLEANUP_NS)
        try:
            raw = await ctx.eval(salvage, SALVAGE_S)
            if batch:
                self._salvaged[job.seq] = json.loads(raw)
            else:
                job.logs.extend(json.loads(raw) if raw else [])
        except Exception:
            pass
        finally:
            await ctx.aclose()


def _quick(outbox: Outbox) -> bool:
    """Did the run end within its first step, cleanly, with nothing left pending?"""
    return (
        bool(outbox[0]) and outbox[1][0] == 1 and not outbox[2] and outbox[4] < 0 and not outbox[5]
    )


def _fields(
    job: Job,
    status: str,
    *,
    output: str | None = None,
    error: str | None = None,
    stack: str | None = None,
) -> list[Any]:
    duration = int((time.monotonic() - job.started) * 1000) if job.started else 0
    return [
        status,
        output,
        error,
        stack,
        job.logs,
        duration,
        max(job.memory_peak, 0),
        job.api_calls,
    ]
