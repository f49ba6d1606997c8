"""A run's resource_limits as the claim returns them (JSON text): a short text is parsed once
for all the runs that carry it, a long one each time; an unusable one refuses every run."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer import records
from consumer.sandbox.types import InvalidLimits, Limits


def test_a_short_text_is_parsed_once_and_gives_the_same_limits():
    records._limits_of_text.cache_clear()
    text = '{"max_concurrent_runs": 7}'
    first, second = records._limits(text), records._limits(text)
    assert first is second and first == Limits(max_concurrent_runs=7)
    assert records._limits_of_text.cache_info().hits == 1


def test_a_long_text_is_not_kept():
    records._limits_of_text.cache_clear()
    text = '{"max_concurrent_runs": 7, "note": "' + "x" * 1000 + '"}'
    assert records._limits(text) == Limits(max_concurrent_runs=7)
    assert records._limits_of_text.cache_info().currsize == 0


@pytest.mark.parametrize("text", ['{"max_memory_bytes": "lots"}', "[1]", "[" * 100 + "]" * 100])
def test_an_unusable_text_refuses_every_time(text: str):
    for _ in range(2):
        with pytest.raises((InvalidLimits, ValueError)):
            records._limits(text)


@given(st.dictionaries(st.sampled_from(["max_concurrent_runs", "max_memory_bytes", "other"]),
                       st.integers(min_value=1, max_value=10**6)))
def test_cached_and_uncached_agree(raw: dict[str, int]):
    import json

    text = json.dumps(raw)
    try:
        expected: object = Limits.from_json(raw)
    except InvalidLimits as exc:
        expected = type(exc)
    try:
        got: object = records._limits(text)
    except InvalidLimits as exc:
        got = type(exc)
    assert got == expected
