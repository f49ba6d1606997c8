"""The pure parts of the HTTP trigger: routing targets, traversal, bodies, responses."""

from __future__ import annotations

import uuid

import pytest

from consumer.http import (
    HttpError,
    parse_bind,
    parse_body,
    redacted,
    safe_path,
    script_input,
    target,
    to_response,
)

T = uuid.uuid4()


@pytest.mark.parametrize("path, header, expected", [
    (f"/t/{T}/hooks/a", None, (T, "/hooks/a")),
    (f"/t/{T}", None, (T, "/")),
    ("/hooks/a", str(T), (T, "/hooks/a")),
    (f"/t/{T}/x", str(uuid.uuid4()), (T, "/x")),  # the path's tenant wins
    ("/t/not-a-uuid/x", str(T), (T, "/t/not-a-uuid/x")),
    ("/hooks/a", None, None),
    ("/hooks/a", "nope", None),
])
def test_target(path: str, header: str | None, expected: tuple[uuid.UUID, str] | None) -> None:
    got = target(path, header)
    assert (None if got is None else (got.tenant_id, got.path)) == expected


@pytest.mark.parametrize("path, ok", [
    ("/a/b", True), ("/", True), ("/a/../b", False), ("/..", False), ("/a/./b", False),
    ("/a\\..\\b", False), ("/a\x00", False), ("a", False), ("/a..b", True),
])
def test_safe_path(path: str, ok: bool) -> None:
    assert safe_path(path) is ok


def test_bodies() -> None:
    assert parse_body(b"", "application/json") is None
    assert parse_body(b'{"a": 1}', "application/json; charset=utf-8") == {"a": 1}
    assert parse_body(b"[1]", "application/vnd.api+json") == [1]
    assert parse_body(b"hi \xff", "text/plain") == "hi \ufffd"
    with pytest.raises(HttpError) as caught:
        parse_body(b"{", "application/json")
    assert caught.value.status == 400


def test_input_and_redaction() -> None:
    inp = script_input("POST", "/x", [("a", "1"), ("a", "2"), ("b", "3")],
                       [("Authorization", "Bearer t"), ("X-A", "1"), ("x-a", "2")], {"k": 1})
    assert inp["query"] == {"a": ["1", "2"], "b": "3"}
    assert inp["headers"] == {"authorization": "Bearer t", "x-a": "1, 2"}
    assert redacted(inp)["headers"]["authorization"] == "[redacted]"
    assert inp["headers"]["authorization"] == "Bearer t"


@pytest.mark.parametrize("output, status, ctype, body", [
    ({"a": 1}, 200, "application/json", b'{"a": 1}'),
    (None, 200, "application/json", b"null"),
    ("text", 200, "application/json", b'"text"'),
    ({"status": 201, "body": "made"}, 201, "text/plain; charset=utf-8", b"made"),
    ({"status": 400, "body": {"e": 1}}, 400, "application/json", b'{"e": 1}'),
    ({"status": 204, "body": "ignored"}, 204, None, b""),
    ({"status": 302, "headers": {"Location": "/x"}}, 302, None, b""),
    ({"status": 99}, 200, "application/json", b'{"status": 99}'),  # not a valid status
    ({"status": True}, 200, "application/json", b'{"status": true}'),
    ({"status": 200, "other": 1}, 200, "application/json", b'{"status": 200, "other": 1}'),
])
def test_responses(output: object, status: int, ctype: str | None, body: bytes) -> None:
    got_status, headers, content = to_response(output)
    assert (got_status, headers.get("content-type"), content) == (status, ctype, body)


def test_response_headers_are_checked() -> None:
    _, headers, _ = to_response({"status": 200, "headers": {"X-N": 5, "Content-Length": "9"}})
    assert headers == {"x-n": "5"}
    for bad in ({"X-A": "a\r\nSet-Cookie: x"}, {"Bad Name": "v"}, ["not", "a", "dict"]):
        with pytest.raises(HttpError):
            to_response({"status": 200, "headers": bad})


def test_parse_bind() -> None:
    assert parse_bind("0.0.0.0:8080") == ("0.0.0.0", 8080)
    assert parse_bind(":9000") == ("127.0.0.1", 9000)
    assert parse_bind("[::1]:80") == ("::1", 80)
    for bad in ("8080", "host:port", "h:70000"):
        with pytest.raises(Exception, match="HOST:PORT"):
            parse_bind(bad)
