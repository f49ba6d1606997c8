"""The overview: what the runtime is doing now, refreshed live.

    GET /console/overview        executions per minute by status over the last hour (an
                                 inline SVG drawn on the server: chart.py), queue depth and
                                 the oldest pending event, runs pending and running (and
                                 which), dead letters by state, the live processes and their
                                 memory
    GET /console/overview/live   the same numbers as a fragment: the page's #overview-live
                                 re-reads it every 5 s with htmx (without JS: reload)

A tenant's session sees its own tenant's numbers only, and only the processes serving its
runs, without host or pid; an operator sees the tenant in view, or every tenant, and every
process. The numbers need executions:read; a key without it is told so."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from consumer.console import chart
from consumer.console.context import ConsoleContext, console
from consumer.console.render import page
from consumer.console.session import require

SCOPE = "executions:read"
LIVE_EVERY_S = 5


async def _values(request: Request) -> dict[str, Any]:
    viewer = await require(request)
    ctx = console(request)
    values: dict[str, Any] = {"title": "Overview", "every": LIVE_EVERY_S,
                              "readable": viewer.may(SCOPE),
                              "all_tenants": viewer.tenant_filter is None,
                              "operator": viewer.operator}
    if not values["readable"]:
        return values
    snap = await ctx.store.overview.snapshot(viewer.tenant_filter, ctx.clock.now(),
                                             ctx.settings.heartbeat_timeout)
    workers = [{**w, "memory": memory(w.get("memory"))} for w in snap.workers]
    return {**values, "snap": snap, "chart": chart.draw(snap.minutes), "workers": workers,
            "unresolved": sum(n for s, n in snap.letters.items()
                              if s not in ("succeeded", "discarded"))}


def _size(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def memory(doc: Any) -> dict[str, Any]:
    """jsrt_daemons.memory as the page shows it: what lease.memory_report writes, and
    nothing else (the column is JSON anyone with SQL could have written)."""
    if not isinstance(doc, dict):
        return {"rss_bytes": None, "workers": []}
    found = doc.get("workers")
    workers = found if isinstance(found, list) else []
    return {"rss_bytes": _size(doc.get("rss_bytes")),
            "workers": [{"index": _size(w.get("index")), "rss_bytes": _size(w.get("rss_bytes")),
                         "inflight": _size(w.get("inflight"))}
                        for w in workers[:64] if isinstance(w, dict)]}


async def index(request: Request) -> Response:
    return await page(request, "overview.html", **await _values(request))


async def live(request: Request) -> Response:
    return await page(request, "overview_live.html", fragment=True, **await _values(request))


def routes(ctx: ConsoleContext) -> list[BaseRoute]:
    return [Route("/overview", index, methods=["GET"]),
            Route("/overview/live", live, methods=["GET"])]
