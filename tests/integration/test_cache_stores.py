"""ctx.cache's two stores behind one interface, held to the same behaviour: PostgreSQL's
jsrt_cache table (the default) and Redis (JSRT_CACHE_URL; .ci/run starts the machine's Redis
when it does not answer). Each test uses tenants of its own, so runs never collide."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import pytest

from consumer.cache import Cache, CacheRefused, PgCache, RedisCache
from consumer.clock import FakeClock
from consumer.sandbox import ExecutionRequest, Executor, Limits
from consumer.scriptdata import ScriptData
from consumer.store import Store

REDIS_URL = "redis://127.0.0.1:6379/0"


async def _redis_answers() -> bool:
    import redis.asyncio as aioredis

    client = aioredis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        return bool(await client.ping())
    except Exception:
        return False
    finally:
        await client.aclose()


@pytest.fixture(params=["postgres", "redis"])
async def cache(request: pytest.FixtureRequest, db_url: str) -> AsyncIterator[Cache]:
    if request.param == "redis":
        if not await _redis_answers():
            pytest.skip(f"no Redis answers at {REDIS_URL}")
        redis_cache = RedisCache(REDIS_URL, max_entries=20)
        yield redis_cache
        await redis_cache.close()
        return
    store = await Store.open(db_url)
    try:
        yield PgCache(store.db, FakeClock(), max_entries=20)
    finally:
        await store.close()


def ids() -> tuple[str, str]:
    return str(uuid.uuid4()), str(uuid.uuid4())


async def test_methods_and_scopes(cache: Cache) -> None:
    (t, s), (t2, s2) = ids(), ids()
    await cache.set(t, s, "k", {"a": [1, "x", None]})
    assert await cache.get(t, s, "k") == {"a": [1, "x", None]}
    assert await cache.exists(t, s, "k") is True
    assert await cache.get(t, s2, "k") is None  # another script of the same tenant
    assert await cache.get(t2, s, "k") is None  # another tenant, same script id
    assert await cache.exists(t2, s, "k") is False
    await cache.set(t, s, "k", "replaced", 60)
    assert await cache.get(t, s, "k") == "replaced"
    assert await cache.delete(t, s, "k") is True
    assert await cache.delete(t, s, "k") is False
    assert await cache.get(t, s, "k") is None
    assert await cache.increment(t, s, "n") == 1
    assert await cache.increment(t, s, "n", 2.5) == 3.5
    assert await cache.increment(t, s, "n", -3.5) == 0
    await cache.set(t, s, "word", "abc")
    with pytest.raises(CacheRefused, match="is not a number"):
        await cache.increment(t, s, "word")


async def test_increments_under_concurrency(cache: Cache) -> None:
    t, s = ids()
    results = await asyncio.gather(*(cache.increment(t, s, "hits") for _ in range(200)))
    assert sorted(results) == list(range(1, 201))
    assert await cache.get(t, s, "hits") == 200


async def test_entries_are_bounded_per_tenant(cache: Cache) -> None:
    t, s = ids()
    for i in range(20):
        await cache.set(t, s if i % 2 else str(uuid.uuid4()), f"k{i}", i)
    with pytest.raises(CacheRefused, match=r"the tenant's cache is full \(20 entries\)"):
        await cache.set(t, s, "one-more", 1)
    with pytest.raises(CacheRefused, match="full"):
        await cache.increment(t, s, "counter")
    await cache.set(t, s, "k1", "an existing key may change")
    assert await cache.delete(t, s, "k1")
    await cache.set(t, s, "one-more", 1)  # room again
    other, _ = ids()
    await cache.set(other, s, "k", 1)  # another tenant has its own bound


async def test_ttl_on_redis_is_redis_own() -> None:
    if not await _redis_answers():
        pytest.skip(f"no Redis answers at {REDIS_URL}")
    import redis.asyncio as aioredis

    cache = RedisCache(REDIS_URL)
    client = aioredis.from_url(REDIS_URL)
    try:
        t, s = ids()
        await cache.set(t, s, "k", 1, 30)
        pttl = await client.pttl(f"tenant:{t}:script:{s}:k")
        assert 0 < pttl <= 30_000
        await cache.increment(t, s, "k")  # an increment keeps the TTL, as INCR does
        assert 0 < await client.pttl(f"tenant:{t}:script:{s}:k") <= 30_000
        await cache.set(t, s, "forever", 1)
        assert await client.pttl(f"tenant:{t}:script:{s}:forever") == -1
    finally:
        await cache.close()
        await client.aclose()


async def test_a_script_uses_redis_when_configured(db_url: str) -> None:
    if not await _redis_answers():
        pytest.skip(f"no Redis answers at {REDIS_URL}")
    store = await Store.open(db_url)
    data = ScriptData(store.tenant_data, RedisCache(REDIS_URL))
    t, s = ids()
    source = """async function handler(input, ctx) {
      await ctx.cache.set('greeting', {hello: ctx.tenantId}, 60);
      return [await ctx.cache.get('greeting'), await ctx.cache.increment('n', 5)];
    }"""
    try:
        async with Executor(workers=1, data=data) as executor:
            result = await executor.execute(ExecutionRequest(
                source=source, version_id="v1", input_json="null", tenant_id=t, script_id=s,
                execution_id=str(uuid.uuid4()), trigger={"type": "manual"}, limits=Limits()))
    finally:
        await store.close()
    assert result.status == "completed", result.error
    assert result.output == [{"hello": t}, 5]
    assert json.loads(json.dumps(result.metrics))["database_query_count"] == 0


async def test_expired_rows_are_swept_from_postgres(db_url: str) -> None:
    store = await Store.open(db_url)
    try:
        clock = FakeClock()
        cache = PgCache(store.db, clock)
        t, s = ids()
        for i in range(40):
            await cache.set(t, s, f"k{i}", i, 10)
        await cache.set(t, s, "forever", 1)
        clock.advance(11)
        other, _ = ids()
        await cache.set(other, s, "k", 1)  # any tenant's write sweeps up to 16 expired rows
        assert await store.db.fetchval("SELECT count(*) FROM jsrt_cache") == 40 - 16 + 2
        assert await cache.sweep() == 40 - 16
        assert await store.db.fetchval("SELECT count(*) FROM jsrt_cache") == 2
        assert await cache.get(t, s, "forever") == 1
    finally:
        await store.close()
