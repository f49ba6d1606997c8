"""The pure parts of the console's runs pages (#18): the overview's chart geometry, the list
filters read from query strings, the minutes of the overview's window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.datastructures import QueryParams

from consumer.console import chart
from consumer.console.overview import memory
from consumer.console.query import executions_query, letters_query, link, parse_time
from consumer.dead_letters import UNRESOLVED
from consumer.overview import WINDOW_MINUTES, Minute, window
from consumer.paging import MAX_PAGE

NOW = datetime(2026, 12, 2, 14, 30, 45, tzinfo=UTC)


def minutes(counts: dict[int, dict[str, int]]) -> list[Minute]:
    start, _ = window(NOW)
    return [Minute(start + timedelta(minutes=i), counts.get(i, {}))
            for i in range(WINDOW_MINUTES)]


def test_the_window_is_sixty_whole_minutes_ending_with_the_current_one() -> None:
    start, end = window(NOW)
    assert start == datetime(2026, 12, 2, 13, 31, tzinfo=UTC)
    assert end == datetime(2026, 12, 2, 14, 31, tzinfo=UTC)
    assert (end - start) == timedelta(minutes=WINDOW_MINUTES)


@pytest.mark.parametrize(("n", "top"), [(0, 1), (1, 1), (2, 2), (3, 5), (7, 10), (10, 10),
                                        (11, 20), (51, 100), (999, 1000), (1001, 2000)])
def test_nice_ceiling(n: int, top: int) -> None:
    assert chart.nice_ceiling(n) == top


def test_bars_stack_in_status_order_and_the_tallest_fills_the_plot() -> None:
    drawn = chart.draw(minutes({0: {"failed": 1, "completed": 3}, 59: {"completed": 5},
                                30: {"running": 2}}))
    assert len(drawn.bars) == WINDOW_MINUTES and drawn.peak == 5 and drawn.total == 11
    first = drawn.bars[0]
    assert [r.status for r in first.rects] == ["completed", "failed"]  # bottom to top
    assert first.rects[0].y + first.rects[0].h == pytest.approx(chart.HEIGHT - chart.BOTTOM)
    assert first.rects[1].y + first.rects[1].h == pytest.approx(first.rects[0].y)
    plot_h = chart.HEIGHT - chart.BOTTOM - chart.TOP
    assert sum(r.h for r in drawn.bars[59].rects) == pytest.approx(plot_h)
    assert drawn.bars[59].label.endswith("UTC: 5 completed")
    assert [t.label for t in drawn.y_ticks] == ["0", "5"]  # 2.5 is no count
    assert drawn.bars[1].rects == [] and drawn.bars[1].label.endswith("none")
    assert drawn.statuses == ["completed", "failed", "running"]
    assert [t.label for t in drawn.x_ticks] == ["−45 min", "−30 min", "−15 min", "now"]
    assert all(b.x >= chart.LEFT and b.x + b.w <= chart.WIDTH for b in drawn.bars)


def test_an_empty_hour_draws_no_bars() -> None:
    drawn = chart.draw(minutes({}))
    assert drawn.total == 0 and all(not b.rects for b in drawn.bars) and drawn.statuses == []


@settings(derandomize=True, database=None, deadline=None)
@given(st.dictionaries(st.integers(0, WINDOW_MINUTES - 1),
                       st.dictionaries(st.sampled_from(chart.ORDER), st.integers(0, 10**6))))
def test_no_bar_leaves_the_plot(counts: dict[int, dict[str, int]]) -> None:
    drawn = chart.draw(minutes(counts))
    for bar in drawn.bars:
        for r in bar.rects:
            assert r.h >= 0 and r.y >= chart.TOP - 0.01
            assert r.y + r.h <= chart.HEIGHT - chart.BOTTOM + 0.01


# ---------------------------------------------------------------- filters
def test_times_iso_or_ages() -> None:
    assert parse_time("2h", NOW) == NOW - timedelta(hours=2)
    assert parse_time("2026-12-02 10:00", NOW) == datetime(2026, 12, 2, 10, tzinfo=UTC)
    assert parse_time("2026-12-02T10:00:00+02:00", NOW) == datetime(2026, 12, 2, 8, tzinfo=UTC)
    for wrong in ("yesterday", "999999d", "99999999d", "0001-01-01", "9999-12-31", "", "2x"):
        assert parse_time(wrong, NOW) is None, wrong


def test_execution_filters_read_or_say_what_is_wrong() -> None:
    script = uuid4()
    q, r = executions_query(QueryParams(
        f"script={script}&status=failed&status=timeout&trigger=cron&from=1h&page=3"), NOW)
    assert not r.problems
    assert q.script_id == script and q.script_name is None
    assert q.statuses == ("failed", "timeout") and q.triggers == ("cron",)
    assert q.started_from == NOW - timedelta(hours=1) and q.page == 3
    q, r = executions_query(QueryParams("script=alpha&page=-4"), NOW)
    assert q.script_name == "alpha" and q.script_id is None and q.page == 1
    q, r = executions_query(QueryParams("page=99999999999999999999"), NOW)
    assert q.page == MAX_PAGE
    _, r = executions_query(QueryParams("status=lost&trigger=x&from=soon&script=%00"), NOW)
    assert len(r.problems) == 4
    assert r.problems[0] == "Script cannot contain a NUL character"
    _, r = executions_query(QueryParams("script=" + "a" * 256), NOW)
    assert r.problems == ["Script is longer than 255 characters"]


def test_letter_filters_default_to_unresolved() -> None:
    q, r = letters_query(QueryParams(""), NOW)
    assert q.states == UNRESOLVED and not r.problems and r.shown["view"] == "unresolved"
    q, r = letters_query(QueryParams("view=all"), NOW)
    assert q.states == ()
    q, r = letters_query(QueryParams("view=all&state=exhausted&error=%20Boom%20"), NOW)
    assert q.states == ("exhausted",) and q.error == "Boom"
    _, r = letters_query(QueryParams("view=sideways&state=lost"), NOW)
    assert len(r.problems) == 2


def test_links_keep_the_filters() -> None:
    assert link({"script": "a b", "status": ["failed", "timeout"], "from": "", "page": 1},
                page=2) == "?script=a+b&status=failed&status=timeout&page=2"
    assert link({"page": 1}) == "?"


def test_memory_as_recorded_or_nothing() -> None:
    good = {"rss_bytes": 5, "workers": [{"index": 0, "pid": 9, "rss_bytes": 7, "inflight": 1}]}
    assert memory(good) == {"rss_bytes": 5,
                            "workers": [{"index": 0, "rss_bytes": 7, "inflight": 1}]}
    assert memory(None) == memory(["x"]) == {"rss_bytes": None, "workers": []}
    assert memory({"rss_bytes": True, "workers": [3, {"rss_bytes": "x"}]}) == \
        {"rss_bytes": None, "workers": [{"index": None, "rss_bytes": None, "inflight": None}]}
