# ruff: noqa: E501 - JavaScript one-liners read better unbroken.
"""Nothing of one tenant, script or context is visible to another."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.sandbox_requests import make_request

pytestmark = pytest.mark.asyncio(loop_scope="session")

SPY = """var counter = (globalThis.counter || 0) + 1; globalThis.counter = counter;
async function handler(secret, ctx) {
  const seen = { global: globalThis.secret ?? null, proto: Object.prototype.leak ?? null, counter };
  if (secret) { globalThis.secret = secret; Object.prototype.leak = secret; }
  return seen;
}"""


async def test_global_mutations_do_not_cross_tenants_or_scripts(run):
    await run(SPY, "tenant-a-secret", tenant="tenant-a", script="spy", version="v1")
    for tenant, script in [("tenant-b", "spy"), ("tenant-a", "other-script")]:
        result = await run(SPY, None, tenant=tenant, script=script, version="v1")
        assert result.output == {"global": None, "proto": None, "counter": 1}, (tenant, script)


async def test_a_new_version_starts_from_a_fresh_context(run):
    await run(SPY, "old", tenant="tenant-c", script="versioned", version="v1")
    result = await run(SPY, None, tenant="tenant-c", script="versioned", version="v2")
    assert result.output["global"] is None


async def test_a_failed_run_discards_its_context(run):
    source = SPY.replace(
        "return seen;", "if (secret === 'boom') throw new Error('boom'); return seen;"
    )
    await run(source, "boom", tenant="tenant-d", script="fails", version="v1")
    result = await run(source, None, tenant="tenant-d", script="fails", version="v1")
    assert result.output == {"global": None, "proto": None, "counter": 1}


async def test_same_version_id_with_other_source_is_not_reused(run):
    await run(SPY, "first", tenant="tenant-e", script="s", version="v1")
    result = await run(SPY + "\n// edited", None, tenant="tenant-e", script="s", version="v1")
    assert result.output["global"] is None


async def test_concurrent_tenants_see_only_their_own_input(executor):
    source = "async function handler(input, ctx) { await new Promise(r => setTimeout(r, 1)); return [ctx.tenantId, input] }"
    requests = [
        make_request(source, f"input-{i}", tenant=f"tenant-{i % 7}", script="same")
        for i in range(100)
    ]
    results = await asyncio.gather(*(executor.execute(r) for r in requests))
    assert [r.output for r in results] == [[f"tenant-{i % 7}", f"input-{i}"] for i in range(100)]


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.floats(-1e15, 1e15)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=20,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=json_values)
async def test_json_input_round_trips(executor, value):
    request = make_request("async function handler(input) { return input }", value, script="echo")
    result = await executor.execute(request)
    if _has_nul(value):  # PostgreSQL cannot store U+0000: refused, in one line
        assert (result.status, result.error) == (
            "failed", "output cannot be stored: it contains U+0000, which PostgreSQL cannot store")
        return
    assert result.status == "completed", result
    assert result.output == value


def _has_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, list):
        return any(map(_has_nul, value))
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    return False
