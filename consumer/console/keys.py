"""Keys (/console/keys): API keys of the tenant in view - create (the key is shown once),
list, revoke. For operator keys and keys with keys:manage (a tenant's admins).

A tenant admin creates keys for its own tenant only (whatever the form says) and grants only
scopes it holds itself; only an operator key creates operator keys (and it, too, grants only
scopes it holds). Another tenant's key, and to a tenant admin an operator key, is 404 -
exactly as a key that does not exist. Revoking a key ends its console sessions."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from consumer import log
from consumer.console.context import ConsoleContext, Forbidden, console
from consumer.console.render import page
from consumer.console.session import PATH, Viewer, redirect, require
from consumer.errors import NotFound, ValidationError
from consumer.keys import SCOPES

_LOG = log.get("jsrt.console")
OPERATOR = "operator"  # the form's value for "an operator key"


async def _manager(request: Request) -> Viewer:
    viewer = await require(request)
    if not viewer.manages_keys:
        raise Forbidden("this key does not have the keys:manage scope, which the Keys page "
                        "needs (or sign in with an operator key)")
    return viewer


async def index(request: Request) -> Response:
    viewer = await _manager(request)
    ticket = request.query_params.get("created")
    if ticket:  # the page the creating POST redirected to: the key, this once
        made = await console(request).store.sessions.take_new_key(viewer.token, ticket)
        if made is None:
            return await _page(request, viewer, error=SHOWN_ONCE)
        return await _page(request, viewer, created=made)
    return await _page(request, viewer)


SHOWN_ONCE = ("That key was shown once and is not shown again (it still works: revoke it "
              "below if it was not copied, and make another).")


async def _page(request: Request, viewer: Viewer, *, created: Any = None,
                error: str | None = None, status: int = 200,
                form: dict[str, Any] | None = None) -> Response:
    store = console(request).store
    tenant = viewer.tenant_filter
    keys = await store.keys.search(tenant, 500, with_operator=viewer.operator)
    return await page(request, "keys.html", status=status, keys=keys, created=created,
                      error=error, scopes=SCOPES, form=form or {"scopes": []},
                      tenant_in_view=tenant)


def _chosen_tenant(viewer: Viewer, raw: str) -> UUID | None:
    """The tenant of the new key: a tenant admin's own; an operator's choice."""
    if not viewer.operator:
        assert viewer.caller.tenant_id is not None
        return viewer.caller.tenant_id
    if raw == OPERATOR:
        return None
    try:
        return UUID(raw)
    except ValueError:
        raise ValidationError("choose the tenant the key is for") from None


async def create(request: Request) -> Response:
    viewer = await _manager(request)
    form = await request.form()
    name = str(form.get("name") or "").strip()
    scopes = [str(s) for s in form.getlist("scopes")]
    shown = {"name": name, "scopes": scopes}
    beyond = [s for s in scopes if s not in viewer.scopes]
    if beyond:
        raise Forbidden(f"a key can only grant scopes it holds itself ({', '.join(beyond)} "
                        "is not one of this key's)")
    try:
        tenant = _chosen_tenant(viewer, str(form.get("tenant") or ""))
        made = await console(request).store.keys.create(tenant, name, scopes)
    except ValidationError as exc:
        message = str(exc).replace("--name", "The name")
        return await _page(request, viewer, error=message, status=400, form=shown)
    except NotFound:
        raise NotFound("no such tenant") from None
    _LOG.info("console_key_created", key_id=made.id, by=viewer.caller.key_id,
              tenant_id=str(tenant) if tenant else None)
    # Post/redirect/get: reloading the page that shows the key must not make another one.
    ticket = await console(request).store.sessions.hold_new_key(viewer.token, made)
    return redirect(f"{PATH}/keys?created={ticket}", request)


async def revoke(request: Request) -> Response:
    viewer = await _manager(request)
    store = console(request).store
    key_id = request.path_params["key_id"]
    key = await store.keys.get(key_id)
    # another tenant's key, or an operator key seen by a tenant admin: as if there were none
    viewer.check(key["tenant_id"], "key")
    await store.keys.revoke(key["id"])
    await store.sessions.end_for_key(key["id"])
    _LOG.info("console_key_revoked", key_id=key["id"], by=viewer.caller.key_id)
    return redirect(f"{PATH}/keys", request)


def routes(ctx: ConsoleContext) -> list[BaseRoute]:
    return [
        Route("/keys", index, methods=["GET"]),
        Route("/keys", create, methods=["POST"]),
        Route("/keys/{key_id}/revoke", revoke, methods=["POST"]),
    ]
