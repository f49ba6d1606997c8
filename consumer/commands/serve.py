"""`jsrt serve [--http HOST:PORT]`: the HTTP trigger server alone (no event daemon), with
/metrics, /healthz and /readyz on JSRT_METRICS_ADDR as `jsrt run` has them (the container's
HEALTHCHECK calls /healthz whatever the command). `jsrt run --http HOST:PORT` serves the same
app inside the daemon's process."""

from __future__ import annotations

import argparse

from consumer.http import http_address
from consumer.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("serve", help="serve HTTP triggers (without the event daemon)")
    p.add_argument("--http", default="127.0.0.1:8080", metavar="HOST:PORT", type=http_address,
                   help="address to listen on (default 127.0.0.1:8080)")
    p.set_defaults(func=cmd_serve)


async def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from consumer.app import serve

    return await serve(settings, args.http)
