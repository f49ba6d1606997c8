"""Procrastinate driver for bench/compare.py (from the lab-peers harness in ../shared/peers; run
with the venv compare.py installs).

Subcommands (all take --dsn):
  schema                      apply procrastinate's schema to an empty DB
  enqueue  --n N [--chunk C]  bulk-enqueue N jobs with Task.batch_defer_async (C per call)
  worker   --conc C [--pool P] --out FILE
                              run one worker (LISTEN/NOTIFY on, default options) until
                              SIGTERM/SIGINT, then write handler timestamps + peak RSS
  produce  --n N --gap-ms G --out FILE
                              enqueue N single jobs one by one (defer_async), G ms apart,
                              recording t0 (wall clock just before each enqueue call)
"""
import argparse
import asyncio
import json
import resource
import time

import procrastinate

REC = []  # (i, t0, t_handler_start, t_handler_end)


def make_app(dsn, pool_max=None):
    kw = {"conninfo": dsn}
    if pool_max:
        kw["min_size"] = min(4, pool_max)
        kw["max_size"] = pool_max
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(**kw))

    @app.task(name="add", queue="default")
    async def add(a, b, i=None, t0=None):
        ts = time.time()
        r = a + b  # the "work"
        REC.append((i, t0, ts, time.time()))
        return r

    return app, add


def peak_rss_kb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


async def cmd_schema(a):
    app, _ = make_app(a.dsn)
    async with app.open_async():
        await app.schema_manager.apply_schema_async()


async def cmd_enqueue(a):
    app, add = make_app(a.dsn)
    async with app.open_async():
        t = time.time()
        for s in range(0, a.n, a.chunk):
            batch = [{"a": k, "b": 1, "i": k} for k in range(s, min(a.n, s + a.chunk))]
            await add.batch_defer_async(*batch)
        el = time.time() - t
    print(json.dumps({"enqueued": a.n, "seconds": el, "rate": a.n / el}))


async def cmd_worker(a):
    app, _ = make_app(a.dsn, a.pool)
    meta = {"t_run_called": time.time()}  # before the pool is opened, like the Node peers
    async with app.open_async():
        with open(a.out + ".ready", "w") as f:
            f.write(str(meta["t_run_called"]))
        await app.run_worker_async(concurrency=a.conc, install_signal_handlers=True)
    meta["t_stopped"] = time.time()
    dump(a.out, meta)


def dump(path, meta):
    meta["peak_rss_kb"] = peak_rss_kb()
    meta["handled"] = len(REC)
    meta["records"] = REC
    with open(path, "w") as f:
        json.dump(meta, f)


async def cmd_produce(a):
    app, add = make_app(a.dsn)
    out = []
    async with app.open_async():
        nxt = time.perf_counter()
        for k in range(a.n):
            t0 = time.time()
            await add.defer_async(a=k, b=1, i=k, t0=t0)
            out.append((k, t0, time.time()))
            nxt += a.gap_ms / 1000.0
            d = nxt - time.perf_counter()
            if d > 0:
                await asyncio.sleep(d)
    with open(a.out, "w") as f:
        json.dump(out, f)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("cmd")
    p.add_argument("--dsn", required=True)
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--chunk", type=int, default=1000)
    p.add_argument("--conc", type=int, default=1)
    p.add_argument("--pool", type=int, default=None)
    p.add_argument("--gap-ms", type=float, default=20)
    p.add_argument("--out", default="/dev/null")
    a = p.parse_args()
    fn = {"schema": cmd_schema, "enqueue": cmd_enqueue, "worker": cmd_worker,
          "produce": cmd_produce}[a.cmd]
    asyncio.run(fn(a))


if __name__ == "__main__":
    main()
