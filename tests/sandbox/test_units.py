"""The sandbox's pure parts: source rewriting, error parsing, SSRF rules, the rate window."""

from __future__ import annotations

import ipaddress

import pytest

from consumer.sandbox.engine import eval_error, parse_error
from consumer.sandbox.fetch import is_blocked
from consumer.sandbox.ratelimit import SlidingWindowLimiter
from consumer.sandbox.runner import rss_budget
from consumer.sandbox.script import install_code, rewrite_exports


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("export default async function (i) {}", "const __jsrt_default = async function (i) {}"),
        ("export default function handler() {}", "const __jsrt_default = function handler() {}"),
        ("export async function handler() {}", "async function handler() {}"),
        ("export const handler = () => 1", "const handler = () => 1"),
        ("  export function handler() {}", "  function handler() {}"),
        ("const s = 'export default'", "const s = 'export default'"),
    ],
)
def test_rewrite_exports(source, expected):
    assert rewrite_exports(source) == expected


def test_install_code_keeps_line_numbers():
    code = install_code("a\nb\nc")
    assert code.split("\n")[1:3] == ["b", "c"]


def test_parse_error_names_the_line():
    message = (
        "<anonymous>:3: SyntaxError: Unexpected token '='\nlet = = 3;\n      ^\n\nSyntaxError: x\n"
    )
    error = parse_error(message)
    assert (error.error, error.stack) == ("SyntaxError: Unexpected token '=' at line 3", None)


def test_eval_error_keeps_the_stack():
    message = (
        "<anonymous>:1: TypeError: boom\nthrow x\n^\n\nTypeError: boom\n    at <anonymous>:1:7\n"
    )
    error = eval_error(message)
    assert error.error == "TypeError: boom"
    assert error.stack == "TypeError: boom\n    at <anonymous>:1:7"


@pytest.mark.parametrize(
    ("address", "blocked"),
    [
        ("127.0.0.1", True),
        ("10.1.2.3", True),
        ("172.31.0.1", True),
        ("192.168.0.1", True),
        ("169.254.169.254", True),
        ("100.64.1.1", True),
        ("0.0.0.0", True),
        ("224.0.0.1", True),
        ("::1", True),
        ("fe80::1", True),
        ("fd00:ec2::254", True),
        ("::ffff:10.0.0.1", True),
        ("100.100.100.200", True),
        ("8.8.8.8", False),
        ("2606:4700:4700::1111", False),
    ],
)
def test_ssrf_rules(address, blocked):
    assert is_blocked(ipaddress.ip_address(address)) is blocked


def test_sliding_window_with_an_injected_clock():
    now = [1000.0]
    limiter = SlidingWindowLimiter(window_s=60, clock=lambda: now[0])
    assert [limiter.try_acquire("s", 3) for _ in range(4)] == [True, True, True, False]
    assert limiter.try_acquire("other", 3)
    now[0] += 59.9
    assert not limiter.try_acquire("s", 3)
    now[0] += 0.2  # the first three calls leave the window together
    assert [limiter.try_acquire("s", 3) for _ in range(4)] == [True, True, True, False]


def test_rss_budget_leaves_room_over_the_heap_limit():
    assert rss_budget(16 << 20) == (16 << 20) + (4 << 20) + (8 << 20)
