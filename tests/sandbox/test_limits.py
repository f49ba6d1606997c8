# ruff: noqa: E501 - JavaScript one-liners read better unbroken.
"""Each resource limit at, just under and just over its edge."""

from __future__ import annotations

import pytest

from consumer.sandbox import Limits

RateLimitErrorName = "RateLimitError"

pytestmark = pytest.mark.asyncio(loop_scope="session")

SLEEP = "async function handler(ms) { await new Promise((r) => setTimeout(r, ms)); return 'slept' }"
SPIN = "async function handler(ms) { const t = Date.now(); while (Date.now() - t < ms) {} return 'spun' }"


@pytest.mark.parametrize(
    ("ms", "status"), [(100, "completed"), (250, "completed"), (700, "timeout")]
)
async def test_execution_time_counts_waiting(run, ms, status):
    result = await run(SLEEP, ms, limits=Limits(max_execution_time_ms=400))
    assert result.status == status, result


@pytest.mark.parametrize(
    ("ms", "status"), [(100, "completed"), (300, "completed"), (600, "timeout")]
)
async def test_execution_time_counts_computing(run, ms, status):
    result = await run(SPIN, ms, limits=Limits(max_execution_time_ms=400))
    assert result.status == status, result
    if status == "completed":
        assert ms <= result.metrics["duration_ms"] < 400


async def test_execution_time_counts_host_calls(run, http_base):
    source = "async function handler(url, ctx) { await ctx.http.fetch(url); return 'fetched' }"
    result = await run(source, f"{http_base}/slow", limits=Limits(max_execution_time_ms=400))
    assert result.status in ("timeout", "failed"), result
    assert result.metrics["duration_ms"] < 1500


HEAP = "async function handler(mb) { const a = []; for (let i = 0; i < mb * 16; i++) a.push(new Array(8192).fill(i + 0.5)); return a.length }"
OFF_HEAP = "async function handler(mb) { const a = []; for (let i = 0; i < mb; i++) a.push(new Uint8Array(1 << 20).fill(1)); return a.length }"


@pytest.mark.parametrize(
    ("source", "mb", "status"),
    [
        (HEAP, 4, "completed"),
        (HEAP, 8, "completed"),
        (HEAP, 64, "failed"),
        (OFF_HEAP, 4, "completed"),
        (OFF_HEAP, 8, "completed"),
        (OFF_HEAP, 64, "failed"),
    ],
    ids=["heap-4", "heap-8", "heap-64", "buffer-4", "buffer-8", "buffer-64"],
)
async def test_memory_limit(run, healthy, source, mb, status):
    result = await run(
        source, mb, limits=Limits(max_execution_time_ms=5000, max_memory_bytes=16 << 20)
    )
    assert result.status == status, result
    if status == "failed":
        assert result.error == "memory limit exceeded (max_memory_bytes=16777216)"
    await healthy()


@pytest.mark.parametrize(("extra", "status"), [(-1, "completed"), (0, "completed"), (1, "failed")])
async def test_output_size_limit_at_the_byte(run, extra, status):
    limit = 1000
    # A JSON string of n 'é' is 2n + 2 bytes of UTF-8.
    result = await run(
        "async function handler(n) { return 'é'.repeat(n) }",
        (limit - 2) // 2,
        limits=Limits(max_output_size_bytes=limit + extra - 0),
    )
    if extra < 0:
        assert result.status == "failed"
        assert (
            result.error == f"output too large: {limit} bytes > max_output_size_bytes={limit - 1}"
        )
    else:
        assert result.status == "completed", result
    result = await run(
        "async function handler(n) { return 'x'.repeat(n) }",
        limit - 2 + extra,
        limits=Limits(max_output_size_bytes=limit),
    )
    assert result.status == status, result
    if status == "failed":
        assert result.output is None
        assert (
            result.error == f"output too large: {limit + 1} bytes > max_output_size_bytes={limit}"
        )


RATE = """async function handler(n, ctx) {
  const outcomes = [];
  for (let i = 0; i < n; i++) {
    try { await ctx.events.publish('tick', { i }); outcomes.push('ok'); }
    catch (e) { outcomes.push(e instanceof RateLimitError ? e.name + ': ' + e.message : 'other ' + e); }
  }
  return outcomes;
}"""


@pytest.mark.parametrize("calls", [2, 3, 4])
async def test_api_calls_per_minute(run, calls):
    limit = 3
    result = await run(
        RATE, calls, limits=Limits(max_api_calls_per_minute=limit), script=f"rate-{calls}"
    )
    assert result.status == "completed", result
    expected = ["ok"] * min(calls, limit)
    expected += [f"{RateLimitErrorName}: rate limit exceeded: max_api_calls_per_minute={limit}"] * (
        calls - limit
    )
    assert result.output == expected
    assert result.metrics["api_call_count"] == calls


async def test_api_call_window_is_per_script_across_executions(run):
    limits = Limits(max_api_calls_per_minute=3)
    first = await run(RATE, 2, limits=limits, script="rate-shared")
    second = await run(RATE, 2, limits=limits, script="rate-shared")
    other = await run(RATE, 2, limits=limits, script="rate-other")
    assert first.output == ["ok", "ok"]
    assert second.output[0] == "ok" and second.output[1].startswith("RateLimitError")
    assert other.output == ["ok", "ok"]
