"""Browser tests of the web console (#18): a real `jsrt run --http` process on the test's own
database, driven in Debian's Chromium (/usr/bin/chromium) through Playwright for Python.

Playwright's wheel carries its own driver; the browser is the system's (`playwright install` is
never run: it downloads a browser build, which this project's machines cannot fetch). `.ci/run`
installs `chromium` and `chromium-driver` when they are missing; without them these tests are
skipped, saying why.

Every page a test opens is watched: a JavaScript console message of level `error` (CSP
violations are reported that way), an uncaught page error or a 5xx answer fails the test at its
next step and at its end, and so does a form field without a label on a page kept as a step.
Each named step is kept as a screenshot under tests/browser/artifacts/<test>/ (gitignored),
for a person to look at after a run.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import pytest
from playwright.async_api import async_playwright, expect
from support.browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    DESKTOP,
    STEP_TIMEOUT_MS,
    Browser,
    Console,
    ConsoleServer,
    Tenants,
)
from support.console import ALL_TENANT_SCOPES, READ_ONLY
from support.daemons import DaemonProcess, settings_for
from support.factories import make_tenant

from consumer.store import Store

ARTIFACTS = Path(__file__).parent / "artifacts"
PEPPER = "browser-tests-pepper"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.access(CHROMIUM, os.X_OK):
        return
    skip = pytest.mark.skip(reason=f"{CHROMIUM} is missing: install Debian's chromium and "
                                   "chromium-driver (.ci/run does) to run the browser tests")
    for item in items:
        if item.get_closest_marker("browser"):
            item.add_marker(skip)


# --- the server -------------------------------------------------------------------------------

def _artifacts(request: pytest.FixtureRequest) -> Path:
    return ARTIFACTS / re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)


@pytest.fixture
def console_server(db_url: str, request: pytest.FixtureRequest) -> Iterator[ConsoleServer]:
    """`jsrt run --http 127.0.0.1:0`: the daemon, the HTTP triggers and the console on one
    executor, in a subprocess; the port it bound is read from its `http_listening` line. Its
    log is kept beside the test's screenshots (server.log)."""
    d = DaemonProcess(db_url, args=("--http", "127.0.0.1:0"),
                      # no automatic retry of a dead letter while a test looks at it
                      env={"JSRT_KEY_PEPPER": PEPPER, "JSRT_WORKERS": "1",
                           "JSRT_RETRY_BASE_SECONDS": "3600"})
    try:
        port = d.wait_event("http_listening", timeout=60)["port"]
        yield ConsoleServer(d, f"http://127.0.0.1:{port}")
        assert d.stop() == 0, "".join(d.raw[-30:])
    finally:
        d.close()
        log = _artifacts(request) / "server.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("".join(d.raw))


@pytest.fixture
async def browser(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Browser]:
    expect.set_options(timeout=STEP_TIMEOUT_MS)
    test_dir = _artifacts(request)
    shutil.rmtree(test_dir, ignore_errors=True)
    test_dir.mkdir(parents=True)
    async with async_playwright() as pw:
        # A fresh profile per test: no cookies, cache or service workers carried over.
        context = await pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True,
            args=CHROMIUM_ARGS, viewport=DESKTOP, timezone_id="Europe/Paris", locale="en-GB")
        b = Browser(context, test_dir)
        # the blank first page of a persistent context
        for page in context.pages:
            b.watch(page)
        try:
            yield b
        finally:
            await context.close()
    b.watched.check("the end of the test")


@pytest.fixture
async def page(browser: Browser) -> Any:
    """A watched page at the laptop size (1280x800)."""
    return await browser.new_page()


# --- tenants and keys -------------------------------------------------------------------------

@pytest.fixture
async def tenants(conn: asyncpg.Connection, db_url: str) -> Tenants:
    acme = await make_tenant(conn, "Acme")
    globex = await make_tenant(conn, "Globex")
    async with Store.session(db_url, "browser tests",
                             settings=settings_for(db_url, key_pepper=PEPPER)) as store:
        async def key(tenant: UUID | None, name: str, scopes: tuple[str, ...]) -> str:
            return (await store.keys.create(tenant, name, list(scopes))).key

        return Tenants(acme, globex,
                       admin=await key(acme, "acme admin", ALL_TENANT_SCOPES),
                       reader=await key(acme, "acme reader", READ_ONLY),
                       operator=await key(None, "operator", ALL_TENANT_SCOPES))


@pytest.fixture
async def console(console_server: ConsoleServer, tenants: Tenants,
                  browser: Browser) -> Console:
    """The server, its tenants and a watched laptop-sized page. The server is set up first, so
    that it stops after the browser that talks to it has closed (a request still in flight
    would otherwise end in a console error): tests ask for this, not for `browser`."""
    return Console(console_server, tenants, browser, await browser.new_page())
