"""A tenant's day in the console, clicked through in a real Chromium as a person would: sign in
with a key, write a script in the editor (a parse error marked, then fixed), run it with an
input, publish events and watch the runs arrive, break it and see its dead letter, fix it and
retry the letter, compare two versions, roll back, sign out."""

from __future__ import annotations

import re
from typing import Any

import asyncpg
import pytest
from playwright.async_api import expect
from support.browser import Console, editor_text, sign_in, type_source
from support.factories import publish

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

BROKEN = """// greets whoever signs up
function handler(input, ctx) {
  console.log('greeting', input.name);
  return { hello: input.name + };
}"""
GREETER = BROKEN.replace("input.name + }", "input.name }")
THROWS = """// greets whoever signs up
function handler(input, ctx) {
  throw new Error('no greeting for ' + input.name);
}"""
POLITE = GREETER.replace("{ hello: input.name }", "{ hello: input.name, polite: true }")


async def test_a_tenant_writes_runs_breaks_fixes_and_retries_a_script(
        console: Console, conn: asyncpg.Connection) -> None:
    page, browser, tenants = console.page, console.browser, console.tenants
    await sign_in(page, console.server.base_url, tenants.admin)
    await browser.shot(page, "signed-in")

    # a new script, typed into the editor with a parse error on its fourth line
    await page.get_by_role("link", name="Scripts", exact=True).click()
    await page.get_by_role("link", name="New script").click()
    await expect(page.get_by_role("heading", name="New script")).to_be_visible()
    await page.get_by_label("Name").fill("greeter")
    await page.get_by_label("Type", exact=True).select_option("event")
    await page.get_by_label("Event types (comma-separated)").fill("user.signed_up")
    await type_source(page, BROKEN)
    problems = page.locator("#problems")
    await expect(problems).to_contain_text(
        re.compile(r"line 4, column \d+: .*SyntaxError: Unexpected token"))
    fourth = page.locator(".CodeMirror-code > div").nth(3)
    await expect(fourth.locator(".CodeMirror-lint-marker-error")).to_be_visible()
    await expect(fourth.locator(".cm-error-line")).to_have_count(1)
    await expect(page.locator(".CodeMirror-lint-marker-error")).to_have_count(1)
    await fourth.scroll_into_view_if_needed()
    await browser.shot(page, "parse-error-marked")

    # fixed where it is: the end of line 4, three keys left, two back
    await page.locator(".CodeMirror-line").nth(3).click()
    await page.keyboard.press("End")
    for key in ["ArrowLeft"] * 3 + ["Backspace"] * 2:
        await page.keyboard.press(key)
    assert await editor_text(page) == GREETER
    await expect(page.locator("#check-state")).to_have_text("No problems found.")
    await expect(problems).to_be_empty()
    await expect(page.locator(".CodeMirror-lint-marker-error")).to_have_count(0)
    await page.get_by_label("Change description (kept with the version)").fill("first greeter")
    await page.get_by_label("Activate it at once").check()
    await browser.shot(page, "fixed")
    await page.get_by_role("button", name="Create").click()
    await expect(page.get_by_role("heading", name="greeter")).to_be_visible()
    await expect(page.locator("h1 + .badge")).to_have_text("active")
    script_url = page.url
    await browser.shot(page, "created")

    # run now, with a JSON input
    await page.get_by_role("link", name="Edit", exact=True).click()
    await page.get_by_label("Input (JSON)").fill('{"name": "Ada"}')
    await page.get_by_role("button", name="Run the saved version").click()
    result = page.locator("#run-result")
    await expect(result.locator("#run-status")).to_have_text("completed")
    await expect(result.locator("#run-output")).to_contain_text('"hello": "Ada"')
    await expect(result.locator("#run-logs")).to_contain_text("greeting Ada")
    await expect(result.locator("#run-metrics")).to_contain_text("duration_ms")
    await browser.shot(page, "run-now")

    # events published elsewhere: their runs appear on the open page, no reload
    await page.goto(script_url)
    runs = page.locator("#script-runs tbody tr")
    await expect(runs).to_have_count(1)  # the run now
    for name in ("Grace", "Linus"):
        await publish(conn, tenants.acme, "user.signed_up", {"name": name})
    event_runs = runs.filter(has_text="event")
    await expect(event_runs).to_have_count(2)
    await expect(event_runs.filter(has_text="completed")).to_have_count(2)
    await browser.shot(page, "event-runs-live")
    await page.get_by_role("link", name="Executions", exact=True).click()
    await expect(page.get_by_test_id("execution-row")).to_have_count(3)
    await browser.shot(page, "executions")

    # broken on purpose: the next event's run fails and leaves a dead letter
    await page.goto(script_url)
    await page.get_by_role("link", name="Edit", exact=True).click()
    await type_source(page, THROWS)
    await expect(page.locator("#check-state")).to_have_text("No problems found.")
    await page.get_by_label("Change description (kept with the version)").fill("throws")
    await page.get_by_role("button", name="Save (a new version)").click()
    await expect(page.get_by_role("heading", name="greeter")).to_be_visible()
    await publish(conn, tenants.acme, "user.signed_up", {"name": "Bob"})
    failed = runs.filter(has_text="failed")
    await expect(failed).to_have_count(1)
    await expect(failed).to_contain_text("no greeting for Bob")
    await browser.shot(page, "run-failed-live")
    await failed.get_by_role("link").first.click()
    await expect(page.get_by_test_id("execution-status")).to_have_text("failed")
    await expect(page.get_by_test_id("execution-error")).to_contain_text(
        "Error: no greeting for Bob")
    await expect(page.get_by_test_id("execution-error")).to_contain_text(
        re.compile(r"at handler \(.*:3:\d+\)"))  # the stack, to the throw on line 3
    await expect(page.get_by_test_id("execution-input")).to_contain_text('"Bob"')
    await expect(page.get_by_test_id("execution-version")).to_contain_text("version 2")
    await expect(page.get_by_test_id("execution-trigger")).to_contain_text("user.signed_up")
    await expect(page.get_by_test_id("dead-letter-link")).to_be_visible()
    await browser.shot(page, "failed-execution")
    await page.get_by_role("link", name="Dead letters", exact=True).click()
    letter_row = page.get_by_test_id("letter-row")
    await expect(letter_row).to_have_count(1)
    await expect(letter_row).to_contain_text("greeter")
    await expect(letter_row).to_contain_text("no greeting for Bob")
    await browser.shot(page, "dead-letters")
    await letter_row.get_by_role("link").first.click()
    await expect(page.get_by_test_id("letter-error")).to_contain_text("no greeting for Bob")
    await expect(page.get_by_test_id("letter-payload")).to_contain_text('"Bob"')
    letter_url = page.url
    await browser.shot(page, "dead-letter")

    # fixed again (version 3), then the letter retried by hand: its run completes
    await page.goto(script_url)
    await page.get_by_role("link", name="Edit", exact=True).click()
    await type_source(page, POLITE)
    await expect(page.locator("#check-state")).to_have_text("No problems found.")
    await page.get_by_label("Change description (kept with the version)").fill("polite")
    await page.get_by_role("button", name="Save (a new version)").click()
    await expect(page.get_by_role("heading", name="greeter")).to_be_visible()
    await page.goto(letter_url)
    await page.get_by_test_id("retry").click()
    await expect(page.get_by_test_id("notice")).to_be_visible()
    await browser.shot(page, "retried")
    await page.goto(script_url)
    await expect(event_runs.filter(has_text="completed")).to_have_count(3)
    await page.goto(letter_url)
    await expect(page.get_by_test_id("letter-state")).to_have_text("succeeded")
    await expect(page.get_by_test_id("retry")).to_have_count(0)
    await browser.shot(page, "letter-succeeded")

    # two versions compared: the changed line, removed and added
    await page.goto(script_url)
    await page.get_by_label("Compare version").select_option("1")
    await page.get_by_label("with version").select_option("3")
    await page.get_by_role("button", name="Show the diff").click()
    await expect(page.get_by_role("heading", name="greeter: version 1 → version 3")).to_be_visible()
    await expect(page.locator("#diff-stats")).to_have_text("1 line added, 1 removed.")
    changed = page.locator("table.diff tbody tr.chg")
    await expect(changed).to_have_count(1)
    await expect(changed.locator("td.old")).to_contain_text("return { hello: input.name };")
    await expect(changed.locator("td.new")).to_contain_text(
        "return { hello: input.name, polite: true };")
    await browser.shot(page, "diff")

    # rolled back to version 1, after saying yes to the question
    await page.goto(script_url)
    asked: list[str] = []

    async def accept(dialog: Any) -> None:
        asked.append(dialog.message)
        await dialog.accept()

    page.once("dialog", accept)
    await page.get_by_role("button", name="Roll back to 1").click()
    await expect(page.get_by_role("status")).to_have_text(
        "Rolled back: the old source is version 4 now.")
    assert asked == ["Make version 1's source the current one (as a new version)?"]
    await expect(page.locator("pre.source")).to_contain_text("return { hello: input.name };")
    await browser.shot(page, "rolled-back")

    # signed out: the session's cookie no longer opens anything
    cookies = await browser.context.cookies()
    session = next(c for c in cookies if c["name"] == "jsrt_session")
    assert (session["httpOnly"], session["sameSite"], session["secure"]) == (True, "Lax", False)
    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await browser.context.add_cookies(cookies)
    await page.goto(script_url)
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert "/console/login" in page.url
    await browser.shot(page, "signed-out")
