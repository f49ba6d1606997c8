"""The web console in a test: its app over a real store (ASGI, no server), tenants with keys,
and signed-in clients that send the session's CSRF token like the pages do.

    async with console_for(db_url) as c:                 # console routes only (no sandbox)
    async with console_for(db_url, sandbox=True) as c:   # build_app with a real executor
        tenant, key = await c.tenant_key(scopes=READ_ONLY)
        user = await c.signed_in(key)
        r = await user.get("/console/scripts")
        r = await user.post("/console/scripts/ID/status", {"status": "paused"})  # + csrf

`user.post(..., csrf=None)` sends none; `csrf="wrong"` a wrong one."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import httpx
from starlette.applications import Starlette

from consumer.app import store_publisher
from consumer.console import console_routes
from consumer.http import build_app
from consumer.lease import Lease
from consumer.ondemand import OnDemand
from consumer.sandbox import Executor
from consumer.settings import Settings
from consumer.store import Store

BASE = "http://console.test"
ALL_TENANT_SCOPES = ("scripts:read", "scripts:write", "scripts:execute", "executions:read",
                     "dead-letters:manage", "keys:manage")
READ_ONLY = ("scripts:read", "executions:read")
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')
_UNSET: Any = object()


@dataclass
class User:
    """A browser-like client with a session: its cookie jar and the page's CSRF token."""

    client: httpx.AsyncClient
    csrf: str
    key: str
    tenant_id: UUID | None

    async def get(self, path: str, **kw: Any) -> httpx.Response:
        return await self.client.get(path, **kw)

    async def post(self, path: str, data: Mapping[str, Any] | None = None, *,
                   csrf: str | None = _UNSET, **kw: Any) -> httpx.Response:
        """A form POST with the session's CSRF token (None: without one)."""
        form = dict(data or {})
        token = self.csrf if csrf is _UNSET else csrf
        if token is not None:
            form["csrf"] = token
        return await self.client.post(path, data=form, **kw)

    async def htmx(self, method: str, path: str, *, csrf: str | None = _UNSET,
                   **kw: Any) -> httpx.Response:
        """As htmx sends it: HX-Request, and the token in X-CSRF-Token."""
        headers = {"hx-request": "true", **kw.pop("headers", {})}
        token = self.csrf if csrf is _UNSET else csrf
        if token is not None:
            headers["x-csrf-token"] = token
        return await self.client.request(method, path, headers=headers, **kw)


@dataclass
class ConsoleApp:
    app: Starlette
    store: Store
    settings: Settings
    executor: Executor | None
    _stack: AsyncExitStack = field(default_factory=AsyncExitStack)

    def client(self, **kw: Any) -> httpx.AsyncClient:
        """A client without a session (closed with the app)."""
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url=BASE,
                                   **kw)
        self._stack.push_async_callback(client.aclose)
        return client

    async def tenant(self, name: str | None = None) -> UUID:
        return await self.store.tenants.create(name or f"tenant-{uuid.uuid4().hex[:8]}")

    async def tenant_key(self, tenant: UUID | None = None,
                         scopes: Iterable[str] = ALL_TENANT_SCOPES,
                         name: str = "console-test") -> tuple[UUID, str]:
        """A tenant (new unless given) and a key of it with `scopes`."""
        tenant = tenant or await self.tenant()
        return tenant, (await self.store.keys.create(tenant, name, scopes)).key

    async def operator_key(self, scopes: Iterable[str] = ALL_TENANT_SCOPES,
                           name: str = "operator") -> str:
        return (await self.store.keys.create(None, name, scopes)).key

    async def signed_in(self, key: str, **client_kw: Any) -> User:
        """Signs in through the form, as a person would; fails the test if it does not."""
        client = self.client(**client_kw)
        form = await client.get("/console/login")
        assert form.status_code == 200, form.text
        login_csrf = _CSRF.search(form.text)
        assert login_csrf, "no csrf field on the sign-in form"
        r = await client.post("/console/login", data={"key": key, "csrf": login_csrf[1]})
        assert r.status_code == 303, (r.status_code, r.text[:500])
        landing = await client.get("/console/scripts")
        token = _CSRF.search(landing.text)
        assert token, f"no csrf token on the page after sign-in ({landing.status_code})"
        caller = await self.store.keys.verify(key)
        return User(client, token[1], key, caller.tenant_id if caller else None)


def csrf_of(html: str) -> str | None:
    found = _CSRF.search(html)
    return found[1] if found else None


@asynccontextmanager
async def console_for(db_url: str, *, sandbox: bool = False,
                      **overrides: Any) -> AsyncIterator[ConsoleApp]:
    """The console over a store of `db_url`; with `sandbox`, the whole HTTP app (build_app)
    with a real executor, so Run now runs."""
    settings = Settings.from_env(env={"DATABASE_URL": db_url}, **overrides)
    store = await Store.open(db_url, settings=settings)
    try:
        async with AsyncExitStack() as stack:
            executor: Executor | None = None
            if sandbox:
                executor = await stack.enter_async_context(
                    Executor(workers=1, publisher=store_publisher(store)))
                lease = await stack.enter_async_context(Lease(store, 0.5, kind="console-test"))
                app = build_app(store, OnDemand(store, executor, lease.id), settings)
            else:
                app = Starlette(routes=[console_routes(store, settings, None)])
            console = ConsoleApp(app, store, settings, executor)
            async with console._stack:
                yield console
    finally:
        await store.close()
