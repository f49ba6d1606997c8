"""The processes, wired in one place: what `jsrt run`, `jsrt serve` and `jsrt dev` start -
the store's pool, the sandbox, signal handling, the daemon, the HTTP and metrics servers -
and how they stop. Nothing below reaches into another part's fields."""

from __future__ import annotations

import gc
import signal
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

import anyio

from consumer import log
from consumer.cache import Cache, PgCache, RedisCache
from consumer.daemon import Daemon
from consumer.http import HttpServer, start_http
from consumer.metrics import start_metrics
from consumer.ratelimit import API_CALLS
from consumer.sandbox import Executor
from consumer.sandbox.types import ApiLimiter, ExecutionRequest, Publisher, PublishRequest
from consumer.scriptdata import ScriptData
from consumer.settings import Settings
from consumer.store import Store
from consumer.vacuum import QueueVacuum

_LOG = log.get("jsrt.app")

Ready = Callable[[str | None, str | None], None]


def store_api_limiter(store: Store) -> ApiLimiter:
    """max_api_calls_per_minute counted in the database: it holds across every daemon,
    server, embedded Runtime and restart, as max_concurrent_runs does."""

    async def acquire(req: ExecutionRequest, limit: int) -> bool:
        return await store.rates.acquire(req.tenant_id, req.script_id, API_CALLS, limit)

    return acquire


def sandbox(settings: Settings, store: Store, workers: int | None = None,
            fetch_allowlist: Sequence[str] | None = None) -> Executor:
    """The sandbox of a jsrt process (the daemon, the server, `jsrt exec`, the embedded
    Runtime): publishing, rate limits, ctx.db and ctx.cache through the store (ctx.cache
    through Redis when JSRT_CACHE_URL is set); `fetch_allowlist` defaults to the settings'."""
    return Executor(workers=workers or settings.worker_count, publisher=store_publisher(store),
                    fetch_allowlist=settings.fetch_allowlist if fetch_allowlist is None
                    else fetch_allowlist,
                    api_limiter=store_api_limiter(store), data=script_data(settings, store),
                    secrets=store.secrets.get, burst_workers=settings.burst_worker_count)


def script_data(settings: Settings, store: Store) -> ScriptData:
    """ctx.db over the store; ctx.cache in Redis when JSRT_CACHE_URL names one, else in
    PostgreSQL. The executor that receives it closes it."""
    cache: Cache = RedisCache(settings.cache_url, settings.cache_max_entries) \
        if settings.cache_url else PgCache(store.db, max_entries=settings.cache_max_entries)
    return ScriptData(store.tenant_data, cache)


def store_publisher(store: Store) -> Publisher:
    """ctx.events.publish from a script: into the script's own tenant (the executor fills it
    in, never the script), through the same durable path as jsrt_publish."""

    async def publish(req: PublishRequest) -> str:
        event_id = await store.queue.enqueue(
            req.tenant_id, req.event_type, req.payload, None, req.depth, "script"
        )
        return str(event_id)

    return publish


@asynccontextmanager
async def open_services(settings: Settings) -> AsyncIterator[tuple[Store, Executor]]:
    """The pool and the sandbox every long-running jsrt process needs."""
    pool_size = max(4, settings.concurrency // 4 + 4)
    store = await Store.open(settings.require_database(), max_size=pool_size, settings=settings)
    try:
        async with sandbox(settings, store) as executor:
            yield store, executor
    finally:
        await store.close()


async def stop_on_signals(stop: Callable[[], None]) -> None:
    """SIGTERM and SIGINT ask for a graceful stop (run as a task; cancel it when done)."""
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            _LOG.info("signal_received", signal=signal.Signals(signum).name)
            stop()


async def run_daemon(settings: Settings, until_idle: bool = False, http: str | None = None,
                     ready: Ready | None = None) -> int:
    """`jsrt run`: the daemon with signal handling (and, given `http` = HOST:PORT, the HTTP
    trigger server on the same executor); returns the exit code. `ready(http, metrics)` is
    called with the addresses really bound, once both listen and before the daemon starts
    (`jsrt dev` prints its banner then, never before an address turned out to be taken)."""
    async with open_services(settings) as (store, executor), anyio.create_task_group() as tg:
        # What start-up built lives as long as the process: out of the collector's sight, a
        # full collection no longer walks it (a pause that would show in the latency tail).
        gc.freeze()
        daemon = Daemon(settings, store, executor)
        tg.start_soon(stop_on_signals, daemon.stop)
        metrics = None if until_idle else await start_metrics(
            tg, settings, store, executor, daemon.status)
        server = await start_http(tg, settings, store, executor, http) if http else None
        if ready is not None:
            ready(server.address if server else None, metrics.addr if metrics else None)
        await daemon.run(until_idle=until_idle)
        if server is not None:
            await server.shutdown()
        if metrics is not None:
            await metrics.shutdown()
        tg.cancel_scope.cancel()
    return 0


async def serve(settings: Settings, http: str) -> int:
    """`jsrt serve`: the HTTP trigger server alone, with metrics and health."""
    async with open_services(settings) as (store, executor), anyio.create_task_group() as tg:
        server = HttpServer(settings, store, executor, http)
        tg.start_soon(stop_on_signals, server.stop)
        if settings.queue_vacuum_interval > 0:  # its runs churn jsrt_runs as a daemon's do
            tg.start_soon(QueueVacuum(store.queue, settings.queue_vacuum_interval).run)
        metrics = await start_metrics(tg, settings, store, executor, None)
        await server.run()
        if metrics is not None:
            await metrics.shutdown()
        tg.cancel_scope.cancel()
    return 0
