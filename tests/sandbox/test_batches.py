"""Bursts of one script version run as batches in one context: each run still gets its own
verdict, output and logs, and a bad run never costs the others anything but a re-run."""

from __future__ import annotations

import asyncio

import pytest
from support.sandbox_requests import make_request

from consumer.sandbox import Limits

pytestmark = pytest.mark.asyncio(loop_scope="session")

LIMITS = Limits(max_execution_time_ms=600, max_memory_bytes=16 << 20)
SOURCE = """async function handler(i, ctx) {
  console.log('run', i);
  if (i === 13) %s
  return { i, tenant: ctx.tenantId };
}"""


async def burst(executor, bad: str, n: int = 40, limits: Limits = LIMITS):
    source = SOURCE % bad
    script = f"burst-{abs(hash(bad))}"
    requests = [make_request(source, i, script=script, limits=limits) for i in range(n)]
    return await asyncio.gather(*(executor.execute(r) for r in requests))


def assert_others_fine(results, skip: int = 13):
    for i, result in enumerate(results):
        if i != skip:
            assert (result.status, result.output) == (
                "completed",
                {"i": i, "tenant": "tenant-a"},
            ), result
            assert [line["message"] for line in result.logs] == [f"run {i}"]


async def test_a_plain_burst_completes_with_its_own_logs(executor):
    assert_others_fine(await burst(executor, "{}"), skip=-1)


async def test_a_loop_in_a_burst_times_out_only_itself(executor, healthy):
    results = await burst(executor, "while (true) {}")
    assert (results[13].status, results[13].error) == (
        "timeout",
        "timeout: exceeded max_execution_time_ms=600",
    )
    assert_others_fine(results)
    await healthy()


async def test_a_throw_in_a_burst_fails_only_itself(executor):
    results = await burst(executor, "throw new TypeError('thirteen')")
    assert (results[13].status, results[13].error) == ("failed", "TypeError: thirteen")
    assert_others_fine(results)


async def test_a_host_call_in_a_burst_is_served(executor):
    results = await burst(executor, "await ctx.events.publish('burst', { i });")
    assert results[13].status == "completed" and results[13].metrics["api_call_count"] == 1
    assert_others_fine(results)


async def test_a_memory_bomb_in_a_burst_fails_only_itself(executor, healthy):
    results = await burst(
        executor,
        "{ const a = []; while (true) a.push(new Array(1000).fill(i)) }",
        limits=Limits(max_execution_time_ms=5000, max_memory_bytes=16 << 20),
    )
    assert (results[13].status, results[13].error) == (
        "failed",
        "memory limit exceeded (max_memory_bytes=16777216)",
    )
    assert_others_fine(results)
    await healthy()


async def test_an_engine_crash_in_a_burst_fails_only_itself(executor, healthy):
    results = await burst(
        executor,
        "'x'.repeat(2**29 - 30).split('');",
        limits=Limits(max_execution_time_ms=10_000, max_memory_bytes=64 << 20),
    )
    assert results[13].status == "failed"
    assert results[13].error.startswith(("script crashed the engine: ", "memory limit exceeded")), (
        results[13]
    )
    assert_others_fine(results)
    await healthy()


async def test_a_run_that_corrupts_the_batch_runtime_fails_only_itself(executor, healthy):
    # Its toJSON makes collectMany() say nothing the worker can read: the batch's runs start
    # again alone, and only the run that corrupted its context fails (they used to hang).
    results = await asyncio.wait_for(
        burst(executor, "{ Array.prototype.toJSON = function () { return 5; }; }"), 60
    )
    assert (results[13].status, results[13].error) == (
        "failed",
        "sandbox runtime corrupted by the script",
    )
    assert_others_fine(results)
    await healthy()
