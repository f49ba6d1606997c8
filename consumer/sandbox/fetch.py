"""ctx.http.fetch, made by the daemon: SSRF-checked after DNS resolution, bounded in size and time.

A host that is not on the allowlist must resolve only to public addresses, and the request
then goes to the address that was checked (the Host header and TLS SNI keep the name), so a
second, different DNS answer cannot redirect it. Redirects are not followed: each hop would
need the same check, and the script can follow them itself.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from consumer.sandbox.errors import FetchBlocked, HostCallError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_METADATA = {
    ipaddress.ip_address("169.254.169.254"),
    ipaddress.ip_address("fd00:ec2::254"),
    ipaddress.ip_address("100.100.100.200"),
}
_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
_DROP_HEADERS = {"host", "content-length", "transfer-encoding", "connection"}


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
    """Loopback, private, link-local, shared, reserved, multicast and metadata addresses."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip in _METADATA or ip.is_multicast or not ip.is_global


class Fetcher:
    def __init__(
        self,
        client: httpx.AsyncClient,
        allowlist: Iterable[str] = (),
        max_response_bytes: int = 1 << 20,
        default_timeout_s: float = 10.0,
    ) -> None:
        self._client = client
        self._allowlist = {host.lower().strip("[]") for host in allowlist}
        self.max_response_bytes = max_response_bytes
        self.default_timeout_s = default_timeout_s

    async def fetch(self, request: FetchRequest) -> dict[str, Any]:
        if request.timeout_s <= 0:
            raise HostCallError("fetch: no time left in this execution")
        url = _parse_url(request.url)
        try:
            async with asyncio.timeout(request.timeout_s):
                return await self._send(url, request)
        except TimeoutError:
            raise HostCallError(
                f"fetch timed out after {int(request.timeout_s * 1000)} ms"
            ) from None
        except httpx.ConnectError:
            raise HostCallError(f"fetch failed: could not connect to {url.host}") from None
        except httpx.HTTPError as exc:
            raise HostCallError(f"fetch failed: {type(exc).__name__}") from None

    async def _send(self, url: httpx.URL, request: FetchRequest) -> dict[str, Any]:
        headers = dict(request.headers)
        extensions: dict[str, Any] = {}
        if url.host.lower() not in self._allowlist:
            ip = await _resolve_public(url.host, url.port or (443 if url.scheme == "https" else 80))
            headers["host"] = url.netloc.decode("ascii")
            if url.scheme == "https":
                extensions["sni_hostname"] = url.host
            url = url.copy_with(host=str(ip))
        timeout = httpx.Timeout(request.timeout_s)
        req = self._client.build_request(
            request.method,
            url,
            headers=headers,
            content=request.body,
            timeout=timeout,
            extensions=extensions,
        )
        response = await self._client.send(req, stream=True)
        try:
            body = await self._read_capped(response)
        finally:
            await response.aclose()
        return {
            "status": response.status_code,
            "headers": _headers(response.headers),
            "body": body.decode(response.encoding or "utf-8", errors="replace"),
        }

    async def _read_capped(self, response: httpx.Response) -> bytes:
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > self.max_response_bytes:
                raise HostCallError(
                    f"fetch response too large: more than {self.max_response_bytes} bytes"
                )
            chunks.append(chunk)
        return b"".join(chunks)


def _parse_url(raw: str) -> httpx.URL:
    try:
        url = httpx.URL(raw)
    except (httpx.InvalidURL, TypeError, ValueError):
        raise HostCallError("fetch: invalid URL") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise HostCallError("fetch: only absolute http and https URLs are allowed")
    return url


async def _resolve_public(host: str, port: int) -> IPAddress:
    """Every address the name resolves to must be public; the first one is used."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        raise HostCallError(f"fetch failed: cannot resolve {host}") from None
    addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    if not addresses or any(is_blocked(ip) for ip in addresses):
        raise FetchBlocked(f"fetch blocked: {host} resolves to a non-public address")
    return addresses[0]


def _headers(headers: httpx.Headers) -> dict[str, str]:
    merged: dict[str, str] = {}
    for name, value in headers.multi_items():
        merged[name] = f"{merged[name]}, {value}" if name in merged else value
    return merged
