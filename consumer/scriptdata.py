"""The host side of ctx.db and ctx.cache: the sandbox's host calls `db.*` and `cache.*`,
served on the daemon's event loop for the execution that made them. The tenant and script
always come from the ExecutionRequest the executor dispatched, never from the script. A
transaction (ctx.db.transaction) holds a pooled connection between calls, keyed by the
execution; `end` rolls back whatever an execution left open (the executor calls it at the end
of every execution: result, timeout, kill, shutdown)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from typing import Any

from consumer import log
from consumer.cache import Cache
from consumer.errors import StoreUnavailable, ValidationError
from consumer.sandbox.errors import HostCallError
from consumer.sandbox.types import ExecutionRequest
from consumer.tenant_data import HeldTransaction, TenantData

_LOG = log.get("jsrt.scriptdata")
MAX_OPEN_TRANSACTIONS = 1  # per execution: each holds a connection of the pool

DB_QUERY_OPS = frozenset({"db.query", "db.queryOne", "db.execute"})
# Bookkeeping of a transaction, not counted against max_api_calls_per_minute (a rollback
# must never be refused by the limit).
UNCOUNTED_OPS = frozenset({"db.begin", "db.commit", "db.rollback"})


class ScriptData:
    def __init__(self, data: TenantData, cache: Cache) -> None:
        self._data = data
        self._cache = cache
        self._txs: dict[str, dict[int, HeldTransaction]] = {}
        self._ids = itertools.count(1)
        self._closing: set[asyncio.Task[None]] = set()

    async def call(self, request: ExecutionRequest, op: str, args: Sequence[Any],
                   remaining_s: float) -> Any:
        area = "ctx.cache" if op.startswith("cache.") else "ctx.db"
        try:
            if op.startswith("cache."):
                return await self._cache_call(request, op, list(args))
            return await self._db_call(request, op, list(args), remaining_s)
        except ValidationError as exc:
            raise HostCallError(str(exc).splitlines()[0][:500]) from None
        except StoreUnavailable:
            raise HostCallError(f"{area}: the database is unavailable") from None
        except HostCallError:
            raise
        except Exception as exc:
            _LOG.warning("script_data_failed", op=op, tenant_id=request.tenant_id,
                         script_id=request.script_id, execution_id=request.execution_id,
                         error=f"{type(exc).__name__}: {exc}".splitlines()[0][:300])
            raise HostCallError(f"{area}: {op.split('.', 1)[1]} failed") from None

    async def _db_call(self, request: ExecutionRequest, op: str, args: list[Any],
                       remaining_s: float) -> Any:
        if op == "db.begin":
            return await self._begin(request)
        if op in ("db.commit", "db.rollback"):
            tx = self._txs.get(request.execution_id, {}).pop(_tx_id(args, 0), None)
            if tx is None:
                raise HostCallError("ctx.db: no such open transaction")
            if op == "db.commit":
                await tx.commit()
            else:
                await tx.close()
            return None
        if op not in DB_QUERY_OPS or not 1 <= len(args) <= 3:
            raise HostCallError(f"unknown host call {op[:32]}")
        sql, params = args[0], args[1] if len(args) > 1 else None
        timeout = max(0.001, remaining_s)
        if len(args) > 2 and args[2] is not None:
            tx = self._txs.get(request.execution_id, {}).get(_tx_id(args, 2))
            if tx is None:
                raise HostCallError("ctx.db: the transaction has ended")
            outcome = await tx.run(sql, params, timeout)
        else:
            outcome = await self._data.run(request.tenant_id, sql, params,
                                           read_only=op != "db.execute", timeout_s=timeout)
        if op == "db.execute":
            return outcome.affected
        if op == "db.queryOne":
            return outcome.rows[0] if outcome.rows else None
        return outcome.rows

    async def _begin(self, request: ExecutionRequest) -> int:
        open_txs = self._txs.setdefault(request.execution_id, {})
        if len(open_txs) >= MAX_OPEN_TRANSACTIONS:
            raise HostCallError("ctx.db.transaction: a transaction is already open in this "
                                "execution")
        tx = await self._data.begin(request.tenant_id)
        tx_id = next(self._ids)
        if request.execution_id not in self._txs:  # the execution ended meanwhile
            await tx.close()
            raise HostCallError("ctx.db.transaction: the execution has ended")
        self._txs[request.execution_id][tx_id] = tx
        return tx_id

    async def _cache_call(self, request: ExecutionRequest, op: str, args: list[Any]) -> Any:
        t, s, cache = request.tenant_id, request.script_id, self._cache
        match op, len(args):
            case "cache.get", 1:
                return await cache.get(t, s, args[0])
            case "cache.set", 2 | 3:
                await cache.set(t, s, args[0], args[1], args[2] if len(args) > 2 else None)
                return None
            case "cache.delete", 1:
                return await cache.delete(t, s, args[0])
            case "cache.exists", 1:
                return await cache.exists(t, s, args[0])
            case "cache.increment", 1 | 2:
                return await cache.increment(t, s, args[0], args[1] if len(args) > 1 else 1)
        raise HostCallError(f"unknown host call {op[:32]}")

    def end(self, execution_id: str) -> None:
        """The execution ended: roll back what it left open (in the background)."""
        for tx in self._txs.pop(execution_id, {}).values():
            task = asyncio.get_running_loop().create_task(tx.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def aclose(self) -> None:
        for execution_id in list(self._txs):
            self.end(execution_id)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
        await self._cache.close()


def _tx_id(args: list[Any], i: int) -> int:
    value = args[i] if len(args) > i else None
    if isinstance(value, bool) or not isinstance(value, int):
        raise HostCallError("ctx.db: no such open transaction")
    return value
