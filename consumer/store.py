"""The store: the database as the rest of the runtime sees it - one repository per aggregate,
over one connector (db.py), the only path to PostgreSQL.

    store.queue         events, the claim, runs and their results (queue.py)
    store.leases        processes' heartbeats (lease.py)
    store.schedules     cron jobs (schedules.py)
    store.dead_letters  dead letters: the operators' operations and the retry claim
    store.scripts       scripts, versions, HTTP routes
    store.executions    execution history
    store.overview      what the runtime is doing now (the console's overview)
    store.tenants       tenants
    store.retention     the retention policy's deletes
    store.rates         rate limits across processes
    store.tenant_data   tenants' own tables as scripts reach them (ctx.db), exposed tables
    store.keys          API keys (keys.py)
    store.secrets       tenant secrets, encrypted (secrets.py)
    store.signatures    HMAC signatures seen (replay protection)
    store.sessions      web console sessions (sessions.py)

`Store.open(dsn)` gives one over a pool (long-running processes), `Store.session(dsn)` one
over a single connection (one-shot commands)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from uuid import UUID

from consumer.db import Db, session
from consumer.dead_letters import DeadLetters
from consumer.executions import Executions
from consumer.keys import ApiKeys
from consumer.lease import Leases
from consumer.overview import Overview
from consumer.queue import OnDispatched, OnRecorded, Queue
from consumer.ratelimit import RateLimiter
from consumer.retention import Retention
from consumer.schedules import Schedules
from consumer.scripts import Scripts
from consumer.secrets import Cipher, Secrets
from consumer.sessions import Sessions
from consumer.settings import Settings
from consumer.sql import q
from consumer.tenant_data import TenantData
from consumer.tenants import Tenants


class Signatures:
    """HMAC signatures accepted within the tolerance window, across every server."""

    def __init__(self, db: Db) -> None:
        self._db = db

    async def replayed(self, tenant_id: UUID, signature: str, tolerance_s: float) -> bool:
        """Record the signature; True when it had been seen already."""
        return bool(await self._db.fetchval(q("signature_seen"), tenant_id, signature,
                                            tolerance_s))


class Store:
    def __init__(self, db: Db, settings: Settings | None = None) -> None:
        """`settings` gives the key pepper and the secrets key (without: no pepper, and
        secrets cannot be read or written)."""
        self.db = db
        # Observers (metrics), called after commit: events fanned out, by source; results
        # recorded (the outcomes given, and those actually recorded).
        self.on_dispatched: list[OnDispatched] = []
        self.on_recorded: list[OnRecorded] = []
        self.queue = Queue(db, self.on_dispatched, self.on_recorded)
        self.leases = Leases(db)
        self.schedules = Schedules(db)
        self.dead_letters = DeadLetters(db)
        self.scripts = Scripts(db)
        self.executions = Executions(db)
        self.overview = Overview(db)
        self.tenants = Tenants(db)
        self.retention = Retention(db)
        self.rates = RateLimiter(db)
        self.tenant_data = TenantData(db)
        self.keys = ApiKeys(db, settings.key_pepper if settings else "")
        self.secrets = Secrets(db, Cipher.from_keys(settings.secrets_key if settings else ()))
        self.signatures = Signatures(db)
        self.sessions = Sessions(db)

    @classmethod
    async def open(cls, dsn: str, min_size: int = 2, max_size: int = 10, *,
                   settings: Settings | None = None) -> Store:
        return cls(await Db.pool(dsn, min_size, max_size), settings)

    @classmethod
    @asynccontextmanager
    async def session(cls, dsn: str, application_name: str = "jsrt", *,
                      settings: Settings | None = None) -> AsyncIterator[Store]:
        """A store over one connection, closed on the way out (one-shot commands)."""
        async with session(dsn, application_name) as db:
            yield cls(db, settings)

    async def close(self) -> None:
        await self.db.close()

    async def ping(self) -> None:
        """The database answers (readiness)."""
        await self.db.fetchval(q("metrics_ping"))
