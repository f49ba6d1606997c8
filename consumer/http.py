"""HTTP triggers: a Starlette app, served by uvicorn, that runs a tenant's http script per
request.

    /t/{tenant_id}{http_path}          the tenant in the path
    {http_path} + X-Tenant-ID header   the tenant in a header

A route is an active row of script_http_endpoints of an active script, looked up by
(tenant_id, path) - an unknown tenant and an unknown path get the same 404. The script gets
{method, path, query, headers, body}; what it returns becomes the response. Every request
that reaches a script is an execution (trigger_type 'http'); no response ever carries a
Python traceback. Who may call, how often and from which origins is the script's access
policy (policy.py, checked by access.py): after the route is known (so that an unknown route
stays a plain 404), before the script runs, and - except for HMAC, whose signature covers the
body - before the body is read.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import re
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import anyio
import uvicorn
from anyio.abc import TaskGroup, TaskStatus
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from consumer import access, jsontext, log
from consumer.access import Authenticator, Denied
from consumer.batcher import Batcher
from consumer.cancel import executor_stop, watching
from consumer.clock import Clock, SystemClock
from consumer.errors import ConfigError, NotFound, StoreUnavailable
from consumer.lease import Lease, memory_report
from consumer.ondemand import OnDemand, RunResult
from consumer.policy import Cors, InvalidPolicy, Policy, parse_policy
from consumer.ratelimit import retry_after
from consumer.sandbox import Executor
from consumer.settings import Settings
from consumer.store import Store

_LOG = log.get("jsrt.http")

ROUTABLE = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
DEFAULT_METHODS = ("GET",)  # an endpoint whose http_methods is empty answers GET only
REDACTED_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "x-api-key",
                              access.SIGNATURE_HEADER})
HTTP_BUCKET = "http"  # jsrt_rate_windows bucket of metadata.rate_limit_per_minute
_HOP_HEADERS = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive",
                          "upgrade", "te", "trailer"})
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_BAD_VALUE = re.compile(r"[\x00\r\n]")


# ------------------------------------------------------------------ pure parts
@dataclass(frozen=True, slots=True)
class Target:
    tenant_id: UUID
    path: str


@dataclass(frozen=True, slots=True)
class Endpoint:
    script_id: UUID
    methods: tuple[str, ...]
    policy: Policy | None  # None: the script's metadata cannot be used (written by SQL)


class HttpError(Exception):
    def __init__(self, status: int, message: str,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


class BodyBudget:
    """The request bodies this process holds at once, by tenant and in all: a tenant's large
    requests beyond its share get 503 without being read further, so that they can neither
    take the server's memory nor every other tenant's turn."""

    def __init__(self, per_tenant: int, total: int) -> None:
        self.per_tenant = per_tenant
        self.total = total
        self._held: dict[UUID, int] = {}
        self._all = 0

    def take(self, tenant_id: UUID, n: int) -> bool:
        held = self._held.get(tenant_id, 0)
        if held + n > self.per_tenant or self._all + n > self.total:
            return False
        self._held[tenant_id] = held + n
        self._all += n
        return True

    def give(self, tenant_id: UUID, n: int) -> None:
        if n <= 0:
            return
        left = self._held.get(tenant_id, 0) - n
        if left > 0:
            self._held[tenant_id] = left
        else:
            self._held.pop(tenant_id, None)
        self._all -= n

    def held(self, tenant_id: UUID | None = None) -> int:
        return self._all if tenant_id is None else self._held.get(tenant_id, 0)


def target(path: str, tenant_header: str | None) -> Target | None:
    """Where a request goes: /t/{uuid}/rest wins; otherwise the X-Tenant-ID header."""
    if path.startswith("/t/"):
        segment, _, rest = path[3:].partition("/")
        tenant = _uuid(segment)
        if tenant is not None:
            return Target(tenant, "/" + rest)
    tenant = _uuid(tenant_header)
    return Target(tenant, path) if tenant is not None else None


def safe_path(path: str) -> bool:
    """Paths are matched exactly, never resolved; anything that looks like traversal is out."""
    return (path.startswith("/") and "\x00" not in path and "\\" not in path
            and not any(seg in (".", "..") for seg in path.split("/")))


def _uuid(text: str | None) -> UUID | None:
    if not text:
        return None
    try:
        return UUID(text.strip())
    except ValueError:
        return None


def parse_body(raw: bytes, content_type: str) -> Any:
    """JSON when the content type says so, else text; empty → None. JSON that is invalid,
    nested deeper than jsontext.MAX_DEPTH, holds NaN or U+0000 gets 400 saying which."""
    if not raw:
        return None
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "application/json" or media.endswith("+json"):
        try:
            return jsontext.loads(raw, "request body")
        except jsontext.JsonRefused as exc:
            message = str(exc)
            if message.startswith("request body is not valid"):  # the parser's detail, no
                message = "request body is not valid JSON"
            raise HttpError(400, message) from None
    return raw.decode("utf-8", errors="replace")


def input_texts(inp: Mapping[str, Any]) -> tuple[str, str]:
    """The script's input and the input as recorded (credentials redacted), as JSON text;
    400 for what cannot be kept (U+0000 in a header, the query or a text body, say)."""
    try:
        # one level above the body's limit: the request object wraps it
        return (jsontext.dumps(inp, "request", jsontext.MAX_DEPTH + 1),
                jsontext.dumps(redacted(inp), "request", jsontext.MAX_DEPTH + 1))
    except jsontext.JsonRefused as exc:
        raise HttpError(400, str(exc)) from None


def script_input(method: str, path: str, query: list[tuple[str, str]],
                 headers: list[tuple[str, str]], body: Any) -> dict[str, Any]:
    return {"method": method, "path": path, "query": _multi(query),
            "headers": _joined(headers), "body": body}


def redacted(inp: Mapping[str, Any]) -> dict[str, Any]:
    """The input as recorded: credentials in headers are not kept in execution history."""
    headers = {k: ("[redacted]" if k in REDACTED_HEADERS else v)
               for k, v in inp["headers"].items()}
    return {**inp, "headers": headers}


def _multi(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k not in out:
            out[k] = v
        elif isinstance(out[k], list):
            out[k].append(v)
        else:
            out[k] = [out[k], v]
    return out


def _joined(pairs: list[tuple[str, str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in pairs:
        k = k.lower()
        out[k] = f"{out[k]}, {v}" if k in out else v
    return out


def to_response(output: Any) -> tuple[int, dict[str, str], bytes]:
    """{status, headers, body} when the handler returned that shape, else the value as JSON."""
    if not _is_shaped(output):
        return 200, {"content-type": "application/json"}, json.dumps(output).encode()
    status: int = output["status"]
    headers = _response_headers(output.get("headers"))
    body = output.get("body")
    if body is None or status in (204, 304):  # these carry no body
        content = b""
    elif isinstance(body, str):
        content = body.encode()
        headers.setdefault("content-type", "text/plain; charset=utf-8")
    else:
        content = json.dumps(body).encode()
        headers.setdefault("content-type", "application/json")
    return status, headers, content


def _is_shaped(output: Any) -> bool:
    if not isinstance(output, dict) or "status" not in output:
        return False
    status = output["status"]
    return (set(output) <= {"status", "headers", "body"} and isinstance(status, int)
            and not isinstance(status, bool) and 200 <= status <= 599)


def _response_headers(raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise HttpError(500, "script returned headers that are not an object")
    out: dict[str, str] = {}
    for name, value in raw.items():
        text = value if isinstance(value, str) else json.dumps(value)
        if not _TOKEN.match(name) or _BAD_VALUE.search(text):
            raise HttpError(500, f"script returned an invalid header {name[:40]!r}")
        if name.lower() not in _HOP_HEADERS:
            out[name.lower()] = text
    return out


def _error(status: int, message: str, execution_id: UUID | None = None,
           headers: Mapping[str, str] | None = None) -> Response:
    body: dict[str, Any] = {"error": message}
    if execution_id is not None:
        body["execution_id"] = str(execution_id)
    extra = dict(headers or {})
    if execution_id is not None:
        extra["x-execution-id"] = str(execution_id)
    return Response(json.dumps(body), status, extra, media_type="application/json")


# ------------------------------------------------------------------ the app
class HttpTrigger:
    def __init__(self, store: Store, ondemand: OnDemand, settings: Settings,
                 clock: Clock | None = None) -> None:
        self.store = store
        self.ondemand = ondemand
        self.max_body = settings.http_max_body_bytes
        self.bodies = BodyBudget(settings.http_tenant_body_bytes, settings.http_body_bytes)
        self.auth = Authenticator(store, settings)
        self.clock = clock or SystemClock()
        # concurrent requests' route lookups in one statement (a lone one waits for nobody)
        self._routes: Batcher[tuple[UUID, str], tuple[UUID, tuple[str, ...], Any] | None] = \
            Batcher(self.store.scripts.http_routes)

    async def handle(self, request: Request) -> Response:
        try:
            return await self._handle(request)
        except HttpError as exc:
            return _error(exc.status, exc.message, headers=exc.headers)
        except StoreUnavailable as exc:
            _LOG.warning("http_store_unavailable", error=str(exc)[:200])
            return _error(503, "service unavailable", headers={"retry-after": "1"})
        except NotFound:  # the script went away between lookup and start
            return _error(404, "not found")
        except Exception as exc:  # never a traceback to the client
            _LOG.error("http_internal_error", error=f"{type(exc).__name__}: {exc}"[:300])
            return _error(500, "internal error")

    async def _handle(self, request: Request) -> Response:
        where = target(request.url.path, request.headers.get("x-tenant-id"))
        if where is None or not safe_path(where.path):
            raise HttpError(404, "not found")
        endpoint = await self._route(where)
        if endpoint.policy is None:
            return _error(500, "endpoint is misconfigured")
        cors, origin = endpoint.policy.cors, request.headers.get("origin")
        if cors is not None and origin and request.method == "OPTIONS" and \
                "access-control-request-method" in request.headers:
            return _preflight(cors, origin, request.headers["access-control-request-method"])
        held = [0]  # body bytes this request holds of the tenant's budget
        try:
            response = await self._serve(request, where, endpoint, endpoint.policy, held)
        except HttpError as exc:
            response = _error(exc.status, exc.message, headers=exc.headers)
        except Denied as exc:
            response = _error(exc.status, exc.message, headers=exc.headers)
        finally:
            self.bodies.give(where.tenant_id, held[0])
        if cors is not None and origin and cors.allows(origin):
            response.headers["access-control-allow-origin"] = cors.allow_origin(origin)
            response.headers["access-control-expose-headers"] = "x-execution-id, retry-after"
            response.headers["vary"] = "Origin"
        return response

    async def _serve(self, request: Request, where: Target, endpoint: Endpoint,
                     policy: Policy, held: list[int]) -> Response:
        if request.method not in endpoint.methods:
            return _error(405, "method not allowed",
                          headers={"allow": ", ".join(endpoint.methods)})
        # the body is read before authentication only where the signature covers it
        signed = policy.auth == "hmac"
        raw = await self._body(request, where.tenant_id, held) if signed else b""
        now = self.clock.now()
        auth = await self.auth.authenticate(policy, where.tenant_id, request.headers, raw,
                                            now.timestamp())
        if not signed:
            raw = await self._body(request, where.tenant_id, held)
        if policy.rate_limit_per_minute is not None and not await self.store.rates.acquire(
                where.tenant_id, endpoint.script_id, HTTP_BUCKET, policy.rate_limit_per_minute,
                now):
            return _error(429, "rate limit exceeded for this endpoint",
                          headers={"retry-after": str(retry_after(now))})
        body = parse_body(raw, request.headers.get("content-type", ""))
        inp = script_input(request.method, where.path, request.query_params.multi_items(),
                           request.headers.items(), body)
        input_json, stored_json = input_texts(inp)
        run = await self.ondemand.start(where.tenant_id, endpoint.script_id, "http",
                                        {**_summary(request, where), "auth": auth.recorded},
                                        input_json, stored_json)
        if run is None:
            return _error(429, "too many concurrent requests for this endpoint",
                          headers={"retry-after": "1"})
        return self._respond(await self.ondemand.run(dataclasses.replace(run, auth=auth.seen)))

    async def _route(self, where: Target) -> Endpoint:
        found = await self._routes.submit((where.tenant_id, where.path))
        if found is None:
            raise HttpError(404, "not found")
        script_id, methods, metadata = found
        try:
            found_policy: Policy | None = parse_policy(metadata)
        except InvalidPolicy as exc:
            _LOG.error("http_endpoint_invalid", tenant_id=str(where.tenant_id),
                       script_id=str(script_id), error=str(exc).splitlines()[0][:200])
            found_policy = None
        return Endpoint(script_id, methods or DEFAULT_METHODS, found_policy)

    async def _body(self, request: Request, tenant_id: UUID, held: list[int]) -> bytes:
        """The body, within JSRT_HTTP_MAX_BODY_BYTES, each chunk taken from the tenant's
        share of the bodies in flight (`held` counts what this request took, given back when
        it ends)."""
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body:
            raise HttpError(413, f"request body is larger than {self.max_body} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body:
                raise HttpError(413, f"request body is larger than {self.max_body} bytes")
            if not self.bodies.take(tenant_id, len(chunk)):
                raise HttpError(503, "too many request bodies in flight for this tenant's"
                                " endpoints; retry", headers={"retry-after": "1"})
            held[0] += len(chunk)
            chunks.append(chunk)
        return b"".join(chunks)

    def _respond(self, result: RunResult) -> Response:
        if result.status == "timeout":
            return _error(504, "script timed out", result.execution_id)
        if result.status == "cancelled":  # by an operator (jsrt executions cancel)
            return _error(503, "execution cancelled", result.execution_id)
        if not result.ok:
            return _error(500, "script failed", result.execution_id)
        try:
            status, headers, content = to_response(result.output)
        except HttpError as exc:
            _LOG.warning("http_bad_response", execution_id=str(result.execution_id),
                         error=exc.message)
            return _error(500, exc.message, result.execution_id)
        headers["x-execution-id"] = str(result.execution_id)
        return Response(content, status, headers)


def _preflight(cors: Cors, origin: str, method: str) -> Response:
    """A CORS preflight: answered by the runtime from metadata.cors, never by the script."""
    if not cors.allows(origin) or method.upper() not in cors.methods:
        return _error(403, "CORS preflight refused")
    headers = {
        "access-control-allow-origin": cors.allow_origin(origin),
        "access-control-allow-methods": ", ".join(cors.methods),
        "access-control-max-age": str(cors.max_age),
        "vary": "Origin",
    }
    if cors.headers:
        headers["access-control-allow-headers"] = ", ".join(cors.headers)
    return Response(b"", 204, headers)


def _summary(request: Request, where: Target) -> dict[str, Any]:
    return {
        "type": "http", "method": request.method, "path": where.path,
        "query": request.url.query, "content_type": request.headers.get("content-type"),
        "content_length": request.headers.get("content-length"),
        "client": request.client.host if request.client else None,
        "tenant_from": "path" if request.url.path.startswith("/t/") and
        request.url.path != where.path else "header",
    }


def build_app(store: Store, ondemand: OnDemand, settings: Settings,
              clock: Clock | None = None) -> Starlette:
    """The web console under /console (consumer/console), then every other path: the HTTP
    triggers' catch-all (so an http script's path cannot start with /console when its tenant
    comes in the X-Tenant-ID header; under /t/{tenant}/ it can)."""
    from consumer.console import console_routes  # Jinja and the pages: only when serving

    trigger = HttpTrigger(store, ondemand, settings, clock)
    app = Starlette(routes=[
        console_routes(store, settings, ondemand.executor, ondemand=ondemand, clock=clock),
        Route("/{path:path}", trigger.handle, methods=list(ROUTABLE)),
    ])
    app.state.http_trigger = trigger  # (its state, for tests and operators' debugging)
    return app


# ------------------------------------------------------------------ the server
class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the host process owns signals; it calls HttpServer.stop()


def http_address(text: str) -> str:
    """--http's argparse type: a bad HOST:PORT is a usage error, reported with the usage."""
    try:
        parse_bind(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--http ")) from None
    return text


def parse_bind(bind: str) -> tuple[str, int]:
    host, sep, port = bind.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"--http must be HOST:PORT (got {bind!r})")
    return host.strip("[]") or "127.0.0.1", int(port)


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket. Its protocol is IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY
    only on sockets that say so, and without it keep-alive responses (headers and body are
    two writes) wait ~40 ms for the client's delayed ACK."""
    try:
        family, type_, proto, _, addr = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP,
            flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, type_, proto)
    except OSError as exc:
        raise _cannot_serve(host, port, exc) from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(socket.SOMAXCONN)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise _cannot_serve(host, port, exc) from None
    return sock


def _cannot_serve(host: str, port: int, exc: OSError) -> ConfigError:
    """The address and what to do, not `[Errno 98] Address already in use`."""
    reason = (exc.strerror or str(exc)).lower()
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return ConfigError(f"cannot serve HTTP on {shown}: {reason}; "
                       "give --http another HOST:PORT (port 0: any free port)")


class HttpServer:
    """uvicorn serving the app, under this process's lease, on the given executor."""

    def __init__(self, settings: Settings, store: Store, executor: Executor, bind: str) -> None:
        self.settings = settings
        self.store = store
        self.executor = executor
        self.host, self.port = parse_bind(bind)
        self._server: _Server | None = None
        self._stop_requested = False
        self._stopped = anyio.Event()

    async def run(self, *, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve until stop(); task_status gets the bound port once connections are accepted."""
        try:
            s = self.settings
            lease = Lease(self.store, s.heartbeat_interval, kind="http",
                          rescue_after=s.heartbeat_timeout, retry_base=s.retry_base_seconds,
                          memory=memory_report(self.executor))
            async with lease, watching(self.store, lease.id, executor_stop(self.executor),
                                       s.heartbeat_interval):
                app = build_app(self.store, OnDemand(self.store, self.executor, lease.id),
                                self.settings)
                config = uvicorn.Config(app, host=self.host, port=self.port, log_config=None,
                                        access_log=False, lifespan="off",
                                        timeout_graceful_shutdown=int(self.settings.grace_period))
                self._server = _Server(config)
                self._server.should_exit = self._stop_requested
                sock = listen(self.host, self.port)
                self.port = sock.getsockname()[1]
                _LOG.info("http_listening", host=self.host, port=self.port, owner=lease.id)
                task_status.started(self.port)
                with sock:
                    await self._server.serve(sockets=[sock])
        finally:
            self._stopped.set()
            _LOG.info("http_stopped", port=self.port)

    @property
    def address(self) -> str:
        """HOST:PORT as bound (the real port once listening, also for port 0)."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def stop(self) -> None:
        self._stop_requested = True
        if self._server is not None:
            self._server.should_exit = True

    async def shutdown(self) -> None:
        self.stop()
        await self._stopped.wait()


async def start_http(tg: TaskGroup, settings: Settings, store: Store, executor: Executor,
                     bind: str) -> HttpServer:
    """Start serving inside `tg` (beside the daemon, for `jsrt run --http`)."""
    server = HttpServer(settings, store, executor, bind)
    await tg.start(server.run)
    return server
