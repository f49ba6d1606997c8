"""ctx.secrets.get and the masking of what a script did with a secret (#15), in the sandbox
alone: a secret reader keyed by the request's tenant, real workers, real V8."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
import structlog
from support.sandbox_requests import make_request

from consumer.sandbox import Executor
from consumer.secrets import SecretUnavailable

pytestmark = pytest.mark.asyncio(loop_scope="session")

SECRETS = {("tenant-a", "TOKEN"): 'a-"tok"\\en\n-1234', ("tenant-a", "OTHER"): "other-secret"}


async def read(tenant: str, name: str) -> str:
    try:
        return SECRETS[(tenant, name)]
    except KeyError:
        raise SecretUnavailable(f"secret {name} is not set") from None


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def ex() -> AsyncIterator[Executor]:
    async with Executor(workers=1, secrets=read) as executor:
        yield executor


LEAK = """async function handler(input, ctx) {
  const s = await ctx.secrets.get('TOKEN');
  console.log('plain', s);
  console.warn({ wrapped: s });
  if (input === 'throw') throw new Error('leaked ' + s);
  if (input === 'reject') { const e = new TypeError(s); throw e; }
  return { s, list: [s, s.toUpperCase()], [s]: 1 };
}"""


async def test_a_secret_is_masked_in_output_console_and_logs(ex: Executor) -> None:
    value = SECRETS[("tenant-a", "TOKEN")]
    with structlog.testing.capture_logs() as logs:
        r = await ex.execute(make_request(LEAK, None))
    assert r.status == "completed", r.error
    assert r.output == {"s": "[redacted]", "list": ["[redacted]", value.upper()],
                        "[redacted]": 1}
    assert [line["message"] for line in r.logs] == [
        "plain [redacted]", '{"wrapped":"[redacted]"}']
    shown = json.dumps(logs) + (r.output_json or "")
    assert value not in shown and json.dumps(value)[1:-1] not in shown
    assert any(e["event"] == "script_console" for e in logs)


async def test_a_secret_is_masked_in_errors_and_stacks(ex: Executor) -> None:
    value = SECRETS[("tenant-a", "TOKEN")]
    for how in ("throw", "reject"):
        r = await ex.execute(make_request(LEAK, how))
        assert r.status == "failed"
        assert "[redacted]" in (r.error or "")
        assert value not in (r.error or "") + (r.stack or "")


async def test_secrets_come_from_the_requests_tenant_only(ex: Executor) -> None:
    source = """async function handler(name, ctx) {
      try { return await ctx.secrets.get(name) } catch (e) { return 'error: ' + e.message } }"""
    r = await ex.execute(make_request(source, "OTHER", tenant="tenant-b"))
    assert r.output == "error: secret OTHER is not set"
    r = await ex.execute(make_request(source, "OTHER", tenant="tenant-a"))
    assert r.output == "[redacted]"  # read, and still never in the result


async def test_without_a_secret_reader_the_call_throws_cleanly() -> None:
    async with Executor(workers=1) as bare:
        source = ("async function handler(i, ctx) { try { await ctx.secrets.get('X') } "
                  "catch (e) { return e.message } }")
        r = await bare.execute(make_request(source))
    assert r.output == "secrets.get is not available: no secret store is configured"


async def test_hmac_sha256_matches_python(ex: Executor) -> None:
    source = "async function handler(i, ctx) { return await ctx.crypto.hmacSha256(i.k, i.m) }"
    r = await ex.execute(make_request(source, {"k": "key", "m": "1700000000.{\"a\":1}"}))
    assert r.output == hmac.new(b"key", b'1700000000.{"a":1}', hashlib.sha256).hexdigest()


async def test_a_secret_is_masked_in_sdk_log_metadata(ex: Executor) -> None:
    value = SECRETS[("tenant-a", "TOKEN")]
    source = """async function main() {
      const s = await ctx.secrets.get('TOKEN');
      sdk.log.info('token ' + s, { token: s, nested: [{ deep: 'x' + s }], [s]: 1 });
    }""".replace("ctx.secrets", "context.secrets")
    with structlog.testing.capture_logs() as logs:
        r = await ex.execute(make_request(source, None))
    assert r.status == "completed", r.error
    [line] = r.logs
    assert line["message"] == "token [redacted]"
    assert line["metadata"] == {"token": "[redacted]", "nested": [{"deep": "x[redacted]"}],
                                "[redacted]": 1}
    shown = json.dumps(logs)
    assert value not in shown and json.dumps(value)[1:-1] not in shown
