# ruff: noqa: E501 - JavaScript one-liners read better unbroken.
"""The script contract: handler forms, outputs, errors, and what a script cannot reach."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.asyncio(loop_scope="session")

FORMS = {
    "function": "function handler(input, ctx) { return { got: input, form: 'function' } }",
    "async function": "async function handler(input, ctx) { return { got: input, form: 'async' } }",
    "const arrow": "const handler = async (input, ctx) => ({ got: input, form: 'arrow' })",
    "export default": "export default async function (input, ctx) { return { got: input, form: 'default' } }",
    "export handler": "export async function handler(input, ctx) { return { got: input, form: 'export' } }",
}


@pytest.mark.parametrize("form", FORMS)
async def test_every_handler_form_runs(run, form):
    result = await run(FORMS[form], {"a": 1})
    assert result.status == "completed", result
    assert result.output["got"] == {"a": 1}


async def test_a_source_that_is_not_unicode_fails_in_one_line(run):
    # Only a source handed over directly (the embedded API) can hold an unpaired surrogate;
    # V8 takes UTF-8. The run says why, and the worker serves the next one.
    result = await run("async function handler() { return 1 } // \ud800")
    assert (result.status, result.error) == (
        "failed", "the source is not valid Unicode: it contains an unpaired UTF-16 surrogate")
    assert (await run("async function handler() { return 2 }")).output == 2


async def test_undefined_output_becomes_null(run):
    result = await run("async function handler() { }")
    assert (result.status, result.output) == ("completed", None)


async def test_parse_error_reports_the_line(run):
    result = await run("function handler() {\n  let x = 1;\n  let = = 3;\n}")
    assert result.status == "failed"
    assert result.error == "SyntaxError: Unexpected token '=' at line 3"


async def test_thrown_error_has_message_and_stack(run):
    result = await run("async function handler() {\n  const x = undefined;\n  x();\n}")
    assert result.status == "failed"
    assert result.error == "TypeError: x is not a function"
    assert "at handler" in result.stack and ":3:" in result.stack


async def test_top_level_throw_fails_cleanly(run):
    result = await run("throw new RangeError('nope')\nfunction handler() {}")
    assert (result.status, result.error) == ("failed", "RangeError: nope")


async def test_thrown_non_error_value(run):
    result = await run("async function handler() { throw 42 }")
    assert (result.status, result.error) == ("failed", "Uncaught 42")


async def test_missing_handler(run):
    result = await run("const notTheHandler = 1")
    assert (result.status, result.error) == (
        "failed",
        "Error: script does not define a handler function",
    )


async def test_unserialisable_output_fails(run):
    result = await run("async function handler() { return { n: 10n } }")
    assert result.status == "failed"
    assert result.error.startswith("TypeError:") and "BigInt" in result.error


async def test_nothing_of_node_or_the_host_is_reachable(run):
    source = """async function handler() {
      return [typeof require, typeof process, typeof module, typeof Deno, typeof fetch,
              typeof Atomics.wait, typeof __timer_manager];
    }"""
    result = await run(source)
    assert result.output == ["undefined"] * 7


async def test_timers_work_including_zero_delay(run):
    source = """async function handler() {
      const order = [];
      await new Promise((resolve) => { setTimeout(() => { order.push('a'); }, 0);
                                       setTimeout(() => { order.push('b'); resolve(); }, 5); });
      const cleared = setTimeout(() => order.push('never'), 1);
      clearTimeout(cleared);
      await new Promise((resolve) => setTimeout(resolve, 3));
      return order;
    }"""
    result = await run(source)
    assert (result.status, result.output) == ("completed", ["a", "b"])


async def test_metrics_are_reported(run):
    result = await run("async function handler() { return 1 }")
    assert set(result.metrics) == {
        "duration_ms",
        "memory_used_bytes",
        "api_call_count",
        "database_query_count",
    }
    assert result.metrics["database_query_count"] == 0
    assert result.metrics["api_call_count"] == 0


@pytest.mark.parametrize("delay", ["Infinity", "2147483648", "1e300", "NaN", "-Infinity",
                                   "'soon'", "undefined", "{}"])
async def test_a_timer_with_an_odd_delay_fires_as_in_node(run, delay):
    source = f"""async function handler() {{
      await new Promise((resolve) => setTimeout(resolve, {delay}));
      return 'fired';
    }}"""
    result = await run(source)
    assert (result.status, result.output) == ("completed", "fired")
