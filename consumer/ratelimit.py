"""Rate limits that hold across every process sharing the database: a script's
max_api_calls_per_minute (every daemon, `jsrt serve`, embedded Runtime and restart count
together, as max_concurrent_runs does), and the per-endpoint limits of HTTP scripts. One
statement per counted call (sql/ratelimit.sql): a sliding estimate over one-minute windows."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from consumer.db import Db
from consumer.sql import q

API_CALLS = "api"  # the bucket of max_api_calls_per_minute


class RateLimiter:
    def __init__(self, db: Db) -> None:
        self._db = db

    async def acquire(self, tenant_id: UUID | str, script_id: UUID | str, bucket: str,
                      per_minute: int, now: datetime | None = None) -> bool:
        """Count one call, unless it would pass `per_minute` (then False, nothing counted)."""
        return bool(await self._db.fetchval(q("rate_acquire"), UUID(str(script_id)), bucket,
                                            UUID(str(tenant_id)), per_minute, now))


def retry_after(now: datetime) -> int:
    """Seconds until the next window starts (a refused caller's Retry-After)."""
    return max(1, 60 - now.second)
