"""Retention: the seed's policy (finished executions after 90 days, exhausted dead letters
after 30) plus the runtime's own tables (dispatched events, fired cron ticks), every age
configurable. Deletes run in batches of `batch` rows, each its own short statement, so no
lock is held for long. `dry_run` only counts, rule by rule on the rows as they are: a real pass
may delete a few more executions, those only the exhausted letters it deletes first pointed at."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

import anyio

from consumer import log
from consumer.clock import Clock
from consumer.db import Db
from consumer.errors import StoreError
from consumer.settings import Settings
from consumer.sql import q

_LOG = log.get("jsrt.retention")

# Letters before executions: an execution an unresolved letter points at is kept, and an
# exhausted letter deleted first frees its execution in the same pass.
RULES = ("dead_letters", "executions", "events", "cron_firings")


@dataclass(frozen=True, slots=True)
class Policy:
    executions_days: float = 90.0
    dead_letters_days: float = 30.0
    events_days: float = 7.0
    cron_firings_days: float = 7.0
    batch: int = 1000

    @classmethod
    def from_settings(cls, s: Settings) -> Policy:
        return cls(s.retention_executions_days, s.retention_dead_letters_days,
                   s.retention_events_days, s.retention_cron_firings_days, s.cleanup_batch)

    def cutoff(self, rule: str, now: datetime) -> datetime:
        days: float = getattr(self, f"{rule}_days")
        return now - timedelta(days=days)


class Retention:
    """The repository: the policy's deletes, a batch per statement."""

    def __init__(self, db: Db) -> None:
        self._db = db

    async def cleanup(self, policy: Policy, now: datetime,
                      dry_run: bool = False) -> dict[str, int]:
        """Apply every rule; returns rows deleted (or, with dry_run, that would be) per
        rule."""
        counts = {rule: await self._apply(rule, policy.cutoff(rule, now), policy.batch, dry_run)
                  for rule in RULES}
        _LOG.info("cleanup_finished", dry_run=dry_run, **counts)
        return counts

    async def _apply(self, rule: str, cutoff: datetime, batch: int, dry_run: bool) -> int:
        query = q(f"cleanup_{rule}")
        if dry_run:
            return int(await self._db.fetchval(query, cutoff, None, True))
        total = 0
        while True:
            deleted = int(await self._db.fetchval(query, cutoff, batch, False))
            total += deleted
            if deleted < batch:
                return total


class Cleaner:
    """The service that applies the policy every `interval` seconds (several daemons may: the
    batches of one skip what another already deleted)."""

    def __init__(self, retention: Retention, policy: Policy, interval: float,
                 clock: Clock) -> None:
        self.retention = retention
        self.policy = policy
        self.interval = interval
        self.clock = clock

    async def run(self) -> None:
        # The first pass soon after start, so that daemons restarted often still clean up.
        delay = min(self.interval, 60.0)
        while True:
            await anyio.sleep(delay * random.uniform(0.9, 1.1))
            await self.once()
            delay = self.interval

    async def once(self) -> dict[str, int]:
        try:
            return await self.retention.cleanup(self.policy, self.clock.now())
        except StoreError as exc:
            _LOG.warning("cleanup_failed", error=str(exc).splitlines()[0][:300])
            return {}
