"""A run's resource_limits as the claim returns them (JSON text): a short text is parsed once
for all the runs that carry it, a long one each time; an unusable one refuses every run."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer import records
from consumer.sandbox.types import InvalidLimits, Limits
from consumer.sources import Sources


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


def _row(source: str, version: str, n: int, tenant: str = "00000000-0000-0000-0000-00000000000a"
         ) -> dict[str, object]:
    import uuid

    return {"execution_id": uuid.uuid4(), "tenant_id": uuid.UUID(tenant),
            "script_id": uuid.UUID(int=1), "source": source, "version_id": version,
            "resource_limits": "{}", "input": f'{{"n": {n}}}', "trigger_type": "event",
            "trigger_data": '{"type": "event"}', "event_id": None, "dead_letter_id": None,
            "depth": 0, "script_name": "s"}


def test_the_runs_of_one_version_share_one_copy_of_its_source():
    text = "function handler(i) { return i; }" + " " * 1000
    rows = [_row("".join(list(text)), "v1", n) for n in range(5)]  # five equal, distinct str
    assert len({id(r["source"]) for r in rows}) == 5
    runs = records.Run.many_from_rows(rows, Sources().fill(rows, None))
    assert len({id(r.source) for r in runs}) == 1
    assert [r.input_json for r in runs] == [f'{{"n": {n}}}' for n in range(5)]


def test_a_source_is_shared_only_when_equal_and_only_within_its_tenant():
    # the same version id with another text (an md5 collision, say) keeps its own text, and
    # another tenant's run never gets this one's copy
    def fresh(text: str) -> str:  # an equal text in a string object of its own
        return "".join(list(text))

    rows = [_row(fresh("function handler() { return 'a'; }"), "v1", 1),
            _row(fresh("function handler() { return 'b'; }"), "v1", 2),
            _row(fresh("function handler() { return 'a'; }"), "v1", 3,
                 tenant="00000000-0000-0000-0000-00000000000b")]
    a, b, other = records.Run.many_from_rows(rows, Sources().fill(rows, None))
    assert (a.source, b.source, other.source) == (rows[0]["source"], rows[1]["source"],
                                                  rows[2]["source"])
    assert other.source is not a.source
