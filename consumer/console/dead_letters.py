"""Dead letters: the list with its filters, a letter's page with its attempts, retry and
discard, and bulk retry of a filtered set.

    GET  /console/dead-letters              filters: script (name or id), view (unresolved,
                                            the default, or all) or state (repeatable),
                                            event_type, from / until (created in [from,
                                            until)), error (a substring, any case), page
    GET  /console/dead-letters/{id}         the letter, its payload and full error, every
                                            attempt with its execution
    POST /console/dead-letters/{id}/retry   due now (an exhausted letter gets one more try)
    POST /console/dead-letters/{id}/discard resolved as discarded: kept, never retried
    GET  /console/dead-letters/retry        bulk retry, step 1: the filters of the list, and
                                            how many letters they would retry
    POST /console/dead-letters/retry        step 2: retries the letters the same filters
                                            match now (at most dead_letters.BULK_RETRY_MAX,
                                            the newest), in the viewer's tenant

Reading needs executions:read; retry, discard and bulk retry need dead-letters:manage and the
session's CSRF token, and act within the viewer's tenant whatever the form says (a tenant's
session: its own; an operator: the tenant in view, or every tenant). A session without the
scope sees no such buttons, and is refused (403) if it posts anyway. Retry and discard are
DeadLetters.retry/discard, as `jsrt dead-letters retry/discard` calls them."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from consumer.console.context import ConsoleContext, console
from consumer.console.executions import htmx_target, object_tenant, parse_id
from consumer.console.query import LETTER_VIEWS, letters_query, link
from consumer.console.render import page
from consumer.console.session import PATH, require
from consumer.dead_letters import BULK_RETRY_MAX, RETRIABLE, STATES, LetterQuery

READ = "executions:read"
MANAGE = "dead-letters:manage"
NOTICES = {
    "retried": "Retry scheduled: a daemon runs it within moments (once its script is active).",
    "discarded": "Discarded: the letter is kept for review and will not be retried.",
    "unchanged": "Nothing was done: the letter is resolved or a retry of it is in flight.",
}


def _count(raw: str | None) -> int | None:
    try:
        return max(0, int(raw)) if raw is not None else None
    except ValueError:
        return None


async def index(request: Request) -> Response:
    viewer = await require(request, READ)
    ctx = console(request)
    query, reading = letters_query(request.query_params, ctx.clock.now())
    found = None if reading.problems else \
        await ctx.store.dead_letters.page(viewer.tenant_filter, query)
    shown = reading.shown
    params = request.query_params
    values: dict[str, Any] = {
        "title": "Dead letters", "found": found, "problems": reading.problems,
        "shown": shown, "states": STATES, "views": tuple(LETTER_VIEWS),
        "filtered": any(v for k, v in shown.items() if k not in ("page", "view")
                        ) or shown.get("view") != "unresolved",
        "link": lambda **changes: link(shown, **changes),
        "bulk_link": link({k: v for k, v in shown.items() if k != "page"}),
        "all_tenants": viewer.tenant_filter is None,
        "manage": viewer.may(MANAGE),
        "retried": _count(params.get("retried")), "skipped": _count(params.get("skipped")),
    }
    if htmx_target(request) == "letters-results":
        return await page(request, "dead_letters_results.html", fragment=True, **values)
    return await page(request, "dead_letters.html", status=400 if reading.problems else 200,
                      **values)


async def show(request: Request) -> Response:
    viewer = await require(request, READ)
    store = console(request).store
    letter_id = parse_id(request.path_params["letter_id"], "dead letter")
    letter = await store.dead_letters.show(letter_id, object_tenant(viewer))
    viewer.check(letter["tenant_id"], "dead letter")
    notice = NOTICES.get(request.query_params.get("done") or "")
    return await page(request, "dead_letter.html", title=f"Dead letter {str(letter_id)[:8]}",
                      letter=letter, notice=notice, manage=viewer.may(MANAGE),
                      retriable=letter["state"] in RETRIABLE,
                      discardable=letter["state"] in RETRIABLE,
                      show_tenant=viewer.operator)


async def _act(request: Request, action: str) -> Response:
    viewer = await require(request, MANAGE)
    store = console(request).store
    letter_id = parse_id(request.path_params["letter_id"], "dead letter")
    tenant = object_tenant(viewer)
    letter = await store.dead_letters.show(letter_id, tenant)  # 404 for another tenant's
    viewer.check(letter["tenant_id"], "dead letter")
    if action == "retry":
        applied = await store.dead_letters.retry([letter_id], tenant)
    else:
        applied = await store.dead_letters.discard([letter_id], tenant)
    done = ("retried" if action == "retry" else "discarded") if applied.done else "unchanged"
    return RedirectResponse(f"{PATH}/dead-letters/{letter_id}?done={done}", status_code=303)


async def retry(request: Request) -> Response:
    return await _act(request, "retry")


async def discard(request: Request) -> Response:
    return await _act(request, "discard")


def _frozen(shown: dict[str, Any], query: LetterQuery) -> list[tuple[str, str]]:
    """The filters as the confirmation posts them back: relative times made absolute, so
    that the letters retried are the ones counted (as far as they have not moved since)."""
    pairs: list[tuple[str, str]] = []
    for key, value in shown.items():
        if key in ("page", "from", "until") or value in (None, "", []):
            continue
        for v in value if isinstance(value, list) else [value]:
            pairs.append((key, str(v)))
    for key, when in (("from", query.created_from), ("until", query.created_before)):
        if isinstance(when, datetime):
            pairs.append((key, when.isoformat()))
    return pairs


async def bulk_confirm(request: Request) -> Response:
    viewer = await require(request, MANAGE)
    ctx = console(request)
    query, reading = letters_query(request.query_params, ctx.clock.now())
    candidates = None if reading.problems else \
        await ctx.store.dead_letters.bulk_candidates(viewer.tenant_filter, query)
    return await page(request, "dead_letters_bulk.html",
                      status=400 if reading.problems else 200, title="Retry dead letters",
                      problems=reading.problems, candidates=candidates, shown=reading.shown,
                      fields=_frozen(reading.shown, query), maximum=BULK_RETRY_MAX,
                      back=link({k: v for k, v in reading.shown.items() if k != "page"}),
                      all_tenants=viewer.tenant_filter is None)


async def bulk_retry(request: Request) -> Response:
    viewer = await require(request, MANAGE)
    ctx = console(request)
    form = await request.form()
    query, reading = letters_query(form, ctx.clock.now())
    if reading.problems:
        return await page(request, "dead_letters_bulk.html", status=400,
                          title="Retry dead letters", problems=reading.problems,
                          candidates=None, shown=reading.shown, fields=[],
                          maximum=BULK_RETRY_MAX, back=link({}), all_tenants=False)
    _, applied = await ctx.store.dead_letters.bulk_retry(viewer.tenant_filter, query)
    back = [(k, v) for k, v in _frozen(reading.shown, query)]
    back += [("retried", str(len(applied.done))), ("skipped", str(len(applied.skipped)))]
    return RedirectResponse(f"{PATH}/dead-letters?{urlencode(back)}", status_code=303)


def routes(ctx: ConsoleContext) -> list[BaseRoute]:
    return [
        Route("/dead-letters", index, methods=["GET"]),
        # before /dead-letters/{letter_id}: "retry" is no letter id
        Route("/dead-letters/retry", bulk_confirm, methods=["GET"]),
        Route("/dead-letters/retry", bulk_retry, methods=["POST"]),
        Route("/dead-letters/{letter_id}", show, methods=["GET"]),
        Route("/dead-letters/{letter_id}/retry", retry, methods=["POST"]),
        Route("/dead-letters/{letter_id}/discard", discard, methods=["POST"]),
    ]
