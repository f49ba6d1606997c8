"""Who is looking: sign-in with an API key, the session cookie, CSRF, and `require`.

    GET  /console/login     the form (a labelled field for the key)
    POST /console/login     key → session; the same words for a malformed, unknown, revoked
                            or wrong key (ApiKeys.verify answers them alike, in constant time)
    POST /console/logout    the session row is deleted, the cookie cleared
    POST /console/tenant    an operator key's tenant in view (empty: every tenant)

The cookie `jsrt_session` (HttpOnly, SameSite=Lax, path /console, Secure over https) holds a
random id; the database keeps its SHA-256 (consumer/sessions.py). Every state-changing request
carries the session's CSRF token, as the form field `csrf` or the header `X-CSRF-Token` (htmx
sends it from `hx-headers` on <body>). The sign-in form has its own token, bound to a
short-lived cookie, since there is no session yet.

Tenant isolation: a tenant key's session views that tenant only, whatever it asks for; an
object id of another tenant is answered 404, exactly as an id that does not exist."""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from uuid import UUID

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from consumer import log
from consumer.console.context import (
    ConsoleContext,
    CsrfRefused,
    Forbidden,
    SignInRequired,
    TooManySignIns,
    console,
)
from consumer.console.render import page
from consumer.errors import NotFound, ValidationError
from consumer.keys import Caller

_LOG = log.get("jsrt.console")

COOKIE = "jsrt_session"
LOGIN_COOKIE = "jsrt_login"  # the sign-in form's CSRF token, before any session exists
PATH = "/console"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_FIELD = "csrf"
MAX_FIELD = 4 << 20  # a form field (the source): consumer.console.MAX_BODY bounds the whole
CSRF_HEADER = "x-csrf-token"
WRONG_KEY = ("That key was not accepted. Check that it was copied whole (it starts with "
             "jsrt_) and that it has not been revoked.")


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who is looking: the key signed in with (as it is now), the tenant in view."""

    caller: Caller
    tenant_id: UUID | None  # a tenant key's own; an operator's choice (None: every tenant)
    tenant_name: str | None
    csrf: str
    token: str  # the session cookie's value (sign-out, the tenant switch)

    @property
    def operator(self) -> bool:
        return self.caller.tenant_id is None

    @property
    def scopes(self) -> tuple[str, ...]:
        return self.caller.scopes

    def may(self, scope: str) -> bool:
        """For templates: whether to show what needs `scope` (the server checks anyway)."""
        return scope in self.caller.scopes

    @property
    def manages_keys(self) -> bool:
        return self.operator or self.may("keys:manage")

    def sees(self, tenant_id: UUID | None) -> bool:
        """Whether an object of `tenant_id` is visible: its own tenant's for a tenant key,
        every tenant's for an operator key."""
        return self.operator or (tenant_id is not None and tenant_id == self.caller.tenant_id)

    def check(self, tenant_id: UUID | None, what: str = "object") -> None:
        """404 (never 403) for another tenant's object: its existence is not told."""
        if not self.sees(tenant_id):
            raise NotFound(f"no such {what}")

    @property
    def tenant_filter(self) -> UUID | None:
        """The tenant lists are limited to (None: every tenant, operators only)."""
        return self.caller.tenant_id if not self.operator else self.tenant_id

    def acting_tenant(self) -> UUID:
        """The tenant a new object goes into: an operator must have chosen one."""
        tenant = self.tenant_filter
        if tenant is None:
            raise ValidationError("choose a tenant first (the tenant selector at the top)")
        return tenant


def _wants_fragment(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return ("hx-request" in request.headers or "application/json" in accept
            or request.method not in SAFE_METHODS)


async def current(request: Request) -> Viewer | None:
    """The viewer of a live session, or None (no cookie, expired, idle, key revoked)."""
    cached: Viewer | None = getattr(request.state, "viewer", None)
    if cached is not None:
        return cached
    token = request.cookies.get(COOKIE)
    if not token:
        return None
    ctx = console(request)
    session = await ctx.store.sessions.get(token, ctx.idle_seconds)
    if session is None:
        return None
    viewer = Viewer(session.caller, session.tenant_id, session.tenant_name, session.csrf_token,
                    token)
    request.state.viewer = viewer
    return viewer


async def require(request: Request, scope: str | None = None) -> Viewer:
    """The viewer, or a refusal: SignInRequired (pages: to the sign-in form; htmx and
    JSON: 401), CsrfRefused (403) for a state-changing request without the session's
    token, Forbidden (403) when the key lacks `scope`."""
    viewer = await current(request)
    if viewer is None:
        raise SignInRequired("your session has ended or you are not signed in: sign in again")
    if request.method not in SAFE_METHODS:
        await check_csrf(request, viewer.csrf)
    if scope is not None and scope not in viewer.scopes:
        raise Forbidden(f"this key does not have the {scope} scope, which this needs")
    return viewer


async def check_csrf(request: Request, expected: str) -> None:
    sent = request.headers.get(CSRF_HEADER)
    if request.headers.get("content-type", "").startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data")):
        # parsed here, with the console's own bound (a 1 MiB source, percent-encoded, is
        # more than Starlette's default field size); later request.form() calls get this one
        value = (await request.form(max_part_size=MAX_FIELD)).get(CSRF_FIELD)
        if sent is None:
            sent = value if isinstance(value, str) else None
    if not sent or not hmac.compare_digest(sent.encode(), expected.encode()):
        raise CsrfRefused()


def secure(request: Request) -> bool:
    """Whether the browser reached us over TLS (directly or through a proxy that says so)."""
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return request.url.scheme == "https" or forwarded == "https"


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a console path, never another site."""
    if (target and target.startswith(PATH + "/") and not target.startswith("//")
            and "\\" not in target and "\n" not in target and "\r" not in target):
        return target
    return PATH + "/"


def client_of(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def redirect(url: str, request: Request) -> Response:
    """303 to `url`; htmx follows HX-Redirect instead (a whole-page navigation)."""
    if "hx-request" in request.headers:
        return Response(status_code=204, headers={"HX-Redirect": url})
    return RedirectResponse(url, status_code=303)


# ------------------------------------------------------------------ the routes
async def login_form(request: Request) -> Response:
    if await current(request) is not None:
        return RedirectResponse(safe_next(request.query_params.get("next")), status_code=303)
    return await _login_page(request, None, 200)


async def _login_page(request: Request, error: str | None, status: int) -> Response:
    token = secrets.token_urlsafe(24)
    response = await page(request, "login.html", status=status, error=error,
                          login_csrf=token, next=safe_next(request.query_params.get("next")))
    response.set_cookie(LOGIN_COOKIE, token, max_age=3600, path=PATH + "/login",
                        httponly=True, samesite="strict", secure=secure(request))
    return response


async def login(request: Request) -> Response:
    ctx = console(request)
    form = await request.form()  # (Starlette's default field size: a key is short)
    sent, expected = str(form.get(CSRF_FIELD) or ""), request.cookies.get(LOGIN_COOKIE) or ""
    if not sent or not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
        raise CsrfRefused("the sign-in form was too old or did not come from this console: "
                          "it has been reloaded, sign in again")
    client = client_of(request)
    if ctx.signins.blocked(client):
        raise TooManySignIns()
    caller = await ctx.store.keys.verify(str(form.get("key") or ""))
    if caller is None:
        ctx.signins.failed(client)
        _LOG.info("console_signin_refused", client=client)
        return await _login_page(request, WRONG_KEY, 401)
    token, _ = await ctx.store.sessions.create(caller, ctx.session_seconds, ctx.idle_seconds)
    _LOG.info("console_signed_in", key_id=caller.key_id,
              tenant_id=str(caller.tenant_id) if caller.tenant_id else None)
    response = RedirectResponse(safe_next(str(form.get("next") or "")), status_code=303)
    set_session_cookie(response, request, token, ctx)
    response.delete_cookie(LOGIN_COOKIE, path=PATH + "/login")
    return response


def set_session_cookie(response: Response, request: Request, token: str,
                       ctx: ConsoleContext) -> None:
    response.set_cookie(COOKIE, token, max_age=int(ctx.session_seconds), path=PATH,
                        httponly=True, samesite="lax", secure=secure(request))


async def logout(request: Request) -> Response:
    viewer = await require(request)
    await console(request).store.sessions.delete(viewer.token)
    response = redirect(PATH + "/login", request)
    response.delete_cookie(COOKIE, path=PATH, httponly=True, samesite="lax",
                           secure=secure(request))
    return response


async def choose_tenant(request: Request) -> Response:
    viewer = await require(request)
    if not viewer.operator:
        raise Forbidden("only an operator key can switch tenants")
    form = await request.form()
    raw = str(form.get("tenant") or "").strip()
    try:
        tenant = UUID(raw) if raw else None
    except ValueError:
        raise NotFound("no such tenant") from None
    if not await console(request).store.sessions.choose_tenant(viewer.token, tenant):
        raise NotFound("no such tenant")
    return redirect(safe_next(str(form.get("next") or "")), request)


async def home(request: Request) -> Response:
    await require(request)
    return RedirectResponse(PATH + "/overview", status_code=303)


def routes(ctx: ConsoleContext) -> list[BaseRoute]:
    return [
        Route("/", home, methods=["GET"]),
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/tenant", choose_tenant, methods=["POST"]),
    ]


def hx_fragment(request: Request) -> bool:
    """Whether a refusal should be a short answer (htmx, JSON, a POST) rather than a page."""
    return _wants_fragment(request)

