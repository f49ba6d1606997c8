"""The JSON limits and checks (consumer/jsontext.py), against a reference, over the classes of
input: arbitrary JSON, deep nesting either side of the limit, brackets inside strings, every
escape PostgreSQL refuses and the ones it takes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer import jsontext
from consumer.jsontext import MAX_DEPTH, JsonRefused

# derandomized: CI sees the same examples every run (a flaky test is a bug)
CI = settings(derandomize=True, database=None, max_examples=300, deadline=None)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=30,
)


def reference_depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max(map(reference_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(reference_depth, value.values()), default=0)
    return 0


def nest(depth: int, inner: Any = 1, kind: str = "list") -> Any:
    value = inner
    for _ in range(depth):
        value = [value] if kind == "list" else {"k": value}
    return value


@CI
@given(value=json_values, limit=st.integers(0, 8))
def test_depth_exceeds_agrees_with_a_reference(value: Any, limit: int) -> None:
    text = json.dumps(value)
    assert jsontext.depth_exceeds(text, limit) == (reference_depth(value) > limit)


@pytest.mark.parametrize("kind", ["list", "dict"])
@pytest.mark.parametrize(("depth", "deeper"), [(63, False), (64, False), (65, True), (5000, True)])
def test_the_limit_is_64_levels(kind: str, depth: int, deeper: bool) -> None:
    text = json.dumps(nest(depth, kind=kind)) if depth < 900 else "[" * depth + "]" * depth
    assert jsontext.depth_exceeds(text) is deeper


def test_brackets_and_escapes_inside_strings_do_not_count() -> None:
    shallow = json.dumps(["[" * 500, "\\" * 7 + '"{{{', {"a": "]]]" * 100}])
    assert not jsontext.depth_exceeds(shallow)
    assert jsontext.depth_exceeds(json.dumps(["\\", nest(70)]))


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('"\\u0000"', "U+0000"),
        ('{"k\\u0000": 1}', "U+0000"),
        ('"\\\\\\u0000"', "U+0000"),  # an escaped backslash, then a real \u0000
        ('"\\ud800"', "unpaired"),
        ('"\\udc00"', "unpaired"),
        ('"\\ud83d\\ud83d"', "unpaired"),
        ('"a\\uDE00b"', "unpaired"),
        ('"\\\\u0000"', None),  # a backslash and the text u0000: PostgreSQL stores it
        ('"\\ud83d\\ude00"', None),  # an escaped pair is one character
        ('"\\uD83D\\uDE00 \\u00e9"', None),
        ('"plain"', None),
    ],
)
def test_unstorable_names_what_postgresql_refuses(text: str, problem: str | None) -> None:
    found = jsontext.unstorable(text)
    assert (found is None) == (problem is None), found
    if problem:
        assert problem in (found or "")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("NaN", "not valid JSON"),
        ("[1, Infinity]", "not valid JSON"),
        ("{", "not valid JSON"),
        ("[" * 65 + "]" * 65, "nested deeper than 64 levels"),
        ("[" * 100_000 + "]" * 100_000, "nested deeper than 64 levels"),
        ('{"a": "\\u0000"}', "cannot be stored: it contains U+0000"),
        ('"\\ud800"', "cannot be stored: it contains an unpaired UTF-16 surrogate"),
    ],
)
def test_loads_refuses_in_one_line(text: str, message: str) -> None:
    with pytest.raises(JsonRefused) as caught:
        jsontext.loads(text, "payload")
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_loads_keeps_big_integers_exact() -> None:
    assert jsontext.loads("[123456789012345678901234567890]") == [123456789012345678901234567890]


@CI
@given(value=json_values)
def test_dumps_then_loads_round_trips_or_refuses(value: Any) -> None:
    try:
        text = jsontext.dumps(value)
    except JsonRefused as exc:
        assert "U+0000" in str(exc) or "nested" in str(exc)
        return
    assert jsontext.loads(text) == value


def test_dumps_refuses_deep_values_without_recursing() -> None:
    with pytest.raises(JsonRefused, match="nested deeper than 64"):
        jsontext.dumps(nest(MAX_DEPTH + 1))
    deep: Any = []
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(JsonRefused, match="nested deeper than 64"):
        jsontext.dumps(deep)


@pytest.mark.parametrize(
    ("text", "clean"),
    [("a\x00b", "a\ufffdb"), ("x\ud800y", "x\ufffdy"), ("\udc00", "\ufffd"),
     ("fine é 😀", "fine é 😀")],
)
def test_clean_text_replaces_what_postgresql_cannot_hold(text: str, clean: str) -> None:
    assert jsontext.clean_text(text) == clean


@CI
@given(text=st.text(alphabet=st.characters(codec=None, min_codepoint=0, max_codepoint=0xE000),
                    max_size=20))
def test_text_problem_names_exactly_what_postgresql_text_refuses(text: str) -> None:
    # text over the whole range below U+E000, lone surrogates and U+0000 included
    try:
        text.encode("utf-8")
        storable = "\x00" not in text
    except UnicodeEncodeError:
        storable = False
    assert (jsontext.text_problem(text) is None) == storable


def test_loads_stored_never_raises_recursion_error() -> None:
    with pytest.raises(JsonRefused, match="too deeply"):
        jsontext.loads_stored("[" * 100_000 + "]" * 100_000)
