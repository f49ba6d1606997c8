"""The browser harness itself: Debian's Chromium starts under Playwright, and a page's console
error, uncaught exception, 5xx answer or unlabelled form field fails the step that follows
it."""

from __future__ import annotations

from typing import Any

import pytest
from support.browser import Browser, Console

pytestmark = pytest.mark.browser


async def test_a_clean_page_passes_and_its_step_is_kept(browser: Browser, page: Any) -> None:
    await page.set_content("<main><h1>jsruntime</h1></main>")
    path = await browser.shot(page, "clean")
    assert path.stat().st_size > 0
    assert await page.inner_text("h1") == "jsruntime"


@pytest.mark.parametrize("script", ["console.error('boom')", "throw new Error('boom')"])
async def test_a_console_error_or_page_error_fails_the_next_step(browser: Browser, page: Any,
                                                                 script: str) -> None:
    await page.set_content(f"<p>x</p><script>{script}</script>")
    with pytest.raises(AssertionError, match="boom"):
        await browser.shot(page, "broken")
    # an expected problem, allowed for a block, is not one
    with browser.allowing("boom"):
        await page.set_content(f"<p>y</p><script>{script}</script>")
        await browser.shot(page, "allowed")


async def test_a_form_field_without_a_label_fails_the_step(browser: Browser, page: Any) -> None:
    await page.set_content('<label for="a">A</label><input id="a"><input name="b">'
                           '<input type="hidden" name="c"><select aria-label="D"></select>')
    with pytest.raises(AssertionError, match=r'without a label.*name="b"'):
        await browser.shot(page, "unlabelled")


async def test_a_csp_violation_on_a_console_page_fails_the_next_step(
        console: Console) -> None:
    """The console's Content-Security-Policy allows no inline script: one that gets into a page
    anyway is refused by Chromium, which says so as a console error, which fails the step."""
    page = console.page
    await page.goto(console.url("/console/login"))
    await page.evaluate("""() => {
        const s = document.createElement('script');
        s.textContent = 'window.injected = true';
        document.body.appendChild(s);
    }""")
    with pytest.raises(AssertionError, match="Content Security Policy"):
        await console.shot("inline-script-refused")
    assert await page.evaluate("() => window.injected === undefined")
