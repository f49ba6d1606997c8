"""Prometheus metrics and health checks of a daemon process, on a small HTTP server of its own
(JSRT_METRICS_ADDR; empty disables it).

    /metrics   the Prometheus text exposition of this process's registry
    /healthz   200 while the process answers (liveness)
    /readyz    200 when the database answers within READY_TIMEOUT_S and sandbox workers are
               up, 503 otherwise (readiness); the body says which check failed

Where the numbers come from, so that the daemon's code barely knows about metrics:
  * the store's observers: events fanned out (by how they were published) and executions
    recorded (by trigger and status, with their durations), counted after commit;
  * a collector reading, at scrape time, the daemon's status and the executor's stats;
  * gauges refreshed every metrics_interval by one aggregate query (queue depth, oldest
    pending event, dead letters by state).
Each daemon has its own CollectorRegistry, so several can live in one process (tests).
"""

from __future__ import annotations

import collections
import contextlib
import errno
import os
import socket
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import anyio
import uvicorn
from anyio.abc import TaskGroup, TaskStatus
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from consumer import log
from consumer.daemon import DaemonStatus
from consumer.errors import ConfigError, StoreError
from consumer.records import Finished, Outcome
from consumer.sandbox import Executor
from consumer.settings import Settings
from consumer.store import Store

_LOG = log.get("jsrt.metrics")

READY_TIMEOUT_S = 2.0
SNAPSHOT_TIMEOUT_S = 10.0
TRIGGERS = ("event", "cron", "http", "manual", "api")
STATUSES = ("completed", "failed", "timeout")
SOURCES = ("publish", "notify", "script", "cli")
DEAD_LETTER_STATES = ("retriable", "exhausted", "resolved")
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    """The metric families of one daemon, fed by its store, daemon, listener and executor."""

    def __init__(self, store: Store, executor: Executor,
                 status: Callable[[], DaemonStatus] | None = None,
                 registry: CollectorRegistry | None = None) -> None:
        self.store = store
        self.executor = executor
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events_received = Counter(
            "jsrt_events_received", "Events this daemon took from the queue and fanned out, "
            "by how they were published", ["source"], registry=r)
        self.executions = Counter(
            "jsrt_executions", "Executions recorded by this process, by trigger and final status",
            ["trigger", "status"], registry=r)
        self.duration = Histogram(
            "jsrt_execution_duration_seconds", "Execution time in the sandbox, by trigger",
            ["trigger"], buckets=DURATION_BUCKETS, registry=r)
        self.pending_events = Gauge(
            "jsrt_queue_pending_events", "Events published but not yet fanned out (all tenants)",
            registry=r)
        self.oldest_pending = Gauge(
            "jsrt_queue_oldest_pending_event_age_seconds",
            "Age of the oldest event not yet fanned out (0 when none)", registry=r)
        self.runs = Gauge(
            "jsrt_queue_runs", "Unfinished executions by state (pending: waiting for a slot)",
            ["state"], registry=r)
        self.dead_letters = Gauge(
            "jsrt_dead_letters", "Dead letters by state (all tenants)", ["state"], registry=r)
        self._zero()
        r.register(_LiveCollector(executor, status))
        ProcessCollector(registry=r)  # process_cpu_seconds_total, process_resident_memory_bytes…
        store.on_dispatched.append(self._dispatched)
        store.on_recorded.append(self._recorded)

    def _zero(self) -> None:
        """Every label set is exposed from the start: a missing series is not a zero."""
        for source in SOURCES:
            self.events_received.labels(source)
        for trigger in TRIGGERS:
            self.duration.labels(trigger)
            for status in STATUSES:
                self.executions.labels(trigger, status)
        for state in ("pending", "running"):
            self.runs.labels(state)
        for state in DEAD_LETTER_STATES:
            self.dead_letters.labels(state)

    # ---------------------------------------------------------------- observers
    def _dispatched(self, by_source: Mapping[str, int]) -> None:
        for source, n in by_source.items():
            self.events_received.labels(source).inc(n)

    def _recorded(self, outcomes: Sequence[Outcome], finished: Sequence[Finished]) -> None:
        recorded = {f.execution_id for f in finished}
        counts: collections.Counter[tuple[str, str]] = collections.Counter()
        durations: dict[str, list[float]] = {}
        for o in outcomes:
            if o.run.execution_id not in recorded:
                continue
            trigger = o.run.trigger_type
            counts[trigger, o.result.status] += 1
            ms = o.result.metrics.get("duration_ms")
            if ms is not None:
                durations.setdefault(trigger, []).append(ms / 1000)
        # one labelled child per kind in the batch, not one look-up per execution
        for (trigger, status), n in counts.items():
            self.executions.labels(trigger, status).inc(n)
        for trigger, seconds in durations.items():
            histogram = self.duration.labels(trigger)
            for value in seconds:
                histogram.observe(value)

    # ---------------------------------------------------------------- snapshot
    async def refresh(self) -> bool:
        """Run the aggregate query once; on failure the gauges keep their last values."""
        try:
            with anyio.fail_after(SNAPSHOT_TIMEOUT_S):
                row = await self.store.queue.snapshot()
        except (StoreError, TimeoutError) as exc:
            _LOG.warning("metrics_refresh_failed", error=str(exc).splitlines()[0][:200])
            return False
        self.pending_events.set(row["pending_events"])
        self.oldest_pending.set(row["oldest_pending_age_s"])
        self.runs.labels("pending").set(row["pending_runs"])
        self.runs.labels("running").set(row["running_runs"])
        for state in DEAD_LETTER_STATES:
            self.dead_letters.labels(state).set(row[f"dl_{state}"])
        return True

    async def refresh_loop(self, interval: float) -> None:
        while True:
            await self.refresh()
            await anyio.sleep(interval)

    # ---------------------------------------------------------------- health
    async def readiness(self) -> dict[str, Any]:
        workers = len(self.executor.stats().workers)
        database = await self._database()
        return {"ready": database == "ok" and workers > 0, "database": database,
                "workers": workers}

    async def _database(self) -> str:
        try:
            with anyio.fail_after(READY_TIMEOUT_S):
                await self.store.ping()
        except TimeoutError:
            return f"no answer within {READY_TIMEOUT_S:g} s"
        except StoreError as exc:
            return str(exc).splitlines()[0][:200]
        return "ok"

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _LiveCollector(Collector):
    """The daemon's status and the executor's stats, read at scrape time."""

    def __init__(self, executor: Executor, status: Callable[[], DaemonStatus] | None) -> None:
        self.executor = executor
        self.status = status

    def collect(self) -> Iterable[Metric]:
        status = self.status() if self.status is not None else None
        rejected = CounterMetricFamily(
            "jsrt_events_rejected", "Raw events refused by the listener (invalid or unknown "
            "tenant)", labels=["source"])
        rejected.add_metric(["notify"], status.events_rejected if status else 0)
        yield rejected
        yield CounterMetricFamily(
            "jsrt_listener_reconnects", "Times the LISTEN connection was re-established",
            value=status.listener_reconnects if status else 0)
        yield CounterMetricFamily(
            "jsrt_side_claims", "Small claims run beside one fanning out a backlog, for an "
            "event that came meanwhile", value=status.side_claims if status else 0)
        yield CounterMetricFamily(
            "jsrt_executions_lost", "Runs of dead daemons this daemon closed as 'worker lost'",
            value=status.rescued if status else 0)
        yield from self._sandbox()

    def _sandbox(self) -> Iterator[Metric]:
        stats = self.executor.stats()
        yield CounterMetricFamily(
            "jsrt_sandbox_worker_restarts", "Sandbox workers replaced after a crash, timeout, "
            "hang or memory overrun", value=stats.restarts)
        yield CounterMetricFamily(
            "jsrt_sandbox_burst_workers", "Burst workers started while every worker ran a long "
            "step", value=stats.bursts)
        yield GaugeMetricFamily("jsrt_sandbox_workers", "Sandbox worker processes up",
                                value=len(stats.workers))
        rss = GaugeMetricFamily("jsrt_sandbox_worker_rss_bytes",
                                "Resident memory of each sandbox worker", labels=["worker"])
        for w in stats.workers:
            rss.add_metric([str(w.index)], w.rss_bytes)
        yield rss


# -------------------------------------------------------------------- the server
def build_app(metrics: Metrics) -> Starlette:
    async def metrics_page(_request: Request) -> Response:
        return Response(metrics.exposition(), headers={"content-type": CONTENT_TYPE_LATEST})

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_request: Request) -> Response:
        body = await metrics.readiness()
        return JSONResponse(body, status_code=200 if body["ready"] else 503)

    return Starlette(routes=[Route("/metrics", metrics_page), Route("/healthz", healthz),
                             Route("/readyz", readyz)])


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the daemon owns signals; it calls MetricsServer.shutdown()


def _host(addr: str) -> str:
    return addr.rpartition(":")[0].strip("[]") or "127.0.0.1"


def _create(addr: str) -> socket.socket:
    host, port = _host(addr), addr.rpartition(":")[2]
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, int(port)), family=family, backlog=64)


def bind(addr: str) -> socket.socket:
    """A listening socket for HOST:PORT (port 0: any free port), or a one-line ConfigError."""
    try:
        return _create(addr)
    except (OSError, ValueError) as exc:
        raise _cannot_serve(addr, exc) from None


def _cannot_serve(addr: str, exc: Exception) -> ConfigError:
    code = getattr(exc, "errno", None)
    reason = os.strerror(code).lower() if code else str(exc)
    return ConfigError(f"cannot serve metrics on {addr}: {reason}; "
                       "set JSRT_METRICS_ADDR to another HOST:PORT, or empty to disable")


def listen(settings: Settings) -> socket.socket | None:
    """The metrics socket. A JSRT_METRICS_ADDR that was set is bound or fails (ConfigError).
    The default address, when another process of this host holds it (a second daemon, a
    `jsrt serve` beside a daemon), gives way: one warning, then any free port of the same
    host, or no metrics at all if even that fails."""
    addr = settings.metrics_addr
    try:
        return _create(addr)
    except (OSError, ValueError) as exc:
        if settings.metrics_addr_given or getattr(exc, "errno", None) != errno.EADDRINUSE:
            raise _cannot_serve(addr, exc) from None
    try:
        sock = _create(f"{addr.rpartition(':')[0]}:0")
    except OSError as exc:
        _LOG.warning("metrics_addr_in_use", addr=addr, fallback=None,
                     error=os.strerror(exc.errno).lower() if exc.errno else str(exc),
                     hint="metrics are off; set JSRT_METRICS_ADDR to a free HOST:PORT")
        return None
    _LOG.warning("metrics_addr_in_use", addr=addr, fallback=_address(sock),
                 hint="serving metrics on a free port; set JSRT_METRICS_ADDR to choose one")
    return sock


def _address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class MetricsServer:
    def __init__(self, metrics: Metrics, addr: str, interval: float,
                 sock: socket.socket | None = None) -> None:
        self.metrics = metrics
        self.addr = addr
        self.interval = interval
        self.port = 0
        self._sock = sock  # bound already (start_metrics); otherwise run() binds addr
        self._server: _Server | None = None
        self._stop_requested = False
        self._stopped = anyio.Event()

    async def run(self, *, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve (and refresh the gauges) until shutdown(); task_status gets the bound port."""
        try:
            with self._sock or bind(self.addr) as sock:
                self.port = sock.getsockname()[1]
                self.addr = _address(sock)
                config = uvicorn.Config(build_app(self.metrics), log_config=None,
                                        access_log=False, lifespan="off",
                                        timeout_graceful_shutdown=1)
                self._server = _Server(config)
                self._server.should_exit = self._stop_requested
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self.metrics.refresh_loop, self.interval)
                    _LOG.info("metrics_listening", addr=self.addr, port=self.port)
                    task_status.started(self.port)
                    await self._server.serve(sockets=[sock])
                    tg.cancel_scope.cancel()
        finally:
            self._stopped.set()

    async def shutdown(self) -> None:
        self._stop_requested = True
        if self._server is not None:
            self._server.should_exit = True
        await self._stopped.wait()


async def start_metrics(tg: TaskGroup, settings: Settings, store: Store, executor: Executor,
                        status: Callable[[], DaemonStatus] | None) -> MetricsServer | None:
    """Serve /metrics, /healthz and /readyz inside `tg` (None when JSRT_METRICS_ADDR is empty);
    `status` (the daemon's) is None for `jsrt serve`, which has no listener and claims no
    events."""
    if not settings.metrics_addr:
        return None
    sock = listen(settings)
    if sock is None:
        return None
    server = MetricsServer(Metrics(store, executor, status), settings.metrics_addr,
                           settings.metrics_interval, sock)
    await tg.start(server.run)
    return server
