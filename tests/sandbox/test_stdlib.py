# ruff: noqa: E501 - JavaScript one-liners read better unbroken.
"""The web platform's standard pieces (stdlib.js) in real V8: each checked against what the
standards (or Python's own implementation of the same algorithm) say."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import uuid

import pytest

from consumer.sandbox import Limits

pytestmark = pytest.mark.asyncio(loop_scope="session")


# Room for a loaded machine: these runs do a lot in one go (the limits are not under test).
ROOMY = Limits(max_execution_time_ms=20000, max_memory_bytes=64 << 20)


async def js(run, body: str, input=None):
    result = await run(f"async function handler(input) {{ {body} }}", input, limits=ROOMY)
    assert result.status == "completed", result
    return result.output


async def test_the_stdlib_is_compiled_on_first_use(run):
    source = """function handler() {
      const before = Object.getOwnPropertyDescriptor(globalThis, 'URL');
      const lazy = typeof before.get === 'function' && !('value' in before);
      const enumerable = Object.keys(globalThis).filter((n) => ['URL', 'crypto', 'atob'].includes(n));
      new URL('http://x/');
      const after = Object.getOwnPropertyDescriptor(globalThis, 'TextEncoder');
      globalThis.btoa = () => 'replaced';
      return [lazy, enumerable, typeof after.value, after.writable, btoa('x')];
    }"""
    result = await run(source)
    assert result.output == [True, [], "function", True, "replaced"]


async def test_text_encoder_and_decoder(run):
    out = await js(run, """
      const enc = new TextEncoder(), dec = new TextDecoder();
      const bytes = enc.encode('h\\u20ac\\ud834\\udd1e\\ud800');
      const stream = new TextDecoder();
      let fatal;
      try { new TextDecoder('utf-8', { fatal: true }).decode(new Uint8Array([0xc3, 0x28])); } catch (e) { fatal = e.name; }
      let label;
      try { new TextDecoder('latin1'); } catch (e) { label = e.name; }
      return { bytes: Array.from(bytes), round: dec.decode(bytes), encoding: [enc.encoding, dec.encoding],
               bom: dec.decode(new Uint8Array([0xef, 0xbb, 0xbf, 0x41])),
               bad: dec.decode(new Uint8Array([0x41, 0xff, 0xe2, 0x82, 0x41, 0xf0, 0x9f])),
               stream: stream.decode(new Uint8Array([0xe2, 0x82]), { stream: true }) + stream.decode(new Uint8Array([0xac])),
               into: enc.encodeInto('a\\u20acb', new Uint8Array(4)), view: dec.decode(new DataView(bytes.buffer, 0, 1)),
               fatal, label };""")
    assert out["bytes"] == list("h€𝄞\ufffd".encode())
    assert out["round"] == "h€𝄞\ufffd" and out["encoding"] == ["utf-8", "utf-8"]
    assert out["bom"] == "A"
    assert out["bad"] == b"A\xff\xe2\x82A\xf0\x9f".decode("utf-8", "replace")
    assert out["stream"] == "€" and out["into"] == {"read": 2, "written": 4} and out["view"] == "h"
    assert (out["fatal"], out["label"]) == ("TypeError", "RangeError")


async def test_atob_and_btoa(run):
    out = await js(run, """
      const errors = [];
      for (const f of [() => atob('a'), () => atob('a*b='), () => btoa('\\u20ac')]) { try { f() } catch (e) { errors.push(e.name) } }
      const all = Array.from({ length: 256 }, (_, i) => String.fromCharCode(i)).join('');
      return { enc: ['', 'f', 'fo', 'foo', 'foob'].map(btoa), dec: atob(' Zm9v YmFy\\n'), nopad: atob('Zm8'),
               all: btoa(all), back: atob(btoa(all)) === all, errors };""")
    assert out["enc"] == ["", "Zg==", "Zm8=", "Zm9v", "Zm9vYg=="]
    assert (out["dec"], out["nopad"]) == ("foobar", "fo")
    assert out["all"] == base64.b64encode(bytes(range(256))).decode() and out["back"] is True
    assert out["errors"] == ["InvalidCharacterError"] * 3


async def test_structured_clone(run):
    out = await js(run, """
      const buf = new Uint8Array([1, 2, 3, 4]);
      const v = { n: 1, s: 'x', nested: [1, { deep: true }], date: new Date(86400000), map: new Map([['k', { x: 1 }]]),
                  set: new Set([1, 2]), buf, view: new Uint16Array(buf.buffer, 2, 1), dv: new DataView(buf.buffer), big: 10n,
                  re: /a+/gi, err: new RangeError('r'), undef: undefined };
      v.self = v; v.list = [v.map, v.map];
      const c = structuredClone(v);
      const errors = [];
      for (const bad of [() => 1, Symbol('s'), new WeakMap(), Promise.resolve()]) { try { structuredClone({ bad }) } catch (e) { errors.push(e.name) } }
      return { cyc: c.self === c, distinct: c !== v && c.map !== v.map && c.buf !== v.buf, shared: c.list[0] === c.list[1] && c.list[0] === c.map,
               sameBuffer: c.view.buffer === c.buf.buffer && c.dv.buffer === c.buf.buffer, view: [c.view[0], c.view.byteOffset],
               date: c.date.toISOString(), map: c.map.get('k').x, set: [...c.set], buf: Array.from(c.buf), big: String(c.big),
               re: String(c.re), err: [c.err instanceof RangeError, c.err.message], undef: 'undef' in c, nested: c.nested, errors };""")
    assert out["cyc"] and out["distinct"] and out["shared"] and out["sameBuffer"]
    assert out["view"] == [int.from_bytes(bytes([3, 4]), "little"), 2]
    assert out["date"] == "1970-01-02T00:00:00.000Z" and out["map"] == 1 and out["set"] == [1, 2]
    assert out["buf"] == [1, 2, 3, 4] and out["big"] == "10" and out["re"] == "/a+/gi"
    assert out["err"] == [True, "r"] and out["undef"] is True and out["nested"] == [1, {"deep": True}]
    assert out["errors"] == ["DataCloneError"] * 4


URLS = [
    ("https://user:pa ss@EXAMPLE.com:443/a/./b/../c d?x=1 2#frag ment", None,
     ["https://user:pa%20ss@example.com/a/c%20d?x=1%202#frag%20ment", "https:", "user", "pa%20ss",
      "example.com", "example.com", "", "/a/c%20d", "?x=1%202", "#frag%20ment", "https://example.com"]),
    ("http://[0:0::1]:8080/p", None,
     ["http://[::1]:8080/p", "http:", "", "", "[::1]:8080", "[::1]", "8080", "/p", "", "", "http://[::1]:8080"]),
    ("HTTP://0x7f.1:80", None,
     ["http://127.0.0.1/", "http:", "", "", "127.0.0.1", "127.0.0.1", "", "/", "", "", "http://127.0.0.1"]),
    ("http://münchen.de/ü?ü", None,
     ["http://xn--mnchen-3ya.de/%C3%BC?%C3%BC", "http:", "", "", "xn--mnchen-3ya.de", "xn--mnchen-3ya.de",
      "", "/%C3%BC", "?%C3%BC", "", "http://xn--mnchen-3ya.de"]),
    ("file:///C:/dir/f.txt", None,
     ["file:///C:/dir/f.txt", "file:", "", "", "", "", "", "/C:/dir/f.txt", "", "", "null"]),
    ("mailto:Joe@Example.COM", None,
     ["mailto:Joe@Example.COM", "mailto:", "", "", "", "", "", "Joe@Example.COM", "", "", "null"]),
    ("../x?y#z", "https://h.org/a/b/c",
     ["https://h.org/a/x?y#z", "https:", "", "", "h.org", "h.org", "", "/a/x", "?y", "#z", "https://h.org"]),
    ("//cdn.org/lib.js", "https://h.org/a",
     ["https://cdn.org/lib.js", "https:", "", "", "cdn.org", "cdn.org", "", "/lib.js", "", "", "https://cdn.org"]),
    ("\\\\back\\slash\\..\\p", "https://h.org/",
     ["https://back/p", "https:", "", "", "back", "back", "", "/p", "", "", "https://back"]),
]
PARTS = "[u.href, u.protocol, u.username, u.password, u.host, u.hostname, u.port, u.pathname, u.search, u.hash, u.origin]"


@pytest.mark.parametrize(("url", "base", "expected"), URLS)
async def test_url_parses_like_the_standard(run, url, base, expected):
    out = await js(run, f"const u = input[1] === null ? new URL(input[0]) : new URL(input[0], input[1]); return {PARTS};", [url, base])
    assert out == expected


async def test_url_relative_forms_failures_and_setters(run):
    out = await js(run, """
      const base = 'https://b.org/dir/sub/file?q#h';
      const rel = ['', '?q2', '#h2', 'same', '/abs', '..', './x/../y'].map((r) => new URL(r, base).href);
      const failures = ['not a url', 'http://', 'http://a:99999/', 'http://a b/', 'http://[::1/'].map((u) => URL.canParse(u));
      let thrown;
      try { new URL('nope') } catch (e) { thrown = e.name; }
      const u = new URL('http://a.com/');
      u.port = '8080'; u.hostname = 'B.com'; u.protocol = 'https'; u.pathname = '/p q'; u.search = 'x=1'; u.hash = 'top'; u.username = 'me';
      const v = new URL('https://a.com:443/'); v.port = '443';
      return { rel, failures, thrown, set: u.href, defaultPort: v.href, json: JSON.stringify({ u }), str: String(u), parse: URL.parse('x') };""")
    assert out["rel"] == ["https://b.org/dir/sub/file?q", "https://b.org/dir/sub/file?q2",
                          "https://b.org/dir/sub/file?q#h2", "https://b.org/dir/sub/same",
                          "https://b.org/abs", "https://b.org/dir/", "https://b.org/dir/sub/y"]
    assert out["failures"] == [False] * 5 and out["thrown"] == "TypeError"
    assert out["set"] == "https://me@b.com:8080/p%20q?x=1#top" == out["str"]
    assert out["defaultPort"] == "https://a.com/" and out["json"] == '{"u":"' + out["set"] + '"}'
    assert out["parse"] is None


async def test_url_search_params(run):
    out = await js(run, """
      const u = new URL('https://x.org/p?a=1&b=2&a=3');
      const p = u.searchParams;
      p.append('c', 'x y&z=\\u20ac'); p.delete('b'); p.set('a', '9');
      const linked = u.href;
      u.search = '?k=v';
      const q = new URLSearchParams({ b: '2', 'a b': 'c+d' }); q.sort();
      const seen = []; q.forEach((v, k) => seen.push(k + '=' + v));
      return { linked, relinked: [...p.entries()], get: [p.get('k'), p.get('none'), p.has('k'), p.has('k', 'w'), p.size],
               sorted: q.toString(), seen, parse: [...new URLSearchParams('?x=1+2&y=%E2%82%AC&z&=e&bad=%zz')],
               pairs: new URLSearchParams([['k', 'v'], ['k', 'w']]).getAll('k'), special: new URLSearchParams({ s: "*-._!'()~" }).toString() };""")
    assert out["linked"] == "https://x.org/p?a=9&c=x+y%26z%3D%E2%82%AC"
    assert out["relinked"] == [["k", "v"]] and out["get"] == ["v", None, True, False, 1]
    assert out["sorted"] == "a+b=c%2Bd&b=2" and out["seen"] == ["a b=c+d", "b=2"]
    assert out["parse"] == [["x", "1 2"], ["y", "€"], ["z", ""], ["", "e"], ["bad", "%zz"]]
    assert out["pairs"] == ["v", "w"] and out["special"] == "s=*-._%21%27%28%29%7E"


async def test_random_uuid_and_get_random_values(run):
    out = await js(run, """
      const errors = [];
      for (const f of [() => crypto.getRandomValues(new Float64Array(1)), () => crypto.getRandomValues(new Uint8Array(65537)), () => crypto.getRandomValues([1])]) {
        try { f() } catch (e) { errors.push(e.name) }
      }
      const a = new Uint32Array(4);
      const same = crypto.getRandomValues(a) === a;
      const big = crypto.getRandomValues(new Uint8Array(65536));
      const counts = new Array(256).fill(0); for (const b of big) counts[b]++;
      return { uuids: Array.from({ length: 50 }, () => crypto.randomUUID()), words: Array.from(a), same, errors,
               spread: [Math.min(...counts), Math.max(...counts)], wide: String(crypto.getRandomValues(new BigUint64Array(1))[0] > 0n) };""")
    assert len(set(out["uuids"])) == 50
    assert all(uuid.UUID(u).version == 4 and re.fullmatch(r"[0-9a-f-]{36}", u) for u in out["uuids"])
    assert out["same"] and out["errors"] == ["TypeMismatchError", "QuotaExceededError", "TypeMismatchError"]
    assert out["spread"][0] > 170 and out["spread"][1] < 350  # 256 expected per value
    assert len(set(out["words"])) == 4


async def test_randomness_is_the_executions_own_and_not_math_random(run):
    """Each run (warm context reused or not) draws from a stream keyed with fresh worker
    entropy, so replacing Math.random changes nothing and no two runs repeat."""
    source = """Math.random = () => 0.5;
    const atTop = crypto.randomUUID();
    function handler() { return [atTop, crypto.randomUUID(), crypto.randomUUID()] }"""
    runs = [await run(source, script="random-warm") for _ in range(4)]
    values = [v for r in runs for v in r.output[1:]]
    assert len(set(values)) == len(values) == 8
    assert runs[0].output[0] not in values


async def test_subtle_digests_match_hashlib(run):
    data = "The quick brown fox \u20ac"
    out = await js(run, """
      const hex = (b) => Array.from(new Uint8Array(b), (x) => x.toString(16).padStart(2, '0')).join('');
      const bytes = new TextEncoder().encode(input);
      const out = {};
      for (const h of ['SHA-1', 'SHA-256', 'SHA-384', 'SHA-512']) out[h] = hex(await crypto.subtle.digest({ name: h.toLowerCase() }, bytes));
      out.view = hex(await crypto.subtle.digest('SHA-256', new DataView(bytes.buffer, 4, 5)));
      out.empty = hex(await crypto.subtle.digest('SHA-256', new ArrayBuffer(0)));
      for (const [k, f] of [['md5', () => crypto.subtle.digest('MD5', bytes)], ['string', () => crypto.subtle.digest('SHA-256', 'text')]]) {
        try { await f() } catch (e) { out[k] = e.name }
      }
      return out;""", data)
    raw = data.encode()
    for name, fn in [("SHA-1", hashlib.sha1), ("SHA-256", hashlib.sha256), ("SHA-384", hashlib.sha384), ("SHA-512", hashlib.sha512)]:
        assert out[name] == fn(raw).hexdigest()
    assert out["view"] == hashlib.sha256(raw[4:9]).hexdigest() and out["empty"] == hashlib.sha256().hexdigest()
    assert (out["md5"], out["string"]) == ("NotSupportedError", "TypeError")


async def test_hmac_sign_verify_a_webhook(run):
    """A signed webhook: Stripe-style `t=…,v1=hex(HMAC-SHA256(secret, t + '.' + body))`."""
    secret, body = "whsec_test", '{"id": "evt_1", "amount": 100}'
    signature = hmac.new(secret.encode(), f"1700000000.{body}".encode(), hashlib.sha256).hexdigest()
    source = """async function handler(input) {
      const enc = new TextEncoder();
      const key = await crypto.subtle.importKey('raw', enc.encode(input.secret), { name: 'HMAC', hash: 'SHA-256' }, false, ['sign', 'verify']);
      const [t, v1] = input.header.split(',').map((kv) => kv.split('=')[1]);
      const given = new Uint8Array(v1.match(/../g).map((h) => parseInt(h, 16)));
      const ok = await crypto.subtle.verify('HMAC', key, given, enc.encode(t + '.' + input.body));
      const tampered = await crypto.subtle.verify('HMAC', key, given, enc.encode(t + '.' + input.body + ' '));
      const mine = Array.from(new Uint8Array(await crypto.subtle.sign('HMAC', key, enc.encode('x'))), (b) => b.toString(16).padStart(2, '0')).join('');
      const errors = [];
      for (const f of [() => crypto.subtle.exportKey('raw', key), () => crypto.subtle.sign('HMAC', { algorithm: key.algorithm }, enc.encode('x')),
                       () => crypto.subtle.importKey('raw', enc.encode('k'), { name: 'HMAC', hash: 'MD5' }, false, ['sign'])]) {
        try { await f() } catch (e) { errors.push(e.name) }
      }
      const sha512 = await crypto.subtle.importKey('jwk', { kty: 'oct', k: 'c2VjcmV0' }, { name: 'HMAC', hash: { name: 'SHA-512' } }, true, ['sign']);
      const exported = new TextDecoder().decode(await crypto.subtle.exportKey('raw', sha512));
      return { ok, tampered, mine, errors, key: [key.type, key.extractable, key.algorithm, key.usages], exported,
               sig512: btoa(String.fromCharCode(...new Uint8Array(await crypto.subtle.sign('HMAC', sha512, enc.encode('m'))))) };
    }"""
    result = await run(source, {"secret": secret, "body": body, "header": f"t=1700000000,v1={signature}"}, limits=ROOMY)
    assert result.status == "completed", result
    out = result.output
    assert (out["ok"], out["tampered"]) == (True, False)
    assert out["mine"] == hmac.new(secret.encode(), b"x", hashlib.sha256).hexdigest()
    assert out["errors"] == ["InvalidAccessError", "TypeError", "NotSupportedError"]
    assert out["key"] == ["secret", False, {"name": "HMAC", "hash": {"name": "SHA-256"}, "length": 80}, ["sign", "verify"]]
    assert out["exported"] == "secret"
    assert out["sig512"] == base64.b64encode(hmac.new(b"secret", b"m", hashlib.sha512).digest()).decode()
    assert result.metrics["api_call_count"] == 0  # answered in the worker, not API calls


async def test_subtle_inputs_are_capped(run):
    result = await run("async function handler() { try { await crypto.subtle.digest('SHA-256', new Uint8Array((8 << 20) + 1)) } catch (e) { return e.message } }")
    assert result.output == "crypto.subtle: data larger than 8388608 bytes"


async def test_a_context_gets_the_pieces_its_source_names(run):
    """Only a script whose source names a piece's globals gets them (scanning the source
    costs every fresh context); for one that reaches them only by a computed name they are
    not there."""
    result = await run("function handler() { return typeof globalThis[['cry', 'pto'].join('')] }")
    assert result.output == "undefined"
    named = await run("// uses crypto\nfunction handler() { return typeof globalThis[['cry', 'pto'].join('')] }")
    assert named.output == "object"
