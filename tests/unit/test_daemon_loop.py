"""The daemon's loop logic through the store seam: an in-memory store and executor, no
database and no V8 (those are exercised for real in tests/integration and tests/e2e)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, cast

import anyio
import anyio.lowlevel
import pytest
from support.waiting import eventually

from consumer.completer import Completer
from consumer.daemon import Daemon
from consumer.errors import StoreError, StoreUnavailable
from consumer.records import Finished, Leased, Outcome, Run
from consumer.sandbox import ExecutionRequest, ExecutionResult, Executor, Limits
from consumer.settings import Settings
from consumer.store import Store


def make_run(n: int) -> Run:
    return Run(uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), "function handler(){}", "v1",
               Limits(), json.dumps({"n": n}), "event", {"attempt": 1}, uuid.uuid4(), None, 0)


class FakeQueue:
    """The queue's operations the daemon uses, kept in memory."""

    def __init__(self, runs: int) -> None:
        self.pending = [make_run(i) for i in range(runs)]
        self.running: dict[uuid.UUID, Run] = {}
        self.recorded: dict[uuid.UUID, Outcome] = {}
        self.released: list[uuid.UUID] = []
        self.held_slots: dict[uuid.UUID, int] = {}  # slots held, by script
        self.most_leased = 0
        self.fail_complete: list[BaseException] = []  # raised by the next complete calls
        self.fail_claim: list[BaseException] = []
        self.refuse: Callable[[Outcome], bool] = lambda o: False
        self.pass_over = 0  # releases passed over (jsrt_release_slots_v3's `later`)
        # awaited before a batch is written (e.g. until more results have come)
        self.before_complete: Callable[[int], Awaitable[None]] | None = None

    async def rescue_lost_runs(self, *_: Any, **__: Any) -> list[Finished]:
        return []

    async def pending_work(self, *_: Any) -> bool:
        return bool(self.pending or self.running)

    async def claim_leased(self, daemon_id: str, event_limit: int, per_tenant: int,
                           slot_limit: int, per_script: int, reserve: int,
                           refill: dict[uuid.UUID, int], tenant_after: Any = None,
                           pending_slots: Any = None, tenant_slots: Any = None) -> Leased:
        """jsrt_claim_v2 in memory: refill held scripts, take free slots, reserve runs."""
        if self.fail_claim:
            raise self.fail_claim.pop(0)
        runs: list[Run] = []

        def take(script_id: uuid.UUID, n: int) -> None:
            mine = [r for r in self.pending if r.script_id == script_id][:max(n, 0)]
            for r in mine:
                self.pending.remove(r)
                self.running[r.execution_id] = r
            runs.extend(mine)

        lost = [s for s in refill if s not in self.held_slots]
        for script_id, room in refill.items():
            if script_id in self.held_slots:
                take(script_id, room)
        granted: dict[uuid.UUID, int] = {}
        left = slot_limit
        for script_id in dict.fromkeys(r.script_id for r in self.pending):
            if left <= 0:
                break
            limit = next(r for r in self.pending if r.script_id == script_id).limits
            n = min(limit.max_concurrent_runs - self.held_slots.get(script_id, 0), per_script, left)
            if n <= 0:
                continue
            self.held_slots[script_id] = self.held_slots.get(script_id, 0) + n
            granted[script_id] = n
            left -= n
            take(script_id, n * reserve)
        self.most_leased = max(self.most_leased, sum(self.held_slots.values()))
        return Leased(runs, granted, lost, 0, 0, 0, waiting=bool(self.pending))

    async def mark_and_release(self, daemon_id: str, started: dict[uuid.UUID, Any],
                               released: dict[uuid.UUID, int]) -> list[uuid.UUID]:
        if released and self.pass_over:  # a claim holds the scripts' locks: not now
            self.pass_over -= 1
            return list(released)
        for script_id, n in released.items():
            self.held_slots[script_id] -= n
            if self.held_slots[script_id] <= 0:
                del self.held_slots[script_id]
        return []

    async def unreserve_runs(self, daemon_id: str, ids: Sequence[uuid.UUID]) -> int:
        for i in ids:
            self.pending.append(self.running.pop(i))
        return len(ids)

    async def release_leases(self, daemon_id: str) -> int:
        n = len(self.held_slots)
        self.held_slots.clear()
        return n

    async def complete_runs(self, daemon_id: str, outcomes: Sequence[Outcome]) -> list[Finished]:
        if self.fail_complete:
            raise self.fail_complete.pop(0)
        if self.before_complete is not None:
            await self.before_complete(len(outcomes))
        if any(self.refuse(o) for o in outcomes):
            raise StoreError("database error: unsupported Unicode escape sequence")
        done = []
        for o in outcomes:
            self.running.pop(o.run.execution_id)
            self.recorded[o.run.execution_id] = o
            done.append(Finished(o.run.execution_id, o.run.tenant_id, o.run.script_id,
                                 o.result.status, o.result.error, "event", {}, None))
        return done

    async def release_runs(self, daemon_id: str, ids: Sequence[uuid.UUID]) -> int:
        self.released.extend(ids)
        for i in ids:
            self.pending.append(self.running.pop(i))
        return len(ids)


class _Nothing:
    """Repositories the loop touches only to find nothing due."""

    async def register(self, *_: Any) -> None: ...
    async def unregister(self, *_: Any) -> None: ...
    async def claim_retries(self, *_: Any) -> int:
        return 0
    async def schedule_due(self, *_: Any) -> tuple[list[Any], set[uuid.UUID]]:
        return [], set()


class FakeStore:
    """The store seam in memory: the queue, and nothing due elsewhere."""

    def __init__(self, runs: int) -> None:
        self.queue = FakeQueue(runs)
        self.leases = self.dead_letters = self.schedules = _Nothing()

    # the tests read and set the queue's state through the store, as before
    def __getattr__(self, name: str) -> Any:
        return getattr(self.queue, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("fail_complete", "fail_claim", "refuse", "pass_over"):
            setattr(self.queue, name, value)
        else:
            super().__setattr__(name, value)


class FakeExecutor:
    def __init__(self, gate: anyio.Event | None = None) -> None:
        self.gate = gate
        self.in_flight = 0
        self.most = 0

    def submit(self, req: ExecutionRequest) -> asyncio.Future[ExecutionResult]:
        return asyncio.ensure_future(self.execute(req))

    async def execute(self, req: ExecutionRequest) -> ExecutionResult:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            if self.gate is not None:
                await self.gate.wait()
            await anyio.lowlevel.checkpoint()  # let other tasks run, as a real execution would
            n = json.loads(req.input_json)["n"]
            if n == -1:
                return ExecutionResult("completed", output_json='"\\u0000"')
            return ExecutionResult("completed", output_json=json.dumps(n),
                                   metrics={"duration_ms": 0})
        finally:
            self.in_flight -= 1


def daemon(store: FakeStore, executor: FakeExecutor, **overrides: Any) -> Daemon:
    settings = Settings.from_env(env={}, **{"poll_interval": 0.01, "concurrency": 4,
                                            "cleanup_interval": 0, **overrides})
    return Daemon(settings, cast(Store, store), cast(Executor, executor), listen=False)


async def test_drain_runs_everything_within_the_concurrency_limit() -> None:
    store, ex = FakeStore(runs=50), FakeExecutor()
    with anyio.fail_after(10):
        await daemon(store, ex).run(until_idle=True)
    assert len(store.recorded) == 50
    assert not store.running and not store.pending
    assert 1 <= ex.most <= 4
    assert {o.result.output for o in store.recorded.values()} == set(range(50))


async def test_results_wait_out_an_unreachable_database() -> None:
    store, ex = FakeStore(runs=5), FakeExecutor()
    store.fail_complete = [StoreUnavailable("gone"), StoreUnavailable("still gone")]
    with anyio.fail_after(10):
        await daemon(store, ex).run(until_idle=True)
    assert len(store.recorded) == 5


async def test_claim_errors_such_as_deadlocks_are_retried() -> None:
    store, ex = FakeStore(runs=3), FakeExecutor()
    store.fail_claim = [StoreError("database error: deadlock detected"), StoreUnavailable("x")]
    with anyio.fail_after(10):
        await daemon(store, ex).run(until_idle=True)
    assert len(store.recorded) == 3


async def test_a_result_the_database_refuses_becomes_a_failure_that_says_why() -> None:
    store, ex = FakeStore(runs=4), FakeExecutor()
    store.pending[0] = Run(*[getattr(make_run(-1), f) for f in Run.__slots__])
    store.refuse = lambda o: o.result.output_json == '"\\u0000"'
    with anyio.fail_after(10):
        await daemon(store, ex, concurrency=8).run(until_idle=True)
    statuses = sorted(o.result.status for o in store.recorded.values())
    assert statuses == ["completed", "completed", "completed", "failed"]
    [bad] = [o for o in store.recorded.values() if o.result.status == "failed"]
    assert bad.result.error is not None
    assert bad.result.error.startswith("result could not be recorded: unsupported Unicode")


async def test_stop_releases_what_did_not_finish_within_the_grace_period() -> None:
    gate = anyio.Event()  # never set: executions hang
    store, ex = FakeStore(runs=6), FakeExecutor(gate)
    d = daemon(store, ex, grace_period=0.05)
    async with anyio.create_task_group() as tg:
        tg.start_soon(d.run)
        await eventually(lambda: ex.in_flight >= 4, timeout=5, what="4 executions in flight")
        running = set(store.running)
        d.stop()
    assert set(store.released) == running
    assert len(store.released) == 4
    assert len(store.pending) == 6  # given back, for any daemon to take
    assert not store.recorded


@pytest.mark.parametrize("concurrency", [1, 3])
async def test_slots_are_refilled_as_executions_finish(concurrency: int) -> None:
    store, ex = FakeStore(runs=20), FakeExecutor()
    with anyio.fail_after(10):
        await daemon(store, ex, concurrency=concurrency).run(until_idle=True)
    assert len(store.recorded) == 20
    assert ex.most <= concurrency



class OddExecutor(FakeExecutor):
    """An executor that misbehaves for some runs: raises on submit, or resolves the future
    with something that is not a result."""

    def submit(self, req: ExecutionRequest) -> asyncio.Future[ExecutionResult]:
        n = json.loads(req.input_json)["n"]
        if n == 0:
            raise RuntimeError("submit exploded")
        if n == 1:
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            future.set_result(object())
            return future
        return super().submit(req)


async def test_a_misbehaving_executor_fails_those_runs_and_no_other() -> None:
    store, ex = FakeStore(runs=6), OddExecutor()
    with anyio.fail_after(10):
        await daemon(store, ex).run(until_idle=True)
    by_n = {json.loads(o.run.input_json)["n"]: o.result for o in store.recorded.values()}
    assert by_n[0].status == "failed" and by_n[0].error == "executor error: RuntimeError"
    assert by_n[1].status == "failed" and by_n[1].error == "sandbox result unreadable"
    assert all(by_n[n].status == "completed" for n in range(2, 6))


async def test_a_run_refused_before_the_sandbox_is_recorded_as_failed() -> None:
    store, ex = FakeStore(runs=3), FakeExecutor()
    bad = store.pending[0]
    store.pending[0] = dataclasses.replace(
        bad, refusal="invalid resource_limits: max_memory_bytes must be a"
                     " positive integer (got 'lots')")
    with anyio.fail_after(10):
        await daemon(store, ex).run(until_idle=True)
    refused = store.recorded[bad.execution_id].result
    assert (refused.status, refused.error) == (
        "failed", "invalid resource_limits: max_memory_bytes must be a positive integer"
                  " (got 'lots')")
    assert ex.most <= 2  # the refused run never reached the executor


async def test_slots_passed_over_by_a_release_go_back_a_moment_later() -> None:
    store, ex = FakeStore(runs=20), FakeExecutor()
    store.pass_over = 3  # the first three releases meet a claim holding the scripts' locks
    with anyio.fail_after(10):
        await daemon(store, ex).run(until_idle=True)
    assert len(store.recorded) == 20
    assert store.pass_over == 0 and not store.held_slots  # every slot given back in the end


async def test_passed_over_slots_go_back_while_results_keep_arriving() -> None:
    """The completer never waits for a quiet moment to give back what a release passed over:
    under a steady stream of results it tries again once RELEASE_AGAIN_S has gone by."""
    store = FakeStore(runs=0)
    script = uuid.uuid4()
    store.held_slots[script] = 2
    store.pass_over = 1
    completer = Completer(cast(Store, store), "d1", lambda *_: None)

    async def after_more_results(batch: int) -> None:  # a batch is written only once another
        # result has come (the completer is never idle), until the slots are back
        while completer.unrecorded <= batch and script in store.held_slots:
            await anyio.lowlevel.checkpoint()

    store.queue.before_complete = after_more_results
    async with anyio.create_task_group() as tg:
        tg.start_soon(completer.run)
        completer.release(script, 2)

        async def results() -> None:  # without a pause, for as long as it takes
            n = 0
            while script in store.held_slots:
                run = make_run(n)
                store.running[run.execution_id] = run
                completer.add(Outcome(run, ExecutionResult("completed", output_json="1"),
                                      datetime.now(UTC)))
                n += 1
                await anyio.lowlevel.checkpoint()

        with anyio.fail_after(5):
            await results()
        assert store.pass_over == 0
        tg.cancel_scope.cancel()


def outcome_of(script: uuid.UUID, chars: int) -> Outcome:
    run = dataclasses.replace(make_run(0), script_id=script)
    return Outcome(run, ExecutionResult("completed", output_json='"' + "y" * chars + '"'),
                   datetime.now(UTC))


async def test_a_statement_carries_a_bounded_size_and_light_results_first() -> None:
    """Results of a script returning large outputs go in statements of BATCH_CHARS at most
    (one larger alone), and once that script holds more than HELD_PER_SCRIPT unrecorded it is
    held back (heavy) and another script's small result goes in the very next statement."""
    from consumer import completer as completer_module

    store = FakeStore(runs=0)
    big, small = uuid.uuid4(), uuid.uuid4()
    batches: list[list[uuid.UUID]] = []
    roomier: list[bool] = []
    completer = Completer(cast(Store, store), "d1", lambda batch, _: batches.append(
        [o.run.script_id for o in batch]), on_room=lambda: roomier.append(True))
    size = completer_module.BATCH_CHARS * 6 // 10  # two do not fit in one statement
    n = completer_module.HELD_PER_SCRIPT // size + 2
    for _ in range(n):
        o = outcome_of(big, size)
        store.queue.running[o.run.execution_id] = o.run
        completer.add(o)
    assert completer.heavy(big) and not completer.heavy(small)
    light = outcome_of(small, 10)
    store.queue.running[light.run.execution_id] = light.run
    completer.add(light)
    async with anyio.create_task_group() as tg:
        tg.start_soon(completer.run)
        with anyio.fail_after(5):
            await completer.flushed()
        tg.cancel_scope.cancel()
    assert batches[0][0] == small  # not behind the large ones (what room is left: theirs)
    assert all(b.count(big) == 1 for b in batches) and len(batches) == n
    assert not completer.heavy(big) and roomier == [True]  # the daemon may run it again


def test_a_script_held_back_gets_no_new_group() -> None:
    from consumer.slots import Slots

    slots = Slots(4, 2, 1.0)
    a, b = uuid.uuid4(), uuid.uuid4()
    for script in (a, b):
        slots.granted(script, 1, False)
    runs = {s: [dataclasses.replace(make_run(i), script_id=s) for i in range(2)] for s in (a, b)}
    for rs in runs.values():
        for r in rs:
            assert slots.reserved(r)
    groups = slots.next_groups(lambda script: script == a)
    assert [s for s, _ in groups] == [b]
    assert [s for s, _ in slots.next_groups(lambda script: False)] == [a]


async def test_a_sized_batcher_puts_small_items_first_and_never_starves_a_large_one() -> None:
    from consumer.batcher import Batcher

    batches: list[list[str]] = []
    gate = asyncio.Event()

    async def run(items: list[str]) -> list[str]:
        batches.append(items)
        await gate.wait()
        return items

    b: Batcher[str, str] = Batcher(run, size=len, max_chars=100, small=10)
    first = asyncio.create_task(b.submit("first"))
    await asyncio.sleep(0)
    rest = [asyncio.create_task(b.submit(x)) for x in ["L" * 60, "L" * 70, "s1", "L" * 30, "s2"]]
    await asyncio.sleep(0)
    gate.set()
    assert await first == "first"
    assert [await t for t in rest] == ["L" * 60, "L" * 70, "s1", "L" * 30, "s2"]
    # the oldest large one, the small ones, then the next large ones, in order, while the
    # whole stays within 100
    assert batches == [["first"], ["L" * 60, "s1", "s2"], ["L" * 70, "L" * 30]]
