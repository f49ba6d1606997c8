"""Browser tests of the web console (#18): a real `jsrt run --http` process on the test's own
database, driven in Debian's Chromium (/usr/bin/chromium) through Playwright for Python.

Playwright's wheel carries its own driver; the browser is the system's (`playwright install` is
never run: it downloads a browser build, which this project's machines cannot fetch). `.ci/run`
installs `chromium` and `chromium-driver` when they are missing; without them these tests are
skipped, saying why.

Every page a test opens is watched: a JavaScript console message of level `error` (CSP
violations are reported that way), an uncaught page error or a 5xx answer fails the test at its
next step and at its end. Each named step is kept as a screenshot under
tests/browser/artifacts/<test>/ (gitignored), for a person to look at after a run.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support.browser import CHROMIUM, CHROMIUM_ARGS, DESKTOP, STEP_TIMEOUT_MS, Browser
from support.daemons import DaemonProcess

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

@dataclass
class ConsoleServer:
    process: DaemonProcess
    base_url: str  # http://127.0.0.1:PORT

    def url(self, path: str = "/console/") -> str:
        return self.base_url + path


@pytest.fixture
def console_server(db_url: str) -> Iterator[ConsoleServer]:
    """`jsrt run --http 127.0.0.1:0`: the daemon, the HTTP triggers and the console on one
    executor, in a subprocess; the port it bound is read from its `http_listening` line."""
    d = DaemonProcess(db_url, args=("--http", "127.0.0.1:0"),
                      env={"JSRT_KEY_PEPPER": PEPPER, "JSRT_WORKERS": "1"})
    try:
        port = d.wait_event("http_listening", timeout=60)["port"]
        yield ConsoleServer(d, f"http://127.0.0.1:{port}")
        assert d.stop() == 0, "".join(d.raw[-30:])
    finally:
        d.close()


@pytest.fixture
async def browser(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Browser]:
    from playwright.async_api import async_playwright, expect

    expect.set_options(timeout=STEP_TIMEOUT_MS)
    test_dir = ARTIFACTS / re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
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
