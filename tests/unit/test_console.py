"""The web console's pure parts: diffs, the sign-in redirect target, times, the sign-in
limiter, the parse error's line and column, and the dev banner's console lines."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from consumer.commands.dev import banner
from consumer.console import diffs
from consumer.console.context import SignInLimiter
from consumer.console.render import time_tag
from consumer.console.session import safe_next
from consumer.validation import check_syntax, syntax_problem

OLD = "a\nb\nc\nd\ne\nf\ng\nh\ni\nj\n"
NEW = "a\nb\nC\nd\ne\nf\ng\nh\ni\nj\nk\n"


def test_side_by_side_pairs_changes_and_keeps_context() -> None:
    rows = diffs.side_by_side(OLD, NEW, context=1)
    kinds = [r.kind for r in rows]
    assert kinds == ["hunk", "same", "chg", "same", "hunk", "same", "add"]
    chg = rows[2]
    assert (chg.old_no, chg.old, chg.new_no, chg.new) == (3, "c", 3, "C")
    assert rows[-1] == diffs.Row("add", None, "", 11, "k")
    assert diffs.stats(rows) == (2, 1)


def test_unified_lists_removals_before_additions() -> None:
    rows = diffs.unified(OLD, NEW, context=0)
    assert [(r.kind, r.old_no, r.new_no) for r in rows] == [
        ("hunk", 3, 3), ("del", 3, None), ("add", None, 3), ("hunk", 11, 11), ("add", None, 11)]
    assert diffs.unified(OLD, OLD) == []


@pytest.mark.parametrize(("target", "expected"), [
    ("/console/scripts?q=1", "/console/scripts?q=1"),
    (None, "/console/"),
    ("", "/console/"),
    ("https://evil.example/console/", "/console/"),
    ("//evil.example/", "/console/"),
    ("/consolex", "/console/"),
    ("/console/\\evil", "/console/"),
    ("/console/a\r\nSet-Cookie: x=1", "/console/"),
])
def test_safe_next(target: str | None, expected: str) -> None:
    assert safe_next(target) == expected


def test_time_tag_is_utc_with_a_machine_readable_datetime() -> None:
    at = datetime(2026, 12, 2, 5, 6, 7, tzinfo=timezone(timedelta(hours=2)))
    assert str(time_tag(at)) == ('<time datetime="2026-12-02T03:06:07Z" '
                                 'title="2026-12-02 03:06:07 UTC">2026-12-02 03:06:07 UTC</time>')
    assert str(time_tag(None)) == "—"
    assert str(time_tag(None, "never")) == "never"
    assert "2026-01-01T00:00:00Z" in str(time_tag(datetime(2026, 1, 1, tzinfo=UTC)))
    assert str(time_tag("<b>")) == "&lt;b&gt;"


def test_the_signin_limiter_counts_failures_per_address() -> None:
    limiter = SignInLimiter(2)
    assert not limiter.blocked("1.2.3.4")
    limiter.failed("1.2.3.4")
    limiter.failed("1.2.3.4")
    assert limiter.blocked("1.2.3.4") and not limiter.blocked("5.6.7.8")


def test_a_spray_of_addresses_never_resets_the_one_being_tried() -> None:
    limiter = SignInLimiter(3)
    for i in range(3 * SignInLimiter.MAX_CLIENTS):
        if i % 1000 == 0:
            limiter.failed("1.2.3.4")  # the guesser keeps trying one address
        limiter.failed(f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}")
    assert limiter.blocked("1.2.3.4")
    assert len(limiter._failures) <= SignInLimiter.MAX_CLIENTS


def test_syntax_problems_carry_line_and_column() -> None:
    problem = syntax_problem("function handler() {\n  return 1 +;\n}")
    assert problem is not None and (problem.line, problem.column) == (2, 13)
    assert problem.message == check_syntax("function handler() {\n  return 1 +;\n}")
    unclosed = syntax_problem("function handler() {\n  return 1;\n")
    assert unclosed is not None and (unclosed.line, unclosed.column) == (2, None)
    assert syntax_problem("function handler() { return 1 }") is None
    empty = syntax_problem("  ")
    assert empty is not None and empty.line is None


def test_the_dev_banner_names_the_console_and_how_to_get_a_key() -> None:
    shown = banner("postgresql://x", "127.0.0.1:8080", "", demo=True)
    assert "http://127.0.0.1:8080/console/" in shown
    assert "jsrt keys create --tenant 00000000-0000-4000-8000-00000000de70 --name console" in shown
    assert "keys:manage" in shown
    assert "--operator --name console" in banner("postgresql://x", "127.0.0.1:8080", "",
                                                   demo=False)
    assert "/console/" not in banner("postgresql://x", None, "", demo=True)
