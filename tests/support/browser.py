"""The console's browser tests' Chromium (tests/browser): pages that are watched for
problems, and named steps kept as screenshots."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

from playwright.async_api import TimeoutError as PlaywrightTimeout
from playwright.async_api import expect

from support.daemons import DaemonProcess

CHROMIUM = "/usr/bin/chromium"
# Generous but bounded: a 2-core machine shared with other work starts Chromium and V8 slowly.
STEP_TIMEOUT_MS = 20_000
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
DESKTOP = {"width": 1280, "height": 800}
# The form fields a person can reach that have no label: none of <label for>, a wrapping
# <label>, aria-label, aria-labelledby or title
UNLABELLED = """() => Array.from(document.querySelectorAll(
        'input:not([type=hidden]), select, textarea, [contenteditable=true]'))
    .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
        && !el.getAttribute('aria-labelledby') && !el.getAttribute('title'))
    .map((el) => el.outerHTML.slice(0, 160))"""
PHONE = {"width": 390, "height": 844}


@dataclass
class Watched:
    """What went wrong on the pages of one test, and the allowances it made."""

    problems: list[str] = field(default_factory=list)
    allowed: list[re.Pattern[str]] = field(default_factory=list)

    def add(self, what: str) -> None:
        if not any(p.search(what) for p in self.allowed):
            self.problems.append(what)

    def check(self, where: str) -> None:
        if self.problems:
            found, self.problems = self.problems, []
            raise AssertionError(f"{len(found)} problem(s) in the browser by {where}:\n  "
                                 + "\n  ".join(found))


class Browser:
    """One test's Chromium: pages to open, steps to record, problems to fail on."""

    def __init__(self, context: Any, test_dir: Path) -> None:
        self.context = context
        self.watched = Watched()
        self.dir = test_dir
        self._step = 0

    async def new_page(self, viewport: dict[str, int] | None = None) -> Any:
        page = await self.context.new_page()
        if viewport:
            await page.set_viewport_size(viewport)
        self.watch(page)
        return page

    def watch(self, page: Any) -> None:
        page.set_default_timeout(STEP_TIMEOUT_MS)
        page.set_default_navigation_timeout(STEP_TIMEOUT_MS)

        def on_console(msg: Any) -> None:
            if msg.type == "error":
                loc = msg.location or {}
                self.watched.add(f"console error: {msg.text} ({loc.get('url', '?')}:"
                                 f"{loc.get('lineNumber', '?')})")

        def on_page_error(exc: Any) -> None:
            stack = "\n    ".join((getattr(exc, "stack", None) or "").splitlines()[1:4])
            self.watched.add(f"page error: {exc}" + (f"\n    {stack}" if stack else ""))

        def on_response(resp: Any) -> None:
            if resp.status >= 500:  # a 500 page is in words, but it is still a bug
                self.watched.add(f"HTTP {resp.status} from {resp.request.method} {resp.url}")

        page.on("console", on_console)
        page.on("pageerror", on_page_error)
        page.on("response", on_response)

    @contextlib.contextmanager
    def allowing(self, pattern: str) -> Iterator[None]:
        """Problems matching `pattern` are expected within the block (a 404 page the test
        opens on purpose: Chromium logs a console error for any 4xx document)."""
        compiled = re.compile(pattern)
        self.watched.allowed.append(compiled)
        try:
            yield
        finally:
            self.watched.allowed.remove(compiled)

    async def shot(self, page: Any, name: str, *, full_page: bool = False) -> Path:
        """Keep a screenshot of this step, then fail on anything the pages reported so far,
        or on a form field of this page without a label."""
        self._step += 1
        path = self.dir / f"{self._step:02d}-{name}.png"
        await page.screenshot(path=str(path), full_page=full_page)
        for field_ in await page.evaluate(UNLABELLED):
            self.watched.add(f"a form field without a label on {page.url}: {field_}")
        self.watched.check(f"step {name!r}")
        return path


# --- the server and who signs in ---------------------------------------------------------

@dataclass
class ConsoleServer:
    process: DaemonProcess
    base_url: str  # http://127.0.0.1:PORT

    def url(self, path: str = "/console/") -> str:
        return self.base_url + path


@dataclass(frozen=True)
class Tenants:
    """Two tenants and the keys a person signs in with (shown once, kept here)."""

    acme: UUID
    globex: UUID
    admin: str  # Acme's, every tenant scope
    reader: str  # Acme's, scripts:read and executions:read
    operator: str  # every tenant, every tenant scope


@dataclass
class Console:
    """What a console test works with."""

    server: ConsoleServer
    tenants: Tenants
    browser: Browser
    page: Any  # a watched page at the laptop size

    def url(self, path: str) -> str:
        return self.server.url(path)

    async def shot(self, name: str, page: Any = None, *, full_page: bool = False) -> Path:
        return await self.browser.shot(page or self.page, name, full_page=full_page)


# --- what a person does in the console --------------------------------------------------------

async def sign_in(page: Any, base_url: str, key: str) -> None:
    """Open the console, get the sign-in form, paste the key, sign in."""
    await page.goto(base_url + "/console/")
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await page.get_by_label("API key").fill(key)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("button", name="Sign out")).to_be_visible()


async def type_source(page: Any, source: str) -> None:
    """Replace the editor's text by typing `source` key by key, as a person does, and check
    that the editor holds `source` afterwards.

    CodeMirror indents new lines, and closes brackets and quotes as they are typed (typing the
    closing one types over it); Enter after a `{` also puts its `}` on a line of its own. So a
    person types each line without its indentation, and not the last line when it is the `}`
    the editor already added (one block: a function's body, without nested blocks over several
    lines). Lines should end in `;`, `{` or `}`, so that Enter never accepts
    a completion the editor offers."""
    lines = source.split("\n")
    if lines[-1] == "}" and any(line.endswith("{") for line in lines[:-1]):
        lines = lines[:-1]
    editor = page.locator(".CodeMirror")
    await editor.click()
    await page.keyboard.press("Control+A")
    await page.keyboard.press("Delete")
    await page.keyboard.type("\n".join(line.strip() for line in lines))
    try:
        await page.wait_for_function("(src) => window.jsrtEditor.getValue() === src", arg=source,
                                     timeout=5_000)
    except PlaywrightTimeout:
        typed = await editor_text(page)
        raise AssertionError(f"the editor holds {typed!r}, not {source!r}") from None


async def editor_text(page: Any) -> str:
    text: str = await page.evaluate("() => window.jsrtEditor.getValue()")
    return text
