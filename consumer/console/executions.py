"""Executions: the history with its filters, a page at a time, and one execution's page.

    GET /console/executions        filters: script (name or id), status, trigger (each
                                   repeatable), from / until (started in [from, until): an ISO
                                   time, UTC unless it says otherwise, or an age: 30m, 2h, 7d),
                                   page (20 a page). With htmx, the form and the pager swap
                                   the results only (#executions-results); without JS they
                                   are plain links and a GET form.
    GET /console/executions/{id}   input, output, error and stack, console lines, metrics,
                                   trigger data, the version that ran, its dead letter and that
                                   letter's attempts, what it replays and what replays it;
                                   while the run is pending or running its live part
                                   (#execution-live) re-reads itself every 2 s.

Both need executions:read. A tenant's session lists its own tenant's executions only and is
answered 404 for another tenant's id, exactly as for an id that does not exist; an operator
lists the tenant in view (or every tenant) and opens any id."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from consumer.console.context import ConsoleContext, console
from consumer.console.query import executions_query, link
from consumer.console.render import as_json, page
from consumer.console.session import Viewer, require
from consumer.errors import NotFound
from consumer.executions import STATUSES, TRIGGERS

SCOPE = "executions:read"
LIVE_EVERY_S = 2
UNFINISHED = ("pending", "running")


def htmx_target(request: Request) -> str | None:
    """The element an htmx request will swap (None: not htmx, a whole page is wanted)."""
    if "hx-request" not in request.headers or "hx-boosted" in request.headers:
        return None
    return request.headers.get("hx-target")


def parse_id(raw: str, what: str) -> UUID:
    try:
        return UUID(raw)
    except ValueError:
        raise NotFound(f"no such {what}") from None


def object_tenant(viewer: Viewer) -> UUID | None:
    """The tenant an object opened by id must belong to: a tenant key's own; None for an
    operator key, which opens any tenant's."""
    return None if viewer.operator else viewer.caller.tenant_id


def console_lines(lines: Any) -> list[dict[str, Any]]:
    """jsrt_execution_logs.lines as the page shows them: {level, message, metadata} each.
    The runtime writes exactly that; a row written by hand may hold anything JSON can."""
    if not isinstance(lines, list):
        return []
    shown = []
    for line in lines:
        if not isinstance(line, dict):
            line = {"message": line}
        message = line.get("message")
        shown.append({"level": str(line.get("level") or "log"),
                      "message": message if isinstance(message, str)
                      else "" if message is None else as_json(message, None),
                      "metadata": line.get("metadata")})
    return shown


async def index(request: Request) -> Response:
    viewer = await require(request, SCOPE)
    ctx = console(request)
    query, reading = executions_query(request.query_params, ctx.clock.now())
    found = None if reading.problems else \
        await ctx.store.executions.page(viewer.tenant_filter, query)
    values: dict[str, Any] = {
        "title": "Executions", "found": found, "problems": reading.problems,
        "shown": reading.shown, "statuses": STATUSES, "triggers": TRIGGERS,
        "filtered": any(v for k, v in reading.shown.items() if k != "page"),
        "link": lambda **changes: link(reading.shown, **changes),
        "all_tenants": viewer.tenant_filter is None,
    }
    if htmx_target(request) == "executions-results":
        # 200 even with problems: htmx swaps only successful answers, and the problems are
        # shown where the results would be
        return await page(request, "executions_results.html", fragment=True, **values)
    return await page(request, "executions.html", status=400 if reading.problems else 200,
                      **values)


async def show(request: Request) -> Response:
    viewer = await require(request, SCOPE)
    store = console(request).store
    execution_id = parse_id(request.path_params["execution_id"], "execution")
    run = await store.executions.detail(execution_id, object_tenant(viewer))
    viewer.check(run["tenant_id"], "execution")
    letter = None
    if run["dead_letter_id"] is not None:
        try:
            letter = await store.dead_letters.show(run["dead_letter_id"], run["tenant_id"])
        except NotFound:  # deleted meanwhile (retention)
            letter = None
    run = {**run, "logs": console_lines(run["logs"]),
           "metrics": run["metrics"] if isinstance(run["metrics"], dict) else {}}
    values: dict[str, Any] = {
        "title": f"Execution {str(run['id'])[:8]}", "run": run, "letter": letter,
        "live": run["status"] in UNFINISHED, "every": LIVE_EVERY_S,
        "show_tenant": viewer.operator,
    }
    if htmx_target(request) == "execution-live":
        return await page(request, "execution_live.html", fragment=True, **values)
    return await page(request, "execution.html", **values)


def routes(ctx: ConsoleContext) -> list[BaseRoute]:
    return [Route("/executions", index, methods=["GET"]),
            Route("/executions/{execution_id}", show, methods=["GET"])]
