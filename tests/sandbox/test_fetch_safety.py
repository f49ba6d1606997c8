"""ctx.http.fetch against a red team: IPv6 forms that wrap a private IPv4 address, compressed
bodies that inflate far past the cap, and an operator who must learn how to allow a host."""

from __future__ import annotations

import asyncio
import gzip
import ipaddress
import zlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from contextlib import aclosing

import httpx
import pytest
import pytest_asyncio
from support.sandbox_requests import FETCH_CAP, Run

from consumer.errors import ConfigError
from consumer.sandbox import fetch
from consumer.sandbox.errors import FetchBlocked, HostCallError

# Only the async tests share the session loop (the executor's); a sync test must not carry it.
on_session_loop = pytest.mark.asyncio(loop_scope="session")

FETCH = """async function handler(args, ctx) {
  try {
    const r = await ctx.http.fetch(args.url, args.opts);
    return { status: r.status, body: r.body };
  } catch (e) { return { error: e.message } }
}"""
TOO_LARGE = f"fetch response too large: more than {FETCH_CAP} bytes"
BOMB_SIZE = 256 << 20
TEXT = b"plain text, " * 1000


def blocked_message(host: str) -> str:
    return (
        f"fetch blocked: {host} resolves to a non-public address"
        " (allow it with JSRT_FETCH_ALLOWLIST)"
    )


def gzip_zeros(size: int, piece: int = 1 << 20) -> Iterator[bytes]:
    """A gzip stream of `size` zero bytes, compressed one piece at a time as it is consumed:
    the inflated body never exists anywhere."""
    zeros = bytes(piece)
    compressor = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    for _ in range(size // piece):
        if out := compressor.compress(zeros):
            yield out
    yield compressor.flush()


def deflate(data: bytes, wbits: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, wbits)
    return compressor.compress(data) + compressor.flush()


ROUTES: dict[str, tuple[str, Callable[[], Iterator[bytes]]]] = {
    "/bomb": ("gzip", lambda: gzip_zeros(BOMB_SIZE)),
    "/gzip": ("gzip", lambda: iter([gzip.compress(TEXT)])),
    "/deflate-zlib": ("deflate", lambda: iter([deflate(TEXT, zlib.MAX_WBITS)])),
    "/deflate-raw": ("deflate", lambda: iter([deflate(TEXT, -zlib.MAX_WBITS)])),
    "/br": ("br", lambda: iter([b"\x1b\x03\x00\xf8\xa5\x40\x02"])),
    "/plain": ("identity", lambda: iter([TEXT])),
}


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    encoding, body = ROUTES[head.split(b" ", 2)[1].decode()]
    writer.write(
        f"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Encoding: {encoding}\r\n"
        "Connection: close\r\n\r\n".encode()
    )
    try:
        for piece in body():  # streamed: the body ends when the connection closes
            writer.write(piece)
            await writer.drain()
            # drain() only waits once the buffer is full: yield, so that the client on this
            # same loop reads the bomb as it is made (and the server stops when it gives up)
            await asyncio.sleep(0)
    except ConnectionError:
        pass  # the client gave up on the body, which is what a capped client does
    finally:
        writer.close()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def coded_base() -> AsyncIterator[str]:
    """A loopback server (allowlisted by the executor fixture) that sends encoded bodies."""
    server = await asyncio.start_server(_serve, "127.0.0.1", 0)
    async with server:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


def get(url: str) -> fetch.FetchRequest:
    return fetch.FetchRequest(url, "GET", {}, None, 5.0)


# 1. IPv6 forms that embed an IPv4 address are judged by it


@pytest.mark.parametrize(
    ("address", "blocked"),
    [
        ("2002:7f00:1::", True),  # 6to4 of 127.0.0.1
        ("2002:a9fe:a9fe::1", True),  # 6to4 of the metadata address
        ("2002:0a00:0001::", True),  # 6to4 of 10.0.0.1
        ("64:ff9b::7f00:1", True),  # NAT64 well-known prefix, 127.0.0.1
        ("64:ff9b::a9fe:a9fe", True),  # NAT64 of the metadata address
        ("64:ff9b:1::1", True),  # NAT64 local-use prefix: refused outright
        ("64:ff9b:1::808:808", True),
        ("::7f00:1", True),  # IPv4-compatible 127.0.0.1
        ("::a00:1", True),  # IPv4-compatible 10.0.0.1
        ("::", True),
        ("::ffff:0:7f00:1", True),  # IPv4-translated 127.0.0.1
        ("::ffff:0:c0a8:101", True),  # IPv4-translated 192.168.1.1
        ("2001:0:7f00:1::", True),  # Teredo, server 127.0.0.1
        ("2001:0:4136:e378:8000:63bf:80ff:fefe", True),  # Teredo, client 127.0.1.1
        ("2606:4700::200:5efe:7f00:1", True),  # ISATAP, router 127.0.0.1
        ("fec0::1", True),  # site-local: refused outright
        ("fec0::808:808", True),
        ("::ffff:127.0.0.1", True),  # v4-mapped, as before
        ("::ffff:169.254.169.254", True),
        ("2606:4700:4700::1111", False),
        ("8.8.8.8", False),
        ("2002:0808:0808::1", False),  # 6to4 of a public address
        ("64:ff9b::808:808", False),  # NAT64 of a public address
        ("::ffff:8.8.8.8", False),
        ("2606:4700::200:5efe:808:808", False),  # ISATAP, public router
    ],
)
def test_is_blocked_judges_embedded_ipv4(address: str, blocked: bool) -> None:
    assert fetch.is_blocked(ipaddress.ip_address(address)) is blocked


@on_session_loop
@pytest.mark.parametrize(
    "host",
    [
        "2002:7f00:1::",
        "64:ff9b::7f00:1",
        "64:ff9b:1::1",
        "::7f00:1",
        "::ffff:0:7f00:1",
        "2001:0:7f00:1::",
        "fec0::1",
    ],
)
async def test_fetch_refuses_ipv6_wrapped_loopback(run: Run, http_base: str, host: str) -> None:
    port = http_base.rsplit(":", 1)[1]
    result = await run(FETCH, {"url": f"http://[{host}]:{port}/json"})
    # "blocked" (not "could not connect"): refused by the address check, before any connection
    assert result.output == {"error": blocked_message(host)}, result.output


# 2. Compressed bodies are capped on the wire and decoded a bounded step at a time


def test_body_decoder_inflates_one_step_at_a_time() -> None:
    wire = b"".join(gzip_zeros(64 << 20))
    assert len(wire) < 128 * 1024  # one network-sized chunk, 64 MiB once inflated
    sizes = [len(chunk) for chunk in fetch.BodyDecoder.for_encoding("gzip").feed(wire)]
    assert max(sizes) <= fetch.DECODE_STEP
    assert sum(sizes) == 64 << 20


class SpyDecoder:
    """Records the size of every decoded chunk the body reader is handed."""

    def __init__(self, inner: fetch.BodyDecoder) -> None:
        self.inner = inner
        self.sizes: list[int] = []

    def feed(self, data: bytes) -> Iterator[bytes]:
        for chunk in self.inner.feed(data):
            self.sizes.append(len(chunk))
            yield chunk


@on_session_loop
async def test_read_body_stops_right_after_the_cap() -> None:
    cap = 1 << 20
    pulled: list[int] = []

    async def wire() -> AsyncGenerator[bytes, None]:
        for piece in gzip_zeros(1 << 30):  # the red team's bomb: a gigabyte of zeros
            pulled.append(len(piece))
            yield piece

    spy = SpyDecoder(fetch.BodyDecoder.for_encoding("gzip"))
    async with aclosing(wire()) as raw:
        with pytest.raises(HostCallError, match=f"^fetch response too large: more than {cap}"):
            await fetch.read_body(raw, spy, cap)
    assert max(spy.sizes) <= fetch.DECODE_STEP
    assert cap < sum(spy.sizes) <= cap + fetch.DECODE_STEP
    assert sum(pulled) < 16 * 1024  # a few compressed pieces, not the bomb's megabyte


@on_session_loop
async def test_read_body_caps_the_compressed_bytes_too() -> None:
    cap = 64 * 1024

    async def wire() -> AsyncIterator[bytes]:
        yield gzip.compress(b"ok")
        for _ in range(4):
            yield bytes(cap)  # after the end of the stream: decodes to nothing, still read

    with pytest.raises(HostCallError, match=f"^fetch response too large: more than {cap}"):
        await fetch.read_body(wire(), fetch.BodyDecoder.for_encoding("gzip"), cap)


@on_session_loop
async def test_fetch_refuses_a_gzip_bomb(run: Run, coded_base: str) -> None:
    result = await run(FETCH, {"url": f"{coded_base}/bomb"})
    assert result.output == {"error": TOO_LARGE}


@on_session_loop
@pytest.mark.parametrize("path", ["/gzip", "/deflate-zlib", "/deflate-raw", "/plain"])
async def test_fetch_decodes_gzip_deflate_and_identity(
    run: Run, coded_base: str, path: str
) -> None:
    result = await run(FETCH, {"url": f"{coded_base}{path}"})
    assert result.output == {"status": 200, "body": TEXT.decode()}


@on_session_loop
async def test_fetch_refuses_an_encoding_it_cannot_decode(run: Run, coded_base: str) -> None:
    opts = {"headers": {"Accept-Encoding": "br"}}
    result = await run(FETCH, {"url": f"{coded_base}/br", "opts": opts})
    assert result.output == {"error": "fetch failed: unsupported Content-Encoding br"}


@on_session_loop
@pytest.mark.parametrize(
    ("headers", "sent"),
    [({}, "gzip, deflate"), ({"accept-ENCODING": "identity"}, "identity")],
)
async def test_fetch_asks_only_for_encodings_it_decodes(
    run: Run, http_base: str, headers: dict[str, str], sent: str
) -> None:
    result = await run(FETCH, {"url": f"{http_base}/echo", "opts": {"headers": headers}})
    echoed = httpx.Response(200, content=result.output["body"]).json()["headers"]
    assert {k.lower(): v for k, v in echoed.items()}["accept-encoding"] == sent


# 3. A refusal says how to allow the host, and an allowlist entry may name a port


@on_session_loop
async def test_blocked_fetch_says_how_to_allow_it(run: Run, http_base: str) -> None:
    port = http_base.rsplit(":", 1)[1]
    result = await run(FETCH, {"url": f"http://localhost:{port}/json"})
    assert result.output == {"error": blocked_message("localhost")}


@pytest.mark.parametrize(
    ("entry", "host", "port", "allowed"),
    [
        ("api.internal:8443", "api.internal", 8443, True),
        ("api.internal:8443", "API.Internal", 8443, True),
        ("api.internal:8443", "api.internal", 443, False),
        ("api.internal", "api.internal", 8443, True),
        ("api.internal", "other.internal", 8443, False),
        ("10.0.0.5:80", "10.0.0.5", 80, True),
        ("10.0.0.5:80", "10.0.0.5", 8080, False),
        ("[::1]:8080", "::1", 8080, True),
        ("[::1]:8080", "0::1", 8080, True),
        ("[::1]:8080", "::1", 8081, False),
        ("[::1]", "::1", 8081, True),
        ("::1", "::1", 8081, True),
        ("[fd00::1]:443", "fd00::1", 443, True),
    ],
)
def test_allowlist_entry_with_or_without_port(
    entry: str, host: str, port: int, allowed: bool
) -> None:
    assert fetch.Allowlist.parse([entry]).allows(host, port) is allowed


@pytest.mark.parametrize(
    "entry",
    ["api.internal:", "api.internal:https", "host:0", "host:70000", ":80", "[::1", "[::1]x", "[]"],
)
def test_allowlist_refuses_a_malformed_entry(entry: str) -> None:
    with pytest.raises(ConfigError, match="fetch allowlist: invalid entry"):
        fetch.Allowlist.parse([entry])


@on_session_loop
async def test_host_port_entry_opens_that_port_only(http_base: str) -> None:
    port = int(http_base.rsplit(":", 1)[1])
    async with httpx.AsyncClient(trust_env=False) as client:
        fetcher = fetch.Fetcher(client, [f"127.0.0.1:{port}", f"localhost:{port + 1}"])
        response = await fetcher.fetch(get(f"{http_base}/json"))
        assert response["status"] == 200
        with pytest.raises(FetchBlocked) as refused:
            await fetcher.fetch(get(f"http://localhost:{port}/json"))
    assert str(refused.value) == blocked_message("localhost")


@on_session_loop
async def test_bracketed_ipv6_entry_with_and_without_port() -> None:
    try:
        server = await asyncio.start_server(_serve, "::1", 0)
    except OSError:
        pytest.skip("no IPv6 loopback here")
    port = server.sockets[0].getsockname()[1]
    url = f"http://[::1]:{port}/plain"
    async with server, httpx.AsyncClient(trust_env=False) as client:
        for entry in (f"[::1]:{port}", "[::1]"):
            response = await fetch.Fetcher(client, [entry]).fetch(get(url))
            assert response["body"] == TEXT.decode()
        with pytest.raises(FetchBlocked):
            await fetch.Fetcher(client, [f"[::1]:{port + 1}"]).fetch(get(url))
