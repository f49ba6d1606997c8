"""Limits that hold over time and out of the script's reach (issue #13): memory kept across
awaits and warm runs, idle contexts that must not crowd out another tenant, the prelude's
runtime unreachable, long synchronous steps that must not stall others, a memory bomb that is
reported as what it is. Real worker processes, real V8; executors of their own where a test
needs a worker to itself."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from support.sandbox_requests import make_request
from support.waiting import eventually

from consumer.sandbox import Executor, Limits

pytestmark = pytest.mark.asyncio(loop_scope="session")

MIB = 1 << 20
SIXTY_FOUR = Limits(max_execution_time_ms=20_000, max_memory_bytes=64 * MIB)


@pytest_asyncio.fixture(loop_scope="session")
async def solo() -> AsyncIterator[Executor]:
    """One worker: every run below shares it, as tenants do."""
    async with Executor(workers=1) as ex:
        yield ex


async def test_memory_kept_across_awaits_counts(solo: Executor) -> None:
    """1 MiB at a time with a host round trip between: each step alone is small, together
    they pass max_memory_bytes (the red team held 1.2 GiB under 64 MiB this way)."""
    source = """async function handler() {
        const keep = [];
        for (let i = 0; i < 300; i++) {
            keep.push(new Uint8Array(1 << 20).fill(1));
            await new Promise((r) => setTimeout(r, 0));
        }
        return keep.length;
    }"""
    result = await solo.execute(make_request(source, None, limits=SIXTY_FOUR))
    assert (result.status, result.error) == (
        "failed", "memory limit exceeded (max_memory_bytes=67108864)")
    assert result.metrics["memory_used_bytes"] > 64 * MIB


async def test_memory_kept_in_globals_between_warm_runs_counts(solo: Executor) -> None:
    """40 MiB kept per clean run: the third run passes the limit and fails; its context is
    dropped, so the fourth starts afresh."""
    source = ("globalThis.kept = [];\n"
              "function handler() { kept.push(new Uint8Array(40 << 20).fill(1));"
              " return kept.length; }")
    outcomes = []
    for _ in range(4):
        r = await solo.execute(make_request(source, None, limits=SIXTY_FOUR, script="keeper"))
        outcomes.append((r.status, r.output if r.status == "completed" else r.error))
    assert outcomes == [
        ("completed", 1),
        ("completed", 2),
        ("failed", "memory limit exceeded (max_memory_bytes=67108864)"),
        ("completed", 1),
    ]


async def test_idle_warm_contexts_never_crowd_out_another_tenant(solo: Executor) -> None:
    """Ten scripts of tenant A each keep 60 MiB warm (within their limit); tenant B's 400 MiB
    under its own 1 GiB limit still runs in the same worker: idle contexts are closed first."""
    keeper = ("globalThis.kept = new Uint8Array(60 << 20).fill(1);\n"
              "function handler() { return kept.length; }")
    for n in range(10):
        r = await solo.execute(make_request(keeper, None, tenant="a", script=f"a-{n}",
                                            limits=SIXTY_FOUR))
        assert r.status == "completed", r
    big = "function handler() { const b = new Uint8Array(400 << 20).fill(7); return b[5]; }"
    r = await solo.execute(make_request(
        big, None, tenant="b", limits=Limits(max_execution_time_ms=20_000,
                                             max_memory_bytes=1 << 30)))
    assert (r.status, r.output) == ("completed", 7), r


async def test_a_memory_bomb_is_reported_as_memory_not_time(solo: Executor) -> None:
    """A heap bomb whose isolate takes seconds to tear down: the worker is killed while
    cleaning up, and the verdict is still the true one."""
    result = await solo.execute(make_request(
        "function handler() { new Array(2e8).fill(0); return 1; }", None, limits=SIXTY_FOUR))
    assert (result.status, result.error) == (
        "failed", "memory limit exceeded (max_memory_bytes=67108864)")


async def test_the_runtime_of_the_context_is_out_of_the_scripts_reach(solo: Executor) -> None:
    """No global names the prelude's runtime (the red team called __jsrt.run() again to
    escape the output and console caps)."""
    source = """function handler() {
        const names = Object.getOwnPropertyNames(globalThis)
            .concat(Reflect.ownKeys(globalThis).map(String))
            .filter((n) => n.includes('jsrt'));
        let direct;
        try { direct = typeof __jsrt; } catch (e) { direct = 'threw'; }
        return {names, direct, wrapper: String(arguments.callee.caller)};
    }"""
    result = await solo.execute(make_request(source, None))
    assert result.status == "completed", result
    assert result.output["names"] == []
    assert result.output["direct"] == "undefined"
    assert "__jsrt_" not in result.output["wrapper"]


async def test_a_script_that_corrupts_its_outbox_fails_without_costing_its_worker(
    solo: Executor,
) -> None:
    """collect() made to say something else (here a host call whose op and arguments are no
    text): the run fails, its worker is not killed, and the next run is served."""
    source = """function handler() {
        Array.prototype.toJSON = function () {
            return this.length === 6 ? [0, null, [[1, 2, {}]], [], -1, 1] : this;
        };
        return 1;
    }"""
    restarts = solo.restarts
    result = await solo.execute(make_request(source, None))
    assert (result.status, result.error) == ("failed", "sandbox runtime corrupted by the script")
    ok = await solo.execute(make_request("function handler(i) { return i + 1 }", 1))
    assert (ok.status, ok.output) == ("completed", 2)
    assert solo.restarts == restarts


async def test_console_lines_a_script_tampered_with_never_cost_its_worker(
    solo: Executor,
) -> None:
    """Array.prototype.push reaches the prelude's console lines: the worker still sends the
    parent only lines it accepts (a timestamp that is no number becomes 0)."""
    source = """function handler() {
        const push = Array.prototype.push;
        Array.prototype.push = function (x) {
            if (Array.isArray(x) && x.length === 3 && typeof x[1] === 'string') x[2] = true;
            return push.call(this, x);
        };
        console.log('hi');
        return 1;
    }"""
    restarts = solo.restarts
    result = await solo.execute(make_request(source, None))
    assert (result.status, result.output) == ("completed", 1), result
    assert result.logs == ({"level": "log", "message": "hi", "ts": 0},)
    assert solo.restarts == restarts


async def test_a_long_synchronous_step_does_not_hold_up_runs_waiting_behind_it() -> None:
    """Tenant A's three-second step occupies a worker; tenant B's trivial runs sent to that
    worker meanwhile move to the other one and finish while A's step still runs."""
    async with Executor(workers=2) as ex:
        long = ex.submit(make_request(
            "function handler() { const end = Date.now() + 3000; while (Date.now() < end) {}"
            " return 'done'; }", None, tenant="a",
            limits=Limits(max_execution_time_ms=10_000)))
        quick = [ex.submit(make_request("function handler(i) { return i; }", n, tenant="b",
                                        script=f"b-{n}")) for n in range(10)]
        results = await asyncio.wait_for(asyncio.gather(*quick), timeout=30)
        assert not long.done()  # every one of B's runs came back while A's step ran
        assert [r.output for r in results] == list(range(10))
        assert (await long).output == "done"


async def test_duration_counts_the_wait_behind_another_step(solo: Executor) -> None:
    """With one worker there is nowhere to move: a run that waited behind a 1.5 s step of
    another tenant says so in its duration (the red team saw 9.5 s recorded as 0 ms)."""
    long = solo.submit(make_request(
        "function handler() { const end = Date.now() + 1500; while (Date.now() < end) {}"
        " return 1; }", None, tenant="a", limits=Limits(max_execution_time_ms=10_000)))
    await eventually(lambda: solo.stats().workers[0].step_ms > 200, timeout=10,
                     what="A's step running")
    quick = await solo.execute(make_request("function handler() { return 2; }", None,
                                            tenant="b"))
    await long
    assert quick.output == 2
    assert quick.metrics["duration_ms"] >= 500
