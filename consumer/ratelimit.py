"""Rate limits that hold across every process sharing the database: a script's
max_api_calls_per_minute (every daemon, `jsrt serve`, embedded Runtime and restart count
together, as max_concurrent_runs does), and the per-endpoint limits of HTTP scripts. One
statement per counted call (sql/ratelimit.sql): a sliding estimate over one-minute windows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

from consumer.db import Db
from consumer.sql import q

API_CALLS = "api"  # the bucket of max_api_calls_per_minute


# A refusal is remembered this long in the process, and calls of the same script and bucket
# meanwhile are refused without a statement: a script catching RateLimitError in a loop made
# one statement per call on the runtime's pool - thousands a second, in front of every other
# tenant's claims and results. (Refusing up to this much longer than the window would is the
# safe side of a limit.)
REFUSED_FOR = timedelta(seconds=1)
_REMEMBERED = 4096  # refusals remembered at most (the oldest go first)


class RateLimiter:
    def __init__(self, db: Db) -> None:
        self._db = db
        # (script, bucket, limit) → until: a changed limit is asked of the database again
        self._refused: dict[tuple[str, str, int], datetime] = {}

    async def acquire(self, tenant_id: UUID | str, script_id: UUID | str, bucket: str,
                      per_minute: int, now: datetime | None = None) -> bool:
        """Count one call, unless it would pass `per_minute` (then False, nothing counted)."""
        key, at = (str(script_id), bucket, per_minute), now or datetime.now(UTC)
        until = self._refused.get(key)
        if until is not None:
            if at < until:
                return False
            del self._refused[key]
        allowed = bool(await self._db.fetchval(q("rate_acquire"), UUID(str(script_id)), bucket,
                                               UUID(str(tenant_id)), per_minute, now))
        if not allowed:
            if len(self._refused) >= _REMEMBERED:
                del self._refused[next(iter(self._refused))]
            self._refused[key] = at + REFUSED_FOR
        return allowed


def retry_after(now: datetime) -> int:
    """Seconds until the next window starts (a refused caller's Retry-After)."""
    return max(1, 60 - now.second)
