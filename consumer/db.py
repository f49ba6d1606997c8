"""The connector: the one path to PostgreSQL. Every query of the runtime goes through a `Db` -
over a pool (daemons, servers, the embedded API) or over one connection (one-shot commands,
the migrator) - and every driver error is translated here: a lost or refused connection
becomes StoreUnavailable (the loops back off and carry on), a missing schema SchemaMissing
(run `jsrt migrate up`), anything else a StoreError. The SQL itself is named, in sql/*.sql;
the repositories (queue.py, scripts.py, dead_letters.py, ...) hold the operations, the Store
(store.py) holds the repositories."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg

from consumer import jsontext
from consumer.errors import StoreError, StoreUnavailable


class SchemaMissing(StoreError):
    """The database has no jsruntime schema (or an older one): run `jsrt migrate up`."""


class Refused(StoreError):
    """The database refused a write for a reason its caller may explain better (a constraint
    or a function's own error); `constraint` and `column` say where, when PostgreSQL does."""

    def __init__(self, message: str, constraint: str | None = None,
                 column: str | None = None) -> None:
        super().__init__(message)
        self.constraint = constraint
        self.column = column


class UniqueViolation(Refused):
    """A row with this key exists."""


class ForeignKeyViolation(Refused):
    """A row this one points at does not exist."""


class NotNullViolation(Refused):
    """A required column has no value."""


class NoDataFound(Refused):
    """A function found nothing to act on (raised with ERRCODE no_data_found)."""


_REFUSALS: tuple[tuple[type[asyncpg.PostgresError], type[Refused]], ...] = (
    (asyncpg.UniqueViolationError, UniqueViolation),
    (asyncpg.ForeignKeyViolationError, ForeignKeyViolation),
    (asyncpg.NotNullViolationError, NotNullViolation),
    (asyncpg.NoDataFoundError, NoDataFound),
)


_UNAVAILABLE = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    # a connection broken mid-query can leave its protocol state confused: seen when the
    # server shuts down under a transaction and the pool then resets the connection
    asyncpg.InternalClientError,
    ConnectionError,
    OSError,
    TimeoutError,
)


@asynccontextmanager
async def translated() -> AsyncIterator[None]:
    try:
        yield
    except _UNAVAILABLE as exc:
        raise StoreUnavailable(f"database unavailable: {type(exc).__name__}: {exc}") from exc
    except asyncpg.PostgresError as exc:
        raise store_error(exc) from exc
    except jsontext.JsonRefused as exc:  # a stored value our decoder will not take
        raise StoreError(f"database value refused: {exc}") from exc


def store_error(exc: asyncpg.PostgresError) -> StoreError:
    """A database error as one line; a missing table or function says what to do."""
    if isinstance(exc, asyncpg.UndefinedTableError | asyncpg.UndefinedFunctionError):
        first = str(exc).splitlines()[0]  # not the driver's hint about type casts
        return SchemaMissing(f"database error: {first}: the jsruntime schema is missing or "
                             "out of date here; run `jsrt migrate up`")
    for driver, ours in _REFUSALS:
        if isinstance(exc, driver):
            return ours(f"database error: {exc}", getattr(exc, "constraint_name", None),
                        getattr(exc, "column_name", None))
    return StoreError(f"database error: {exc}")


def unreachable(dsn: str, exc: BaseException) -> StoreUnavailable:
    """A failed connection attempt, naming where it went and what to check (an OSError of
    the driver says neither, e.g. `[Errno 2] No such file or directory` for a socket)."""
    where = _target(dsn)
    if isinstance(exc, FileNotFoundError | ConnectionRefusedError):
        reason = "no server is listening there"
    elif isinstance(exc, OSError) and exc.strerror:
        reason = exc.strerror.lower()
    else:
        reason = str(exc) or type(exc).__name__
    hint = "is PostgreSQL running there, and is DATABASE_URL right?"
    if "/.jsrt/" in where or where.endswith("/.jsrt"):
        hint = "the embedded server runs only while `make run` (`jsrt dev`) does"
    return StoreUnavailable(f"cannot reach the database at {where}: {reason}; {hint}")


def _target(dsn: str) -> str:
    """host:port or the socket directory of a DSN, never its password."""
    try:
        parts = urlsplit(dsn)
        query = parse_qs(parts.query)
        host = (query.get("host") or [parts.hostname or ""])[0] or "localhost"
        port = (query.get("port") or [str(parts.port or 5432)])[0]
    except ValueError:
        return "DATABASE_URL"
    return f"the socket in {host}" if host.startswith("/") else f"{host}:{port}"


async def _init_connection(conn: asyncpg.Connection) -> None:
    # Decoding never recurses without bound (a value nested too deeply is an error of its
    # own). Hot paths do not decode tenant JSON at all: they select it as text.
    for typ in ("jsonb", "json"):
        await conn.set_type_codec(typ, encoder=_encode_json, decoder=jsontext.loads_stored,
                                  schema="pg_catalog")


def _encode_json(value: Any) -> str:
    return json.dumps(value, allow_nan=False)


async def _keep_session(conn: asyncpg.Connection) -> None:
    """The pool's reset on release. asyncpg still rolls back an open transaction; its default
    reset would add a round trip (RESET ALL, UNLISTEN, unlock all) to every operation, for
    session state that the store never sets: no SET, no LISTEN, only transaction-scoped
    advisory locks. (The listener and the migrator use connections of their own.)"""


async def connect(dsn: str, application_name: str = "jsrt") -> asyncpg.Connection:
    """A single connection with the store's codecs, for what needs a session of its own: the
    listener's LISTEN, the migrator's advisory lock, a one-shot command."""
    try:
        conn = await asyncpg.connect(dsn, server_settings={"application_name": application_name})
    except OSError as exc:
        raise unreachable(dsn, exc) from exc
    try:
        await _init_connection(conn)
    except BaseException:  # an error or a cancellation: nobody else will ever close it
        conn.terminate()
        raise
    return conn


class Db:
    """Named queries over a pool or one connection, errors translated. `transaction()`
    gives a Db bound to one connection inside a transaction."""

    def __init__(self, target: asyncpg.Pool | asyncpg.Connection) -> None:
        self._target = target

    @classmethod
    async def pool(cls, dsn: str, min_size: int = 2, max_size: int = 10,
                   application_name: str = "jsrt") -> Db:
        async with translated():
            try:
                pool = await asyncpg.create_pool(
                    dsn, min_size=min_size, max_size=max_size, init=_init_connection,
                    reset=_keep_session, server_settings={"application_name": application_name},
                )
            except OSError as exc:
                raise unreachable(dsn, exc) from exc
        return cls(pool)

    async def close(self) -> None:
        await self._target.close()

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        async with translated():
            return list(await self._target.fetch(sql, *args))

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        async with translated():
            return await self._target.fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        async with translated():
            return await self._target.fetchval(sql, *args)

    async def execute(self, sql: str, *args: Any) -> str:
        async with translated():
            return str(await self._target.execute(sql, *args))

    async def prepare(self, sql: str) -> asyncpg.prepared_stmt.PreparedStatement:
        """A statement prepared on this Db's connection (a Db of one connection only), not
        kept in the connection's statement cache: tenants' statements (ctx.db) must not
        crowd the runtime's own out of it."""
        assert isinstance(self._target, asyncpg.Connection), "prepare needs one connection"
        async with translated():
            return await self._target.prepare(sql)

    async def reserve(self, timeout: float | None = None
                      ) -> tuple[Db, Callable[[], Awaitable[None]]]:
        """A Db on one connection of the pool, held until `release` is awaited: for a
        transaction that spans several calls (ctx.db.transaction). The pool rolls back a
        transaction still open at release; a connection left mid-statement is closed.
        TimeoutError when no connection is free within `timeout` seconds."""
        assert isinstance(self._target, asyncpg.Pool), "reserve needs a pool"
        pool = self._target
        # (the deadline outside the translation: a TimeoutError is an OSError, which it
        # would report as the database being unreachable)
        async with asyncio.timeout(timeout):
            async with translated():
                conn = await pool.acquire()

        async def release() -> None:
            try:
                await pool.release(conn, timeout=5)
            except Exception:  # a connection that cannot be reset is not reused
                conn.terminate()
                await pool.release(conn)

        return Db(conn), release

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Db]:
        async with translated():
            if isinstance(self._target, asyncpg.Pool):
                async with self._target.acquire() as conn, conn.transaction():
                    yield Db(conn)
            else:
                async with self._target.transaction():
                    yield self


@asynccontextmanager
async def session(dsn: str, application_name: str = "jsrt") -> AsyncIterator[Db]:
    """A Db over one connection, closed on the way out (one-shot commands, the migrator)."""
    conn = await connect(dsn, application_name)
    try:
        yield Db(conn)
    finally:
        await conn.close()
