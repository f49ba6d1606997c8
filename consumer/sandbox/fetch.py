"""ctx.http.fetch, made by the daemon: SSRF-checked after DNS resolution, bounded in size and time.

A host that is not on the allowlist must resolve only to public addresses, and the request
then goes to the address that was checked (the Host header and TLS SNI keep the name), so a
second, different DNS answer cannot redirect it. Redirects are not followed: each hop would
need the same check, and the script can follow them itself.

The body is read raw and decoded here, a bounded step at a time, so that a small compressed
body cannot inflate into a large buffer before the size cap sees it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import zlib
from collections.abc import AsyncIterable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from consumer.errors import ConfigError
from consumer.sandbox.errors import FetchBlocked, HostCallError
from consumer.tenant_gate import TenantGate

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_METADATA = {
    ipaddress.ip_address("169.254.169.254"),
    ipaddress.ip_address("fd00:ec2::254"),
    ipaddress.ip_address("100.100.100.200"),
}
# Refused whatever they hold: site-local (deprecated, routed like private space) and the NAT64
# local-use prefix (RFC 8215), which maps to IPv4 space in a way only the local network knows.
_ALWAYS_BLOCKED_V6 = (
    ipaddress.ip_network("fec0::/10"),
    ipaddress.ip_network("64:ff9b:1::/48"),
)
# IPv6 forms whose last 32 bits are the IPv4 host a packet actually reaches.
_IPV4_IN_LOW_BITS = (
    ipaddress.ip_network("64:ff9b::/96"),  # NAT64, well-known prefix (RFC 6052)
    ipaddress.ip_network("::ffff:0:0:0/96"),  # IPv4-translated (SIIT, RFC 2765)
    ipaddress.ip_network("::/96"),  # IPv4-compatible (deprecated; also holds :: and ::1)
)
_ISATAP_MARK = 0x00005EFE  # interface-id prefix of an ISATAP address, u/g bits masked (RFC 5214)
_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
_DROP_HEADERS = {"host", "content-length", "transfer-encoding", "connection"}
_ACCEPT_ENCODING = "gzip, deflate"  # what BodyDecoder can undo; sent unless the script sets one
DECODE_STEP = 64 * 1024  # the most bytes one decoding step may produce
# Compressed is not always smaller than decoded (stored deflate blocks add 5 bytes per 64 KiB,
# gzip 18 bytes of framing), so the wire may carry twice the decoded cap: room for any honest
# encoder, and still a bound on bytes that decode to nothing (empty blocks, trailing data).
_RAW_FACTOR = 2


@dataclass(frozen=True, slots=True)
class FetchRequest:
    url: str
    method: str
    headers: Mapping[str, str]
    body: str | None
    timeout_s: float

    @classmethod
    def from_js(
        cls, raw: Mapping[str, Any], default_timeout_s: float, remaining_s: float
    ) -> FetchRequest:
        method = str(raw.get("method") or "GET").upper()
        if method not in _METHODS:
            raise HostCallError(f"fetch: unsupported method {method[:16]}")
        headers = {
            str(k): str(v)
            for k, v in (raw.get("headers") or {}).items()
            if str(k).lower() not in _DROP_HEADERS
        }
        requested = raw.get("timeoutMs")
        timeout_s = default_timeout_s if requested is None else max(float(requested), 0.0) / 1000
        body = raw.get("body")
        return cls(
            str(raw.get("url", "")),
            method,
            headers,
            None if body is None else str(body),
            min(timeout_s, remaining_s),
        )


def is_blocked(ip: IPAddress) -> bool:
    """Loopback, private, link-local, shared, reserved, multicast and metadata addresses, also
    when an IPv6 address only wraps one of them."""
    if isinstance(ip, ipaddress.IPv6Address):
        return _is_blocked_v6(ip)
    return _is_blocked_itself(ip)


def _is_blocked_itself(ip: IPAddress) -> bool:
    return ip in _METADATA or ip.is_multicast or not ip.is_global


def _is_blocked_v6(ip: ipaddress.IPv6Address) -> bool:
    if any(ip in network for network in _ALWAYS_BLOCKED_V6):
        return True
    wrapped = _wrapped_ipv4(ip)
    if wrapped is not None:
        # The packet goes to that IPv4 host, so its verdict is the address's (whatever
        # Python's table thinks of the IPv6 prefix: 2002::/16 is non-global in newer versions).
        return _is_blocked_itself(wrapped)
    if any(_is_blocked_itself(endpoint) for endpoint in _tunnel_endpoints(ip)):
        return True
    return _is_blocked_itself(ip)


def _wrapped_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 host behind a v4-mapped, 6to4, NAT64, SIIT or v4-compatible address."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if any(ip in network for network in _IPV4_IN_LOW_BITS):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _tunnel_endpoints(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses a tunnelled IPv6 address also leads to: Teredo's server and client, an
    ISATAP router. They may only add a refusal: the IPv6 address is judged as well (Teredo's
    2001::/32 is not global, so every Teredo address stays refused)."""
    if ip.teredo is not None:
        return list(ip.teredo)
    if (int(ip) >> 32) & 0xFCFFFFFF == _ISATAP_MARK:
        return [ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)]
    return []


@dataclass(frozen=True, slots=True)
class Allowlist:
    """Hosts scripts may reach on any address: `host` on any port, `host:port` on that port
    only; IPv6 literals in brackets (`[::1]`, `[::1]:8080`), or bare (`::1`) for any port."""

    any_port: frozenset[str]
    on_port: frozenset[tuple[str, int]]

    @classmethod
    def parse(cls, entries: Iterable[str]) -> Allowlist:
        parsed = [_parse_entry(entry) for entry in entries if entry.strip()]
        return cls(
            frozenset(host for host, port in parsed if port is None),
            frozenset((host, port) for host, port in parsed if port is not None),
        )

    def allows(self, host: str, port: int) -> bool:
        host = _normal_host(host)
        return host in self.any_port or (host, port) in self.on_port


def _parse_entry(entry: str) -> tuple[str, int | None]:
    text = entry.strip()
    port: str | None = None
    if text.startswith("["):
        host, closed, rest = text[1:].partition("]")
        if not closed or (rest and not rest.startswith(":")):
            raise _bad_entry(entry)
        port = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host = text  # a name, an IPv4 address or a bare IPv6 literal
    if not host:
        raise _bad_entry(entry)
    return _normal_host(host), None if port is None else _parse_port(port, entry)


def _parse_port(text: str, entry: str) -> int:
    if not (text.isascii() and text.isdigit() and 0 < int(text) < 65536):
        raise _bad_entry(entry)
    return int(text)


def _bad_entry(entry: str) -> ConfigError:
    return ConfigError(
        f"fetch allowlist: invalid entry {entry!r}"
        " (expected HOST, HOST:PORT, [IPV6] or [IPV6]:PORT)"
    )


def _normal_host(host: str) -> str:
    """Lower case, and one spelling per IP address (httpx keeps `[0::1]` as written)."""
    host = host.lower()
    try:
        return ipaddress.ip_address(host).compressed
    except ValueError:
        return host


class Fetcher:
    """`per_tenant`: the most fetches one tenant has in flight at once in this process. The
    client's connections are shared by every tenant: one tenant's fetches to a server that
    never answers (165 of them, from three scripts) took all of httpx's default 100, and
    every other tenant's fetch timed out waiting for one. A tenant's fetch past its share
    waits for one of its own, within its timeout."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        allowlist: Iterable[str] = (),
        max_response_bytes: int = 1 << 20,
        default_timeout_s: float = 10.0,
        per_tenant: int = 16,
        resolver: Resolver | None = None,
    ) -> None:
        self._client = client
        self._resolver = resolver or Resolver()
        self._allowlist = Allowlist.parse(allowlist)
        self.max_response_bytes = max_response_bytes
        self.default_timeout_s = default_timeout_s
        self._share = TenantGate(per_tenant)

    async def fetch(self, request: FetchRequest, tenant: str = "") -> dict[str, Any]:
        if request.timeout_s <= 0:
            raise HostCallError("fetch: no time left in this execution")
        url = _parse_url(request.url)
        admitted = False
        try:
            async with asyncio.timeout(request.timeout_s):
                await self._share.enter(tenant)  # (within the fetch's own timeout)
                admitted = True
                try:
                    return await self._send(url, request, tenant)
                finally:
                    self._share.leave(tenant)
        except TimeoutError:
            waited = "" if admitted else (
                f" waiting for a connection: this tenant already has {self._share.per_tenant}"
                " fetches in flight, the most one tenant may have at once")
            raise HostCallError(
                f"fetch timed out after {int(request.timeout_s * 1000)} ms{waited}"
            ) from None
        except httpx.ConnectError:
            raise HostCallError(f"fetch failed: could not connect to {url.host}") from None
        except httpx.HTTPError as exc:
            raise HostCallError(f"fetch failed: {type(exc).__name__}") from None

    def close(self) -> None:
        self._resolver.close()

    async def _send(self, url: httpx.URL, request: FetchRequest, tenant: str
                    ) -> dict[str, Any]:
        response = await self._client.send(await self._build(url, request, tenant),
                                           stream=True)
        try:
            decoder = BodyDecoder.for_encoding(response.headers.get("content-encoding", ""))
            body = await read_body(response.aiter_raw(), decoder, self.max_response_bytes)
        finally:
            await response.aclose()
        return {
            "status": response.status_code,
            "headers": _headers(response.headers),
            "body": body.decode(response.encoding or "utf-8", errors="replace"),
        }

    async def _build(self, url: httpx.URL, request: FetchRequest, tenant: str
                     ) -> httpx.Request:
        headers = dict(request.headers)
        if not any(name.lower() == "accept-encoding" for name in headers):
            headers["accept-encoding"] = _ACCEPT_ENCODING
        extensions: dict[str, Any] = {}
        port = url.port or (443 if url.scheme == "https" else 80)
        if not self._allowlist.allows(url.host, port):
            ip = await _resolve_public(self._resolver, url.host, port, tenant)
            headers["host"] = url.netloc.decode("ascii")
            if url.scheme == "https":
                extensions["sni_hostname"] = url.host
            url = url.copy_with(host=str(ip))
        return self._client.build_request(
            request.method,
            url,
            headers=headers,
            content=request.body,
            timeout=httpx.Timeout(request.timeout_s),
            extensions=extensions,
        )


class Decoder(Protocol):
    """Turns raw body bytes into decoded chunks of at most DECODE_STEP bytes each."""

    def feed(self, data: bytes) -> Iterator[bytes]: ...


class _Inflater:
    """One zlib stream (`wbits` picks gzip, zlib or raw framing), inflated a step at a time:
    zlib keeps the input it could not yet inflate, instead of growing the output."""

    def __init__(self, wbits: int) -> None:
        self._zlib = zlib.decompressobj(wbits)

    def feed(self, data: bytes) -> Iterator[bytes]:
        while not self._zlib.eof:  # anything after the end of the stream is ignored, as httpx did
            try:
                out = self._zlib.decompress(data, DECODE_STEP)
            except zlib.error as exc:
                raise httpx.DecodingError(str(exc)) from None
            if out:
                yield out
            data = self._zlib.unconsumed_tail
            if not data and len(out) < DECODE_STEP:
                return  # a full step may leave output pending: only a short one proves it drained


class _Deflate:
    """`deflate` as servers send it: zlib-wrapped (as RFC 9110 says) or raw, told apart by the
    zlib header in the first two bytes."""

    def __init__(self) -> None:
        self._head = b""
        self._inflater: _Inflater | None = None

    def feed(self, data: bytes) -> Iterator[bytes]:
        if self._inflater is None:
            self._head += data
            if len(self._head) < 2:
                return
            data, self._head = self._head, b""
            wrapped = data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0
            self._inflater = _Inflater(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
        yield from self._inflater.feed(data)


class _Identity:
    def feed(self, data: bytes) -> Iterator[bytes]:
        for start in range(0, len(data), DECODE_STEP):
            yield data[start : start + DECODE_STEP]


class _Unsupported:
    """A coding we cannot undo: refused once there is a body to decode (HEAD still works)."""

    def __init__(self, name: str) -> None:
        self._name = name

    def feed(self, data: bytes) -> Iterator[bytes]:
        if data:
            raise HostCallError(f"fetch failed: unsupported Content-Encoding {self._name[:32]}")
        yield from ()


class BodyDecoder:
    """Undoes a Content-Encoding in bounded steps: no chunk it yields is larger than
    DECODE_STEP, however far one compressed chunk would inflate."""

    def __init__(self, stages: Sequence[Decoder]) -> None:
        self._stages = stages

    @classmethod
    def for_encoding(cls, content_encoding: str) -> BodyDecoder:
        names = [name.strip().lower() for name in content_encoding.split(",")]
        stages: list[Decoder] = []
        for name in reversed(names):  # the coding listed last was applied last
            if name in ("gzip", "x-gzip"):
                stages.append(_Inflater(zlib.MAX_WBITS | 16))
            elif name == "deflate":
                stages.append(_Deflate())
            elif name not in ("", "identity"):
                stages.append(_Unsupported(name))
        return cls(stages or [_Identity()])

    def feed(self, data: bytes) -> Iterator[bytes]:
        return self._feed_from(0, data)

    def _feed_from(self, index: int, data: bytes) -> Iterator[bytes]:
        if index == len(self._stages):
            yield data
            return
        for out in self._stages[index].feed(data):
            yield from self._feed_from(index + 1, out)


async def read_body(raw: AsyncIterable[bytes], decoder: Decoder, max_bytes: int) -> bytes:
    """The decoded body, refused as soon as it passes `max_bytes` decoded (or the raw bound on
    the wire), so at most one decoding step beyond the cap is ever held."""
    chunks: list[bytes] = []
    size = raw_size = 0
    async for data in raw:
        raw_size += len(data)
        if raw_size > max_bytes * _RAW_FACTOR:
            raise _too_large(max_bytes)
        for out in decoder.feed(data):
            size += len(out)
            if size > max_bytes:
                raise _too_large(max_bytes)
            chunks.append(out)
    return b"".join(chunks)


def _too_large(max_bytes: int) -> HostCallError:
    return HostCallError(f"fetch response too large: more than {max_bytes} bytes")


def _parse_url(raw: str) -> httpx.URL:
    try:
        url = httpx.URL(raw)
    except (httpx.InvalidURL, TypeError, ValueError):
        raise HostCallError("fetch: invalid URL") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise HostCallError("fetch: only absolute http and https URLs are allowed")
    return url


class Resolver:
    """The name lookups of ctx.http.fetch, in threads of their own. getaddrinfo holds a thread
    until the system resolver answers or gives up - seconds, for a name whose nameserver does
    not answer - and a fetch that gives up waiting does not free it: one tenant's fetches of
    such names filled asyncio's default pool (cores + 4 threads, shared by the whole process)
    and queued every other tenant's lookups behind theirs. Here at most `per_tenant` lookups of
    one tenant hold a thread at once, counted until the thread is done with them; the rest
    wait, within their fetch's timeout."""

    def __init__(self, threads: int = 32, per_tenant: int = 4) -> None:
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="jsrt-dns")
        self.share = TenantGate(per_tenant)

    async def lookup(self, host: str, port: int, tenant: str) -> list[Any]:
        loop = asyncio.get_running_loop()

        def done(_: object) -> None:  # in the thread that ran it (or here, if cancelled)
            with contextlib.suppress(RuntimeError):  # the loop is gone: nothing to free
                loop.call_soon_threadsafe(self.share.leave, tenant)

        await self.share.enter(tenant)  # (within the fetch's timeout; cancelled: not counted)
        try:
            job = self._pool.submit(socket.getaddrinfo, host, port, 0, socket.SOCK_STREAM)
        except RuntimeError:  # shut down
            self.share.leave(tenant)
            raise HostCallError("fetch failed: the sandbox is shutting down") from None
        job.add_done_callback(done)
        return await asyncio.wrap_future(job)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


async def _resolve_public(resolver: Resolver, host: str, port: int, tenant: str) -> IPAddress:
    """Every address the name resolves to must be public; the first one is used."""
    try:
        infos = await resolver.lookup(host, port, tenant)
    except OSError:
        raise HostCallError(f"fetch failed: cannot resolve {host}") from None
    addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    if not addresses or any(is_blocked(ip) for ip in addresses):
        raise FetchBlocked(
            f"fetch blocked: {host} resolves to a non-public address"
            " (allow it with JSRT_FETCH_ALLOWLIST)"
        )
    return addresses[0]


def _headers(headers: httpx.Headers) -> dict[str, str]:
    merged: dict[str, str] = {}
    for name, value in headers.multi_items():
        merged[name] = f"{merged[name]}, {value}" if name in merged else value
    return merged
