"""The sandbox's pure parts: source rewriting, error parsing, SSRF rules, the rate window."""

from __future__ import annotations

import ipaddress

import pytest

from consumer.sandbox.engine import eval_error, parse_error
from consumer.sandbox.fetch import is_blocked
from consumer.sandbox.ratelimit import SlidingWindowLimiter
from consumer.sandbox.runner import rss_budget
from consumer.sandbox.script import entry_points, install_code, rewrite_exports


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
    code = install_code("a\nb\nc", "__jsrt_api")
    assert code.split("\n")[1:3] == ["b", "c"]


def test_entry_point_names():
    """handler, the default export, main, then the one other function declared at the start
    of a line (the IOTA SDK's examples name theirs: handleRequest, validateOrder, ...)."""
    assert entry_points("function handler() {}") == ["handler", "__jsrt_default", "main"]
    assert entry_points("async function handleOrderCreated(event) {}\n  function inner() {}")[
        -1] == "handleOrderCreated"
    assert entry_points("function a() {}\nfunction b() {}") == [
        "handler", "__jsrt_default", "main"]
    assert entry_points("function*gen() {}")[-1] == "gen"


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


# ---------------------------------------------------------------- checks out of the script's reach
def test_the_worker_checks_the_output_whatever_the_prelude_said():
    from consumer.sandbox.runner import output_problem

    assert output_problem('{"a": 1}', 100) is None
    assert output_problem('"' + "é" * 60 + '"', 100) == (
        "output too large: 122 bytes > max_output_size_bytes=100")
    assert output_problem("[" * 65 + "]" * 65, 1000) == "output is nested deeper than 64 levels"
    assert output_problem('"\\u0000"', 100) == (
        "output cannot be stored: it contains U+0000, which PostgreSQL cannot store")
    assert output_problem(None, 100) == "output is not JSON text"


def test_the_worker_caps_and_cleans_console_lines_itself():
    from consumer.sandbox.runner import MAX_LOG_LINES, TRUNCATED, Job

    job = Job(1, ("t", "s", "v"), "src", "{}", "{}", 1000, 1 << 20, 1 << 20)
    job.add_logs([["log", f"line {i}", 1] for i in range(MAX_LOG_LINES + 500)])
    job.add_logs([["log", "after the cap", 1]])
    assert len(job.logs) == MAX_LOG_LINES + 1
    assert job.logs[-1][1] == TRUNCATED
    big = Job(2, ("t", "s", "v"), "src", "{}", "{}", 1000, 1 << 20, 1 << 20)
    big.add_logs([["log", "x" * 40_000, 1], ["warn", "y" * 40_000, 2], ["log", "z", 3]])
    assert [line[1][:1] for line in big.logs] == ["x", TRUNCATED[0]]
    dirty = Job(3, ("t", "s", "v"), "src", "{}", "{}", 1000, 1 << 20, 1 << 20)
    dirty.add_logs([["error", "a\x00b\ud800", 1], "not a line", ["log"]])
    assert dirty.logs == [["error", "a\ufffdb\ufffd", 1]]


def test_the_worker_sends_only_console_lines_the_parent_accepts():
    from consumer.sandbox.protocol import Done, from_worker
    from consumer.sandbox.runner import Job

    odd = Job(4, ("t", "s", "v"), "src", "{}", "{}", 1000, 1 << 20, 1 << 20)
    odd.add_logs([[["log"], {"m": 1}, True], ["log", "x", None], ["log", "y", 1.5]])
    assert odd.logs == [["['log']", "{'m': 1}", 0], ["log", "x", 0], ["log", "y", 1.5]]
    done = Done(4, "completed", "1", None, None, odd.logs, 1, 2, 3)
    assert from_worker(done.encode()) == done


@pytest.mark.parametrize(
    "message",
    [
        ["done", 1, "completed", "1", None, None, [], 1, 2, 3, 0.0],  # a field short
        ["done", 1, "exploded", "1", None, None, [], 1, 2, 3, 0.0, 0.0],
        ["done", "1", "completed", "1", None, None, [], 1, 2, 3, 0.0, 0.0],
        ["done", 1, "completed", 1, None, None, [], 1, 2, 3, 0.0, 0.0],
        ["done", 1, "completed", "1", None, None, [["log", 5, 1]], 1, 2, 3, 0.0, 0.0],
        ["done", 1, "completed", "1", None, None, "logs", 1, 2, 3, 0.0, 0.0],
        ["done", 1, "completed", "1", None, None, [], True, 2, 3, 0.0, 0.0],
        ["done", 1, "completed", "1", None, None, [], 1, 2, 3, "0", 0.0],
        ["done", 1, "completed", "1", None, None, [], 1, 2, 3, 0.0, None],
    ],
)
def test_a_malformed_result_message_is_a_protocol_error(message):
    from consumer.sandbox.errors import ProtocolError
    from consumer.sandbox.protocol import Done

    with pytest.raises(ProtocolError):
        Done.parse(message)


def test_local_calls_answer_digests_and_hmacs_and_refuse_in_one_line():
    import base64
    import hashlib
    import hmac

    from consumer.sandbox.localcalls import MAX_INPUT_BYTES, LocalCallError, answer

    b64 = lambda raw: base64.b64encode(raw).decode()  # noqa: E731
    assert answer("subtle.digest", ["SHA-384", b64(b"abc")]) == b64(hashlib.sha384(b"abc").digest())
    assert answer("subtle.hmac", ["SHA-1", b64(b"k"), b64(b"m")]) == b64(
        hmac.new(b"k", b"m", hashlib.sha1).digest())
    for op, args, message in [
        ("subtle.digest", ["MD5", b64(b"x")], "crypto.subtle: unsupported hash 'MD5'"),
        ("subtle.digest", ["SHA-256", "not base64!"], "crypto.subtle: data is not base64"),
        ("subtle.digest", ["SHA-256"], "crypto.subtle: malformed subtle.digest call"),
        ("hmac", ["SHA-256", "k", "m"], "crypto.subtle: malformed hmac call"),
        ("subtle.hmac", ["SHA-256", b64(b"k"), "A" * (MAX_INPUT_BYTES * 2)],
         f"crypto.subtle: data larger than {MAX_INPUT_BYTES} bytes"),
    ]:
        with pytest.raises(LocalCallError) as info:
            answer(op, args)
        assert str(info.value) == message
