"""HTTP trigger throughput and latency: `jsrt serve` (uvicorn, real V8 executor) on a
loopback port, driven at a few concurrency levels by a minimal keep-alive client (see
Connection).

    .venv/bin/python bench/http_triggers.py [--n 1000] [--concurrency 1,8,32] [--workers 2]
                                            [--seconds 20]

A fresh database is created (and dropped) on DATABASE_URL's server; the script is trivial
(echo the query), so the figures are the cost of the path: route lookup, start under the
per-script limit, the sandbox step, recording, and the HTTP round trip. Every request is a
recorded execution. Loopback only; each level stops after --n requests or --seconds.
(Not named http.py: a file of that name in bench/ would shadow the standard library's http
package for every script in this folder.)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _common import drop_database, fresh_database  # noqa: E402

HANDLER = "function handler(req) { return { ok: true, n: req.query.n } }"


async def seed(url: str) -> uuid.UUID:
    conn = await asyncpg.connect(url)
    try:
        tenant = uuid.uuid4()
        await conn.execute("INSERT INTO tenants (id, name) VALUES ($1, 'bench')", tenant)
        await conn.execute(
            "INSERT INTO scripts (tenant_id, name, source, type, status, http_path, http_methods,"
            " resource_limits, metadata) VALUES ($1, 'echo', $2, 'http', 'active', '/echo',"
            " '{GET}', '{\"max_execution_time_ms\": 5000, \"max_memory_bytes\": 67108864,"
            " \"max_concurrent_runs\": 1000, \"max_api_calls_per_minute\": 60,"
            " \"max_output_size_bytes\": 1048576}', '{\"auth\": \"public\"}')", tenant, HANDLER)
    finally:
        await conn.close()
    return tenant


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"jsrt serve exited with {proc.returncode}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        writer.close()
        await writer.wait_closed()
        return
    raise SystemExit("jsrt serve did not start listening")


class Connection:
    """One keep-alive HTTP/1.1 connection that sends GETs and reads Content-Length bodies.

    The load generator shares the machine's two cores with the server, the sandbox workers
    and PostgreSQL: httpx spent most of a core at 32 connections and capped what was
    measured, so the benchmark speaks the few bytes of HTTP/1.1 it needs itself (uvicorn
    always answers these requests with a Content-Length)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        # (asyncio sets TCP_NODELAY on TCP transports itself)
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def get(self, target: str) -> int:
        self.writer.write(f"GET {target} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        match = _CONTENT_LENGTH.search(head)
        if match is None:
            raise RuntimeError(f"response without Content-Length: {head[:200]!r}")
        await self.reader.readexactly(int(match.group(1)))
        return status

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


_CONTENT_LENGTH = re.compile(rb"(?i)\r\ncontent-length:\s*(\d+)")


async def level(port: int, path: str, n: int, concurrency: int, seconds: float) -> None:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    deadline = time.monotonic() + seconds
    counter = iter(range(n))
    connections = [await Connection.open(port) for _ in range(concurrency)]

    async def worker(conn: Connection) -> None:
        for i in counter:
            if time.monotonic() > deadline:
                return
            t0 = time.perf_counter()
            status = await conn.get(f"{path}?n={i}")
            latencies.append(time.perf_counter() - t0)
            statuses[status] = statuses.get(status, 0) + 1

    started = time.perf_counter()
    try:
        await asyncio.gather(*(worker(c) for c in connections))
    finally:
        elapsed = time.perf_counter() - started
        for c in connections:
            await c.close()
    latencies.sort()
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000
    print(f"concurrency {concurrency:>3}: {len(latencies):>5} requests in {elapsed:5.1f} s  "
          f"{len(latencies) / elapsed:7.1f} req/s  p50 {p50:6.1f} ms  p99 {p99:6.1f} ms  "
          f"statuses {statuses}", flush=True)


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1000, help="requests per concurrency level")
    p.add_argument("--concurrency", default="1,8,32")
    p.add_argument("--workers", type=int, default=2, help="sandbox worker processes")
    p.add_argument("--seconds", type=float, default=20.0, help="time cap per level")
    args = p.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]

    url = await fresh_database("jsrt_bench_http")
    port = free_port()
    env = {**os.environ, "DATABASE_URL": url, "JSRT_WORKERS": str(args.workers),
           "JSRT_LOG_LEVEL": "warning", "JSRT_METRICS_ADDR": "127.0.0.1:0"}
    proc = subprocess.Popen([sys.executable, "-m", "consumer.cli", "serve", "--http",
                             f"127.0.0.1:{port}"], env=env, cwd=ROOT)
    try:
        tenant = await seed(url)
        await wait_listening(port, proc)
        path = f"/t/{tenant}/echo"
        print(f"jsrt serve on 127.0.0.1:{port}, {args.workers} sandbox workers, "
              f"{os.cpu_count()} cores", flush=True)
        await level(port, path, 50, 4, 10)  # warm-up: the server's V8 contexts and pool
        print("(warm-up above)")
        for c in levels:
            await level(port, path, args.n, c, args.seconds)
        conn = await asyncpg.connect(url)
        try:
            recorded = await conn.fetchval(
                "SELECT count(*) FROM script_executions WHERE status = 'completed'")
        finally:
            await conn.close()
        print(f"recorded executions: {recorded}")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        await drop_database(url)


if __name__ == "__main__":
    asyncio.run(main())
