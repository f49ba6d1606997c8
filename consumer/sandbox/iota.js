// The IOTA SDK's script API: `sdk.http`, `sdk.db`, `sdk.cache`, `sdk.log` and `events`. The
// body of a function `(host) => ({sdk, events})`, compiled by the prelude the first time a
// script touches `sdk` or `events` (see prelude.js, lazy). Every call means the execution in
// progress: host.call, host.publish and host.ctx throw outside one.
'use strict';
const freeze = Object.freeze;
const keys = Object.keys;
const parse = JSON.parse;
const stringify = JSON.stringify;

function withQuery(url, query) {
  const parts = [];
  for (const k of keys(query)) {
    const v = query[k];
    for (const x of Array.isArray(v) ? v : [v]) {
      if (x !== undefined) parts.push(encodeURIComponent(k) + '=' + encodeURIComponent(String(x)));
    }
  }
  if (parts.length === 0) return url;
  const hash = url.indexOf('#');
  const head = hash < 0 ? url : url.slice(0, hash);
  return head + (head.includes('?') ? '&' : '?') + parts.join('&') + (hash < 0 ? '' : url.slice(hash));
}

// sdk.http.<method>(url[, body], {headers, query, timeout}) -> {status, ok, headers, body,
// text(), json()}: ctx.http.fetch underneath, the body parsed when the response says JSON.
async function request(method, url, body, opts) {
  const o = opts == null ? {} : opts;
  let u = String(url);
  if (o.query != null) u = withQuery(u, o.query);
  const timeoutMs = o.timeout != null ? o.timeout : o.timeoutMs;
  const r = await host.call('sdk.http', 'fetch', [host.fetchRequest(u, { method, headers: o.headers, body, timeoutMs })]);
  const text = r.body;
  let value = text;
  const type = keys(r.headers).find((k) => k.toLowerCase() === 'content-type');
  if (type !== undefined && /[/+]json\b/i.test(r.headers[type]) && text !== '') {
    try { value = parse(text); } catch (_) { value = text; }
  }
  return freeze({
    status: r.status, ok: r.status >= 200 && r.status < 300, headers: freeze(r.headers),
    body: value, text() { return text; }, json() { return parse(text); },
  });
}

// sdk.db and sdk.cache are ctx.db and ctx.cache of the execution in progress.
function namespace(area, names) {
  const o = {};
  for (const name of names) {
    o[name] = async (...args) => {
      const api = host.ctx('sdk.' + area)[area];
      if (api == null || typeof api[name] !== 'function') {
        throw new Error('sdk.' + area + '.' + name + ' is not available in this runtime');
      }
      return api[name](...args);
    };
  }
  return freeze(o);
}

// sdk.log.<level>(message, metadata): a console line with the metadata beside it (JSON
// text here; the worker checks it and the daemon logs it as a field of its own).
function logger(level) {
  return (message, metadata) => {
    let meta;
    if (metadata != null) {
      try { meta = stringify(metadata); } catch (_) { meta = stringify('[unserialisable metadata]'); }
      if (meta === undefined) meta = stringify(String(metadata));
    }
    host.log(level, [message], meta);
  };
}

const sdk = freeze({
  http: freeze({
    get: (url, opts) => request('GET', url, undefined, opts),
    delete: (url, opts) => request('DELETE', url, undefined, opts),
    post: (url, body, opts) => request('POST', url, body, opts),
    put: (url, body, opts) => request('PUT', url, body, opts),
    patch: (url, body, opts) => request('PATCH', url, body, opts),
  }),
  db: namespace('db', ['query', 'queryOne', 'execute', 'transaction']),
  cache: namespace('cache', ['get', 'set', 'delete', 'exists', 'increment']),
  log: freeze({ debug: logger('debug'), info: logger('info'), warn: logger('warn'), error: logger('error') }),
});

const events = freeze({ publish: (type, payload) => host.publish(type, payload) });

return { sdk, events };
