"""The console's main pages with a tenant's ordinary day in them (real runs by the daemon beside
an hour of recorded ones), each opened in Chromium at 1280x800 without a console error, and
kept as a screenshot: under tests/browser/artifacts/ always, and as the README's pictures in
docs/console/ when JSRT_DOCS_SCREENSHOTS=1:

    JSRT_DOCS_SCREENSHOTS=1 .venv/bin/python -m pytest tests/browser/test_console_screens.py
"""

from __future__ import annotations

import os
import random
import re
import shutil
from datetime import UTC, datetime, timedelta
from uuid import UUID

import asyncpg
import pytest
from playwright.async_api import expect
from support.browser import Console, sign_in, type_source
from support.console_rows import make_execution
from support.factories import publish
from support.waiting import row_becomes

from consumer.scripts import ScriptRef
from consumer.settings import REPO_ROOT
from consumer.store import Store
from consumer.validation import ScriptSpec

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

DOCS = REPO_ROOT / "docs" / "console"
MAX_PNG_BYTES = 200 * 1024

ORDER_V1 = """export default async function (order, ctx) {
  console.log('order', order.id, 'for', order.total, order.currency);
  await ctx.events.publish('invoice.requested', { order: order.id });
  return { accepted: true };
}"""
ORDER_V2 = ORDER_V1.replace(
    "return { accepted: true };",
    "if (order.total > 1000) await ctx.events.publish('order.review', { order: order.id });\n"
    "  return { accepted: true, total: order.total };")
INVOICE = "async function handler(req, ctx) { return { queued: req.order }; }"
SYNC_CRM = """async function handler(customer, ctx) {
  if (!customer.email) throw new Error('customer ' + customer.id + ' has no email');
  return { synced: customer.id };
}"""
BROKEN = """function handler(order, ctx) {
  const total = order.lines.reduce((sum, l) => sum + l.price * l.qty, 0);
  return { total: total discount: 0 };
}"""


async def _scripts(db_url: str, tenant: UUID) -> dict[str, UUID]:
    made: dict[str, UUID] = {}
    async with Store.session(db_url, "browser tests") as store:
        def spec(name: str, type_: str, source: str, **kw: object) -> ScriptSpec:
            return ScriptSpec(name=name, type=type_, source=source, **kw)  # type: ignore[arg-type]

        made["order-created"] = await store.scripts.create(tenant, spec(
            "order-created", "event", ORDER_V1, description="Accepts an order, asks for its "
            "invoice", event_types=("order.created",)), "active", "first version")
        await store.scripts.update(ScriptRef(made["order-created"], tenant, "order-created"),
                                   {"source": ORDER_V2}, "large orders go to review")
        made["invoice"] = await store.scripts.create(tenant, spec(
            "invoice", "event", INVOICE,
            description="Queues the invoice of an order", event_types=("invoice.requested",)),
            "active", "first version")
        made["sync-crm"] = await store.scripts.create(tenant, spec(
            "sync-crm", "event", SYNC_CRM, description="Copies a customer into the CRM",
            event_types=("customer.updated",)), "active", "first version")
        made["nightly-report"] = await store.scripts.create(tenant, spec(
            "nightly-report", "scheduled", "async function handler(input, ctx) { return "
            "{ at: input.scheduled_for }; }", description="The day's orders, at 02:00",
            cron="0 2 * * *", timezone="Europe/Paris"), "active", "first version")
        made["hello"] = await store.scripts.create(tenant, spec(
            "hello", "http", "function handler(req) { return { hi: req.query.name }; }",
            description="Says hello over HTTP", http_path="/hello", http_methods=("GET",)),
            "draft", "first version")
    return made


async def _an_hour_of_runs(conn: asyncpg.Connection, tenant: UUID,
                           scripts: dict[str, UUID]) -> None:
    """Recorded runs over the last hour, for the chart and the lists' later pages; none older
    than 56 minutes, so that none leaves the chart's hour while the test counts."""
    rnd = random.Random(18)
    now = datetime.now(UTC)
    for minute in range(2, 56):
        for _ in range(rnd.randint(1, 6)):
            name = rnd.choice(["order-created", "order-created", "invoice"])
            await make_execution(conn, tenant, scripts[name], input={"id": rnd.randint(1, 999)},
                                 output={"accepted": True},
                                 started_at=now - timedelta(minutes=minute,
                                                            seconds=rnd.randint(0, 59)),
                                 metrics={"duration_ms": rnd.randint(3, 40)})
        if minute % 13 == 0:
            await make_execution(conn, tenant, scripts["sync-crm"], status="failed",
                                 started_at=now - timedelta(minutes=minute),
                                 error="Error: customer 4 has no email")


def _keep(shot: os.PathLike[str], name: str) -> None:
    size = os.path.getsize(shot)
    assert size < MAX_PNG_BYTES, f"{name}.png is {size} bytes"
    if os.environ.get("JSRT_DOCS_SCREENSHOTS") == "1":
        DOCS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, DOCS / f"{name}.png")


async def test_the_main_pages_with_a_day_in_them(console: Console, conn: asyncpg.Connection,
                                                 db_url: str) -> None:
    page, tenant = console.page, console.tenants.acme
    scripts = await _scripts(db_url, tenant)
    await _an_hour_of_runs(conn, tenant, scripts)
    await sign_in(page, console.server.base_url, console.tenants.admin)
    await page.goto(console.url("/console/overview"))
    chart = page.get_by_test_id("chart")
    recorded = int(await chart.get_attribute("data-total") or "")
    letters = page.get_by_test_id("stat-letters").locator(".value")
    await expect(letters).to_have_text("0")

    # real runs while the overview is open: orders (each asks for an invoice), and customers,
    # two of them without email; the page counts them as they happen, without a reload
    for n in range(1, 6):
        await publish(conn, tenant, "order.created",
                      {"id": 1000 + n, "total": 120 * n, "currency": "EUR"})
    for n, email in ((1, "ada@example.com"), (2, None), (3, "grace@example.com"), (4, None)):
        await publish(conn, tenant, "customer.updated", {"id": n, "email": email})
    await expect(chart).to_have_attribute("data-total", str(recorded + 5 + 5 + 4))
    await expect(letters).to_have_text("2")
    _keep(await console.shot("overview"), "overview")

    await page.goto(console.url("/console/scripts"))
    await expect(page.get_by_role("link", name="order-created")).to_be_visible()
    _keep(await console.shot("scripts"), "scripts")
    # the search (full text, on name and description) narrows the list as one types
    await page.get_by_label("Search").press_sequentially("invoice")
    await expect(page.get_by_role("link", name="nightly-report")).to_have_count(0)
    await expect(page.get_by_role("link", name="invoice", exact=True)).to_be_visible()
    await expect(page.get_by_role("link", name="order-created")).to_be_visible()  # "its invoice"
    await console.shot("scripts-search")
    await page.get_by_label("Search").fill("")
    await expect(page.get_by_role("link", name="nightly-report")).to_be_visible()

    await page.get_by_role("link", name="order-created").click()
    await expect(page.locator("#script-runs tbody tr").first).to_be_visible()
    _keep(await console.shot("script"), "script")
    await page.get_by_role("button", name="Show the diff").click()
    await expect(page.locator("table.diff tr.add").first).to_be_visible()
    _keep(await console.shot("diff"), "diff")

    await page.goto(console.url(f"/console/scripts/{scripts['order-created']}/edit"))
    await type_source(page, BROKEN)
    await expect(page.locator("#problems")).to_contain_text("line 3")
    await expect(page.locator(".CodeMirror-lint-marker-error")).to_have_count(1)
    # the message at the top of the screen, the marked line below it
    await page.locator("#problems").evaluate("(el) => el.scrollIntoView({ block: 'start' })")
    _keep(await console.shot("editor"), "editor")

    await page.goto(console.url("/console/executions"))
    await expect(page.get_by_test_id("execution-row").first).to_be_visible()
    _keep(await console.shot("executions"), "executions")
    # times in the viewer's zone (the browser's is Europe/Paris), UTC on hover
    rows = page.get_by_test_id("execution-row")
    started = rows.first.locator("time")
    await expect(started).to_contain_text(re.compile(r"\bCES?T\b"))  # winter, summer
    await expect(started).to_have_attribute(
        "title", re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$"))
    # paging and filters swap the results in place (htmx), and the address follows
    await expect(rows).to_have_count(20)
    first = await rows.first.get_attribute("data-id")
    await page.get_by_test_id("pager").get_by_role("link", name="Older →").click()
    await expect(page.get_by_test_id("pager")).to_contain_text("Page 2 of")
    await expect(page).to_have_url(re.compile(r"page=2"))
    assert await rows.first.get_attribute("data-id") != first
    await page.get_by_label("Status").select_option("failed")
    await expect(page).to_have_url(re.compile(r"status=failed"))
    await expect(rows.locator(".badge:not(.failed)")).to_have_count(0)
    await expect(rows).to_have_count(6)  # 4 recorded over the hour, 2 real
    await console.shot("executions-failed")

    await page.goto(console.url("/console/dead-letters"))
    await expect(page.get_by_test_id("letter-row")).to_have_count(2)
    _keep(await console.shot("dead-letters"), "dead-letters")
    await page.get_by_test_id("letter-row").first.get_by_role("link").first.click()
    await expect(page.get_by_test_id("letter-error")).to_contain_text("has no email")
    _keep(await console.shot("dead-letter"), "dead-letter")

    # the filtered set retried at once, after a confirmation that says how many
    await page.goto(console.url("/console/dead-letters"))
    await page.get_by_label("Script (name or id)").fill("sync-crm")
    await page.get_by_label("Script (name or id)").press("Enter")
    await expect(page).to_have_url(re.compile(r"script=sync-crm"))
    await page.get_by_test_id("bulk-retry-link").click()
    await expect(page.get_by_test_id("bulk-confirm")).to_contain_text("script: sync-crm")
    await expect(page.get_by_test_id("bulk-count")).to_have_attribute("data-count", "2")
    await console.shot("bulk-confirm")
    await page.get_by_test_id("bulk-retry").click()
    await expect(page.get_by_test_id("bulk-result")).to_contain_text(
        "Retry scheduled for 2 dead letters")
    await console.shot("bulk-retried")
    # the script still throws for a customer without email: both letters fail once more
    await row_becomes(conn, "SELECT count(*) FROM script_event_dead_letters WHERE tenant_id = $1 "
                      "AND retry_count = 1", tenant, expect=2)
