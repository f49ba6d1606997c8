# ruff: noqa: E501 - JavaScript one-liners read better unbroken.
"""Scripts that try to freeze, crash or exhaust the sandbox: each one ends with the right
verdict, and the pool serves the next execution."""

from __future__ import annotations

import asyncio

import pytest
from support.sandbox_requests import FAST, make_request
from support.waiting import eventually

from consumer.sandbox import Executor, Limits, crashes

pytestmark = pytest.mark.asyncio(loop_scope="session")

SHORT = Limits(max_execution_time_ms=400, max_memory_bytes=16 << 20)
TIMEOUTS = {
    "infinite loop": "async function handler() { while (true) {} }",
    "loop after await": "async function handler() { await null; while (true) {} }",
    "top-level loop": "while (true) {}\nfunction handler() {}",
    "host call then loop": "async function handler(i, ctx) { await ctx.events.publish('t', {}); while (true) {} }",
    "getter loop on output": "async function handler() { return { get x() { while (true) {} } } }",
    "then loop on output": "function handler() { return { then() { while (true) {} } } }",
    "promise never settles": "async function handler() { await new Promise(() => {}) }",
}


@pytest.mark.parametrize("bomb", TIMEOUTS)
async def test_runaway_scripts_time_out(run, healthy, bomb):
    result = await run(TIMEOUTS[bomb], limits=SHORT)
    assert result.status == "timeout", result
    assert result.error == "timeout: exceeded max_execution_time_ms=400"
    await healthy()


async def test_microtask_storm_ends_in_timeout_or_memory(run, healthy):
    # Each microtask leaves a settled promise behind, so the storm also grows the heap.
    source = "async function handler() { const f = () => Promise.resolve().then(f); f(); await new Promise(() => {}) }"
    result = await run(source, limits=SHORT)
    assert (result.status, result.error) in [
        ("timeout", "timeout: exceeded max_execution_time_ms=400"),
        ("failed", "memory limit exceeded (max_memory_bytes=16777216)"),
    ], result
    await healthy()


MEMORY = {
    "heap bomb": "async function handler() { const a = []; while (true) a.push({ x: new Array(1000).fill(1) }) }",
    "string heap bomb": "async function handler() { let s = 'x'; const a = []; while (true) { a.push(s); s = s + s.slice(0, 100000) + 'y' } }",
    "ArrayBuffer bomb": "async function handler() { const a = []; while (true) a.push(new Uint8Array(1e7).fill(1)) }",
    "untouched ArrayBuffer bomb": "async function handler() { const a = []; while (true) a.push(new Uint8Array(1e8)) }",
}


@pytest.mark.parametrize("bomb", MEMORY)
async def test_memory_bombs_fail_with_memory_limit(run, healthy, bomb):
    limits = Limits(max_execution_time_ms=10_000, max_memory_bytes=16 << 20)
    result = await run(MEMORY[bomb], limits=limits)
    assert result.status == "failed", result
    assert result.error.startswith(
        (
            "memory limit exceeded (max_memory_bytes=16777216)",
            "RangeError: Array buffer allocation failed",
        )
    ), result
    await healthy()


ENGINE_KILLERS = {
    "huge arrays": "let a = []; while (true) a.push(new Array(1.2e8).fill(0))\nfunction handler() {}",
    "huge split": "'x'.repeat(2**29 - 30).split('')\nfunction handler() {}",
}


@pytest.mark.parametrize("bomb", ENGINE_KILLERS)
async def test_scripts_that_abort_v8_kill_only_their_worker(executor, run, healthy, bomb):
    limits = Limits(max_execution_time_ms=10_000, max_memory_bytes=64 << 20)
    result = await run(ENGINE_KILLERS[bomb], limits=limits)
    assert result.status in ("failed", "timeout"), result
    assert result.error.startswith(
        ("script crashed the engine: ", "memory limit exceeded", "timeout: exceeded")
    ), result
    assert "/" not in result.error  # no file paths from V8's crash report
    await healthy()


async def test_innocent_executions_sharing_a_crashed_worker_are_rerun(executor):
    restarts = executor.restarts
    innocent = [
        make_request(
            "async function handler(i) { await new Promise(r => setTimeout(r, 50)); return i }",
            i,
            script="innocent",
        )
        for i in range(40)
    ]
    crash = make_request(
        "'x'.repeat(2**29 - 30).split('')\nfunction handler() {}",
        limits=Limits(max_execution_time_ms=10_000),
    )
    results = await asyncio.gather(
        *(executor.execute(r) for r in [*innocent[:20], crash, *innocent[20:]])
    )
    crashed = results.pop(20)
    assert crashed.status == "failed" and crashed.error.startswith("script crashed the engine: "), (
        crashed
    )
    assert [(r.status, r.output) for r in results] == [("completed", i) for i in range(40)], [
        r for r in results if r.status != "completed"
    ][:2]
    assert executor.restarts > restarts


async def test_a_version_that_keeps_crashing_the_engine_runs_alone_then_is_refused():
    crasher = "'x'.repeat(2**29 - 30).split('')\nfunction handler() {}"
    crash_limits = Limits(max_execution_time_ms=10_000)
    async with Executor(workers=2) as ex:  # its own: this one loses workers on purpose
        verdicts = []
        for _ in range(crashes.REFUSE_AFTER):
            restarts = ex.restarts
            result = await ex.execute(make_request(crasher, script="crasher", version="v1",
                                                   limits=crash_limits))
            verdicts.append(result.error)
            assert ex.restarts > restarts or any(w is None for w in ex._workers)
            # once pinned, the version runs alone: a run of another tenant never shares its
            # worker (its next run waits for a worker with nothing on it)
            assert ex._crashes.alone(("tenant-a", "crasher", "v1"))
        assert all(v.startswith("script crashed the engine: ") for v in verdicts), verdicts
        await eventually(lambda: all(w is not None and w.alive for w in ex._workers),
                         what="the workers replaced")
        restarts = ex.restarts
        refused = await ex.execute(make_request(crasher, script="crasher", version="v1",
                                                limits=crash_limits))
        assert refused.status == "failed" and refused.error.startswith(
            "refused: runs of this script version cost the sandbox a worker 3 times within"
            " 60 s"), refused
        assert ex.restarts == restarts  # refused without reaching a worker
        # a new version of the script, and every other tenant, run as before
        fixed = await ex.execute(make_request("function handler() { return 'fixed' }",
                                              script="crasher", version="v2"))
        other = await ex.execute(make_request("function handler(i) { return i }", 7,
                                              tenant="tenant-b", script="crasher"))
        assert [(fixed.status, fixed.output), (other.status, other.output)] == [
            ("completed", "fixed"), ("completed", 7)]


async def test_a_run_of_a_version_that_crashed_never_shares_a_worker():
    crasher = "'x'.repeat(2**29 - 30).split('')\nfunction handler() {}"
    slow = "async function handler(i) { await new Promise(r => setTimeout(r, 100)); return i }"
    async with Executor(workers=2) as ex:
        first = await ex.execute(make_request(crasher, script="crasher-2", version="v1",
                                              limits=Limits(max_execution_time_ms=10_000)))
        assert first.error.startswith("script crashed the engine: "), first
        await eventually(lambda: all(w is not None and w.alive for w in ex._workers),
                         what="the workers replaced")
        innocents = [ex.submit(make_request(slow, i, script="innocent-2")) for i in range(6)]
        crash = ex.submit(make_request(crasher, script="crasher-2", version="v1",
                                       limits=Limits(max_execution_time_ms=10_000)))
        results = await asyncio.gather(*innocents)
        assert [(r.status, r.output) for r in results] == [("completed", i) for i in range(6)]
        crashed = await crash
        assert crashed.error.startswith("script crashed the engine: "), crashed


async def test_huge_output_is_refused_and_not_stored(run, healthy):
    result = await run("async function handler() { return 'x'.repeat(2000000) }")
    assert result.status == "failed" and result.output is None
    assert result.error == "output too large: 2000002 bytes > max_output_size_bytes=1048576"
    await healthy()


LEFTOVERS = {
    "timer": "async function handler() { setTimeout(() => { while (true) {} }, 0); return 'done' }",
    "pending host call": "async function handler(i, ctx) { ctx.events.publish('left', {}); return 'done' }",
    "timer far away": "async function handler() { setTimeout(() => { globalThis.poisoned = true }, 60000); return 'done' }",
}


@pytest.mark.parametrize("kind", LEFTOVERS)
async def test_leftover_work_does_not_poison_the_next_run(run, kind):
    script = f"leftover-{kind}"
    source = LEFTOVERS[kind] + "\nconst seen = globalThis.poisoned;"
    first = await run(source, script=script)
    assert (first.status, first.output) == ("completed", "done"), first
    second = await run(source, script=script)
    assert (second.status, second.output) == ("completed", "done"), second


async def test_leftover_microtask_loop_times_out_its_own_execution(run, healthy):
    source = "async function handler() { (async () => { await null; await null; while (true) {} })(); return 1 }"
    result = await run(source, limits=SHORT)
    assert result.status == "timeout"
    await healthy()


# What V8 itself would run of a script as a task of its own, outside any step - under no
# deadline, in a context that may sit idle in the pool (a FinalizationRegistry callback or a
# WebAssembly.compile continuation looping there burned a core of the worker for good): gone
# from every context (prelude.js).
OUTSIDE_STEPS = ("FinalizationRegistry", "WebAssembly.compile", "WebAssembly.instantiate",
                 "WebAssembly.compileStreaming", "WebAssembly.instantiateStreaming",
                 "WebAssembly.promising", "WebAssembly.Suspending",
                 "Atomics.wait", "Atomics.waitAsync")


async def test_nothing_schedules_a_scripts_code_outside_its_steps(run, healthy):
    names = ", ".join(f"typeof {name}" for name in OUTSIDE_STEPS)
    result = await run(f"function handler() {{ return [{names}, typeof WeakRef]; }}")
    assert result.output == ["undefined"] * len(OUTSIDE_STEPS) + ["function"], result
    reaching = "function handler() { new FinalizationRegistry(() => { while (true) {} }); }"
    result = await run(reaching)
    assert result.status == "failed" and result.error.startswith("ReferenceError"), result
    await healthy()


async def test_webassembly_still_compiles_and_instantiates_within_the_step(run):
    source = """function handler() {
      const module = new WebAssembly.Module(new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0]));
      return new WebAssembly.Instance(module, {}) instanceof WebAssembly.Instance;
    }"""
    result = await run(source)
    assert (result.status, result.output) == ("completed", True), result


async def test_console_flood_is_truncated_once(run):
    result = await run(
        "async function handler() { for (let i = 0; i < 100000; i++) console.log('line', i); return 'ok' }"
    )
    assert result.status == "completed"
    assert len(result.logs) == 1001
    assert result.logs[-1]["message"] == "[console output truncated]"
    assert result.logs[0]["message"] == "line 0"


async def test_console_flood_by_size_is_truncated(run):
    result = await run(
        "async function handler() { for (let i = 0; i < 100; i++) console.log('y'.repeat(10000)); return 'ok' }"
    )
    assert result.status == "completed"
    assert sum(len(line["message"]) for line in result.logs) < 70_000
    assert result.logs[-1]["message"] == "[console output truncated]"


async def test_logs_of_a_timed_out_execution_are_kept(run):
    result = await run(
        "async function handler() { console.log('before'); while (true) {} }", limits=SHORT
    )
    assert result.status == "timeout"
    assert [line["message"] for line in result.logs] == ["before"]


async def test_a_step_can_not_outlive_the_parent_deadline(executor, run):
    # The worker enforces deadlines itself; the parent's supervision is the backstop and must
    # not fire for a healthy worker that handles long but legal executions.
    result = await run(
        "async function handler() { const t = Date.now(); while (Date.now() - t < 300) {} return 'ok' }",
        limits=FAST,
    )
    assert result.status == "completed"
