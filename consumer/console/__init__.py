"""The web console (#18): server-rendered pages for tenants and operators under /console/,
served by `jsrt serve` and `jsrt run --http` (consumer/http.py mounts it before the HTTP
triggers' catch-all route).

    session.py       sign-in with an API key, sessions, CSRF, `require` (who is looking)
    render.py        Jinja2 templates (autoescaped), the layout, times, static URLs
    vendor.py        the npm packages (htmx, CodeMirror) copied into static/vendor
    scripts.py       the scripts list, a script's page, versions and diffs, status, rollback
    editor.py        create/edit with CodeMirror, validation as the CLI does it, Run now
    keys.py          API keys: create (shown once), list, revoke
    executions.py    execution history            dead_letters.py  dead letters
    overview.py      the live overview

Each page module exposes `routes(ctx) -> list[BaseRoute]` and is listed in PAGES. A page:

    async def index(request: Request) -> Response:
        viewer = await require(request, "executions:read")   # 303/401, 403, CSRF on POST
        rows = await console(request).store.executions.search(viewer.tenant_filter, ...)
        return await page(request, "executions.html", rows=rows)   # extends base.html

    an object by id: look it up with the viewer's tenant (viewer.caller.tenant_id, None for
    operators), then viewer.check(row_tenant, "execution"): NotFound -> 404 page in words;
    a change: POST with a form (the template puts <input type="hidden" name="csrf"
    value="{{ csrf }}">; htmx sends X-CSRF-Token itself), then redirect(url, request);
    buttons only `{% if viewer.may("dead-letters:manage") %}`; times `{{ t | time }}`;
    params.py reads filters and page numbers forgivingly.

Every
response carries a Content-Security-Policy without inline script or style, nosniff, a
same-origin referrer policy, and pages `Cache-Control: no-store`; no response ever carries a
traceback (errors are pages in words)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from consumer import log
from consumer.clock import Clock, SystemClock
from consumer.console import (
    dead_letters,
    editor,
    executions,
    keys,
    overview,
    scripts,
    session,
)
from consumer.console.context import (
    ConsoleContext,
    Forbidden,
    SignInLimiter,
    SignInRequired,
    TooManySignIns,
)
from consumer.console.render import STATIC, page
from consumer.db import SchemaMissing
from consumer.errors import NotFound, StoreUnavailable, ValidationError
from consumer.settings import Settings
from consumer.store import Store

if TYPE_CHECKING:
    from consumer.ondemand import OnDemand
    from consumer.sandbox import Executor

_LOG = log.get("jsrt.console")

PAGES = [scripts, editor, keys, executions, dead_letters, overview]

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")
SECURITY_HEADERS = (
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
)


# A form's body: a 1 MiB source (validation.MAX_SOURCE), percent-encoded, and the rest.
MAX_BODY = 4 << 20


class BodyTooLarge(Exception):
    pass


def _secured(message: Message) -> Message:
    """A response start with the security headers (and no-store unless it says otherwise)."""
    headers = list(message.get("headers", []))
    names = {k.lower() for k, _ in headers}
    headers += [(k, v) for k, v in SECURITY_HEADERS if k not in names]
    if b"cache-control" not in names:
        headers.append((b"cache-control", b"no-store"))
    return {**message, "headers": headers}


def _bounded(receive: Receive) -> Receive:
    """`receive`, raising BodyTooLarge once more than MAX_BODY bytes of body arrived."""
    seen = 0

    async def receive_bounded() -> Message:
        nonlocal seen
        message = await receive()
        seen += len(message.get("body", b""))
        if seen > MAX_BODY:
            raise BodyTooLarge()
        return message

    return receive_bounded


class Guard:
    """Security headers on every console response, bodies bounded (before anyone, signed in
    or not, makes the form parser hold them), and the last line against tracebacks: an
    exception nobody handled becomes a 500 page in words (logged with its type)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_guarded(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message = _secured(message)
            await send(message)

        declared = dict(scope.get("headers", [])).get(b"content-length", b"")
        try:
            if declared.isdigit() and int(declared) > MAX_BODY:
                raise BodyTooLarge()
            await self.app(scope, _bounded(receive), send_guarded)
        except BodyTooLarge:
            if started:
                raise
            await _too_large(scope, receive, send_guarded)
        except Exception as exc:
            _LOG.error("console_internal_error", path=scope.get("path"),
                       error=f"{type(exc).__name__}: {exc}"[:300])
            if started:
                raise
            response = await _error_page(Request(scope, receive), 500, "Something went wrong",
                                         "The console hit an internal error. It has been "
                                         "logged; try again, and if it persists tell the "
                                         "operator.")
            await response(scope, receive, send_guarded)


async def _too_large(scope: Scope, receive: Receive, send: Send) -> None:
    response = PlainTextResponse(f"The request is larger than {MAX_BODY >> 20} MiB.",
                                 status_code=413)
    await response(scope, receive, send)


class Static(StaticFiles):
    """Static files with long cache headers (their URLs carry a digest of their content)."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["cache-control"] = "public, max-age=31536000, immutable"
        return response


async def _error_page(request: Request, status: int, title: str, message: str,
                      headers: dict[str, str] | None = None) -> Response:
    if session.hx_fragment(request):
        return PlainTextResponse(message, status_code=status, headers=headers)
    try:
        return await page(request, "error.html", status=status, headers=headers, title=title,
                          message=message)
    except Exception:  # the page itself failed (the database is gone): plain words
        return PlainTextResponse(message, status_code=status, headers=headers)


async def _signin_required(request: Request, exc: Exception) -> Response:
    login = f"{session.PATH}/login"
    if session.hx_fragment(request):
        return PlainTextResponse(str(exc), status_code=401, headers={"HX-Redirect": login})
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"{login}?next={quote(here, safe='/')}", status_code=303)


async def _forbidden(request: Request, exc: Exception) -> Response:
    return await _error_page(request, 403, "Not allowed", str(exc))


async def _not_found(request: Request, exc: Exception) -> Response:
    return await _error_page(request, 404, "Not found",
                             f"{str(exc).capitalize()}: it may have been deleted, or the link is "
                             "wrong.")


async def _invalid(request: Request, exc: Exception) -> Response:
    return await _error_page(request, 400, "Cannot do that", str(exc))


async def _too_many(request: Request, exc: Exception) -> Response:
    return await _error_page(request, 429, "Too many attempts", str(exc), {"retry-after": "60"})


async def _unavailable(request: Request, exc: Exception) -> Response:
    _LOG.warning("console_store_unavailable", error=str(exc)[:200])
    return PlainTextResponse("The database cannot be reached right now; try again in a "
                             "moment.", status_code=503, headers={"retry-after": "2"})


async def _schema_missing(request: Request, exc: Exception) -> Response:
    _LOG.error("console_schema_missing", error=str(exc)[:200])
    return await _plain_error(request, 503, "The database schema is missing or out of date: "
                              "the operator runs `jsrt migrate up`.")


async def _plain_error(request: Request, status: int, message: str) -> Response:
    """Without the layout (it needs the database that just failed)."""
    return PlainTextResponse(message, status_code=status)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return await _error_page(request, 404, "Not found", "There is no such page in the "
                                 "console.")
    if exc.status_code == 405:
        return await _error_page(request, 405, "Not allowed", "This page does not answer that "
                                 "method.")
    return await _error_page(request, exc.status_code, "Error", str(exc.detail))


def console_app(ctx: ConsoleContext) -> Starlette:
    routes: list[BaseRoute] = [Mount("/static", app=Static(directory=STATIC,
                                                          check_dir=False), name="static")]
    routes += session.routes(ctx)
    for module in PAGES:
        routes += module.routes(ctx)
    app = Starlette(routes=routes, exception_handlers={
        SignInRequired: _signin_required, Forbidden: _forbidden, NotFound: _not_found,
        ValidationError: _invalid, TooManySignIns: _too_many, StoreUnavailable: _unavailable,
        SchemaMissing: _schema_missing,
        HTTPException: _http_error,
    })
    app.state.console = ctx
    app.add_middleware(Guard)
    return app


def console_routes(store: Store, settings: Settings, executor: Executor | None = None, *,
                   ondemand: OnDemand | None = None, clock: Clock | None = None) -> Mount:
    """The console, mounted at /console (put it before any catch-all route)."""
    ctx = ConsoleContext(store, settings, executor, ondemand, clock or SystemClock(),
                         SignInLimiter(settings.console_signin_per_minute))
    return Mount(session.PATH, app=console_app(ctx))
