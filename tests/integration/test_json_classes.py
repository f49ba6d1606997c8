"""The classes of input of issue #13, through the whole path, with hypothesis: arbitrary JSON
(arrays at the top and inside, empty ones, null, deep nesting either side of the limit, long
strings, awkward characters) as payload, input, output, console argument and error message,
in batches that mix tenants - publish → claim → execute → record → dead letter → retry, and
HTTP, and the embedded API. Every value is stored exactly, in its own row, or refused with one
clear line; never shifted, never left 'running'. And rows a tenant or operator writes with
wrong types cost at most that script its runs.

Examples are derandomized (the same every run: CI must be deterministic); set
HYPOTHESIS_PROFILE=explore to search afresh."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.daemons import drain
from support.factories import executions, make_script, make_tenant

from consumer import jsontext
from consumer.clock import FakeClock
from consumer.errors import ValidationError
from consumer.http import build_app
from consumer.lease import Lease
from consumer.ondemand import OnDemand
from consumer.runtime import Runtime
from consumer.sandbox import Executor
from consumer.settings import Settings
from consumer.store import Store

settings.register_profile(
    "ci", derandomize=True, database=None, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
settings.register_profile(
    "explore", deadline=None, max_examples=300,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
PROFILE_NAME = os.environ.get("HYPOTHESIS_PROFILE", "ci")
PROFILE = settings.get_profile(PROFILE_NAME)


def examples(n: int) -> settings:
    """n examples in CI; the explore profile's own number otherwise."""
    return settings(PROFILE, max_examples=n) if PROFILE_NAME == "ci" else PROFILE


@pytest.fixture
async def runtime(db_url: str) -> AsyncIterator[Runtime]:
    async with Runtime(db_url, workers=1) as rt:
        yield rt

# Everything JSON can hold that JavaScript can give back unchanged: integers within 2^53,
# finite floats, any text (U+0000 included: it must be refused, not stored wrong).
scalars = (st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30))
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=16,
)


def nested(depth: int, inner: Any) -> Any:
    for _ in range(depth):
        inner = [inner]
    return inner


values = json_values | st.builds(nested, st.integers(55, 70), json_values)


def storable(value: Any) -> bool:
    try:
        jsontext.dumps(value)
    except jsontext.JsonRefused:
        return False
    return True


HANDLER = """const TAG = %s;
function handler(input, ctx) {
  console.log(JSON.stringify(input.v));
  if (input.fail && ctx.trigger.attempt === 1) throw new Error(JSON.stringify(input.v));
  return {tag: TAG, v: input.v};
}"""


@pytest.mark.timeout(900)  # 40 examples of two full drains each: minutes on a loaded machine
@examples(40)
@given(batch=st.lists(st.tuples(st.sampled_from("AB"), values, st.booleans()),
                      min_size=1, max_size=6))
async def test_events_of_two_tenants_store_every_value_exactly_in_its_own_row(
    conn: asyncpg.Connection, db_url: str, executor: Executor,
    batch: list[tuple[str, Any, bool]],
) -> None:
    tenants = {tag: await make_tenant(conn, tag) for tag in "AB"}
    for tag, tenant in tenants.items():
        await make_script(conn, tenant, HANDLER % json.dumps(tag))
    expected: dict[str, list[tuple[Any, bool]]] = {"A": [], "B": []}
    for tag, value, fail in batch:
        payload = {"v": value, "fail": fail}
        text = json.dumps(payload)
        if storable(payload):
            await conn.execute("SELECT jsrt_publish($1, 'thing.happened', $2::jsonb)",
                               tenants[tag], text)
            expected[tag].append((value, fail))
        else:  # refused at the door (PostgreSQL's own cast or jsrt_publish), nothing queued
            with pytest.raises(asyncpg.PostgresError):
                await conn.execute("SELECT jsrt_publish($1, 'thing.happened', $2::jsonb)",
                                   tenants[tag], text)
    clock = FakeClock(datetime.now(UTC))
    await drain(db_url, executor, clock)
    clock.advance(3600)  # every failed first attempt is due for its retry
    await drain(db_url, executor, clock)

    for tag, tenant in tenants.items():
        rows = await executions(conn, tenant)
        firsts = [r for r in rows if r["trigger_data"]["attempt"] == 1]
        assert sorted(_key(r["input"]["v"]) for r in firsts) == sorted(
            _key(v) for v, _ in expected[tag])
        for r in rows:
            value, fail = r["input"]["v"], r["input"]["fail"]
            if fail and r["trigger_data"]["attempt"] == 1:
                assert r["status"] == "failed"
                # the message's first line: "\n" only (str.splitlines would also cut at
                # U+0085, U+2028, ... which JSON.stringify leaves raw inside strings)
                first = r["error"].split("\n", 1)[0]
                assert first.startswith("Error: ")
                assert _numbers(json.loads(first.removeprefix("Error: "))) == _numbers(value)
            else:
                assert r["status"] == "completed", r["error"]
                # its own tenant's value, exactly
                assert _numbers(r["output"]) == _numbers({"tag": tag, "v": value})
            lines = await conn.fetchval(
                "SELECT lines::text FROM jsrt_execution_logs WHERE execution_id = $1", r["id"])
            [line] = json.loads(lines)
            assert _numbers(json.loads(line["message"])) == _numbers(value)
        letters = await conn.fetch(
            """SELECT d.event_data::text AS data, st.resolution FROM script_event_dead_letters d
               JOIN jsrt_dead_letter_state st ON st.dead_letter_id = d.id
               WHERE d.tenant_id = $1""", tenant)
        assert sorted(_key(json.loads(x["data"])["v"]) for x in letters) == sorted(
            _key(v) for v, fail in expected[tag] if fail)
        assert {x["resolution"] for x in letters} <= {"succeeded"}
    assert await conn.fetchval("SELECT count(*) FROM jsrt_runs") == 0


@pytest.mark.timeout(900)  # property tests: minutes on a loaded machine
@examples(40)
@given(value=values)
async def test_http_bodies_are_stored_exactly_or_refused_with_400(
    conn: asyncpg.Connection, db_url: str, executor: Executor, value: Any
) -> None:
    tenant = await make_tenant(conn)
    await make_script(conn, tenant, "function handler(req) { return {body: req.body}; }",
                      type="http", http_path="/echo", http_methods=["POST"],
                      metadata={"auth": "public"})
    app_settings = Settings.from_env(env={"DATABASE_URL": db_url})
    store = await Store.open(db_url)
    try:
        async with Lease(store, 0.5, kind="http-test") as lease:
            app = build_app(store, OnDemand(store, executor, lease.id), app_settings)
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                         base_url="http://jsrt") as client:
                r = await client.post(f"/t/{tenant}/echo", content=json.dumps(value),
                                      headers={"content-type": "application/json"})
    finally:
        await store.close()
    if not storable(value):
        assert r.status_code == 400
        assert set(r.json()) == {"error"} and "\n" not in r.json()["error"]
        assert await executions(conn, tenant) == []
        return
    assert r.status_code == 200, r.text
    assert _numbers(r.json()) == _numbers({"body": value})
    [row] = await executions(conn, tenant)
    assert _numbers(row["input"]["body"]) == _numbers(value)
    assert _numbers(row["output"]) == _numbers({"body": value})


@pytest.mark.timeout(900)  # property tests: minutes on a loaded machine
@examples(30)
@given(value=values)
async def test_the_embedded_api_returns_and_records_every_value_exactly(
    conn: asyncpg.Connection, runtime: Runtime, value: Any
) -> None:
    tenant = await make_tenant(conn)
    if value is None:
        value = [None]  # None means "no input" ({}), as it always did
    if not storable(value):
        with pytest.raises(ValidationError) as refused:
            await runtime.execute_source(tenant, "export default (i) => [i]", value)
        assert "\n" not in str(refused.value)
        assert await executions(conn, tenant) == []
        return
    result = await runtime.execute_source(tenant, "export default (i) => [i]", value)
    if storable([value]):
        assert _numbers(result.output) == _numbers([value])
        [row] = await executions(conn, tenant)
        assert _numbers(row["output"]) == _numbers([value])
        assert _numbers(row["input"]) == _numbers(value)
    else:  # 64 levels in, one more out: the output is refused, in one line
        assert (result.status, result.error) == (
            "failed", "output is nested deeper than 64 levels")


# ---------------------------------------------------------------- rows written with wrong types
# JSON text as SQL could write it into a column: anything, including nesting far past 64.
wrong_json = (json_values.map(lambda v: json.dumps(v).replace("\\u0000", "x"))
              | st.integers(60, 1200).map(lambda k: "[" * k + "1" + "]" * k))


@pytest.mark.timeout(900)  # property tests: minutes on a loaded machine
@examples(40)
@given(limits=wrong_json, metadata=wrong_json,
       methods=st.lists(st.none() | st.text(max_size=8).filter(lambda t: "\x00" not in t),
                        max_size=3))
async def test_rows_written_with_wrong_types_cost_at_most_that_script(
    conn: asyncpg.Connection, db_url: str, executor: Executor, limits: str, metadata: str,
    methods: list[str | None],
) -> None:
    """resource_limits and metadata holding any JSON at all, http_methods with NULLs: the
    daemon carries on, the other tenant's run completes, the odd scripts' runs end (completed,
    or failed with one line), none stays 'running'."""
    a, b = await make_tenant(conn, "a"), await make_tenant(conn, "b")
    odd = await make_script(conn, a)
    cron = await make_script(conn, a, type="scheduled", cron="* * * * *")
    http = await make_script(conn, a, type="http", http_path="/odd")
    good = await make_script(conn, b)
    for script in (odd, cron, http):
        await conn.execute(
            "UPDATE scripts SET resource_limits = $2::jsonb, metadata = $3::jsonb,"
            " http_methods = CASE WHEN type = 'http' THEN $4::text[] ELSE http_methods END"
            " WHERE id = $1", script, limits, metadata, methods)
    await conn.execute("SELECT jsrt_publish($1, 'thing.happened', '{}')", a)
    await conn.execute("SELECT jsrt_publish($1, 'thing.happened', '{}')", b)
    await drain(db_url, executor)
    [mine] = [r for r in await executions(conn, b) if r["script_id"] == good]
    assert mine["status"] == "completed"
    for r in await executions(conn, a):
        assert r["status"] in ("completed", "failed"), r
        if r["status"] == "failed":
            assert r["error"] and "\n" not in r["error"].strip()
    assert await conn.fetchval("SELECT count(*) FROM jsrt_runs") == 0


def _key(value: Any) -> str:
    """A sort key equal for equal JSON values (1e16 and 10000000000000000 are one number)."""
    return json.dumps(_numbers(value), sort_keys=True)


def _numbers(value: Any) -> Any:
    """Numbers as the doubles JavaScript sees (the generated integers are exact as doubles):
    PostgreSQL keeps 5.299063101071109e+16 as the decimal 52990631010711090, which Python
    reads back as an int that is not == the float, though it is the same JSON number."""
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    return value




@pytest.mark.timeout(900)
@examples(40)
@given(sizes=st.lists(st.integers(min_value=0, max_value=400_000), min_size=1, max_size=4),
       wide=st.booleans())
async def test_a_payload_of_any_size_is_queued_whole_or_refused_in_one_line(
    conn: asyncpg.Connection, sizes: list[int], wide: bool
) -> None:
    """Under the cap (jsrt.max_payload_bytes, 256 KiB) an event is queued as given; over it,
    jsrt_publish fails with one line and nothing of it is queued (no event, no due row)."""
    tenant = await make_tenant(conn)
    char = "é" if wide else "x"  # two bytes in UTF-8
    queued = 0
    for size in sizes:
        payload = json.dumps({"s": char * size})
        stored = await conn.fetchval("SELECT octet_length($1::jsonb::text)", payload)
        try:
            await conn.execute("SELECT jsrt_publish($1, 'sized', $2::jsonb)", tenant, payload)
        except asyncpg.ProgramLimitExceededError as exc:
            assert stored > 262144
            assert str(exc) == f"jsrt_publish: payload is larger than 262144 bytes ({stored} bytes)"
        else:
            assert stored <= 262144
            queued += 1
    assert await conn.fetchval("SELECT count(*) FROM jsrt_events WHERE tenant_id = $1",
                               tenant) == queued
    assert await conn.fetchval("SELECT count(*) FROM jsrt_events_due WHERE tenant_id = $1",
                               tenant) == queued


@examples(25)
@given(sizes=st.lists(st.tuples(st.sampled_from("AB"), st.integers(min_value=0, max_value=5000)),
                      min_size=1, max_size=12),
       budget=st.integers(min_value=1, max_value=12_000))
async def test_every_event_of_any_size_is_fanned_out_once_within_the_budget(
    conn: asyncpg.Connection, sizes: list[tuple[str, int]], budget: int
) -> None:
    """Whatever the payloads' sizes and the claim's budget of bytes per tenant (#17), claims
    fan every event out exactly once, each claim within each tenant's budget but for its
    oldest event, and in publish order per tenant."""
    tenants = {name: await make_tenant(conn) for name in "AB"}
    for tenant in tenants.values():
        await make_script(conn, tenant, limits={"max_concurrent_runs": 50},
                          event_types=["sized"])
    await conn.execute("INSERT INTO jsrt_daemons (id, hostname, pid) VALUES ('d', 'h', 1)"
                       " ON CONFLICT DO NOTHING")
    for name, size in sizes:
        await conn.execute("SELECT jsrt_publish($1, 'sized', jsonb_build_object('s', repeat('x',"
                           " $2::int)))", tenants[name], size)
    for _ in range(len(sizes) + 1):
        before = {r["event_id"] for r in await conn.fetch("SELECT event_id FROM jsrt_events_due")}
        more = await conn.fetchval(
            "SELECT c.more FROM jsrt_claim_v4('d', 100, 100, NULL, 0, 0, NULL, 1, '{}', '{}', 0,"
            " NULL, NULL, $1) c", budget)
        taken = await conn.fetch(
            "SELECT e.tenant_id, octet_length(e.payload::text) AS bytes FROM jsrt_events e"
            " WHERE e.id = ANY ($1::uuid[]) AND e.dispatched_at IS NOT NULL"
            " ORDER BY e.published_at", list(before))
        for tenant in tenants.values():
            mine = [r["bytes"] for r in taken if r["tenant_id"] == tenant]
            assert not mine or sum(mine) - mine[-1] < budget
        if not more:
            break
    ids = list(tenants.values())
    assert await conn.fetchval("SELECT count(*) FROM jsrt_events_due"
                               " WHERE tenant_id = ANY ($1::uuid[])", ids) == 0
    got = await conn.fetch("SELECT d.event_id, count(*) AS n FROM jsrt_deliveries d"
                           " WHERE d.tenant_id = ANY ($1::uuid[]) GROUP BY d.event_id", ids)
    assert len(got) == len(sizes) and all(r["n"] == 1 for r in got)
