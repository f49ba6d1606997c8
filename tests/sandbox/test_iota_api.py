# ruff: noqa: E501 - JavaScript one-liners read better unbroken.
"""The IOTA SDK's script API (`context`, `sdk.*`, `events`) and its entry points, as scripts
written to that specification see them: real worker processes, real V8."""

from __future__ import annotations

import pytest
import structlog.testing

from consumer.sandbox import Limits

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_context_is_the_execution_in_progress(run):
    source = """async function main() {
      return { tenantId: context.tenantId, scriptId: context.scriptId, executionId: context.executionId,
               userId: context.userId, organizationId: context.organizationId, input: context.input,
               trigger: context.trigger };
    }"""
    result = await run(source, {"k": 1}, tenant="tenant-ctx", script="ctx-global",
                       trigger={"type": "api", "user_id": 42, "organization_id": "org-7"})
    out = result.output
    assert (out["tenantId"], out["scriptId"], out["userId"], out["organizationId"]) == (
        "tenant-ctx", "ctx-global", 42, "org-7")
    assert out["executionId"].startswith("exec-") and out["input"] == {"k": 1}
    assert out["trigger"]["type"] == "api"


async def test_user_and_organization_are_null_unless_the_caller_says(run):
    result = await run("function main() { return [context.userId, context.organizationId] }")
    assert result.output == [None, None]


async def test_context_is_read_only_and_null_at_the_top_level(run):
    source = """const atTop = String(globalThis.context);
    function handler() {
      'use strict';
      let assigned;
      try { context = 1; assigned = 'no error'; } catch (e) { assigned = e.name; }
      return [atTop, assigned, typeof context.tenantId];
    }"""
    result = await run(source)
    assert result.output == ["null", "TypeError", "string"]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("async function main() { return 'main' }", "main"),
        ("async function handleRequest(req) { return req.n }", 3),
        ("function helper() { return 1 }\nasync function handler(i) { return 'handler' }", "handler"),
        ("function validateOrder(order) {\n  return { valid: order.n > 0 }\n}", {"valid": True}),
        ("export default (i) => 'default'\nfunction main() { return 'main' }", "default"),
    ],
)
async def test_entry_points_of_the_spec(run, source, expected):
    result = await run(source, {"n": 3})
    assert (result.status, result.output) == ("completed", expected), result


async def test_two_candidate_functions_are_no_entry_point(run):
    result = await run("function a() {}\nfunction b() {}")
    assert (result.status, result.error) == ("failed", "Error: script does not define a handler function")


async def test_sdk_http_methods_bodies_query_and_parsed_json(run, http_base):
    source = f"""async function main() {{
      const base = '{http_base}';
      const got = await sdk.http.get(base + '/json');
      const posted = await sdk.http.post(base + '/echo', {{ a: 1 }}, {{ headers: {{ 'X-Token': 't' }}, query: {{ q: 'a b', n: [1, 2] }} }});
      const out = {{ got: [got.status, got.ok, got.body, typeof got.text()], posted: posted.body }};
      for (const m of ['put', 'patch']) out[m] = (await sdk.http[m](base + '/echo?x=1#frag', 'raw text')).body;
      out.delete = (await sdk.http.delete(base + '/echo')).body.method;
      out.missing = (await sdk.http.get(base + '/nope')).status;
      return out;
    }}"""
    # six requests in a row: more time than FAST gives, on a loaded machine
    result = await run(source, limits=Limits(max_execution_time_ms=20000, max_memory_bytes=16 << 20))
    assert result.status == "completed", result
    out = result.output
    assert out["got"] == [200, True, {"hello": "world"}, "string"]
    assert out["posted"]["method"] == "POST" and out["posted"]["body"] == '{"a":1}'
    assert out["posted"]["path"] == "/echo?q=a%20b&n=1&n=2"
    headers = {k.lower(): v for k, v in out["posted"]["headers"].items()}
    assert (headers["x-token"], headers["content-type"]) == ("t", "application/json")
    assert (out["put"]["method"], out["put"]["body"], out["put"]["path"]) == ("PUT", "raw text", "/echo?x=1")
    assert out["patch"]["method"] == "PATCH" and out["delete"] == "DELETE"
    assert out["missing"] == 404
    assert result.metrics["api_call_count"] == 6


async def test_sdk_http_timeout_option(run, http_base):
    source = f"async function main() {{ try {{ await sdk.http.get('{http_base}/slow', {{ timeout: 150 }}) }} catch (e) {{ return e.message }} }}"
    result = await run(source)
    assert result.output == "fetch timed out after 150 ms"


async def test_events_publish_is_ctx_events_publish(run, recorder):
    source = "async function main() { return await events.publish('order.created', { id: 7 }) }"
    result = await run(source, tenant="tenant-events", depth=1)
    assert result.status == "completed", result
    published = recorder.published[int(result.output.split("-")[1]) - 1]
    assert (published.tenant_id, published.event_type, published.payload, published.depth) == (
        "tenant-events", "order.created", {"id": 7}, 2)
    assert result.metrics["api_call_count"] == 1


async def test_sdk_db_and_cache_are_ctx_db_and_cache(run):
    """Forwarded to ctx.db / ctx.cache of the execution in progress: the same answers (here
    from an executor without tenant data), and always a promise. The real thing, with a
    database: tests/integration/test_script_data.py."""
    source = """async function main(input, ctx) {
      const out = [];
      const calls = [['db', 'query', ['SELECT 1', []]], ['db', 'queryOne', ['SELECT 1']], ['db', 'execute', ['DELETE FROM t']],
                     ['cache', 'get', ['k']], ['cache', 'set', ['k', 1, 60]], ['cache', 'increment', ['k']]];
      for (const [area, name, args] of calls) {
        const answers = [];
        for (const api of [sdk[area], ctx[area]]) {
          const p = api[name](...args);
          try { await p; answers.push([p instanceof Promise, 'resolved']); } catch (e) { answers.push([p instanceof Promise, e.message]); }
        }
        out.push(answers);
      }
      return out;
    }"""
    result = await run(source)
    assert result.status == "completed", result
    for via_sdk, via_ctx in result.output:
        assert via_sdk == via_ctx and via_sdk[0] is True


async def test_sdk_log_keeps_metadata_in_console_lines_and_log_lines(run):
    source = """async function main() {
      sdk.log.debug('d'); sdk.log.info('created', { userId: 123, tags: ['a'] });
      sdk.log.warn('low', { availableMB: 10 }); sdk.log.error('failed', { error: 'timeout' });
      const cyclic = {}; cyclic.self = cyclic; sdk.log.info('odd', cyclic);
    }"""
    with structlog.testing.capture_logs() as logs:
        result = await run(source, tenant="tenant-log")
    assert result.status == "completed", result
    assert [(line["level"], line["message"], line.get("metadata")) for line in result.logs] == [
        ("debug", "d", None), ("info", "created", {"userId": 123, "tags": ["a"]}),
        ("warn", "low", {"availableMB": 10}), ("error", "failed", {"error": "timeout"}),
        ("info", "odd", "[unserialisable metadata]"),
    ]
    lines = [line for line in logs if line["event"] == "script_console"]
    assert [line["log_level"] for line in lines] == ["debug", "info", "warning", "error", "info"]
    assert lines[1]["metadata"] == {"userId": 123, "tags": ["a"]}
    assert lines[1]["tenant_id"] == "tenant-log"  # the metadata never replaces the ids


async def test_sdk_log_metadata_cannot_forge_the_line_or_pass_the_caps(run):
    source = """async function main() {
      sdk.log.info('forged', { tenant_id: 'other', level: 'x' });
      sdk.log.info('big', { blob: 'x'.repeat(70000) });
      sdk.log.info('after');
    }"""
    with structlog.testing.capture_logs() as logs:
        result = await run(source, tenant="tenant-forge")
    forged = next(line for line in logs if line.get("message") == "forged")
    assert forged["tenant_id"] == "tenant-forge" and forged["metadata"]["tenant_id"] == "other"
    assert [line["message"] for line in result.logs] == ["forged", "[console output truncated]"]


async def test_the_globals_are_frozen_and_leak_nothing(run):
    source = """function main() {
      const frozen = [sdk, sdk.http, sdk.db, sdk.cache, sdk.log, events].every(Object.isFrozen);
      return { frozen, names: Object.getOwnPropertyNames(globalThis).filter((n) => n.includes('jsrt')),
               caller: (() => { try { return String(sdk.http.get.caller) } catch (e) { return e.name } })() };
    }"""
    result = await run(source)
    assert result.output == {"frozen": True, "names": [], "caller": "TypeError"}


async def test_user_is_the_jwt_subject_of_an_authenticated_http_call(executor):
    import dataclasses

    from support.sandbox_requests import make_request

    source = "function main() { return [context.userId, context.auth.type] }"
    request = dataclasses.replace(make_request(source, None, trigger={"type": "http"}),
                                  auth={"type": "jwt", "claims": {"sub": "user-9"}})
    result = await executor.execute(request)
    assert result.output == ["user-9", "jwt"]
    given = dataclasses.replace(make_request(source, None, trigger={"type": "api", "user_id": 5}),
                                auth={"type": "jwt", "claims": {"sub": "user-9"}})
    assert (await executor.execute(given)).output == [5, "jwt"]  # what the caller says wins
