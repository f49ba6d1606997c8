"""The console's Executions, Dead letters and Overview pages (#18), through the ASGI app with a
real PostgreSQL: every page and action, and every refusal - no session, another tenant's id
(404, as for an id that does not exist), a missing scope (403), a missing or wrong CSRF token
(403), read-only sessions that see no buttons and are refused anyway, bulk retry bound to the
viewer's tenant whatever the form says - and, with hypothesis, that no query string makes a
page fail (500) or show another tenant's rows."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlencode

import asyncpg
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.console import READ_ONLY, ConsoleApp, User, console_for
from support.console_rows import TenantRows, make_execution, world
from support.daemons import drain
from support.factories import make_script, publish

from consumer.console import CSP
from consumer.sandbox import Executor

MANAGER = ("executions:read", "dead-letters:manage")
FAILS_ONCE = """function handler(input, ctx) {
    if (ctx.trigger.attempt < 2) throw new Error('first time');
    return 'ok';
}"""
PAGES = ("/console/overview", "/console/executions", "/console/dead-letters",
         "/console/dead-letters/retry")

# Derandomized (the same examples every run: CI must be deterministic); HYPOTHESIS_PROFILE=
# explore searches afresh, with more examples.
EXPLORE = os.environ.get("HYPOTHESIS_PROFILE") == "explore"
PROPERTY = settings(derandomize=not EXPLORE, database=None, deadline=None, print_blob=True,
                    max_examples=300 if EXPLORE else 60,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


@dataclass
class Seeded:
    c: ConsoleApp
    a: TenantRows
    b: TenantRows
    reader: User  # tenant A, read-only
    manager: User  # tenant A, executions:read + dead-letters:manage

    def b_ids(self) -> set[str]:
        """Every id of tenant B's rows that a page of tenant A must never show."""
        return {str(i) for i in self.b.executions} | {str(i) for i in self.b.letters.values()} \
            | {str(self.b.active), str(self.b.paused), str(self.b.tenant)}


@pytest.fixture
async def seeded(db_url: str, conn: asyncpg.Connection) -> AsyncIterator[Seeded]:
    async with console_for(db_url) as c:
        a, b = await world(conn, datetime.now(UTC))
        _, read_key = await c.tenant_key(a.tenant, READ_ONLY, name="reader")
        _, manage_key = await c.tenant_key(a.tenant, MANAGER, name="manager")
        yield Seeded(c, a, b, await c.signed_in(read_key), await c.signed_in(manage_key))


def leaks(s: Seeded, html: str) -> set[str]:
    return {i for i in s.b_ids() if i in html}


def page_ids(html: str, testid: str) -> set[str]:
    return set(re.findall(rf'data-testid="{testid}" data-id="([0-9a-f-]{{36}})"', html))


def assert_page(r: httpx.Response, status: int = 200) -> None:
    assert r.status_code == status, (r.status_code, r.text[:800])
    assert r.headers["content-security-policy"] == CSP
    assert " style=" not in r.text and "<script>" not in r.text
    assert "Traceback" not in r.text


async def letter_state(conn: asyncpg.Connection, letter: uuid.UUID) -> dict[str, object]:
    row = await conn.fetchrow("SELECT next_retry_at, max_retries, resolved_at, resolution "
                              "FROM jsrt_dead_letter_state WHERE dead_letter_id = $1", letter)
    assert row is not None
    return dict(row)


# ---------------------------------------------------------------- no session
async def test_every_page_and_action_wants_a_session(seeded: Seeded,
                                                     conn: asyncpg.Connection) -> None:
    anonymous = seeded.c.client()
    a = seeded.a
    for path in (*PAGES, "/console/overview/live", f"/console/executions/{a.executions[0]}",
                 f"/console/dead-letters/{a.letters['exhausted']}"):
        r = await anonymous.get(path)
        assert r.status_code == 303 and r.headers["location"].startswith("/console/login"), path
    # htmx polling after the session ended: 401 with a redirect for htmx to follow
    r = await anonymous.get("/console/overview/live", headers={"hx-request": "true"})
    assert r.status_code == 401 and r.headers["hx-redirect"] == "/console/login"
    for path in (f"/console/dead-letters/{a.letters['exhausted']}/retry",
                 f"/console/dead-letters/{a.letters['exhausted']}/discard",
                 "/console/dead-letters/retry"):
        r = await anonymous.post(path, data={"csrf": "x"})
        assert r.status_code == 401, path
    assert (await letter_state(conn, a.letters["exhausted"]))["max_retries"] == 3


# ---------------------------------------------------------------- executions
async def test_executions_list_is_the_tenants_own_with_filters_and_pages(seeded: Seeded) -> None:
    s, a = seeded, seeded.a
    r = await s.reader.get("/console/executions")
    assert_page(r)
    first = page_ids(r.text, "execution-row")
    assert len(first) == 20 and first <= {str(i) for i in a.executions}
    assert "Page 1 of 2" in r.text and "37 in all" in r.text and not leaks(s, r.text)
    r = await s.reader.get("/console/executions?page=2")
    second = page_ids(r.text, "execution-row")
    assert first | second == {str(i) for i in a.executions}

    r = await s.reader.get("/console/executions?" + urlencode(
        {"status": "failed", "from": "1h"}))
    assert page_ids(r.text, "execution-row") == {str(i) for i in a.failed}
    r = await s.reader.get("/console/executions?script=beta&trigger=cron")
    assert len(page_ids(r.text, "execution-row")) == 2
    # B's script id from A's session: nothing, and no hint that it exists
    r = await s.reader.get(f"/console/executions?script={s.b.active}")
    assert_page(r)
    assert page_ids(r.text, "execution-row") == set() and 'data-testid="empty"' in r.text
    # htmx asks for the results only
    r = await s.reader.htmx("GET", "/console/executions?status=running",
                            headers={"hx-target": "executions-results"})
    assert r.status_code == 200 and "<html" not in r.text
    assert page_ids(r.text, "execution-row") == {str(a.running)}
    # filters in words, never a 500
    r = await s.reader.get("/console/executions?status=exploded&from=yesterday-ish")
    assert_page(r, 400)
    assert "Status must be one of" in r.text and "Started after must be a time" in r.text
    r = await s.reader.htmx("GET", "/console/executions?status=exploded",
                            headers={"hx-target": "executions-results"})
    assert r.status_code == 200 and "Status must be one of" in r.text


async def test_empty_states_say_what_to_do(db_url: str) -> None:
    async with console_for(db_url) as c:
        _, key = await c.tenant_key(scopes=MANAGER)
        user = await c.signed_in(key)
        r = await user.get("/console/executions")
        assert_page(r)
        assert "No executions yet" in r.text and "Run now" in r.text
        r = await user.get("/console/executions?status=failed")
        assert "No execution matches these filters" in r.text
        r = await user.get("/console/dead-letters")
        assert "No unresolved dead letters" in r.text
        r = await user.get("/console/overview")
        assert_page(r)
        assert 'data-testid="chart-empty"' in r.text and "Publish an event" in r.text
        assert 'data-testid="workers-empty"' in r.text


async def test_execution_page(seeded: Seeded, conn: asyncpg.Connection) -> None:
    s, a = seeded, seeded.a
    failed = await make_execution(
        conn, a.tenant, a.active, status="failed", input={"order": "<b>7</b>"},
        error="TypeError: x is undefined\n    at handler (script.js:3:9)",
        logs=[{"level": "warn", "message": "careful <now>"}],
        trigger_data={"type": "event", "event_type": "thing.happened", "attempt": 1})
    r = await s.reader.get(f"/console/executions/{failed}")
    assert_page(r)
    assert "at handler (script.js:3:9)" in r.text and "careful &lt;now&gt;" in r.text
    assert "&lt;b&gt;7&lt;/b&gt;" in r.text and "<b>7</b>" not in r.text  # escaped
    assert 'data-status="failed"' in r.text and "hx-trigger" not in r.text.split(
        'id="execution-live"')[1].split(">")[0]
    assert "version 1" in r.text and 'data-testid="version-diff"' not in r.text
    # a newer source: the run still ran version 1, compared with the current one in a click
    await conn.execute("UPDATE scripts SET source = source || ' // v2' WHERE id = $1", a.active)
    r = await s.reader.get(f"/console/executions/{failed}")
    assert "version 1</a>" in r.text
    assert f'/console/scripts/{a.active}/diff?a=1&amp;b=2" data-testid="version-diff"' in r.text
    # a run in progress re-reads its live part
    r = await s.reader.get(f"/console/executions/{a.running}")
    live_tag = r.text.split('id="execution-live"')[1].split(">")[0]
    assert 'hx-trigger="every 2s"' in live_tag
    r = await s.reader.htmx("GET", f"/console/executions/{a.running}",
                            headers={"hx-target": "execution-live"})
    assert r.status_code == 200 and r.text.lstrip().startswith('<div id="execution-live"')
    # a letter's attempts show on its execution's page
    letter_run = await conn.fetchval("SELECT execution_id FROM script_event_dead_letters "
                                     "WHERE id = $1", a.letters["exhausted"])
    r = await s.reader.get(f"/console/executions/{letter_run}")
    assert f'/console/dead-letters/{a.letters["exhausted"]}' in r.text
    assert 'data-testid="letter-attempts"' in r.text


async def test_another_tenants_execution_is_not_found(seeded: Seeded) -> None:
    s = seeded
    for path in (f"/console/executions/{s.b.executions[0]}", f"/console/executions/{uuid.uuid4()}",
                 "/console/executions/not-an-id"):
        r = await s.reader.get(path)
        assert_page(r, 404)
        assert "no such execution" in r.text.lower() or "no execution" in r.text.lower()
        assert not leaks(s, r.text.replace(path.rsplit("/", 1)[1], ""))


async def test_missing_scope_is_refused(seeded: Seeded) -> None:
    s = seeded
    _, key = await s.c.tenant_key(s.a.tenant, ("scripts:read",), name="scripts-only")
    user = await s.c.signed_in(key)
    for path in ("/console/executions", f"/console/executions/{s.a.executions[0]}",
                 "/console/dead-letters", f"/console/dead-letters/{s.a.letters['exhausted']}"):
        r = await user.get(path)
        assert_page(r, 403)
        assert "executions:read" in r.text, path
    # the overview says what is missing instead of refusing the landing page
    r = await user.get("/console/overview")
    assert_page(r)
    assert "lacks the <code>executions:read</code> scope" in r.text
    assert 'data-testid="chart"' not in r.text


async def test_rows_written_by_hand_still_render(seeded: Seeded, conn: asyncpg.Connection) -> None:
    """Console lines, metrics and memory are JSON anyone with SQL may have written: whatever
    they hold, the pages say it in words, never a 500."""
    s, a = seeded, seeded.a
    odd = await make_execution(conn, a.tenant, a.active, status="completed",
                               logs=["a bare string", {"level": None}, {"message": {"x": 1}},
                                     7, {"level": "warn", "message": "ok", "metadata": [1]}])
    await conn.execute("UPDATE script_executions SET metrics = '[1, 2]', trigger_data = "
                       "'\"text\"' WHERE id = $1", odd)
    r = await s.reader.get(f"/console/executions/{odd}")
    assert_page(r)
    assert "a bare string" in r.text and "{&#34;x&#34;: 1}" in r.text
    await conn.execute("UPDATE jsrt_daemons SET memory = '[\"lots\"]' WHERE id = $1", a.daemon)
    r = await s.reader.get("/console/overview")
    assert_page(r)
    assert "not reported" in r.text
    await conn.execute("UPDATE jsrt_daemons SET memory = '{\"rss_bytes\": \"x\", \"workers\":"
                       " [{\"index\": true}, 3]}' WHERE id = $1", a.daemon)
    assert_page(await s.reader.get("/console/overview"))


async def test_odd_ids_are_not_found(seeded: Seeded) -> None:
    s = seeded
    for raw in ("not-an-id", "%00", "x" * 300, str(uuid.uuid4()).upper().replace("-", ""),
                str(s.b.letters["scheduled"]), str(s.b.executions[0]).upper()):
        for base in ("/console/executions/", "/console/dead-letters/"):
            r = await s.manager.get(base + raw)
            assert_page(r, 404)
            echoed = r.text.replace(raw, "").replace(raw.lower(), "")  # the id asked for
            assert not leaks(s, echoed), (base, raw)


# ---------------------------------------------------------------- dead letters
async def test_dead_letters_list_and_filters(seeded: Seeded) -> None:
    s, a = seeded, seeded.a
    r = await s.reader.get("/console/dead-letters")
    assert_page(r)
    unresolved = {str(a.letters[x]) for x in ("scheduled", "waiting_for_script", "in_flight",
                                              "exhausted")}
    assert page_ids(r.text, "letter-row") == unresolved and not leaks(s, r.text)
    r = await s.reader.get("/console/dead-letters?view=all")
    assert page_ids(r.text, "letter-row") == {str(i) for i in a.letters.values()}
    r = await s.reader.get("/console/dead-letters?state=discarded")
    assert page_ids(r.text, "letter-row") == {str(a.letters["discarded"])}
    r = await s.reader.get("/console/dead-letters?" + urlencode({"error": "exhausted IN A"}))
    assert page_ids(r.text, "letter-row") == {str(a.letters["exhausted"])}
    r = await s.reader.get("/console/dead-letters?script=beta")
    assert page_ids(r.text, "letter-row") == {str(a.letters["waiting_for_script"])}
    r = await s.reader.get("/console/dead-letters?" + urlencode({"error": "in B"}))
    assert page_ids(r.text, "letter-row") == set()
    r = await s.reader.htmx("GET", "/console/dead-letters?state=exhausted",
                            headers={"hx-target": "letters-results"})
    assert "<html" not in r.text
    assert page_ids(r.text, "letter-row") == {str(a.letters["exhausted"])}
    r = await s.reader.get("/console/dead-letters?view=sideways&state=lost")
    assert_page(r, 400)
    assert "State must be one of" in r.text and "View must be" in r.text
    # read-only: no bulk retry offered
    assert 'data-testid="bulk-retry-link"' not in (await s.reader.get("/console/dead-letters")).text
    assert 'data-testid="bulk-retry-link"' in (await s.manager.get("/console/dead-letters")).text


async def test_letter_page_buttons_follow_the_scope(seeded: Seeded) -> None:
    s, a = seeded, seeded.a
    path = f"/console/dead-letters/{a.letters['exhausted']}"
    r = await s.reader.get(path)
    assert_page(r)
    assert "Error: exhausted in A" in r.text and 'data-testid="letter-attempts"' in r.text
    assert 'data-testid="retry"' not in r.text and 'data-testid="discard"' not in r.text
    r = await s.manager.get(path)
    assert 'data-testid="retry"' in r.text and 'data-testid="discard"' in r.text
    # a resolved letter offers nothing
    r = await s.manager.get(f"/console/dead-letters/{a.letters['succeeded']}")
    assert 'data-testid="retry"' not in r.text and "nothing to do" in r.text


async def test_retry_and_discard(seeded: Seeded, conn: asyncpg.Connection) -> None:
    s, a = seeded, seeded.a
    exhausted = a.letters["exhausted"]
    r = await s.manager.post(f"/console/dead-letters/{exhausted}/retry")
    assert r.status_code == 303 and r.headers["location"].endswith("?done=retried")
    state = await letter_state(conn, exhausted)
    assert state["max_retries"] == 4 and state["resolved_at"] is None
    r = await s.manager.get(r.headers["location"])
    assert 'data-testid="notice"' in r.text and "Retry scheduled" in r.text

    scheduled = a.letters["scheduled"]
    r = await s.manager.post(f"/console/dead-letters/{scheduled}/discard")
    assert r.status_code == 303 and r.headers["location"].endswith("?done=discarded")
    assert (await letter_state(conn, scheduled))["resolution"] == "discarded"
    # again: nothing to do, said in words
    r = await s.manager.post(f"/console/dead-letters/{scheduled}/discard")
    assert r.headers["location"].endswith("?done=unchanged")
    # htmx posts carry the token in a header
    r = await s.manager.htmx("POST", f"/console/dead-letters/{a.letters['waiting_for_script']}"
                             "/retry")
    assert r.status_code == 303


async def test_actions_refused_without_scope_csrf_or_tenant(seeded: Seeded,
                                                            conn: asyncpg.Connection) -> None:
    s, a, b = seeded, seeded.a, seeded.b
    target = a.letters["exhausted"]
    before = await letter_state(conn, target)
    for action in ("retry", "discard"):
        path = f"/console/dead-letters/{target}/{action}"
        r = await s.reader.post(path)  # read-only: refused however it is sent
        assert r.status_code == 403 and "dead-letters:manage" in r.text
        r = await s.manager.post(path, csrf=None)
        assert r.status_code == 403
        r = await s.manager.post(path, csrf="forged")
        assert r.status_code == 403
        r = await s.manager.htmx("POST", path, csrf=None)
        assert r.status_code == 403
        # another tenant's letter: not found, and untouched
        other = b.letters["exhausted"]
        r = await s.manager.post(f"/console/dead-letters/{other}/{action}")
        assert r.status_code == 404
        assert (await letter_state(conn, other))["max_retries"] == 3
        assert (await letter_state(conn, other))["resolved_at"] is None
    assert await letter_state(conn, target) == before
    for path in ("/console/dead-letters/retry", "/console/dead-letters/retry?view=all"):
        assert (await s.reader.get(path)).status_code == 403


async def test_bulk_retry_confirms_the_count_then_retries_that_set(
    seeded: Seeded, conn: asyncpg.Connection
) -> None:
    s, a = seeded, seeded.a
    r = await s.manager.get("/console/dead-letters/retry?view=unresolved")
    assert_page(r)
    # scheduled, waiting for its script, exhausted: in flight is left alone
    assert 'data-count="3"' in r.text and "Retry 3 dead letters" in r.text
    r = await s.manager.get("/console/dead-letters/retry?state=exhausted")
    assert 'data-count="1"' in r.text
    r = await s.manager.get("/console/dead-letters/retry?state=succeeded")
    assert 'data-count="0"' in r.text and 'data-testid="bulk-retry"' not in r.text

    r = await s.manager.post("/console/dead-letters/retry", {"view": "unresolved",
                                                             "state": "exhausted"}, csrf=None)
    assert r.status_code == 403
    assert (await letter_state(conn, a.letters["exhausted"]))["max_retries"] == 3
    r = await s.manager.post("/console/dead-letters/retry", {"view": "unresolved",
                                                             "state": "exhausted"})
    assert r.status_code == 303 and "retried=1" in r.headers["location"]
    assert (await letter_state(conn, a.letters["exhausted"]))["max_retries"] == 4
    r = await s.manager.get(r.headers["location"])
    assert 'data-testid="bulk-result"' in r.text and "Retry scheduled for 1 dead letter" in r.text


async def test_bulk_retry_stays_in_the_viewers_tenant_whatever_the_form_says(
    seeded: Seeded, conn: asyncpg.Connection
) -> None:
    s, b = seeded, seeded.b
    before = [dict(r) for r in await conn.fetch(
        "SELECT * FROM jsrt_dead_letter_state WHERE tenant_id = $1 ORDER BY dead_letter_id",
        b.tenant)]
    crafted = [{"script": str(b.active)}, {"script": str(b.paused), "view": "all"},
               {"tenant": str(b.tenant), "tenant_id": str(b.tenant), "view": "all"},
               {"error": "in B"}, {"id": str(b.letters["exhausted"])}]
    for form in crafted:
        r = await s.manager.get("/console/dead-letters/retry?" + urlencode(form))
        assert not leaks(s, r.text.replace(form.get("script", "-"), ""))
        r = await s.manager.post("/console/dead-letters/retry", form)
        assert r.status_code == 303, form
    after = [dict(r) for r in await conn.fetch(
        "SELECT * FROM jsrt_dead_letter_state WHERE tenant_id = $1 ORDER BY dead_letter_id",
        b.tenant)]
    assert after == before
    # the forms without a filter on B's script did retry A's own letters
    assert (await letter_state(conn, s.a.letters["exhausted"]))["max_retries"] == 4


async def test_a_letter_retried_from_the_console_runs_again(
    db_url: str, conn: asyncpg.Connection, executor: Executor
) -> None:
    """The whole path, with a real daemon and V8: a failed event run becomes a letter, the
    console's Retry now makes it due, the next drain runs it, the letter is resolved and both
    attempts show on the pages."""
    async with console_for(db_url) as c:
        tenant, key = await c.tenant_key(scopes=MANAGER)
        await make_script(conn, tenant, FAILS_ONCE, name="flaky")
        await publish(conn, tenant, "thing.happened", {"order": 7})
        await drain(db_url, executor)
        letter = await conn.fetchval("SELECT id FROM script_event_dead_letters "
                                     "WHERE tenant_id = $1", tenant)
        user = await c.signed_in(key)
        r = await user.get(f"/console/dead-letters/{letter}")
        assert 'data-testid="retry"' in r.text and "Error: first time" in r.text
        r = await user.post(f"/console/dead-letters/{letter}/retry")
        assert r.status_code == 303
        await drain(db_url, executor)
        r = await user.get(f"/console/dead-letters/{letter}")
        assert '<span class="badge succeeded">' in r.text
        attempts = r.text.split('data-testid="letter-attempts"')[1]
        assert attempts.count('<span class="badge failed">') == 1
        assert attempts.count('<span class="badge completed">') == 1
        r = await user.get("/console/executions?script=flaky&status=completed")
        [retry_id] = page_ids(r.text, "execution-row")
        r = await user.get(f"/console/executions/{retry_id}")
        assert '<pre data-testid="execution-output">&#34;ok&#34;</pre>' in r.text
        assert f"/console/dead-letters/{letter}" in r.text
        r = await user.get("/console/overview")
        assert 'data-total="2"' in r.text


# ---------------------------------------------------------------- overview
async def test_overview_for_a_tenant(seeded: Seeded) -> None:
    s = seeded
    r = await s.reader.get("/console/overview")
    assert_page(r)
    assert re.search(r'data-testid="chart" data-total="31"', r.text)
    assert '<rect class="bar completed"' in r.text and "<title>" in r.text
    assert re.search(r'data-testid="stat-pending-events"><span class="value">4<', r.text)
    assert re.search(r'data-testid="stat-running"><span class="value">1<', r.text)
    assert re.search(r'data-testid="stat-letters"><a class="value" href="[^"]+">4<', r.text)
    assert 'hx-get="/console/overview/live" hx-trigger="every 5s"' in r.text
    # the tenant sees the process serving its run, its memory, and neither host nor pid
    assert 'data-testid="worker-row"' in r.text and "50.0 MiB" in r.text
    assert "host-A" not in r.text and "host-B" not in r.text
    assert not leaks(s, r.text)
    live = await s.reader.htmx("GET", "/console/overview/live")
    assert live.status_code == 200 and live.text.lstrip().startswith('<div id="overview-live"')
    assert "<html" not in live.text and 'data-total="31"' in live.text


async def test_overview_for_an_operator(seeded: Seeded) -> None:
    s = seeded
    key = await s.c.operator_key(("executions:read",))
    op = await s.c.signed_in(key)
    r = await op.get("/console/overview")
    assert_page(r)
    assert 'data-total="62"' in r.text and "host-A" in r.text and "host-B" in r.text
    assert "every tenant" in r.text
    # choosing tenant A: A's numbers only
    r = await op.post("/console/tenant", {"tenant": str(s.a.tenant),
                                          "next": "/console/overview"})
    assert r.status_code == 303
    r = await op.get("/console/overview")
    assert 'data-total="31"' in r.text and "host-B" not in r.text
    r = await op.get("/console/executions")
    assert page_ids(r.text, "execution-row") <= {str(i) for i in s.a.executions}
    # an operator opens any tenant's object by id
    r = await op.get(f"/console/executions/{s.b.executions[0]}")
    assert r.status_code == 200


# ---------------------------------------------------------------- property
filter_keys = st.sampled_from(["script", "status", "trigger", "from", "until", "page", "view",
                               "state", "event_type", "error", "tenant", "tenant_id", "id"])
filter_values = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["failed", "running", "cron", "exhausted", "all", "unresolved", "2h",
                     "99999999d", "-1", "0", "999999999999", "2026-12-02T10:00:00+14:00",
                     "0001-01-01", "9999-12-31T23:59:59", "alpha", "beta", "%", "_", "'",
                     "\\", "\x00", "\u2028", "a" * 300]),
    st.uuids().map(str))


@pytest.mark.timeout(900)  # a property test: minutes on a loaded machine
@PROPERTY
@given(path=st.sampled_from(["/console/executions", "/console/dead-letters",
                             "/console/dead-letters/retry"]),
       pairs=st.lists(st.tuples(filter_keys, filter_values), max_size=6))
async def test_no_query_string_fails_or_shows_another_tenants_rows(
    seeded: Seeded, path: str, pairs: list[tuple[str, str]]
) -> None:
    s = seeded
    for key, value in [("script", str(s.b.active)), ("script", str(s.b.paused))]:
        if (key, value) not in pairs and len(pairs) % 3 == 0:
            pairs = [*pairs, (key, value)]
    query = urlencode(pairs)
    r = await s.manager.get(f"{path}?{query}")
    assert r.status_code in (200, 400), (r.status_code, query, r.text[:500])
    shown = r.text
    for _, value in pairs:  # an id the form shows back of the query itself is no leak
        if re.fullmatch(r"[0-9a-f-]{36}", value):
            shown = shown.replace(value, "")
    assert not leaks(s, shown), query
    if r.status_code == 400:
        assert 'id="filter-problems"' in r.text


@pytest.mark.timeout(900)
@PROPERTY
@given(pairs=st.lists(st.tuples(filter_keys, filter_values), max_size=6))
async def test_no_bulk_retry_form_fails_or_touches_another_tenant(
    seeded: Seeded, conn: asyncpg.Connection, pairs: list[tuple[str, str]]
) -> None:
    s, b = seeded, seeded.b
    before = [dict(r) for r in await conn.fetch(
        "SELECT * FROM jsrt_dead_letter_state WHERE tenant_id = $1 ORDER BY dead_letter_id",
        b.tenant)]
    form: dict[str, list[str]] = {"csrf": [s.manager.csrf]}
    for key, value in pairs:
        form.setdefault(key, []).append(value)
    r = await s.manager.client.post("/console/dead-letters/retry", data=form)
    assert r.status_code in (303, 400), (r.status_code, pairs, r.text[:500])
    after = [dict(r) for r in await conn.fetch(
        "SELECT * FROM jsrt_dead_letter_state WHERE tenant_id = $1 ORDER BY dead_letter_id",
        b.tenant)]
    assert after == before
