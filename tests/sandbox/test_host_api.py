# ruff: noqa: E501 - JavaScript one-liners read better unbroken.
"""ctx, console, events.publish and http.fetch, as scripts see them."""

from __future__ import annotations

import pytest
import structlog.testing
from support.sandbox_requests import FETCH_CAP, make_request

from consumer.sandbox import Executor, Limits

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_ctx_fields(run):
    source = """async function handler(input, ctx) {
      return { tenantId: ctx.tenantId, scriptId: ctx.scriptId, executionId: ctx.executionId,
               trigger: ctx.trigger, input: ctx.input, same: input === ctx.input };
    }"""
    result = await run(
        source,
        {"k": "v"},
        tenant="tenant-x",
        script="ctx-script",
        trigger={"type": "cron", "schedule": "* * * * *"},
    )
    out = result.output
    assert out["tenantId"] == "tenant-x" and out["scriptId"] == "ctx-script"
    assert out["executionId"].startswith("exec-")
    assert out["trigger"] == {"type": "cron", "schedule": "* * * * *"}
    assert out["input"] == {"k": "v"} and out["same"] is True


async def test_console_is_captured_with_levels(run):
    source = """async function handler() {
      console.log('plain', 1, { a: [1, 2] }); console.info('info'); console.warn('warn');
      console.error(new Error('bad')); console.debug(undefined, null, 'x');
    }"""
    result = await run(source)
    assert [line["level"] for line in result.logs] == ["log", "info", "warn", "error", "debug"]
    assert result.logs[0]["message"] == 'plain 1 {"a":[1,2]}'
    assert result.logs[3]["message"].startswith("Error: bad\n    at handler")
    assert result.logs[4]["message"] == "undefined null x"
    assert all(isinstance(line["ts"], int) for line in result.logs)


async def test_console_warn_and_error_reach_the_log_at_their_level(run):
    with structlog.testing.capture_logs() as logs:
        await run("function handler() { console.log('l'); console.warn('w'); console.error('e') }")
    levels = {line["message"]: line["log_level"] for line in logs if line["event"] == "script_console"}
    assert levels == {"l": "info", "w": "warning", "e": "error"}


async def test_publish_goes_to_the_scripts_own_tenant(run, recorder):
    source = "async function handler(i, ctx) { return await ctx.events.publish('order.created', { id: 7, tenant: 'evil' }) }"
    result = await run(source, tenant="tenant-pub", depth=2)
    assert result.status == "completed", result
    published = recorder.published[int(result.output.split("-")[1]) - 1]
    assert published.tenant_id == "tenant-pub"
    assert published.event_type == "order.created"
    assert published.payload == {"id": 7, "tenant": "evil"}
    assert published.depth == 3
    assert published.source_execution_id.startswith("exec-")
    assert result.metrics["api_call_count"] == 1


@pytest.mark.parametrize(("depth", "ok"), [(6, True), (7, True), (8, False)])
async def test_publish_depth_limit(run, depth, ok):
    source = "async function handler(i, ctx) { try { await ctx.events.publish('chain', {}); return 'ok' } catch (e) { return e.message } }"
    result = await run(source, depth=depth)
    assert result.output == ("ok" if ok else "events.publish: event chain depth limit (8) exceeded")


async def test_publish_rejects_a_bad_type(run):
    source = "async function handler(i, ctx) { try { await ctx.events.publish('', {}) } catch (e) { return e.name + ': ' + e.message } }"
    result = await run(source)
    assert result.output.startswith("TypeError: events.publish: type must be")


async def test_python_failures_never_leak_into_javascript(run):
    source = "async function handler(i, ctx) { try { await ctx.events.publish('explode', {}) } catch (e) { return [e.name, e.message, e.stack] } }"
    result = await run(source)
    name, message, stack = result.output
    assert (name, message) == ("Error", "events.publish failed")
    assert "/srv" not in stack and "hunter2" not in stack and ".py" not in stack


async def test_publish_without_a_publisher_throws_cleanly():
    async with Executor(workers=1) as bare:
        source = "async function handler(i, ctx) { try { await ctx.events.publish('x', {}) } catch (e) { return e.message } }"
        result = await bare.execute(make_request(source))
    assert result.output == "events.publish is not available: no publisher is configured"


FETCH = """async function handler(args, ctx) {
  try {
    const r = await ctx.http.fetch(args.url, args.opts);
    return { status: r.status, ok: r.ok, header: r.headers['x-test'], body: r.body.length < 500 ? r.body : r.body.length,
             json: r.status === 200 && r.headers['content-type'] === 'application/json' ? r.json() : null };
  } catch (e) { return { error: e.message } }
}"""


async def test_fetch_get_json(run, http_base):
    result = await run(FETCH, {"url": f"{http_base}/json"})
    assert result.output["status"] == 200 and result.output["ok"] is True
    assert result.output["json"] == {"hello": "world"}
    assert result.output["header"] == "yes"
    assert result.metrics["api_call_count"] == 1


async def test_fetch_post_with_headers_and_json_body(run, http_base):
    opts = {"method": "post", "headers": {"X-Custom": "1"}, "body": {"a": 1}}
    result = await run(FETCH, {"url": f"{http_base}/echo", "opts": opts})
    echoed = result.output["json"]
    assert echoed["method"] == "POST" and echoed["body"] == '{"a":1}'
    headers = {k.lower(): v for k, v in echoed["headers"].items()}
    assert headers["x-custom"] == "1" and headers["content-type"] == "application/json"


async def test_fetch_non_200_is_a_response_not_an_error(run, http_base):
    result = await run(FETCH, {"url": f"{http_base}/missing"})
    assert result.output["status"] == 404 and result.output["ok"] is False


async def test_fetch_response_size_is_capped(run, http_base):
    result = await run(FETCH, {"url": f"{http_base}/big"})
    assert result.output == {"error": f"fetch response too large: more than {FETCH_CAP} bytes"}


async def test_fetch_timeout(run, http_base):
    result = await run(
        FETCH,
        {"url": f"{http_base}/slow", "opts": {"timeoutMs": 150}},
        limits=Limits(max_execution_time_ms=3000),
    )
    assert result.output == {"error": "fetch timed out after 150 ms"}
    assert result.metrics["duration_ms"] < 1000


async def test_fetch_timeout_never_outlives_the_execution(run, http_base):
    source = FETCH.replace("return { error: e.message }", "return { error: e.message, late: true }")
    result = await run(
        source,
        {"url": f"{http_base}/slow", "opts": {"timeoutMs": 60000}},
        limits=Limits(max_execution_time_ms=500),
    )
    assert result.status in ("timeout", "completed")
    assert result.metrics["duration_ms"] < 1500


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost:{port}/json",  # a name that resolves to loopback (checked after DNS)
        "http://127.0.0.2/",
        "http://[::1]/",
        "http://10.0.0.1/",
        "http://172.16.5.4/",
        "http://192.168.1.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://169.254.10.10/",
        "http://100.64.0.1/",
        "http://0.0.0.0/",
        "http://[fd00:ec2::254]/",
        "http://[::ffff:127.0.0.1]/",
    ],
)
async def test_fetch_blocks_non_public_addresses(run, http_base, url):
    port = http_base.rsplit(":", 1)[1]
    result = await run(FETCH, {"url": url.format(port=port)})
    assert result.output["error"].startswith("fetch blocked: "), result.output
    assert "resolves to a non-public address" in result.output["error"]


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("file:///etc/passwd", "fetch: only absolute http and https URLs are allowed"),
        ("ftp://example.com/", "fetch: only absolute http and https URLs are allowed"),
        ("not a url", "fetch: only absolute http and https URLs are allowed"),
    ],
)
async def test_fetch_refuses_other_schemes(run, url, error):
    result = await run(FETCH, {"url": url})
    assert result.output == {"error": error}
