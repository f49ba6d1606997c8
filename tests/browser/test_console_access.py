"""Who sees what, in a real Chromium: a tenant's key cannot open another tenant's script,
execution or dead-letter pages (a 404 page in words); a read-only key is shown no button that
would change anything, and the server refuses the change anyway; an operator key switches
between tenants. And the pages on a phone."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg
import pytest
from playwright.async_api import expect
from support.browser import PHONE, Console, sign_in
from support.console_rows import make_execution, make_letter
from support.factories import make_script

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]


@dataclass(frozen=True)
class Rows:
    script: UUID
    execution: UUID
    letter: UUID


async def _rows(conn: asyncpg.Connection, tenant: UUID, name: str) -> Rows:
    script = await make_script(conn, tenant, name=name, event_types=["order.created"])
    execution = await make_execution(conn, tenant, script, status="failed",
                                     input={"order": 7}, error=f"Error: {name} failed")
    letter = await make_letter(conn, tenant, script, execution, event_type="order.created",
                               error=f"Error: {name} failed")
    return Rows(script, execution, letter)


async def _sign_out(console: Console) -> None:
    await console.page.get_by_role("button", name="Sign out").click()
    await expect(console.page.get_by_role("heading", name="Sign in")).to_be_visible()


async def test_tenants_keys_see_only_their_own_and_only_what_their_scopes_allow(
        console: Console, conn: asyncpg.Connection) -> None:
    page, t = console.page, console.tenants
    acme = await _rows(conn, t.acme, "acme-orders")
    globex = await _rows(conn, t.globex, "globex-orders")

    # Acme's admin: Globex's pages are not found, in words, whichever way they are reached
    await sign_in(page, console.server.base_url, t.admin)
    await page.goto(console.url("/console/scripts"))
    await expect(page.get_by_role("link", name="acme-orders")).to_be_visible()
    await expect(page.get_by_role("link", name="globex-orders")).to_have_count(0)
    with console.browser.allowing(r"status of 404"):
        for path in (f"/console/scripts/{globex.script}",
                     f"/console/scripts/{globex.script}/edit",
                     f"/console/scripts/{globex.script}/diff?a=1&b=1",
                     f"/console/executions/{globex.execution}",
                     f"/console/dead-letters/{globex.letter}"):
            answer = await page.goto(console.url(path))
            assert answer is not None and answer.status == 404, path
            await expect(page.get_by_role("heading", name="Not found")).to_be_visible()
            await expect(page.locator("main")).to_contain_text("it may have been deleted, or "
                                                               "the link is wrong")
            await expect(page.locator("main")).not_to_contain_text("globex-orders")
        await console.shot("other-tenant-not-found")
    await page.goto(console.url("/console/dead-letters"))
    await expect(page.get_by_test_id("letter-row")).to_have_count(1)
    await expect(page.get_by_test_id("letter-row")).to_contain_text("acme-orders")
    await _sign_out(console)

    # Acme's read-only key, signed in with the keyboard alone: the key field has the focus,
    # Enter sends it; everything readable, no button that changes anything
    await page.goto(console.url("/console/"))
    await expect(page.get_by_label("API key")).to_be_focused()
    await page.keyboard.type(t.reader)
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    await page.keyboard.press("Tab")
    await expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    await page.goto(console.url("/console/scripts"))
    await expect(page.get_by_role("link", name="acme-orders")).to_be_visible()
    await expect(page.get_by_role("link", name="New script")).to_have_count(0)
    await page.get_by_role("link", name="acme-orders").click()
    await expect(page.get_by_role("heading", name="acme-orders")).to_be_visible()
    main = page.locator("main")
    await expect(main.get_by_role("link", name="Edit", exact=True)).to_have_count(0)
    await expect(main.locator("form[method=post]")).to_have_count(0)
    await console.shot("read-only-script")
    await page.goto(console.url(f"/console/dead-letters/{acme.letter}"))
    await expect(page.get_by_test_id("letter-error")).to_contain_text("acme-orders failed")
    await expect(page.get_by_test_id("retry")).to_have_count(0)
    await expect(page.get_by_test_id("discard")).to_have_count(0)
    await expect(main.locator("form[method=post]")).to_have_count(0)
    await page.goto(console.url(f"/console/executions/{acme.execution}"))
    await expect(main).to_contain_text("acme-orders failed")
    await console.shot("read-only-execution")
    await page.goto(console.url(f"/console/scripts/{acme.script}/edit"))
    await expect(main).to_contain_text("This key can read scripts but not change them")
    await expect(main).to_contain_text("Running needs the scripts:execute scope.")
    await expect(main.get_by_role("button", name="Save (a new version)")).to_have_count(0)
    await expect(main.get_by_role("button", name="Run the saved version")).to_have_count(0)
    assert await page.evaluate("() => window.jsrtEditor.getOption('readOnly')") is True
    await console.shot("read-only-editor")
    # the server refuses a change from this session, with its own valid CSRF token
    token = await page.locator("form[action='/console/logout'] input[name=csrf]").input_value()
    for path, form in ((f"/console/scripts/{acme.script}/status", {"status": "paused"}),
                       (f"/console/dead-letters/{acme.letter}/retry", {})):
        refused = await page.request.post(console.url(path), form={**form, "csrf": token},
                                          max_redirects=0)
        assert refused.status == 403, (path, refused.status)
    assert await conn.fetchval("SELECT status FROM scripts WHERE id = $1",
                               acme.script) == "active"
    await _sign_out(console)

    # the operator: every tenant, one at a time through the selector
    await sign_in(page, console.server.base_url, t.operator)
    await page.goto(console.url("/console/scripts"))
    await expect(page.get_by_role("link", name="acme-orders")).to_be_visible()
    await expect(page.get_by_role("link", name="globex-orders")).to_be_visible()
    await page.get_by_label("Tenant").select_option(label="Globex")
    await expect(page.get_by_label("Tenant")).to_have_value(str(t.globex))
    await expect(page.get_by_role("link", name="globex-orders")).to_be_visible()
    await expect(page.get_by_role("link", name="acme-orders")).to_have_count(0)
    await console.shot("operator-globex")
    await page.get_by_label("Tenant").select_option(label="Acme")
    await expect(page.get_by_label("Tenant")).to_have_value(str(t.acme))
    await expect(page.get_by_role("link", name="acme-orders")).to_be_visible()
    await expect(page.get_by_role("link", name="globex-orders")).to_have_count(0)
    await console.shot("operator-acme")

    # a phone: the same pages, readable without scrolling sideways
    phone = await console.browser.new_page(PHONE)
    for name, path in (("overview", "/console/overview"), ("scripts", "/console/scripts"),
                       ("script", f"/console/scripts/{acme.script}"),
                       ("executions", "/console/executions"),
                       ("dead-letters", "/console/dead-letters"),
                       ("editor", f"/console/scripts/{acme.script}/edit")):
        await phone.goto(console.url(path))
        await expect(phone.locator("main h1")).to_be_visible()
        overflow = await phone.evaluate(
            "() => document.documentElement.scrollWidth - window.innerWidth")
        await console.shot(f"phone-{name}", phone, full_page=True)
        assert overflow <= 0, f"{path} is {overflow} px wider than a phone's screen"


async def test_a_tenant_admin_makes_a_key_shown_once_and_revokes_it(console: Console) -> None:
    page, t = console.page, console.tenants
    await sign_in(page, console.server.base_url, t.admin)
    await page.get_by_role("link", name="Keys", exact=True).click()
    await page.get_by_label("Name").fill("billing reader")
    await page.get_by_label("executions:read").check()
    await page.get_by_role("button", name="Create key").click()
    await expect(page.get_by_role("heading", name="Key “billing reader” created")).to_be_visible()
    key = await page.get_by_label("The key").input_value()
    assert key.startswith("jsrt_")
    await console.shot("key-created")
    await page.get_by_role("link", name="Keys", exact=True).click()  # shown once: not again
    await expect(page.get_by_label("The key")).to_have_count(0)
    assert key not in await page.content()
    row = page.get_by_role("row").filter(has_text="billing reader")
    await expect(row).to_contain_text("executions:read")
    await expect(row).to_contain_text("active")
    await _sign_out(console)

    await sign_in(page, console.server.base_url, key)  # the new key works, within its scope
    await page.goto(console.url("/console/executions"))
    await expect(page.get_by_role("heading", name="Executions")).to_be_visible()
    await expect(page.get_by_role("link", name="Keys", exact=True)).to_have_count(0)
    await _sign_out(console)

    await sign_in(page, console.server.base_url, t.admin)
    await page.goto(console.url("/console/keys"))
    asked: list[str] = []

    async def accept(dialog: Any) -> None:
        asked.append(dialog.message)
        await dialog.accept()

    page.once("dialog", accept)
    await row.get_by_role("button", name="Revoke billing reader").click()
    await expect(row).to_contain_text("revoked")
    assert asked == ["Revoke the key “billing reader”? Whatever uses it stops working at once."]
    await console.shot("key-revoked")
    await _sign_out(console)

    with console.browser.allowing(r"status of 401"):
        await page.get_by_label("API key").fill(key)
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.get_by_role("alert")).to_be_visible()
        await expect(page.get_by_role("button", name="Sign out")).to_have_count(0)
        await console.shot("revoked-key-refused")
