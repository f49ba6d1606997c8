// The web platform's pieces that scripts expect: TextEncoder/TextDecoder, atob/btoa,
// structuredClone, URL/URLSearchParams, crypto (getRandomValues, randomUUID, subtle digests and
// HMAC) and DOMException. The body of a function `(host) => ({...})`, compiled by the prelude
// the first time a script touches one of these globals (see prelude.js, STDLIB): a fresh
// context that never needs them never compiles them.
//
// host.seed() is [generation, 64 hex digits]: the worker's entropy for the execution in
// progress, which keys a ChaCha20 stream (RFC 8439's block function) for getRandomValues.
// host.call(what, op, args) is a host call, here one the worker answers itself ('subtle.digest', 'subtle.hmac':
// Python's hashlib and hmac, see consumer/sandbox/localcalls.py).
'use strict';
const freeze = Object.freeze;
const fromCharCode = String.fromCharCode;

class DOMException extends Error {
  constructor(message = '', name = 'Error') {
    super(message);
    this.name = String(name);
  }
}

// UTF-8, as the Encoding Standard has it: lone surrogates become U+FFFD.
function encodeInto(s, out) {
  let n = 0;
  let i = 0;
  for (; i < s.length; i++) {
    let c = s.charCodeAt(i);
    let size = c < 0x80 ? 1 : c < 0x800 ? 2 : 3;
    if (c >= 0xd800 && c < 0xe000) {
      const d = i + 1 < s.length ? s.charCodeAt(i + 1) : 0;
      if (c < 0xdc00 && d >= 0xdc00 && d < 0xe000) {
        c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
        size = 4;
      } else c = 0xfffd;
    }
    if (n + size > out.length) break;
    if (size === 1) out[n++] = c;
    else if (size === 2) { out[n++] = 0xc0 | (c >> 6); out[n++] = 0x80 | (c & 63); }
    else if (size === 3) {
      out[n++] = 0xe0 | (c >> 12); out[n++] = 0x80 | ((c >> 6) & 63); out[n++] = 0x80 | (c & 63);
    } else {
      out[n++] = 0xf0 | (c >> 18); out[n++] = 0x80 | ((c >> 12) & 63);
      out[n++] = 0x80 | ((c >> 6) & 63); out[n++] = 0x80 | (c & 63);
      i++;
    }
  }
  return [i, n];
}

function utf8(s) {
  const out = new Uint8Array(s.length * 3);
  return out.slice(0, encodeInto(s, out)[1]);
}

// what crypto.subtle takes in one call (the worker checks it again: localcalls.py)
const MAX_SUBTLE_BYTES = 8 << 20;

function subtleBytes(data, what) {
  const bytes = bytesOf(data, what);
  if (bytes.length > MAX_SUBTLE_BYTES) throw new DOMException('crypto.subtle: ' + what + ' larger than ' + MAX_SUBTLE_BYTES + ' bytes', 'QuotaExceededError');
  return bytes;
}

function bytesOf(data, what) {
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  throw new TypeError(what + ' must be an ArrayBuffer or a view of one');
}

class TextEncoder {
  get encoding() { return 'utf-8'; }
  encode(input = '') { return utf8(String(input)); }
  encodeInto(source, destination) {
    if (!(destination instanceof Uint8Array)) throw new TypeError('encodeInto: destination must be a Uint8Array');
    const [read, written] = encodeInto(String(source), destination);
    return { read, written };
  }
}

class TextDecoder {
  #fatal; #ignoreBOM; #cp = 0; #need = 0; #seen = 0; #lo = 0x80; #hi = 0xbf; #started = false;
  constructor(label = 'utf-8', options = {}) {
    const l = String(label).trim().toLowerCase();
    if (l !== 'utf-8' && l !== 'utf8' && l !== 'unicode-1-1-utf-8') {
      throw new RangeError('TextDecoder: only utf-8 is supported (got ' + l + ')');
    }
    this.#fatal = Boolean(options && options.fatal);
    this.#ignoreBOM = Boolean(options && options.ignoreBOM);
  }
  get encoding() { return 'utf-8'; }
  get fatal() { return this.#fatal; }
  get ignoreBOM() { return this.#ignoreBOM; }
  decode(input, options) {
    const bytes = input === undefined ? new Uint8Array(0) : bytesOf(input, 'TextDecoder.decode: input');
    const stream = Boolean(options && options.stream);
    let units = [];
    let out = '';
    const push = (c) => {
      if (c > 0xffff) { c -= 0x10000; units.push(0xd800 + (c >> 10), 0xdc00 + (c & 0x3ff)); }
      else units.push(c);
      if (units.length > 8190) { out += fromCharCode.apply(null, units); units = []; }
    };
    const bad = () => {
      if (this.#fatal) throw new TypeError('TextDecoder: the encoded data is not valid UTF-8');
      push(0xfffd);
    };
    for (let i = 0; i < bytes.length; i++) {
      const b = bytes[i];
      if (this.#need === 0) {
        if (b < 0x80) push(b);
        else if (b >= 0xc2 && b <= 0xdf) { this.#need = 1; this.#cp = b & 0x1f; }
        else if (b >= 0xe0 && b <= 0xef) {
          if (b === 0xe0) this.#lo = 0xa0;
          if (b === 0xed) this.#hi = 0x9f;
          this.#need = 2; this.#cp = b & 0xf;
        } else if (b >= 0xf0 && b <= 0xf4) {
          if (b === 0xf0) this.#lo = 0x90;
          if (b === 0xf4) this.#hi = 0x8f;
          this.#need = 3; this.#cp = b & 7;
        } else bad();
        continue;
      }
      if (b < this.#lo || b > this.#hi) {
        this.#cp = this.#need = this.#seen = 0; this.#lo = 0x80; this.#hi = 0xbf;
        bad();
        i--; // the byte starts over
        continue;
      }
      this.#lo = 0x80; this.#hi = 0xbf;
      this.#cp = (this.#cp << 6) | (b & 0x3f);
      if (++this.#seen === this.#need) { push(this.#cp); this.#cp = this.#need = this.#seen = 0; }
    }
    if (!stream && this.#need !== 0) {
      this.#cp = this.#need = this.#seen = 0; this.#lo = 0x80; this.#hi = 0xbf;
      bad();
    }
    out += fromCharCode.apply(null, units);
    if (!this.#started && out.length > 0) {
      this.#started = true;
      if (!this.#ignoreBOM && out.charCodeAt(0) === 0xfeff) out = out.slice(1);
    }
    if (!stream) this.#started = false;
    return out;
  }
}

// base64 (RFC 4648) and the forgiving decoder of the HTML standard.
const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
const B64R = new Int16Array(128).fill(-1);
for (let i = 0; i < 64; i++) B64R[B64.charCodeAt(i)] = i;

function toB64(u8) {
  let s = '';
  let i = 0;
  for (; i + 2 < u8.length; i += 3) {
    const n = (u8[i] << 16) | (u8[i + 1] << 8) | u8[i + 2];
    s += B64[n >> 18] + B64[(n >> 12) & 63] + B64[(n >> 6) & 63] + B64[n & 63];
  }
  if (i + 1 === u8.length) s += B64[u8[i] >> 2] + B64[(u8[i] & 3) << 4] + '==';
  else if (i + 2 === u8.length) {
    const n = (u8[i] << 8) | u8[i + 1];
    s += B64[n >> 10] + B64[(n >> 4) & 63] + B64[(n & 15) << 2] + '=';
  }
  return s;
}

function fromB64(s) {
  s = s.replace(/[\t\n\f\r ]/g, '');
  if (s.length % 4 === 0) s = s.replace(/={1,2}$/, '');
  if (s.length % 4 === 1) return null;
  const out = new Uint8Array((s.length * 3) >> 2);
  let bits = 0;
  let acc = 0;
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    const v = c < 128 ? B64R[c] : -1;
    if (v < 0) return null;
    acc = (acc << 6) | v;
    bits += 6;
    if (bits >= 8) { bits -= 8; out[n++] = (acc >> bits) & 0xff; }
  }
  return out;
}

function binaryString(u8) {
  let s = '';
  for (let i = 0; i < u8.length; i += 8192) s += fromCharCode.apply(null, u8.subarray(i, i + 8192));
  return s;
}

function atob(data) {
  if (arguments.length === 0) throw new TypeError('atob: 1 argument required');
  const bytes = fromB64(String(data));
  if (bytes === null) throw new DOMException('atob: the string is not correctly encoded', 'InvalidCharacterError');
  return binaryString(bytes);
}

function btoa(data) {
  if (arguments.length === 0) throw new TypeError('btoa: 1 argument required');
  const s = String(data);
  const bytes = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c > 0xff) throw new DOMException('btoa: the string contains characters outside of Latin1', 'InvalidCharacterError');
    bytes[i] = c;
  }
  return toB64(bytes);
}

// structuredClone: JSON-like values, Date, RegExp, Map, Set, ArrayBuffer, typed arrays,
// DataView, Error, boxed primitives; cycles and shared references kept. (`transfer` is not
// supported: buffers are copied, never detached.)
const ERRORS = { Error, EvalError, RangeError, ReferenceError, SyntaxError, TypeError, URIError };

function structuredClone(value) {
  if (arguments.length === 0) throw new TypeError('structuredClone: 1 argument required');
  const seen = new Map();
  const fail = (what) => { throw new DOMException(what + ' could not be cloned', 'DataCloneError'); };
  const clone = (v) => {
    if (typeof v === 'function') fail('a function');
    if (typeof v === 'symbol') fail('a symbol');
    if (typeof v !== 'object' || v === null) return v;
    if (seen.has(v)) return seen.get(v);
    let out;
    if (Array.isArray(v)) out = new Array(v.length);
    else if (v instanceof Date) return keep(v, new Date(v.getTime()));
    else if (v instanceof RegExp) return keep(v, new RegExp(v.source, v.flags));
    else if (v instanceof ArrayBuffer) return keep(v, v.slice(0));
    else if (ArrayBuffer.isView(v)) {
      const buffer = clone(v.buffer);
      return keep(v, v instanceof DataView ? new DataView(buffer, v.byteOffset, v.byteLength)
        : new v.constructor(buffer, v.byteOffset, v.length));
    } else if (v instanceof Map) {
      out = keep(v, new Map());
      for (const [k, x] of v) out.set(clone(k), clone(x));
      return out;
    } else if (v instanceof Set) {
      out = keep(v, new Set());
      for (const x of v) out.add(clone(x));
      return out;
    } else if (v instanceof Error) {
      const E = ERRORS[v.name] || Error;
      out = keep(v, new E(v.message));
      if (typeof v.stack === 'string') out.stack = v.stack;
      return out;
    } else if (v instanceof Boolean || v instanceof Number || v instanceof String) {
      return keep(v, Object(v.valueOf()));
    } else if (v instanceof WeakMap || v instanceof WeakSet || v instanceof Promise ||
      (typeof WeakRef === 'function' && v instanceof WeakRef)) {
      fail(Object.prototype.toString.call(v));
    } else out = {};
    keep(v, out);
    for (const k of Object.keys(v)) out[k] = clone(v[k]);
    return out;
  };
  const keep = (from, to) => { seen.set(from, to); return to; };
  return clone(value);
}

// crypto: a ChaCha20 keystream keyed per execution.
const block = new Uint32Array(16);
const blockBytes = new Uint8Array(block.buffer);
const state = new Uint32Array(16);
let rngGen = -1;
let counter = 0;
let pos = 64;

function quarter(x, a, b, c, d) {
  x[a] += x[b]; x[d] ^= x[a]; x[d] = (x[d] << 16) | (x[d] >>> 16);
  x[c] += x[d]; x[b] ^= x[c]; x[b] = (x[b] << 12) | (x[b] >>> 20);
  x[a] += x[b]; x[d] ^= x[a]; x[d] = (x[d] << 8) | (x[d] >>> 24);
  x[c] += x[d]; x[b] ^= x[c]; x[b] = (x[b] << 7) | (x[b] >>> 25);
}

function refill() {
  state[12] = counter++;
  block.set(state);
  for (let i = 0; i < 10; i++) {
    quarter(block, 0, 4, 8, 12); quarter(block, 1, 5, 9, 13);
    quarter(block, 2, 6, 10, 14); quarter(block, 3, 7, 11, 15);
    quarter(block, 0, 5, 10, 15); quarter(block, 1, 6, 11, 12);
    quarter(block, 2, 7, 8, 13); quarter(block, 3, 4, 9, 14);
  }
  for (let i = 0; i < 16; i++) block[i] += state[i];
  pos = 0;
}

function randomBytes(out) {
  const [gen, hex] = host.seed();
  if (gen !== rngGen) {
    if (!/^[0-9a-f]{64}$/.test(hex)) throw new Error('crypto: no entropy for this execution');
    state.set([0x61707865, 0x3320646e, 0x79622d32, 0x6b206574]);
    for (let i = 0; i < 8; i++) state[4 + i] = parseInt(hex.slice(i * 8, i * 8 + 8), 16);
    state[13] = state[14] = state[15] = 0;
    rngGen = gen;
    counter = 0;
    pos = 64;
  }
  for (let i = 0; i < out.length; i++) {
    if (pos === 64) refill();
    out[i] = blockBytes[pos];
    blockBytes[pos++] = 0; // a byte handed out is not kept
  }
  return out;
}

const INTEGER_ARRAYS = [Int8Array, Uint8Array, Uint8ClampedArray, Int16Array, Uint16Array,
  Int32Array, Uint32Array, BigInt64Array, BigUint64Array];

function getRandomValues(array) {
  if (!INTEGER_ARRAYS.some((T) => array instanceof T)) {
    throw new DOMException('getRandomValues: an integer typed array is needed', 'TypeMismatchError');
  }
  if (array.byteLength > 65536) {
    throw new DOMException('getRandomValues: at most 65536 bytes at once', 'QuotaExceededError');
  }
  randomBytes(new Uint8Array(array.buffer, array.byteOffset, array.byteLength));
  return array;
}

function randomUUID() {
  const b = randomBytes(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  let h = '';
  for (let i = 0; i < 16; i++) h += (b[i] < 16 ? '0' : '') + b[i].toString(16) + (i === 3 || i === 5 || i === 7 || i === 9 ? '-' : '');
  return h;
}

const HASHES = ['SHA-1', 'SHA-256', 'SHA-384', 'SHA-512'];
const keys = new WeakMap(); // CryptoKey -> its bytes, out of the script's reach

function algorithmName(alg) {
  return String(alg !== null && typeof alg === 'object' ? alg.name : alg).toUpperCase();
}

function hashName(alg) {
  const name = algorithmName(alg);
  if (!HASHES.includes(name)) throw new DOMException('unsupported hash: ' + name, 'NotSupportedError');
  return name;
}

class CryptoKey {
  constructor() { throw new TypeError('Illegal constructor'); }
}

function hmacKey(alg, usage) {
  const bytes = keys.get(alg === undefined ? null : alg);
  if (bytes === undefined) throw new TypeError('key is not a CryptoKey');
  if (!alg.usages.includes(usage)) throw new DOMException('the key cannot be used to ' + usage, 'InvalidAccessError');
  return bytes;
}

async function mac(algorithm, key, data, usage) {
  if (algorithmName(algorithm) !== 'HMAC') throw new DOMException('only HMAC signs here', 'NotSupportedError');
  const bytes = hmacKey(key, usage);
  const out = await host.call('crypto.subtle', 'subtle.hmac', [key.algorithm.hash.name, toB64(bytes), toB64(subtleBytes(data, 'data'))]);
  return fromB64(out);
}

const subtle = freeze({
  async digest(algorithm, data) {
    const name = hashName(algorithm);
    return fromB64(await host.call('crypto.subtle', 'subtle.digest', [name, toB64(subtleBytes(data, 'data'))])).buffer;
  },
  async importKey(format, keyData, algorithm, extractable, usages) {
    if (algorithmName(algorithm) !== 'HMAC') throw new DOMException('only HMAC keys can be imported', 'NotSupportedError');
    const hash = hashName(algorithm.hash);
    let bytes;
    if (format === 'raw') bytes = subtleBytes(keyData, 'keyData').slice();
    else if (format === 'jwk' && keyData && keyData.kty === 'oct' && typeof keyData.k === 'string') {
      bytes = fromB64(keyData.k.replace(/-/g, '+').replace(/_/g, '/'));
      if (bytes === null) throw new DOMException('jwk: k is not base64url', 'DataError');
    } else throw new DOMException('importKey: format must be raw or an oct jwk', 'NotSupportedError');
    const use = Array.from(usages || []).map(String);
    if (use.length === 0 || use.some((u) => u !== 'sign' && u !== 'verify')) {
      throw new DOMException('HMAC key usages are sign and verify', 'SyntaxError');
    }
    const key = Object.create(CryptoKey.prototype, {
      type: { value: 'secret', enumerable: true },
      extractable: { value: Boolean(extractable), enumerable: true },
      algorithm: { value: freeze({ name: 'HMAC', hash: freeze({ name: hash }), length: bytes.length * 8 }), enumerable: true },
      usages: { value: freeze(use), enumerable: true },
    });
    keys.set(key, bytes);
    return freeze(key);
  },
  async exportKey(format, key) {
    const bytes = keys.get(key);
    if (bytes === undefined) throw new TypeError('key is not a CryptoKey');
    if (!key.extractable) throw new DOMException('the key is not extractable', 'InvalidAccessError');
    if (format === 'raw') return bytes.slice().buffer;
    if (format === 'jwk') {
      return { kty: 'oct', k: toB64(bytes).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, ''),
        alg: 'HS' + key.algorithm.hash.name.slice(4), ext: true, key_ops: [...key.usages] };
    }
    throw new DOMException('exportKey: format must be raw or jwk', 'NotSupportedError');
  },
  async sign(algorithm, key, data) {
    return (await mac(algorithm, key, data, 'sign')).buffer;
  },
  async verify(algorithm, key, signature, data) {
    const expected = await mac(algorithm, key, data, 'verify');
    const given = bytesOf(signature, 'signature');
    let diff = expected.length ^ given.length;
    for (let i = 0; i < expected.length; i++) diff |= expected[i] ^ (given[i] | 0);
    return diff === 0;
  },
});

const crypto = freeze({ getRandomValues, randomUUID, subtle });

// URL and URLSearchParams: the WHATWG URL Standard's parser, compactly (no IDNA mapping
// beyond lower-casing and NFC; non-ASCII host labels become punycode).
const SPECIAL = { 'ftp:': 21, 'file:': null, 'http:': 80, 'https:': 443, 'ws:': 80, 'wss:': 443 };
const C0_SPACE = /[\u0000-\u0020\u007f-\u{10ffff}]/gu;
const FRAGMENT = /[\u0000-\u0020"<>`\u007f-\u{10ffff}]/gu;
const QUERY = /[\u0000-\u0020"#<>\u007f-\u{10ffff}]/gu;
const SPECIAL_QUERY = /[\u0000-\u0020"#<>'\u007f-\u{10ffff}]/gu;
const PATH = /[\u0000-\u0020"#<>?`{}\u007f-\u{10ffff}]/gu;
const USERINFO = /[\u0000-\u0020"#<>?`{}/:;=@[\\\]^|\u007f-\u{10ffff}]/gu;
const FORBIDDEN_HOST = /[\u0000\t\n\r #/:<>?@[\\\]^|]/;
const FORBIDDEN_DOMAIN = /[\u0000-\u001f\t\n\r #%/:<>?@[\\\]^|\u007f]/;

const wellFormed = (s) => (typeof s.toWellFormed === 'function' ? s.toWellFormed() : s);
const pct = (s, set) => wellFormed(s).replace(set, encodeURIComponent);

function percentDecode(s) {
  if (!s.includes('%')) return s;
  const bytes = utf8(s);
  const out = new Uint8Array(bytes.length);
  let n = 0;
  const hex = (b) => (b >= 48 && b <= 57 ? b - 48 : (b | 32) >= 97 && (b | 32) <= 102 ? (b | 32) - 87 : -1);
  for (let i = 0; i < bytes.length; i++) {
    const h = bytes[i] === 37 && i + 2 < bytes.length ? hex(bytes[i + 1]) : -1;
    const l = h >= 0 ? hex(bytes[i + 2]) : -1;
    if (l >= 0) { out[n++] = (h << 4) | l; i += 2; } else out[n++] = bytes[i];
  }
  return new TextDecoder().decode(out.subarray(0, n));
}

function punycode(label) {
  const cps = Array.from(label, (c) => c.codePointAt(0));
  let out = cps.filter((c) => c < 128).map((c) => fromCharCode(c)).join('');
  const basic = out.length;
  let h = basic;
  if (basic) out += '-';
  let n = 128; let delta = 0; let bias = 72;
  const digit = (d) => fromCharCode(d + 22 + 75 * (d < 26));
  while (h < cps.length) {
    const m = Math.min(...cps.filter((c) => c >= n));
    delta += (m - n) * (h + 1);
    n = m;
    for (const c of cps) {
      if (c < n) delta++;
      if (c !== n) continue;
      let q = delta;
      for (let k = 36; ; k += 36) {
        const t = k <= bias ? 1 : k >= bias + 26 ? 26 : k - bias;
        if (q < t) break;
        out += digit(t + ((q - t) % (36 - t)));
        q = Math.floor((q - t) / (36 - t));
      }
      out += digit(q);
      let d = h === basic ? Math.floor(delta / 700) : delta >> 1;
      d += Math.floor(d / (h + 1));
      let k = 0;
      for (; d > 455; k += 36) d = Math.floor(d / 35);
      bias = k + Math.floor((36 * d) / (d + 38));
      delta = 0;
      h++;
    }
    delta++; n++;
  }
  return 'xn--' + out;
}

function ipv4(host) {
  const parts = host.split('.');
  if (parts[parts.length - 1] === '' && parts.length > 1) parts.pop();
  if (parts.length > 4) return null;
  const nums = [];
  for (const p of parts) {
    const m = /^(?:0[xX]([0-9a-fA-F]*)|(0[0-7]*)|([1-9][0-9]*))$/.exec(p);
    if (m === null) return null;
    nums.push(m[1] !== undefined ? (m[1] === '' ? 0 : parseInt(m[1], 16)) : m[2] !== undefined ? parseInt(m[2], 8) : Number(m[3]));
  }
  const last = nums.pop();
  if (nums.some((x) => x > 255) || last >= 256 ** (4 - nums.length)) return null;
  let v = last;
  nums.forEach((x, i) => { v += x * 256 ** (3 - i); });
  return [v >>> 24, (v >>> 16) & 255, (v >>> 8) & 255, v & 255].join('.');
}

function ipv6(s) {
  let tail = [];
  const v4 = /^(.*:)(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(s);
  if (v4) {
    const q = v4.slice(2).map(Number);
    if (q.some((x) => x > 255)) return null;
    tail = [(q[0] << 8) | q[1], (q[2] << 8) | q[3]];
    s = v4[1].endsWith('::') ? v4[1] : v4[1].slice(0, -1);
  }
  const halves = s.split('::');
  if (halves.length > 2) return null;
  const groups = (h) => (h === '' ? [] : h.split(':'));
  const head = groups(halves[0]);
  const rest = halves.length === 2 ? groups(halves[1]) : [];
  if (![...head, ...rest].every((g) => /^[0-9a-fA-F]{1,4}$/.test(g))) return null;
  const fill = 8 - head.length - rest.length - tail.length;
  if (halves.length === 1 ? fill !== 0 : fill < 1) return null;
  const w = [...head.map((g) => parseInt(g, 16)), ...new Array(halves.length === 2 ? fill : 0).fill(0),
    ...rest.map((g) => parseInt(g, 16)), ...tail];
  let best = -1; let len = 1;
  for (let i = 0; i < 8; i++) {
    let j = i;
    while (j < 8 && w[j] === 0) j++;
    if (j - i > len) { best = i; len = j - i; }
  }
  let out = '';
  for (let i = 0; i < 8; i++) {
    if (i === best) { out += i === 0 ? '::' : ':'; i += len - 1; continue; }
    out += w[i].toString(16) + (i < 7 ? ':' : '');
  }
  return '[' + out + ']';
}

function parseHost(input, special) {
  if (input.startsWith('[')) {
    if (!input.endsWith(']')) return null;
    return ipv6(input.slice(1, -1));
  }
  if (!special) return FORBIDDEN_HOST.test(input) ? null : pct(input, C0_SPACE);
  const domain = percentDecode(input).normalize('NFC').toLowerCase();
  if (domain === '' || FORBIDDEN_DOMAIN.test(domain)) return null;
  const ascii = domain.split('.').map((l) => (/^[\x00-\x7f]*$/.test(l) ? l : punycode(l))).join('.');
  const last = ascii.split('.').filter((x, i, a) => x !== '' || i < a.length - 1).pop() || '';
  if (/^(?:0[xX][0-9a-fA-F]*|\d+)$/.test(last)) return ipv4(ascii);
  return ascii;
}

function parsePath(path, special, base) {
  const segments = base ? base.slice(0, -1) : [];
  const parts = (special ? path.replace(/\\/g, '/') : path).split('/');
  parts.forEach((raw, i) => {
    const last = i === parts.length - 1;
    const seg = raw.toLowerCase().replace(/%2e/g, '.');
    if (seg === '..') {
      if (segments.length) segments.pop();
      if (last) segments.push('');
    } else if (seg === '.') {
      if (last) segments.push('');
    } else segments.push(pct(raw, PATH));
  });
  return segments;
}

function parseURL(input, base) {
  const s = String(input).replace(/^[\u0000-\u0020]+|[\u0000-\u0020]+$/g, '').replace(/[\t\n\r]/g, '');
  const u = { scheme: '', user: '', pass: '', host: null, port: null, path: [], query: null, fragment: null };
  let rest = s;
  const m = /^([a-zA-Z][a-zA-Z0-9+\-.]*):/.exec(s);
  if (m) {
    u.scheme = m[1].toLowerCase() + ':';
    rest = s.slice(m[0].length);
  } else if (!base) return null;
  else u.scheme = base.scheme;
  const special = u.scheme in SPECIAL;
  let frag = rest.indexOf('#');
  if (frag >= 0) { u.fragment = pct(rest.slice(frag + 1), FRAGMENT); rest = rest.slice(0, frag); }
  const q = rest.indexOf('?');
  if (q >= 0) { u.query = pct(rest.slice(q + 1), special ? SPECIAL_QUERY : QUERY); rest = rest.slice(0, q); }
  const slash = special ? /^[/\\]{2}/ : /^\/\//;
  const relative = !m || (special && base && base.scheme === u.scheme && !/^[/\\]/.test(rest) && u.scheme !== 'file:');
  if (relative) {
    if (typeof base.path === 'string') {
      if (m || frag !== 0 || s[0] !== '#') return null;
      return { ...base, fragment: u.fragment };
    }
    if (!slash.test(rest)) {
      u.user = base.user; u.pass = base.pass; u.host = base.host; u.port = base.port;
      if (rest === '') {
        u.path = base.path.slice();
        if (q < 0) u.query = base.query;
      } else if (special ? /^[/\\]/.test(rest) : rest[0] === '/') u.path = parsePath(rest.slice(1), special, null);
      else u.path = parsePath(rest, special, base.path);
      return u;
    }
  }
  if (special || slash.test(rest)) {
    const file = u.scheme === 'file:';
    const hasAuth = !file || /^[/\\]{2}/.test(rest);
    rest = file ? (hasAuth ? rest.slice(2) : rest) : special ? rest.replace(/^[/\\]*/, '') : rest.slice(2);
    let auth = '';
    if (hasAuth) {
      const end = rest.search(special ? /[/\\]/ : /\//);
      auth = end < 0 ? rest : rest.slice(0, end);
      rest = end < 0 ? '' : rest.slice(end);
    }
    const at = auth.lastIndexOf('@');
    if (at >= 0) {
      const info = auth.slice(0, at);
      const colon = info.indexOf(':');
      u.user = pct(colon < 0 ? info : info.slice(0, colon), USERINFO);
      u.pass = colon < 0 ? '' : pct(info.slice(colon + 1), USERINFO);
      auth = auth.slice(at + 1);
    }
    const pm = /:(\d*)$/.exec(auth.startsWith('[') ? auth.slice(auth.indexOf(']')) : auth);
    if (pm) {
      auth = auth.slice(0, auth.length - pm[0].length);
      if (pm[1] !== '') {
        const port = Number(pm[1]);
        if (port > 65535) return null;
        u.port = SPECIAL[u.scheme] === port ? null : port;
      }
    } else if (/:/.test(auth.startsWith('[') ? auth.slice(auth.indexOf(']')) : auth)) return null;
    if (file && (u.port !== null || at >= 0)) return null;
    if (auth === '' && !file && (special || at >= 0 || u.port !== null)) return null;
    u.host = auth === '' ? '' : parseHost(auth, special);
    if (u.host === null) return null;
    if (u.scheme === 'file:' && u.host === 'localhost') u.host = '';
    u.path = rest === '' && !special ? [] : parsePath(rest.replace(/^[/\\]/, ''), special, null);
  } else if (rest.startsWith('/')) u.path = parsePath(rest.slice(1), false, null);
  else u.path = pct(rest, C0_SPACE); // an opaque path: mailto:, data:, urn:
  return u;
}

function serialize(u, noFragment) {
  let out = u.scheme;
  if (u.host !== null) {
    out += '//';
    if (u.user !== '' || u.pass !== '') out += u.user + (u.pass !== '' ? ':' + u.pass : '') + '@';
    out += u.host + (u.port !== null ? ':' + u.port : '');
  }
  if (typeof u.path === 'string') out += u.path;
  else {
    if (u.host === null && u.path.length > 1 && u.path[0] === '') out += '/.';
    for (const seg of u.path) out += '/' + seg;
  }
  if (u.query !== null) out += '?' + u.query;
  if (!noFragment && u.fragment !== null) out += '#' + u.fragment;
  return out;
}

const hexEscape = (c) => '%' + c.charCodeAt(0).toString(16).toUpperCase();
const formEncode = (s) => pct(s, /[^*\-._0-9A-Za-z ]/gu).replace(/[!'()~]/g, hexEscape).replace(/ /g, '+');
const formDecode = (s) => percentDecode(s.replace(/\+/g, ' '));

class URLSearchParams {
  #list = [];
  #url = null;
  constructor(init = '', url = undefined) {
    if (init !== null && typeof init === 'object') {
      if (typeof init[Symbol.iterator] === 'function') {
        for (const pair of init) {
          const p = Array.from(pair);
          if (p.length !== 2) throw new TypeError('URLSearchParams: each pair must have two items');
          this.#list.push([wellFormed(String(p[0])), wellFormed(String(p[1]))]);
        }
      } else for (const k of Object.keys(init)) this.#list.push([wellFormed(k), wellFormed(String(init[k]))]);
    } else this.#parse(String(init));
    if (url instanceof URL) this.#url = url;
  }
  #parse(s) {
    this.#list = [];
    for (const part of (s[0] === '?' ? s.slice(1) : s).split('&')) {
      if (part === '') continue;
      const eq = part.indexOf('=');
      this.#list.push(eq < 0 ? [formDecode(part), ''] : [formDecode(part.slice(0, eq)), formDecode(part.slice(eq + 1))]);
    }
  }
  #update() { if (this.#url !== null) urlState.get(this.#url).query = this.#list.length ? this.toString() : null; }
  static _reset(params, query) { params.#parse(query || ''); }
  get size() { return this.#list.length; }
  append(name, value) { this.#list.push([wellFormed(String(name)), wellFormed(String(value))]); this.#update(); }
  delete(name, value) {
    name = String(name);
    this.#list = this.#list.filter(([k, v]) => k !== name || (value !== undefined && v !== String(value)));
    this.#update();
  }
  get(name) { const p = this.#list.find(([k]) => k === String(name)); return p ? p[1] : null; }
  getAll(name) { return this.#list.filter(([k]) => k === String(name)).map((p) => p[1]); }
  has(name, value) { return this.#list.some(([k, v]) => k === String(name) && (value === undefined || v === String(value))); }
  set(name, value) {
    name = String(name);
    const i = this.#list.findIndex(([k]) => k === name);
    if (i < 0) this.#list.push([name, wellFormed(String(value))]);
    else {
      this.#list = this.#list.filter(([k], j) => j <= i || k !== name);
      this.#list[i] = [name, wellFormed(String(value))];
    }
    this.#update();
  }
  sort() { this.#list.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)); this.#update(); }
  forEach(fn, self) { for (const [k, v] of this.#list) fn.call(self, v, k, this); }
  keys() { return this.#list.map((p) => p[0])[Symbol.iterator](); }
  values() { return this.#list.map((p) => p[1])[Symbol.iterator](); }
  entries() { return this.#list.map((p) => [p[0], p[1]])[Symbol.iterator](); }
  [Symbol.iterator]() { return this.entries(); }
  toString() { return this.#list.map(([k, v]) => formEncode(k) + '=' + formEncode(v)).join('&'); }
}

const urlState = new WeakMap(); // URL -> its record and its searchParams
const reset = URLSearchParams._reset;
delete URLSearchParams._reset;

class URL {
  constructor(url, base = undefined) {
    const b = base === undefined ? null : parseURL(base, null);
    if (base !== undefined && b === null) throw new TypeError('Invalid base URL: ' + String(base));
    const u = parseURL(url, b);
    if (u === null) throw new TypeError('Invalid URL: ' + String(url));
    urlState.set(this, u);
    u.params = new URLSearchParams(u.query || '', this);
  }
  static canParse(url, base = undefined) {
    try { new URL(url, base); return true; } catch (_) { return false; }
  }
  static parse(url, base = undefined) {
    try { return new URL(url, base); } catch (_) { return null; }
  }
  get href() { return serialize(urlState.get(this)); }
  set href(v) {
    const u = parseURL(v, null);
    if (u === null) throw new TypeError('Invalid URL: ' + String(v));
    const old = urlState.get(this);
    u.params = old.params;
    urlState.set(this, u);
    reset(u.params, u.query);
  }
  get origin() {
    const u = urlState.get(this);
    if (!(u.scheme in SPECIAL) || u.scheme === 'file:') return 'null';
    return u.scheme + '//' + u.host + (u.port !== null ? ':' + u.port : '');
  }
  get protocol() { return urlState.get(this).scheme; }
  set protocol(v) {
    const u = urlState.get(this);
    const m = /^([a-zA-Z][a-zA-Z0-9+\-.]*)/.exec(String(v));
    if (m === null) return;
    const scheme = m[1].toLowerCase() + ':';
    if ((scheme in SPECIAL) !== (u.scheme in SPECIAL) || (scheme === 'file:' && u.port !== null)) return;
    u.scheme = scheme;
    if (u.port === SPECIAL[scheme]) u.port = null;
  }
  get username() { return urlState.get(this).user; }
  set username(v) { const u = urlState.get(this); if (u.host) u.user = pct(String(v), USERINFO); }
  get password() { return urlState.get(this).pass; }
  set password(v) { const u = urlState.get(this); if (u.host) u.pass = pct(String(v), USERINFO); }
  get host() {
    const u = urlState.get(this);
    return u.host === null ? '' : u.host + (u.port !== null ? ':' + u.port : '');
  }
  set host(v) {
    const u = urlState.get(this);
    if (typeof u.path === 'string') return;
    const probe = parseURL(u.scheme + '//' + String(v).split(/[/?#\\]/)[0], null);
    if (probe !== null && probe.host !== '') { u.host = probe.host; if (probe.port !== null || /:\d/.test(String(v))) u.port = probe.port; }
  }
  get hostname() { const h = urlState.get(this).host; return h === null ? '' : h; }
  set hostname(v) {
    const u = urlState.get(this);
    if (typeof u.path === 'string') return;
    const h = parseHost(String(v).split(/[/?#\\:]/)[0], u.scheme in SPECIAL);
    if (h !== null && h !== '') u.host = h;
  }
  get port() { const p = urlState.get(this).port; return p === null ? '' : String(p); }
  set port(v) {
    const u = urlState.get(this);
    if (u.host === null || u.host === '' || u.scheme === 'file:') return;
    const d = /^\d*/.exec(String(v))[0];
    if (d === '') { if (String(v) === '') u.port = null; return; }
    if (Number(d) <= 65535) u.port = SPECIAL[u.scheme] === Number(d) ? null : Number(d);
  }
  get pathname() {
    const p = urlState.get(this).path;
    return typeof p === 'string' ? p : p.length ? '/' + p.join('/') : '';
  }
  set pathname(v) {
    const u = urlState.get(this);
    if (typeof u.path === 'string') return;
    const s = String(v);
    u.path = parsePath(u.scheme in SPECIAL ? s.replace(/^[/\\]/, '') : s.replace(/^\//, ''), u.scheme in SPECIAL, null);
  }
  get search() { const q = urlState.get(this).query; return q === null || q === '' ? '' : '?' + q; }
  set search(v) {
    const u = urlState.get(this);
    const s = String(v).replace(/^\?/, '');
    u.query = s === '' && String(v) === '' ? null : pct(s, u.scheme in SPECIAL ? SPECIAL_QUERY : QUERY);
    reset(u.params, u.query);
  }
  get searchParams() { return urlState.get(this).params; }
  get hash() { const f = urlState.get(this).fragment; return f === null || f === '' ? '' : '#' + f; }
  set hash(v) {
    const u = urlState.get(this);
    const s = String(v).replace(/^#/, '');
    u.fragment = s === '' && String(v) === '' ? null : pct(s, FRAGMENT);
  }
  toString() { return this.href; }
  toJSON() { return this.href; }
}

return { URL, URLSearchParams, TextEncoder, TextDecoder, atob, btoa, structuredClone, crypto, DOMException };
