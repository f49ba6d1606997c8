"""ctx.cache: a key-value cache per tenant and script, as the IOTA SDK's spec scopes it
(`tenant:{tenantId}:script:{scriptId}:{key}`). Stored in PostgreSQL by default (the UNLOGGED
table jsrt_cache, so nothing else has to run), in Redis when JSRT_CACHE_URL names one. Values
are JSON, bounded in size; entries are bounded per tenant. The scope comes from the
execution, never from the script.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any, Protocol
from uuid import UUID

from consumer.clock import Clock, SystemClock
from consumer.db import Db
from consumer.errors import StoreError, ValidationError
from consumer.sql import q

MAX_KEY_CHARS = 256
MAX_VALUE_BYTES = 64 << 10
MAX_TTL_S = 30 * 86400
MAX_ENTRIES_PER_TENANT = 10_000


class CacheRefused(ValidationError):
    """ctx.cache: refused"""


class Cache(Protocol):
    async def get(self, tenant_id: str, script_id: str, key: Any) -> Any: ...
    async def set(self, tenant_id: str, script_id: str, key: Any, value: Any,
                  ttl_s: Any = None) -> None: ...
    async def delete(self, tenant_id: str, script_id: str, key: Any) -> bool: ...
    async def exists(self, tenant_id: str, script_id: str, key: Any) -> bool: ...
    async def increment(self, tenant_id: str, script_id: str, key: Any,
                        delta: Any = 1) -> Any: ...
    async def close(self) -> None: ...


def scoped(tenant_id: str, script_id: str, key: Any) -> str:
    if not isinstance(key, str) or not 0 < len(key) <= MAX_KEY_CHARS:
        raise CacheRefused(f"ctx.cache: a key is a non-empty string of at most {MAX_KEY_CHARS} "
                           "characters")
    return f"tenant:{UUID(tenant_id)}:script:{UUID(script_id)}:{key}"


def encoded(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    if len(text.encode()) > MAX_VALUE_BYTES:
        raise CacheRefused(f"ctx.cache: the value is larger than {MAX_VALUE_BYTES} bytes")
    return text


def ttl_seconds(ttl_s: Any) -> float | None:
    if ttl_s is None:
        return None
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, int | float) or not 0 < ttl_s <= MAX_TTL_S:
        raise CacheRefused(f"ctx.cache: ttlSeconds must be a number > 0 and <= {MAX_TTL_S}")
    return float(ttl_s)


def delta_of(delta: Any) -> int | float:
    if isinstance(delta, bool) or not isinstance(delta, int | float) or delta != delta:
        raise CacheRefused("ctx.cache.increment: delta must be a number")
    return delta


def _full(limit: int) -> CacheRefused:
    return CacheRefused(f"ctx.cache: the tenant's cache is full ({limit} entries)")


class PgCache:
    """ctx.cache in jsrt_cache; `clock` decides what has expired (tests inject one)."""

    def __init__(self, db: Db, clock: Clock | None = None,
                 max_entries: int = MAX_ENTRIES_PER_TENANT) -> None:
        self._db = db
        self._clock = clock or SystemClock()
        self._max_entries = max_entries

    async def get(self, tenant_id: str, script_id: str, key: Any) -> Any:
        return await self._db.fetchval(q("cache_get"), scoped(tenant_id, script_id, key),
                                       self._clock.now())

    async def exists(self, tenant_id: str, script_id: str, key: Any) -> bool:
        return bool(await self._db.fetchval(q("cache_exists"), scoped(tenant_id, script_id, key),
                                            self._clock.now()))

    async def set(self, tenant_id: str, script_id: str, key: Any, value: Any,
                  ttl_s: Any = None) -> None:
        full_key, ttl = scoped(tenant_id, script_id, key), ttl_seconds(ttl_s)
        encoded(value)
        now = self._clock.now()
        expires = None if ttl is None else now + timedelta(seconds=ttl)
        stored = await self._db.fetchval(q("cache_set"), full_key, UUID(tenant_id), value,
                                         expires, now, self._max_entries)
        if stored is None:
            raise _full(self._max_entries)

    async def delete(self, tenant_id: str, script_id: str, key: Any) -> bool:
        return bool(await self._db.fetchval(q("cache_delete"), scoped(tenant_id, script_id, key),
                                            self._clock.now()))

    async def increment(self, tenant_id: str, script_id: str, key: Any, delta: Any = 1) -> Any:
        full_key, step = scoped(tenant_id, script_id, key), delta_of(delta)
        try:
            row = await self._db.fetchrow(q("cache_increment"), full_key, UUID(tenant_id),
                                          str(step), self._clock.now(), self._max_entries)
        except StoreError as exc:
            if "numeric" in str(exc):
                raise CacheRefused(f"ctx.cache.increment: the value at {key!r} is not a "
                                   "number") from None
            raise
        if row is None:
            raise _full(self._max_entries)
        return row["value"]

    async def sweep(self, now: datetime | None = None, batch: int = 1000) -> int:
        """Expired entries of every tenant (the retention pass)."""
        status = await self._db.execute(q("cache_sweep"), now or self._clock.now(), batch)
        return int(status.rsplit(" ", 1)[-1])

    async def close(self) -> None:
        """The store's pool is not the cache's to close."""


# Redis: entries of a tenant are indexed in a sorted set scored by expiry (ms; +inf for
# none), so that a new key is refused when the tenant holds max live entries.
_SET = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now_ms)
if redis.call('EXISTS', KEYS[1]) == 0 and redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then
  return -1
end
if ARGV[2] == '' then
  redis.call('SET', KEYS[1], ARGV[1])
  redis.call('ZADD', KEYS[2], '+inf', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  redis.call('ZADD', KEYS[2], now_ms + tonumber(ARGV[2]), KEYS[1])
end
return 1
"""
_INCREMENT = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now_ms)
if redis.call('EXISTS', KEYS[1]) == 0 then
  if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[2]) then return false end
  redis.call('ZADD', KEYS[2], '+inf', KEYS[1])
end
return redis.call('INCRBYFLOAT', KEYS[1], ARGV[1])
"""


class RedisCache:
    """ctx.cache in Redis (JSRT_CACHE_URL); TTLs are Redis's own."""

    def __init__(self, url: str, max_entries: int = MAX_ENTRIES_PER_TENANT,
                 max_connections: int = 32) -> None:
        import redis.asyncio as aioredis

        # callers over the pool's connections wait for one, rather than fail
        pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=max_connections,
                                                        timeout=5)
        self._redis = aioredis.Redis(connection_pool=pool)
        self._max_entries = max_entries
        self._set = self._redis.register_script(_SET)
        self._incr = self._redis.register_script(_INCREMENT)

    @staticmethod
    def _index(tenant_id: str) -> str:
        return f"tenant:{UUID(tenant_id)}:keys"

    async def get(self, tenant_id: str, script_id: str, key: Any) -> Any:
        raw = await self._redis.get(scoped(tenant_id, script_id, key))
        return None if raw is None else json.loads(raw)

    async def exists(self, tenant_id: str, script_id: str, key: Any) -> bool:
        return bool(await self._redis.exists(scoped(tenant_id, script_id, key)))

    async def set(self, tenant_id: str, script_id: str, key: Any, value: Any,
                  ttl_s: Any = None) -> None:
        full_key, ttl = scoped(tenant_id, script_id, key), ttl_seconds(ttl_s)
        px = "" if ttl is None else str(max(1, int(ttl * 1000)))
        done = await self._set(keys=[full_key, self._index(tenant_id)],
                               args=[encoded(value), px, self._max_entries])
        if int(done) < 0:
            raise _full(self._max_entries)

    async def delete(self, tenant_id: str, script_id: str, key: Any) -> bool:
        full_key = scoped(tenant_id, script_id, key)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(full_key)
            pipe.zrem(self._index(tenant_id), full_key)
            deleted, _ = await pipe.execute()
        return bool(deleted)

    async def increment(self, tenant_id: str, script_id: str, key: Any, delta: Any = 1) -> Any:
        import redis.exceptions

        full_key, step = scoped(tenant_id, script_id, key), delta_of(delta)
        try:
            raw = await self._incr(keys=[full_key, self._index(tenant_id)],
                                   args=[repr(step), self._max_entries])
        except redis.exceptions.ResponseError:
            raise CacheRefused(f"ctx.cache.increment: the value at {key!r} is not a "
                               "number") from None
        if raw is None:
            raise _full(self._max_entries)
        value = float(raw)
        return int(value) if value.is_integer() else value

    async def close(self) -> None:
        await self._redis.aclose(close_connection_pool=True)
