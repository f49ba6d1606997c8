"""ctx.http.fetch's connections and name lookups are shared by every tenant of a process:
one tenant's fetches to a server that never answers, or of names whose nameserver never
answers, took all of them, and every other tenant's fetch timed out (real V8 and sockets;
the lookups with getaddrinfo stubbed to block on an event)."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from support.sandbox_requests import make_request
from support.waiting import eventually

from consumer.sandbox import Executor, Limits
from consumer.sandbox.fetch import Resolver

LIMITS = Limits(max_execution_time_ms=20_000, max_api_calls_per_minute=1000)


@pytest_asyncio.fixture
async def servers() -> AsyncIterator[tuple[int, int, list[int]]]:
    """A tarpit (takes the connection, never answers; counts them) and a server that answers
    at once."""
    taken = [0]

    async def tarpit(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        taken[0] += 1
        try:
            await reader.read()  # until the client goes
        finally:
            writer.close()

    async def quick(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    slow = await asyncio.start_server(tarpit, "127.0.0.1", 0)
    fast = await asyncio.start_server(quick, "127.0.0.1", 0)
    try:
        yield slow.sockets[0].getsockname()[1], fast.sockets[0].getsockname()[1], taken
    finally:
        for server in (slow, fast):
            server.close()


def hanging(port: int, n: int) -> str:
    return f"""async function handler(i, ctx) {{
        const got = await Promise.all(Array.from({{length: {n}}}, () =>
            ctx.http.fetch('http://127.0.0.1:{port}/', {{timeoutMs: 4000}})
                .then(() => 'answered', (e) => e.message)));
        return got;
    }}"""


QUICK = """async function handler(port, ctx) {
    try { return (await ctx.http.fetch(`http://127.0.0.1:${port}/`, {timeoutMs: 3000})).status }
    catch (e) { return e.message }
}"""


async def _fetch_past_a_tarpit(per_tenant: int, servers: tuple[int, int, list[int]]
                               ) -> tuple[Any, list[Any]]:
    slow, fast, taken = servers
    before = taken[0]
    async with Executor(workers=2, fetch_allowlist=["127.0.0.1"], fetch_connections=8,
                        fetch_tenant_connections=per_tenant) as ex:
        hogs = [ex.submit(make_request(hanging(slow, 6), None, tenant="hog", script=f"h{n}",
                                       limits=LIMITS)) for n in range(3)]
        # the hog's fetches hold what they may of the eight connections
        await eventually(lambda: taken[0] - before >= min(per_tenant, 8), timeout=20,
                         what="the hog's connections to the tarpit")
        quiet = await ex.execute(make_request(QUICK, fast, tenant="quiet", limits=LIMITS))
        return quiet.output, [r.output for r in await asyncio.gather(*hogs)]


async def test_a_tenants_hanging_fetches_leave_the_others_connections(
    servers: tuple[int, int, list[int]],
) -> None:
    quiet, hogs = await _fetch_past_a_tarpit(4, servers)
    assert quiet == 200
    messages = {m for out in hogs for m in out}
    assert any("waiting for a connection: this tenant already has 4 fetches in flight" in m
               for m in messages), messages
    # what the share is for: without it the hog's eighteen fetches hold all eight connections
    quiet, _ = await _fetch_past_a_tarpit(1000, servers)
    assert quiet != 200 and "timed out" in quiet


async def test_a_tenants_slow_name_lookups_leave_the_others_threads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    release = threading.Event()
    real = socket.getaddrinfo
    entered: list[str] = []

    def getaddrinfo(host: str, *args: Any, **kw: Any) -> Any:
        if host.startswith("slow"):
            entered.append(host)
            release.wait(30)  # a nameserver that does not answer
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return real(host, *args, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    resolver = Resolver(threads=4, per_tenant=2)
    try:
        # the hog's lookups, given up at once (as a fetch that times out): they hold their
        # threads all the same, and at most two of them hold one
        hogs = [asyncio.create_task(resolver.lookup(f"slow{n}.example", 80, "hog"))
                for n in range(10)]
        await eventually(lambda: len(entered) == 2, timeout=10, what="two lookups in threads")
        for task in hogs:
            task.cancel()
        infos = await asyncio.wait_for(resolver.lookup("localhost", 80, "quiet"), timeout=10)
        assert infos and not release.is_set()
        # a tenant past its share waits for its own lookups to end
        again = asyncio.create_task(resolver.lookup("localhost", 80, "hog"))
        await eventually(lambda: resolver.share.waiting("hog"), timeout=10,
                         what="the hog's third lookup waiting for a thread")
        assert not again.done() and len(entered) == 2
        release.set()
        assert await asyncio.wait_for(again, timeout=10)
    finally:
        release.set()
        resolver.close()
