"""The console's browser tests' Chromium (tests/browser): pages that are watched for
problems, and named steps kept as screenshots."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
# Generous but bounded: a 2-core machine shared with other work starts Chromium and V8 slowly.
STEP_TIMEOUT_MS = 20_000
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
DESKTOP = {"width": 1280, "height": 800}
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

        def on_response(resp: Any) -> None:
            if resp.status >= 500:
                self.watched.add(f"HTTP {resp.status} from {resp.request.method} {resp.url}")

        page.on("console", on_console)
        page.on("pageerror", lambda exc: self.watched.add(f"page error: {exc}"))
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
        """Keep a screenshot of this step, then fail on anything the pages reported so far."""
        self._step += 1
        path = self.dir / f"{self._step:02d}-{name}.png"
        await page.screenshot(path=str(path), full_page=full_page)
        self.watched.check(f"step {name!r}")
        return path


