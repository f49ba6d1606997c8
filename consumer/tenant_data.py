"""Tenants' own tables, as scripts reach them through ctx.db, and as operators expose them.

Isolation in depth: the statement is first held against PostgreSQL's grammar and the exposed
tables (tenant_sql.py); it then runs in a transaction that binds the tenant of the execution
(`jsrt.tenant_id`, never from the script), sets `statement_timeout`, and switches to the role
jsrt_tenant_data - which holds grants on the exposed tables alone, each under FORCE ROW LEVEL
SECURITY with a policy comparing tenant_id with the bound tenant (migration
20261202200000_tenant_data.sql). Reads outside a transaction run READ ONLY.

Values cross to JavaScript as JSON (`to_json_value`): numbers stay numbers when a double holds
them exactly, otherwise they become strings; timestamps and dates ISO 8601; uuid strings;
bytea base64; json/jsonb as they are.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from datetime import time as dtime
from decimal import Decimal, InvalidOperation
from typing import Any
from uuid import UUID

import asyncpg

from consumer.db import Db, translated
from consumer.errors import StoreError, StoreUnavailable, ValidationError
from consumer.sql import q
from consumer.tenant_gate import TenantGate
from consumer.tenant_sql import Exposed, SqlRefused, check

MAX_ROWS = 1000
MAX_RESULT_BYTES = 1 << 20
MAX_STATEMENT_S = 5.0
EXPOSED_TTL_S = 2.0  # how long a process trusts its copy of the exposed list (grants: at once)
_MAX_SAFE_INT = 2**53
# The runtime's own tables (the seed's seven, jsrt_*, the migrations' bookkeeping) and
# names a bare reference would resolve in pg_catalog first: never exposed.
_RESERVED_NAME = re.compile(r"^(pg_|jsrt_|gorp_)")
_RUNTIME_TABLES = frozenset({"scripts", "script_versions", "script_executions",
                             "script_event_subscriptions", "script_scheduled_jobs",
                             "script_http_endpoints", "script_event_dead_letters"})


class DataError(ValidationError):
    """ctx.db: the statement failed"""


@dataclass(frozen=True, slots=True)
class Outcome:
    rows: list[dict[str, Any]]
    affected: int


class TenantData:
    """The repository of ctx.db: exposed tables, and statements run as a tenant."""

    def __init__(self, db: Db, monotonic: Callable[[], float] = time.monotonic,
                 max_statement_s: float = MAX_STATEMENT_S,
                 per_tenant: int | None = None) -> None:
        """`db`: the connections ctx.db uses (its own pool in a jsrt process, see Store.open);
        `per_tenant`: at most this many of them held by one tenant at once (None: no cap)."""
        self._db = db
        self.max_statement_s = max_statement_s
        self._monotonic = monotonic
        self._exposed: dict[tuple[str, str], Exposed] | None = None
        self._exposed_at = 0.0
        self._gate = TenantGate(per_tenant) if per_tenant else None

    # operators: jsrt db expose / list / hide
    async def expose(self, table: str, writable: bool, columns: Sequence[str] | None) -> Exposed:
        row = await self._db.fetchrow(q("data_resolve"), table)
        if row is None:
            raise ValidationError(f"no table named {table!r}")
        if _RESERVED_NAME.match(row["table_name"]) or row["table_name"] in _RUNTIME_TABLES \
                or row["table_schema"] in ("pg_catalog", "information_schema"):
            raise ValidationError(f"{table!r} is the runtime's or the catalog's: it cannot be "
                                  "exposed to scripts")
        cols = list(dict.fromkeys(columns)) if columns else None
        if cols is not None and "tenant_id" not in cols:
            cols.insert(0, "tenant_id")  # scripts write it, and the policy reads it anyway
        try:
            await self._db.execute(q("data_expose"), table, writable, cols)
        except StoreUnavailable:
            raise
        except StoreError as exc:  # the function's own refusal: no tenant_id, not a table, ...
            raise ValidationError(_pg_line(exc)) from None
        self._exposed = None
        return Exposed(row["table_schema"], row["table_name"], writable,
                       tuple(cols) if cols else None)

    async def hide(self, table: str) -> bool:
        schema, _, name = table.rpartition(".")
        row = await self._db.fetchrow(q("data_resolve"), table)
        if row is not None:
            schema, name = row["table_schema"], row["table_name"]
        hidden = bool(await self._db.fetchval(q("data_hide"), schema or "public", name))
        self._exposed = None
        return hidden

    async def list(self) -> list[dict[str, Any]]:
        return [dict(r) for r in await self._db.fetch(q("data_exposed"))]

    async def exposed(self) -> Mapping[tuple[str, str], Exposed]:
        """The exposed tables, re-read every EXPOSED_TTL_S: a table hidden meanwhile may pass
        the parser for that long, never the role (its grants go at once)."""
        now = self._monotonic()
        if self._exposed is None or now - self._exposed_at > EXPOSED_TTL_S:
            self._exposed = {
                (r["table_schema"], r["table_name"]): Exposed(
                    r["table_schema"], r["table_name"], r["writable"],
                    tuple(r["columns"]) if r["columns"] is not None else None)
                for r in await self._db.fetch(q("data_exposed"))
            }
            self._exposed_at = now
        return self._exposed

    # scripts: ctx.db
    async def run(self, tenant_id: str, sql: Any, params: Any, *, read_only: bool,
                  timeout_s: float) -> Outcome:
        """One statement in a transaction of its own."""
        values = _params(params)
        found = check(sql, len(values), await self.exposed(), read_only)
        db, release = await self._connection(tenant_id, timeout_s)
        try:
            await db.execute(self._begin_bound(tenant_id, read_only, timeout_s))
            outcome = await _statement(db, sql, values, bool(found.writes))
            await db.execute(q("data_commit"))
            return outcome
        except BaseException:
            await _rollback_quietly(db)
            raise
        finally:
            await release()

    def _begin_bound(self, tenant_id: str, read_only: bool, timeout_s: float) -> str:
        """BEGIN and the binding in one round trip; only values made here go into it."""
        return q("data_begin_bound").format(
            mode="READ ONLY" if read_only else "READ WRITE", tenant=UUID(tenant_id),
            timeout_ms=int(self._timeout_ms(timeout_s)))

    def _timeout_ms(self, timeout_s: float) -> str:
        """statement_timeout: the cap (5 s), or what remains of the execution if less."""
        return str(max(1, int(min(self.max_statement_s, timeout_s) * 1000)))

    async def _connection(self, tenant_id: str, timeout_s: float
                          ) -> tuple[Db, Callable[[], Awaitable[None]]]:
        """A connection for the tenant, within its share: waited for at most the statement's
        time, then refused in words (the run goes on, and may try again)."""
        wait = min(self.max_statement_s, timeout_s)
        gate = self._gate
        if gate is not None and not await gate.enter(tenant_id, wait):
            raise DataError(
                f"ctx.db: this tenant already holds {gate.per_tenant} database connections "
                "(open transactions and running statements); none came free in time")
        try:
            db, release = await self._db.reserve(timeout=wait)
        except TimeoutError:
            if gate is not None:
                gate.leave(tenant_id)
            raise DataError("ctx.db: no database connection came free in time (every one "
                            "is in use): try again") from None
        except BaseException:
            if gate is not None:
                gate.leave(tenant_id)
            raise
        if gate is None:
            return db, release

        async def release_both() -> None:
            try:
                await release()
            finally:
                gate.leave(tenant_id)

        return db, release_both

    async def begin(self, tenant_id: str) -> HeldTransaction:
        """A transaction held across calls (ctx.db.transaction), bound to the tenant."""
        db, release = await self._connection(tenant_id, self.max_statement_s)
        try:
            await db.execute(self._begin_bound(tenant_id, False, self.max_statement_s))
        except BaseException:
            await _rollback_quietly(db)
            await release()
            raise
        return HeldTransaction(self, db, release)


class HeldTransaction:
    """One open ctx.db transaction: its statements one at a time, then commit or rollback;
    `close` (the execution ended) rolls back whatever is still open."""

    def __init__(self, data: TenantData, db: Db, release: Callable[[], Awaitable[None]]) -> None:
        self._data = data
        self._db = db
        self._release: Callable[[], Awaitable[None]] | None = release
        self._lock = asyncio.Lock()
        self.failed = False

    async def run(self, sql: Any, params: Any, timeout_s: float) -> Outcome:
        values = _params(params)
        found = check(sql, len(values), await self._data.exposed(), read_only=False)
        async with self._lock:
            if self._release is None:
                raise DataError("ctx.db: the transaction has ended")
            if self.failed:
                raise DataError("ctx.db: the transaction was aborted by an earlier error; "
                                "it will be rolled back")
            try:
                await self._db.execute(q("data_timeout"), self._data._timeout_ms(timeout_s))
                return await _statement(self._db, sql, values, bool(found.writes))
            except BaseException:
                self.failed = True
                raise

    async def commit(self) -> None:
        async with self._lock:
            if self._release is None:
                raise DataError("ctx.db: the transaction has ended")
            try:
                if self.failed:
                    raise DataError("ctx.db: the transaction was rolled back (a statement in "
                                    "it failed)")
                await self._db.execute(q("data_commit"))
            finally:
                await self._end()

    async def close(self) -> None:
        """Roll back (if still open) and give the connection back; never raises."""
        async with self._lock:
            await self._end()

    async def _end(self) -> None:
        release, self._release = self._release, None
        if release is None:
            return
        try:
            await _rollback_quietly(self._db)
        finally:
            await release()


async def _rollback_quietly(db: Db) -> None:
    """End what is open before the connection goes back (the pool would log an error for
    a connection released mid-transaction). A connection that cannot even roll back is
    closed by the pool's release."""
    with contextlib.suppress(StoreError, TimeoutError):
        await asyncio.wait_for(db.execute(q("data_rollback")), 5)


async def _statement(db: Db, sql: str, values: list[Any], writes: bool) -> Outcome:
    try:
        stmt = await db.prepare(sql)
        args = [_param(v, t, i + 1) for i, (v, t) in enumerate(
            zip(values, stmt.get_parameters(), strict=True))]
        async with translated():
            if stmt.get_attributes() and not writes:  # a read: never more than the cap read
                cursor = await stmt.cursor(*args)
                records = await cursor.fetch(MAX_ROWS + 1)
            else:
                records = await stmt.fetch(*args)
            status = stmt.get_statusmsg() or ""
    except (StoreUnavailable, SqlRefused):
        raise
    except StoreError as exc:
        raise DataError(f"ctx.db: {_pg_line(exc)}") from None
    if len(records) > MAX_ROWS:
        raise DataError(f"ctx.db: the result has more than {MAX_ROWS} rows (add a LIMIT)")
    rows = [{k: to_json_value(v) for k, v in r.items()} for r in records]
    size = len(json.dumps(rows, ensure_ascii=False, separators=(",", ":")).encode())
    if size > MAX_RESULT_BYTES:
        raise DataError(f"ctx.db: the result is larger than {MAX_RESULT_BYTES} bytes ({size})")
    affected = int(status.rsplit(" ", 1)[-1]) if status.rsplit(" ", 1)[-1].isdigit() else 0
    return Outcome(rows, affected)


def _pg_line(exc: BaseException) -> str:
    """PostgreSQL's own first line (never the DETAIL, which may show other rows' values)."""
    cause = exc.__cause__
    if isinstance(cause, asyncpg.QueryCanceledError):
        return "the statement was cancelled: it ran past its timeout"
    text = str(cause if isinstance(cause, asyncpg.PostgresError) else exc)
    return text.removeprefix("database error: ").splitlines()[0][:300]


def _params(params: Any) -> list[Any]:
    if params is None:
        return []
    if not isinstance(params, list):
        raise SqlRefused("ctx.db: params must be an array")
    return params


_INT_TYPES = {"int2", "int4", "int8", "oid"}
_FLOAT_TYPES = {"float4", "float8"}


def _param(value: Any, typ: Any, n: int) -> Any:  # noqa: C901 - one case per type
    """A JSON value from the script as the driver wants it for the parameter's type."""
    if value is None:
        return None
    name = typ.name
    try:
        if typ.kind == "array":
            if not isinstance(value, list):
                raise ValueError
            return [_param(v, typ.element_type, n) for v in value]
        if name in ("json", "jsonb"):
            return value
        if name in _INT_TYPES:
            if isinstance(value, bool) or not (isinstance(value, int) or (
                    isinstance(value, float | str) and float(value).is_integer())):
                raise ValueError
            return int(value) if not isinstance(value, str) else int(value, 10)
        if name in _FLOAT_TYPES:
            return float(value)
        if name == "numeric":
            return Decimal(str(value))
        if name == "bool":
            if not isinstance(value, bool):
                raise ValueError
            return value
        if name == "uuid":
            return UUID(str(value))
        if name in ("timestamptz", "timestamp"):
            return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        if name == "date":
            return date.fromisoformat(str(value))
        if name == "bytea":
            return base64.b64decode(str(value), validate=True)
        if name in ("text", "varchar", "bpchar", "name", "char"):
            return value if isinstance(value, str) else json.dumps(value)
    except (ValueError, TypeError, InvalidOperation, ArithmeticError):
        raise SqlRefused(f"ctx.db: parameter ${n} is not a valid {name}: "
                         f"{json.dumps(value)[:60]}") from None
    return value


def to_json_value(value: Any) -> Any:  # noqa: C901 - one case per type
    """A database value as JSON for the script (the README's value mapping)."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value if -_MAX_SAFE_INT <= value <= _MAX_SAFE_INT else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            return str(value)
        if value == value.to_integral_value():
            return int(value) if abs(value) <= _MAX_SAFE_INT else str(value)
        # a number when the double reads back as the same decimal (9.99 does), else a string
        as_float = float(value)
        return as_float if math.isfinite(as_float) and Decimal(repr(as_float)) == value \
            else str(value)
    if isinstance(value, datetime | date | dtime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, list | tuple):
        return [to_json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_json_value(v) for k, v in value.items()}
    if isinstance(value, asyncpg.Record):
        return {k: to_json_value(v) for k, v in value.items()}
    return str(value)
