"""Script validation: one clear message per problem, before anything reaches the database."""

from __future__ import annotations

import pytest

from consumer.errors import ValidationError
from consumer.validation import (
    ScriptSpec,
    check_cron,
    check_event_types,
    check_http_path,
    check_syntax,
    normalize_methods,
    parse_limits,
)


def test_a_valid_spec_passes() -> None:
    spec = ScriptSpec(name="n", type="scheduled", source="function handler() {}",
                      cron="0 9 * * 1-5", timezone="Europe/Paris")
    assert spec.check() is spec


def test_every_problem_is_reported_once() -> None:
    spec = ScriptSpec(name="", type="http", source="function (", http_path="x")
    with pytest.raises(ValidationError) as caught:
        spec.check()
    parts = str(caught.value).split("\n")
    assert len(parts) == 3
    assert parts[0] == "--name must not be empty"
    assert parts[1].startswith("--http-path must start with '/'")
    assert parts[2].startswith("the source does not parse: SyntaxError")


@pytest.mark.parametrize("path, fragment", [
    ("/ok", None), ("/a/b-c_d.e~f", None), ("", "needs --http-path"), ("x", "start with '/'"),
    ("/a/../b", "'..'"), ("/a/..", "'..'"), ("/a/./b", "'..' or '.'"), ("/a//b", "empty"),
    ("/a?b", "characters"), ("/a%2e", "without '%'"), ("/t/x", "reserved"),
    ("/" + "a" * 600, "longer than"),
])
def test_http_paths(path: str, fragment: str | None) -> None:
    problem = check_http_path(path)
    assert (problem is None) if fragment is None else (fragment in (problem or ""))


def test_methods() -> None:
    assert normalize_methods(["post", " GET ", "get"]) == (("GET", "POST"), None)
    assert normalize_methods(["HEAD"])[1] == \
        "--methods must be among GET, POST, PUT, PATCH, DELETE (got HEAD)"


def test_a_bad_cron_does_not_hide_a_bad_timezone() -> None:
    assert check_cron("61 * * * *", "Mars/Base") == (
        "--cron: invalid cron expression '61 * * * *': minute field '61' is not valid "
        "(allowed: 0-59)\n"
        "--timezone: unknown timezone 'Mars/Base'")
    assert check_cron(None, "Mars/Base") == (
        "a scheduled script needs --cron\n--timezone: unknown timezone 'Mars/Base'")
    assert check_cron("0 9 * * *", "Europe/Paris") is None


def test_every_bad_event_type_and_path_problem_is_a_line() -> None:
    assert check_event_types([" a", "ok", "", "b ", " "]) == (
        "--event-types: ' a' must be at most 255 characters, unpadded\n"
        "--event-types must be non-empty strings\n"
        "--event-types: 'b ' must be at most 255 characters, unpadded")
    assert (check_http_path("/t/../x") or "").splitlines() == [
        "--http-path must not contain '..' or '.' segments ('/t/../x')",
        "--http-path must not start with /t/ (reserved for /t/{tenant_id}/...)"]


def test_event_types() -> None:
    assert check_event_types(["a.b"]) is None
    assert check_event_types([]) == "an event script needs --event-types"
    assert check_event_types(["ok", " "]) == "--event-types must be non-empty strings"
    assert "unpadded" in (check_event_types([" a"]) or "")


@pytest.mark.parametrize("raw, message", [
    ('{"max_cpu": 1}', "unknown key 'max_cpu'"),
    ('{"max_memory_bytes": 1.5}', "max_memory_bytes must be a positive integer (got 1.5)"),
    ('{"max_memory_bytes": true}', "positive integer (got True)"),
    ('{"max_concurrent_runs": -1}', "positive integer (got -1)"),
    ('{"max_output_size_bytes": 1073741824}', "must be at most 67108864"),
    ("nope", "--limits must be a JSON object"),
    ("[]", "--limits must be a JSON object"),
])
def test_bad_limits(raw: str, message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_limits(raw)
    assert message in str(caught.value)


def test_limits_merge_over_a_base() -> None:
    merged = parse_limits('{"max_concurrent_runs": 2}', {"max_memory_bytes": 1 << 25})
    assert merged["max_concurrent_runs"] == 2 and merged["max_memory_bytes"] == 1 << 25
    assert merged["max_execution_time_ms"] == 30000


@pytest.mark.parametrize("source", [
    "function handler(i) { return i }",
    "export default async (i) => i",
    "export async function handler() {}",
    "const handler = async () => { await 1 }",
    "while (true) {}\nfunction handler() {}",  # parsed, never run
])
def test_sources_that_parse(source: str) -> None:
    assert check_syntax(source) is None


@pytest.mark.parametrize(("source", "line"), [
    ("function handler(i) {\n  return [1,\n    2\n", 3),  # unclosed: ends inside a block
    ("function handler(i) {\n  return 1\n", 2),
    ("const s = `abc", 1),
])
def test_a_source_that_ends_too_early_is_reported_at_its_last_line(source: str,
                                                                    line: int) -> None:
    """Never past the end of the file, nor with a token of the check's own wrapper."""
    assert check_syntax(source) == \
        f"the source does not parse: SyntaxError: Unexpected end of input at line {line}"


@pytest.mark.parametrize(("source", "why"), [
    ("function handler() { return 1 } // \ud800", "an unpaired UTF-16 surrogate"),
    ("function handler() { return '\x00' }", "U+0000"),
])
def test_a_source_postgresql_cannot_store_is_one_line(source: str, why: str) -> None:
    # (such a source could only come from a JSON body's escapes or argv's surrogateescape)
    message = check_syntax(source)
    assert message is not None and message.startswith("the source cannot be stored: ")
    assert why in message


def test_sources_that_do_not() -> None:
    assert check_syntax("function handler() {\n  return 1 +;\n}") == \
        "the source does not parse: SyntaxError: Unexpected token ';' at line 2"
    assert check_syntax("   ") == "the source is empty"
    # no closing the check's wrapper to run code in the checking process
    assert check_syntax("}); globalThis.ran = 1; (function () {") is not None
    assert check_syntax("function handler() {\n\n\n  let = = 1\n}") == \
        "the source does not parse: SyntaxError: Unexpected token '=' at line 4"


def test_every_bad_limit_is_reported_on_a_line_of_its_own() -> None:
    with pytest.raises(ValidationError) as caught:
        parse_limits('{"max_memory_bytes": "lots", "max_concurrent_runs": 0, "nope": 1,'
                     ' "max_output_size_bytes": 1073741824}')
    assert str(caught.value).splitlines() == [
        "--limits: unknown key 'nope' (allowed: max_execution_time_ms, max_memory_bytes,"
        " max_concurrent_runs, max_api_calls_per_minute, max_output_size_bytes)",
        "--limits: max_memory_bytes must be a positive integer (got 'lots')",
        "--limits: max_concurrent_runs must be a positive integer (got 0)",
        "--limits: max_output_size_bytes must be at most 67108864 (got 1073741824)",
    ]
