"""`jsrt serve [--http HOST:PORT]`: the HTTP trigger server alone (no event daemon).
`jsrt run --http HOST:PORT` serves the same app inside the daemon's process."""

from __future__ import annotations

import argparse
import signal

import anyio

from consumer import log
from consumer.daemon import store_publisher
from consumer.http import HttpServer
from consumer.sandbox import Executor
from consumer.settings import Settings
from consumer.store import Store

_LOG = log.get("jsrt.serve")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("serve", help="serve HTTP triggers (without the event daemon)")
    p.add_argument("--http", default="127.0.0.1:8080", metavar="HOST:PORT",
                   help="address to listen on (default 127.0.0.1:8080)")
    p.set_defaults(func=cmd_serve)


async def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    store = await Store.open(settings.require_database(),
                             max_size=max(4, settings.concurrency // 4 + 4))
    try:
        executor = Executor(workers=settings.worker_count, publisher=store_publisher(store),
                            fetch_allowlist=settings.fetch_allowlist)
        async with executor, anyio.create_task_group() as tg:
            server = HttpServer(settings, store, executor, args.http)

            async def on_signal() -> None:
                with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    async for signum in signals:
                        _LOG.info("signal_received", signal=signal.Signals(signum).name)
                        server.stop()

            tg.start_soon(on_signal)
            await server.run()
            tg.cancel_scope.cancel()
    finally:
        await store.close()
    return 0
