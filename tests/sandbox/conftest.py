"""Sandbox fixtures: one real executor (real worker processes, real V8) shared by the session,
a local HTTP server for ctx.http.fetch, and a publisher that records what scripts publish."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import pytest_asyncio
from support.sandbox_requests import FAST, FETCH_CAP, Run, make_request  # noqa: F401

from consumer.sandbox import ExecutionResult, Executor, PublishRequest


class Recorder:
    def __init__(self) -> None:
        self.published: list[PublishRequest] = []

    async def publish(self, request: PublishRequest) -> str:
        if request.event_type == "explode":
            raise RuntimeError("/srv/secret/path.py: database password is hunter2")
        self.published.append(request)
        return f"event-{len(self.published)}"


async def _http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    request_line, *header_lines = head.decode().split("\r\n")
    method, path, _ = request_line.split(" ")
    headers = dict(line.split(": ", 1) for line in header_lines if ": " in line)
    length = int(headers.get("Content-Length", headers.get("content-length", "0")))
    body = await reader.readexactly(length) if length else b""
    status, payload, ctype = 200, b"", "application/json"
    if path == "/json":
        payload = json.dumps({"hello": "world"}).encode()
    elif path.split("?")[0] == "/echo":
        payload = json.dumps(
            {"method": method, "path": path, "body": body.decode(), "headers": headers}).encode()
    elif path == "/big":
        payload, ctype = b"x" * (FETCH_CAP * 4), "text/plain"
    elif path == "/slow":
        await asyncio.sleep(5)  # the server is slow; the test itself awaits a result
        payload = b"{}"
    else:
        status, payload = 404, b'{"error": "not found"}'
    writer.write(
        f"HTTP/1.1 {status} X\r\nContent-Type: {ctype}\r\nContent-Length: {len(payload)}\r\n"
        f"X-Test: yes\r\nConnection: close\r\n\r\n".encode()
        + payload
    )
    try:
        await writer.drain()
    finally:
        writer.close()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def http_base() -> AsyncIterator[str]:
    server = await asyncio.start_server(_http, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="session")
def recorder() -> Recorder:
    return Recorder()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def executor(recorder: Recorder) -> AsyncIterator[Executor]:
    async with Executor(
        workers=2,
        publisher=recorder.publish,
        fetch_allowlist=["127.0.0.1"],
        fetch_max_response_bytes=FETCH_CAP,
    ) as ex:
        yield ex


@pytest.fixture
def run(executor: Executor) -> Run:
    async def run(source: str, input: Any = None, **kwargs: Any) -> ExecutionResult:
        return await executor.execute(make_request(source, input, **kwargs))

    return run


@pytest.fixture
def healthy(run: Run) -> Callable[[], Awaitable[None]]:
    """Asserts that the pool still serves an ordinary execution."""

    async def check() -> None:
        result = await run("async function handler(input) { return input * 2 }", 21)
        assert (result.status, result.output) == ("completed", 42), result

    return check
