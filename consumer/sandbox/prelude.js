// The in-context runtime: evaluated once in every fresh V8 context, before the tenant's script.
//
// Python never touches a live JS object (mini-racer's object calls block forever when the
// isolate is busy), so everything crosses as JSON text through eval: the worker evaluates
// `API.run(...)` / `API.resume(...)`, then `API.collect()` in a *separate* eval, because
// mini-racer runs the microtask checkpoint between two tasks: when collect runs, every
// microtask the previous step queued has run.
//
// API is a global *lexical* binding with a random name per context (`const __jsrt_<hex> =
// <this expression>`): it is not a property of globalThis, so no reflection lists it, and a
// script cannot call the runtime's own functions without guessing 128 random bits. Values
// from outside (input, trigger, host-call results) always arrive as JSON *strings* and are
// read with JSON.parse, never as object-literal source, so `__proto__` stays an own key.
// The limits enforced here (output size, console lines) are enforced again by the worker.
(function (g) {
  'use strict';
  const stringify = JSON.stringify;
  const parse = JSON.parse;
  const freeze = Object.freeze;
  const keys = Object.keys;
  const now = Date.now;
  const defineProperty = Object.defineProperty;
  const Fn = Function; // the stdlib's compiler, taken before any script can replace it
  const MAX_LOG_LINES = 1000;
  const MAX_LOG_BYTES = 65536;
  const MAX_DEPTH = 8;

  // Atomics.waitAsync runs callbacks as tasks outside any step (mini-racer's own setTimeout
  // shim, which we do not install, is built on it), and Atomics.wait can park the isolate's
  // thread. Neither has a use here: timers are ours (below), and there is no other thread.
  delete g.Atomics.wait;
  delete g.Atomics.waitAsync;
  // For the same reason: a FinalizationRegistry's cleanup callbacks run as tasks after a
  // collection, and the continuations of WebAssembly's asynchronous compile and instantiate
  // as tasks when the compilation ends - outside any step, under no deadline, in a context
  // that may sit idle in the pool (a `while (true) {}` there burned a core of the worker
  // for good). WeakRef has no callbacks; `new WebAssembly.Module(bytes)` and
  // `new WebAssembly.Instance(module, imports)` compile and instantiate within the step.
  delete g.FinalizationRegistry;
  if (typeof g.WebAssembly === 'object' && g.WebAssembly !== null) {
    delete g.WebAssembly.compile;
    delete g.WebAssembly.instantiate;
    delete g.WebAssembly.compileStreaming;
    delete g.WebAssembly.instantiateStreaming;
    // JSPI (a wasm call suspended on a promise): a young feature that no script here can
    // use (its promises settle only through what is deleted above), kept out of reach
    delete g.WebAssembly.promising;
    delete g.WebAssembly.Suspending;
  }

  class RateLimitError extends Error {
    constructor(message) {
      super(message);
      this.name = 'RateLimitError';
    }
  }

  let handler = null; // the script's handler, set by install()
  let ex = null; // the execution in progress
  let nextCall = 1;

  function fresh(id, depth, outLimit) {
    return {
      id, depth, outLimit, ctx: null, settled: false, result: null, logs: [], logBytes: 0,
      truncated: false, calls: [], pending: new Map(), timers: new Map(), nextTimer: 1,
    };
  }

  function utf8Length(s) {
    let n = 0;
    for (let i = 0; i < s.length; i++) {
      const c = s.charCodeAt(i);
      if (c < 0x80) n += 1;
      else if (c < 0x800) n += 2;
      else if (c >= 0xd800 && c < 0xdc00 && i + 1 < s.length) { n += 4; i++; }
      else n += 3;
    }
    return n;
  }

  function show(v) {
    try {
      if (typeof v === 'string') return v;
      if (v instanceof Error) return String(v.stack || v);
      if (v === undefined || typeof v === 'function' || typeof v === 'symbol' || typeof v === 'bigint') {
        return String(v);
      }
      const s = stringify(v);
      return s === undefined ? String(v) : s;
    } catch (_) {
      return '[unprintable]';
    }
  }

  // meta: sdk.log's metadata as JSON text (a fourth element of the line), or undefined.
  function log(level, args, meta) {
    const e = ex;
    if (e === null || e.truncated) return;
    let line = '';
    for (let i = 0; i < args.length; i++) line += (i ? ' ' : '') + show(args[i]);
    const size = utf8Length(line) + (meta === undefined ? 0 : utf8Length(meta));
    if (e.logs.length >= MAX_LOG_LINES || e.logBytes + size > MAX_LOG_BYTES) {
      e.truncated = true;
      e.logs.push([level, '[console output truncated]', now()]);
      return;
    }
    e.logBytes += size;
    e.logs.push(meta === undefined ? [level, line, now()] : [level, line, now(), meta]);
  }


  const console = freeze({
    log: (...a) => log('log', a),
    info: (...a) => log('info', a),
    warn: (...a) => log('warn', a),
    error: (...a) => log('error', a),
    debug: (...a) => log('debug', a),
  });

  // Host calls belong to the execution whose ctx made them, even when they run late.
  function hostCall(e, op, args) {
    const json = stringify(args); // throws here, in the caller, if args are not JSON
    const id = nextCall++;
    return new Promise((resolve, reject) => {
      e.pending.set(id, [resolve, reject]);
      e.calls.push([id, op, json]);
    });
  }

  async function publish(e, type, payload) {
    if (typeof type !== 'string' || type.length === 0 || type.length > 255) {
      throw new TypeError('events.publish: type must be a non-empty string of at most 255 characters');
    }
    if (e.depth + 1 > MAX_DEPTH) {
      throw new Error('events.publish: event chain depth limit (' + MAX_DEPTH + ') exceeded');
    }
    return hostCall(e, 'publish', [type, payload === undefined ? null : payload]);
  }

  function fetchRequest(url, opts) {
    const o = opts == null ? {} : opts;
    const headers = {};
    if (o.headers != null) for (const k of keys(o.headers)) headers[String(k)] = String(o.headers[k]);
    let body = null;
    if (o.body != null) {
      if (typeof o.body === 'string') body = o.body;
      else {
        body = stringify(o.body);
        if (!keys(headers).some((k) => k.toLowerCase() === 'content-type')) headers['content-type'] = 'application/json';
      }
    }
    const timeoutMs = o.timeoutMs == null ? null : Number(o.timeoutMs);
    return { url: String(url), method: String(o.method || 'GET').toUpperCase(), headers, body, timeoutMs };
  }

  async function fetch(e, url, opts) {
    const r = await hostCall(e, 'fetch', [fetchRequest(url, opts)]);
    const body = r.body;
    return freeze({
      status: r.status,
      ok: r.status >= 200 && r.status < 300,
      headers: freeze(r.headers),
      body,
      text() { return body; },
      json() { return parse(body); },
    });
  }

  // The IOTA SDK's globals (sdk, events, context) mean the execution in progress.
  function current(what) {
    if (ex === null) throw new Error(what + ' used outside an execution');
    return ex;
  }

  // ctx.db: every statement goes to the host with its parameters; the host decides what is
  // allowed and runs it as the execution's tenant (the tenant is never sent from here).
  function sqlArgs(what, sql, params) {
    if (typeof sql !== 'string') throw new TypeError('ctx.db.' + what + ': sql must be a string');
    if (params != null && !Array.isArray(params)) throw new TypeError('ctx.db.' + what + ': params must be an array');
    return [sql, params == null ? [] : params];
  }

  function dbApi(e, txId) {
    const call = async (op, what, sql, params) => hostCall(e, op, [...sqlArgs(what, sql, params), txId]);
    return {
      query: (sql, params) => call('db.query', 'query', sql, params),
      queryOne: (sql, params) => call('db.queryOne', 'queryOne', sql, params),
      execute: (sql, params) => call('db.execute', 'execute', sql, params),
    };
  }

  async function transaction(e, fn) {
    if (typeof fn !== 'function') throw new TypeError('ctx.db.transaction: callback must be a function');
    const txId = await hostCall(e, 'db.begin', []);
    let value;
    try {
      value = await fn(freeze(dbApi(e, txId)));
    } catch (err) {
      try { await hostCall(e, 'db.rollback', [txId]); } catch (_) { /* the host rolls back at the end anyway */ }
      throw err;
    }
    await hostCall(e, 'db.commit', [txId]);
    return value;
  }

  function cacheApi(e) {
    const call = async (op, args) => hostCall(e, op, args);
    return freeze({
      get: (key) => call('cache.get', [key]),
      set: (key, value, ttlSeconds) => call('cache.set', ttlSeconds == null
        ? [key, value === undefined ? null : value] : [key, value === undefined ? null : value, ttlSeconds]),
      delete: (key) => call('cache.delete', [key]),
      exists: (key) => call('cache.exists', [key]),
      increment: (key, delta) => call('cache.increment', [key, delta === undefined ? 1 : delta]),
    });
  }

  function setTimeout(fn, ms, ...args) {
    if (typeof fn !== 'function') throw new TypeError('setTimeout: callback must be a function');
    if (ex === null) throw new Error('setTimeout used outside an execution');
    const id = ex.nextTimer++;
    // Node's rule: a delay past 2^31-1 ms (Infinity too) fires after 1 ms; none or NaN is 0.
    // (An infinite due time would otherwise reach the worker as null and fail the run.)
    const delay = Number(ms);
    ex.timers.set(id, [now() + (delay > 2147483647 ? 1 : Math.max(0, delay || 0)), fn, args]);
    return id;
  }

  function clearTimeout(id) {
    if (ex !== null) ex.timers.delete(id);
  }

  function describe(err) {
    try {
      if (err instanceof Error) return [String(err.name || 'Error'), String(err.message), String(err.stack || '')];
      return ['', 'Uncaught ' + show(err), ''];
    } catch (_) {
      return ['', 'Uncaught exception that cannot be printed', ''];
    }
  }

  function settle(e, ok, value) {
    if (e.settled) return;
    e.settled = true;
    record(e, ok, value);
    if (batch !== null && ex === e) advance(e);
  }

  function record(e, ok, value) {
    if (!ok) { e.result = [0, describe(value)]; return; }
    try {
      let s = stringify(value === undefined ? null : value);
      if (s === undefined) s = 'null';
      // UTF-8 is never shorter than UTF-16 code units, and at most 3 bytes per unit.
      if (s.length > e.outLimit || (s.length * 3 > e.outLimit && utf8Length(s) > e.outLimit)) {
        e.result = [2, utf8Length(s)];
      } else {
        e.result = [1, s];
      }
    } catch (err) {
      e.result = [0, describe(err)];
    }
  }

  function run(id, inputText, infoText, outLimit, seedHex) {
    const input = parse(inputText);
    const info = parse(infoText);
    const e = fresh(id, info.depth, outLimit);
    ex = e;
    reseed(seedHex);
    if (typeof handler !== 'function') {
      settle(e, false, new Error('script does not define a handler function'));
      return;
    }
    const t = info.trigger;
    const ctx = freeze({
      tenantId: info.tenantId, scriptId: info.scriptId, executionId: info.executionId,
      // who and which organization the run is for: what a caller of the runtime says, or
      // for the user the subject of the JWT that authenticated an HTTP call
      userId: t.user_id !== undefined ? t.user_id
        : info.auth && info.auth.type === 'jwt' && info.auth.claims && info.auth.claims.sub !== undefined
          ? info.auth.claims.sub : null,
      organizationId: t.organization_id !== undefined ? t.organization_id : null,
      trigger: t, input,
      events: freeze({ publish: (type, payload) => publish(e, type, payload) }),
      http: freeze({ fetch: (url, opts) => fetch(e, url, opts) }),
      db: freeze({ ...dbApi(e, null), transaction: (fn) => transaction(e, fn) }),
      cache: cacheApi(e),
      secrets: freeze({ get: (name) => hostCall(e, 'secret', [String(name)]) }),
      crypto: freeze({ hmacSha256: (key, message) => hostCall(e, 'hmac', [String(key), String(message)]) }),
      auth: info.auth === undefined ? null : info.auth,
    });
    e.ctx = ctx;
    let r;
    try {
      r = handler(input, ctx);
    } catch (err) {
      settle(e, false, err);
      return;
    }
    if (r !== null && (typeof r === 'object' || typeof r === 'function') && typeof r.then === 'function') {
      Promise.resolve(r).then((v) => settle(e, true, v), (err) => settle(e, false, err));
    } else {
      settle(e, true, r);
    }
  }

  function fireTimers(e) {
    const t = now();
    const due = [];
    for (const [id, timer] of e.timers) if (timer[0] <= t) due.push([timer[0], id, timer]);
    due.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
    for (const [, id, timer] of due) {
      if (!e.timers.delete(id)) continue; // cleared by an earlier callback
      try {
        timer[1](...timer[2]);
      } catch (err) {
        settle(e, false, err);
      }
    }
  }

  function resume(responsesText) {
    const e = ex;
    const responses = parse(responsesText);
    for (const [id, ok, value] of responses) {
      const p = e.pending.get(id);
      if (p === undefined) continue;
      e.pending.delete(id);
      if (ok) p[0](value);
      else p[1](value[0] === 'RateLimitError' ? new RateLimitError(value[1]) : new Error(value[1]));
    }
    fireTimers(e);
  }

  function outbox(e) {
    let next = -1;
    for (const timer of e.timers.values()) if (next < 0 || timer[0] < next) next = timer[0];
    const out = [e.settled ? 1 : 0, e.result, e.calls, e.logs, next < 0 ? -1 : Math.max(0, next - now()), e.pending.size];
    e.calls = [];
    e.logs = [];
    return out;
  }

  function collect() {
    return stringify(outbox(ex));
  }

  // Batches: several runs of this script version, one after the other, in one step. The
  // chain goes on only while each run ends cleanly within the step (no error, no host call,
  // no timer, no pending work) and the batch is young; the run that breaks it keeps the
  // context, and the runs not started go back to the worker.
  let batch = null;

  function runMany(items, budgetMs) {
    batch = { done: [], ends: [], rest: items.slice(1), started: now(), budgetMs };
    run(...items[0]);
  }

  function advance(e) {
    const b = batch;
    const clean = e.result[0] === 1 && e.timers.size === 0 && e.pending.size === 0 && e.calls.length === 0;
    if (!clean || b.rest.length === 0 || now() - b.started > b.budgetMs) return;
    b.done.push([e.id, outbox(e)]);
    b.ends.push(now() - b.started); // the next run begins as this one ends
    run(...b.rest.shift());
  }

  function collectMany() {
    const b = batch;
    batch = null;
    b.done.push([ex.id, outbox(ex)]);
    return stringify([b.done, b.rest.map((item) => item[0]), b.ends]);
  }

  // What a timed-out or terminated execution still has to say.
  function logs() {
    const e = ex;
    return e === null ? '[]' : stringify(e.logs);
  }

  function install(fn) {
    handler = fn;
  }

  // Random bytes come from a CSPRNG in the stdlib, keyed with 32 bytes of the worker's
  // entropy for each execution (and for the script's top level): never from Math.random.
  let seed = '';
  let seedGen = 0;
  function reseed(hex) {
    seed = hex;
    seedGen++;
  }

  // The IOTA SDK's globals (iota.js) and the web platform's pieces (stdlib.js) are compiled
  // on first use: most scripts never touch them, and every fresh context would pay for their
  // compilation. The worker provides a piece's source (engine.provisions) before the script's
  // top level only when the script's source names one of its globals (a context whose script
  // never does has no such globals at all); each is the body of a function of `host`, which
  // returns its globals.
  const host = freeze({
    call: (what, op, args) => hostCall(current(what), op, args),
    publish: (type, payload) => publish(current('events.publish'), type, payload),
    ctx: (what) => current(what).ctx,
    log, fetchRequest,
    seed: () => [seedGen, seed],
  });
  // provide(key, source): the piece's globals become accessors that compile it on first use
  // and then replace themselves with plain, writable properties.
  const LAZY = {
    iota: ['sdk', 'events'],
    stdlib: ['URL', 'URLSearchParams', 'TextEncoder', 'TextDecoder', 'atob', 'btoa',
      'structuredClone', 'crypto', 'DOMException'],
  };
  function provide(key, source) {
    const names = LAZY[key];
    let made = null;
    const install = () => {
      if (made === null) {
        made = new Fn('host', source)(host);
        for (const n of names) {
          defineProperty(g, n, { value: made[n], writable: true, configurable: true, enumerable: false });
        }
      }
      return made;
    };
    for (const n of names) {
      defineProperty(g, n, {
        configurable: true, enumerable: false,
        get() { return install()[n]; },
        set(v) { install(); g[n] = v; },
      });
    }
  }

  for (const [name, value] of [['console', console], ['setTimeout', setTimeout],
    ['clearTimeout', clearTimeout], ['RateLimitError', RateLimitError]]) {
    g[name] = value;
  }
  // `context` is read-only, and always the execution in progress (null between executions).
  defineProperty(g, 'context', { get() { return ex === null ? null : ex.ctx; }, enumerable: false });
  return freeze({ run, runMany, resume, collect, collectMany, logs, install, reseed, provide });
})(globalThis)
