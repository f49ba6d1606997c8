"""Runs started now, outside the queue: HTTP requests, `jsrt exec`, the embedded Runtime.

    start    jsrt_start_now_v3: a 'running' execution owned by this process's lease, or None
             when the script's max_concurrent_runs is full (counted across every process)
    run      the sandbox executes it; the result is recorded (recording.py), shielded from
             cancellation
    execute  start (waiting with backoff while the script is full) then run

Starts and results of concurrent requests are written in batches (batcher.py): what arrives
while a statement is in flight goes in the next one, so that under load a request costs a
fraction of a start and of a commit, and alone it waits for nobody.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import anyio

from consumer import log, recording
from consumer.backoff import Backoff
from consumer.batcher import Batcher
from consumer.clock import Clock, SystemClock, wall
from consumer.errors import NotFound, ScriptBusy, StoreError, StoreUnavailable
from consumer.records import Outcome, Run, StartNow
from consumer.sandbox import Executor
from consumer.sandbox.types import ExecutionResult
from consumer.store import Store

_LOG = log.get("jsrt.ondemand")

_FIRST_BACKOFF = 0.05
_MAX_BACKOFF = 1.0
_RECORD_ATTEMPTS = 8


@dataclass(frozen=True, slots=True)
class RunResult:
    """What came of one execution, as recorded in script_executions."""

    execution_id: UUID
    status: str  # completed | failed | timeout | cancelled
    output: Any
    error: str | None
    logs: tuple[Mapping[str, Any], ...]
    metrics: Mapping[str, int]
    stack: str | None = None  # the JavaScript stack of a thrown error (the console shows it)

    @property
    def ok(self) -> bool:
        return self.status == "completed"

    @classmethod
    def of(cls, execution_id: UUID, r: ExecutionResult) -> RunResult:
        return cls(execution_id, r.status, r.output if r.status == "completed" else None,
                   r.error, tuple(r.logs), dict(r.metrics), r.stack)


class OnDemand:
    def __init__(self, store: Store, executor: Executor, owner: str,
                 clock: Clock | None = None) -> None:
        self.store = store
        self.executor = executor
        self.owner = owner
        self.clock = clock or SystemClock()
        # bounded by size, small first: one tenant's 1 MiB requests made statements of tens of
        # MiB, and every other tenant's request waited behind them (1.5 s at 32 connections)
        self._starts: Batcher[StartNow, tuple[str, Run | None]] = Batcher(
            self._start_batch, on_orphan=self._orphan, size=_start_chars)
        self._results: Batcher[Outcome, Outcome | None] = Batcher(
            self._record_batch, size=Outcome.chars)
        self._cleanups: set[asyncio.Task[Any]] = set()

    async def start(
        self, tenant_id: UUID, script_id: UUID, trigger_type: str,
        trigger_data: Mapping[str, Any], input_json: str, stored_input_json: str | None = None,
    ) -> Run | None:
        """Start now, or None when the script is full. The input is JSON text that passed
        jsontext.check_text; `stored_input_json` (default: the input) is what the execution
        row keeps, the script always receives the input itself."""
        recorded = input_json if stored_input_json is None else stored_input_json
        state, run = await self._starts.submit(
            StartNow(tenant_id, script_id, trigger_type, trigger_data, recorded))
        if state == "missing":
            raise NotFound(f"no runnable script {script_id} in tenant {tenant_id}")
        if run is None or stored_input_json is None:
            return run
        return dataclasses.replace(run, input_json=input_json)

    async def _start_batch(self, starts: list[StartNow]
                           ) -> Sequence[tuple[str, Run | None] | Exception]:
        try:
            return await self.store.queue.start_many(self.owner, starts)
        except StoreUnavailable:
            raise
        except StoreError as exc:
            if len(starts) == 1:
                return [exc]
            # one request's values the database refuses must fail that request only
            return [r for s in starts for r in await self._start_batch([s])]

    def _orphan(self, start: StartNow, started: tuple[str, Run | None]) -> None:
        """A run started for a caller that went away meanwhile: recorded as cancelled."""
        run = started[1]
        if run is not None:
            task = asyncio.create_task(
                self._record(run, ExecutionResult(status="failed", error="cancelled")))
            self._cleanups.add(task)
            task.add_done_callback(self._cleanups.discard)

    async def execute(
        self, tenant_id: UUID, script_id: UUID, trigger_type: str,
        trigger_data: Mapping[str, Any], input_json: str, *, max_wait: float | None = None,
        expect_source: str | None = None,
    ) -> RunResult:
        """Start (waiting with backoff while the script is full) and run. Raises ScriptBusy
        when no slot freed up within max_wait seconds (None = wait as long as it takes).
        With `expect_source`, a script whose source is not that text (changed since the
        caller looked) is not run: the execution fails saying so."""
        deadline = None if max_wait is None else anyio.current_time() + max_wait
        backoff = Backoff(_FIRST_BACKOFF, _MAX_BACKOFF, jitter=0.2)
        while True:
            run = await self.start(tenant_id, script_id, trigger_type, trigger_data, input_json)
            if run is not None and expect_source is not None and run.source != expect_source:
                run = dataclasses.replace(run, refusal=(
                    "the embedded script was changed while this run started; run it again"))
            if run is not None:
                return await self.run(run)
            if deadline is not None and anyio.current_time() + backoff.peek() > deadline:
                raise ScriptBusy(f"script {script_id} is at its max_concurrent_runs")
            delay = backoff.next()
            _LOG.debug("script_full_waiting", tenant_id=str(tenant_id),
                       script_id=str(script_id), retry_in_s=round(delay, 3))
            await anyio.sleep(delay)

    async def run(self, run: Run) -> RunResult:
        """Execute a started run and record its result (even when cancelled meanwhile).
        The result returned is the one recorded: a result the database refused comes back
        as the failure that was stored instead."""
        try:
            result = await self._sandbox(run)
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                await self._record(run, ExecutionResult(status="failed", error="cancelled"))
            raise
        with anyio.CancelScope(shield=True):
            recorded = await self._record(run, result)
        return RunResult.of(run.execution_id, recorded or result)

    async def _sandbox(self, run: Run) -> ExecutionResult:
        refused = run.refused()  # e.g. unusable resource_limits: fails, sandbox untouched
        if refused is not None:
            return refused
        try:
            return await self.executor.execute(run.request())
        except anyio.get_cancelled_exc_class():
            raise
        except Exception as exc:  # the executor must never take the host down
            _LOG.error("executor_error", execution_id=str(run.execution_id),
                       error=f"{type(exc).__name__}: {exc}"[:300])
            return ExecutionResult(status="failed", error=f"executor error: {type(exc).__name__}")

    async def _record(self, run: Run, result: ExecutionResult) -> ExecutionResult | None:
        """The result as recorded, or None when it was not (the run was no longer ours, or
        the database stayed unreachable)."""
        outcome = Outcome(run, result, self.clock.now(),
                          wall(result.started) if result.started else None,
                          wall(result.finished) if result.finished else None)
        backoff = Backoff()
        for attempt in range(_RECORD_ATTEMPTS):
            try:
                shown = await self._results.submit(outcome)
                break
            except StoreUnavailable as exc:
                delay = backoff.next()
                _LOG.warning("database_unavailable", error=str(exc)[:200], retry_in_s=delay,
                             attempt=attempt + 1)
                await anyio.sleep(delay)
        else:
            _LOG.error("execution_result_lost", execution_id=str(run.execution_id))
            return None
        if shown is None:
            recording.log_outcome(run, result, recorded=False)
            return None
        recording.log_outcome(run, shown.result, recorded=True)
        return shown.result

    async def _record_batch(self, outcomes: list[Outcome]) -> list[Outcome | None]:
        """Results of many requests in one statement (recording's policy for refusals)."""
        recorded = {o.run.execution_id: o
                    for o in await recording.complete(self.store, self.owner, outcomes)}
        return [recorded.get(o.run.execution_id) for o in outcomes]


def _start_chars(start: StartNow) -> int:
    """What a start carries into its statement (its input; the trigger data is small)."""
    return len(start.stored_input_json) + 256
