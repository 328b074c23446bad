// A seeded generator of malformed HTTP/1.1 requests for scrim's gateway
// port (tests/integration/malformed.test.mjs sends them).
//
// Each case is a valid request (chat with and without streaming, chunked,
// Anthropic, embeddings, GET, absolute-form proxy, CONNECT, HTTP/1.0,
// pipelined) carrying personal data in its body, then mutated once:
// request line, headers, framing, chunked encoding, body, sizes, or raw
// bytes (flips, inserts, deletes, truncation). The same seed and index
// always give the same bytes, so a failing case can be replayed alone:
//
//   node tests/integration/malformed_gen.mjs --seed 8 --case 1234 [--port P]
//
// prints that case (P: the port of the provider absolute-form requests
// name, as the test printed it) (its mutation, how it is delivered, its bytes).

import { fileURLToPath } from 'node:url';
import zlib from 'node:zlib';

/** The personal data every body carries; none of it may reach a provider. */
export const PII = {
  email: 'maria.gonzalez@example.com',
  card: '4111 1111 1111 1111',
  iban: 'DE89 3704 0044 0532 0130 00',
  ssn: '123-45-6789',
  aws: 'AKIAIOSFODNN7EXAMPLE',
  phone: '+1 415 555 0132',
};
export const PII_VALUES = Object.values(PII);

/** The prompt of case `tag`: the tag lets a forwarded request be traced back to its case. */
export const promptOf = (tag) => `Dear team (ref ${tag}), mail ${PII.email}, card ${PII.card}, IBAN ${PII.iban}, ` +
  `SSN ${PII.ssn}, aws key ${PII.aws}, phone ${PII.phone}. Thanks`;

// ---------------------------------------------------------------- PRNG

/** mulberry32: small, fast, good enough to pick mutations. */
export function rng(seed) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const r = {
    next,
    int: (n) => Math.floor(next() * n), // 0..n-1
    range: (lo, hi) => lo + Math.floor(next() * (hi - lo + 1)),
    pick: (xs) => xs[Math.floor(next() * xs.length)],
    chance: (p) => next() < p,
    bytes: (n, alphabet) => {
      const b = Buffer.alloc(n);
      for (let i = 0; i < n; i++) b[i] = alphabet ? alphabet[Math.floor(next() * alphabet.length)] : Math.floor(next() * 256);
      return b;
    },
  };
  return r;
}

/** The PRNG of case `index` under `seed`: cases are independent of each other. */
const caseRng = (seed, index) => rng(((seed * 0x9e3779b1) ^ Math.imul(index + 1, 0x85ebca6b)) >>> 0);

// ---------------------------------------------------------------- requests

/*
 * A request as parts: {method, target, version, headers: [[name, value]],
 * body (Buffer or null), chunked (bool: frame the body as chunks), chunks
 * (sizes to cut it into), eol ('\r\n'), tail (Buffer appended as is)}.
 */

let PROMPT = promptOf('c0');

function chatJson(extra = {}) {
  return JSON.stringify({ model: 'fake-model', messages: [{ role: 'user', content: PROMPT }], ...extra });
}

/** The valid requests mutations start from, given the test's ports and key. */
function templates(ctx) {
  const { key, providerHostPort } = ctx;
  const basic = 'Basic ' + Buffer.from(`u:${key}`).toString('base64');
  const post = (target, body, more = []) => ({
    method: 'POST', target, version: 'HTTP/1.1',
    headers: [['Host', 'scrim.test'], ['Authorization', `Bearer ${key}`], ['Content-Type', 'application/json'],
      ['Content-Length', String(Buffer.byteLength(body))], ['Connection', 'close'], ...more],
    body: Buffer.from(body), chunked: false,
  });
  return {
    chat: () => post('/v1/chat/completions', chatJson()),
    stream: () => post('/v1/chat/completions', chatJson({ stream: true })),
    chunked: () => {
      const r = post('/v1/chat/completions', chatJson());
      r.headers = r.headers.filter(([n]) => n !== 'Content-Length');
      r.headers.push(['Transfer-Encoding', 'chunked']);
      r.chunked = true;
      return r;
    },
    anthropic: () => {
      const body = JSON.stringify({ model: 'claude-3-5-sonnet-latest', max_tokens: 64, messages: [{ role: 'user', content: PROMPT }] });
      const r = post('/anthropic/v1/messages', body, [['anthropic-version', '2023-06-01']]);
      r.headers[1] = ['x-api-key', key];
      return r;
    },
    embeddings: () => post('/v1/embeddings', JSON.stringify({ model: 'text-embedding-3-small', input: [PROMPT, PII.email] })),
    models: () => ({
      method: 'GET', target: '/v1/models', version: 'HTTP/1.1',
      headers: [['Host', 'scrim.test'], ['Authorization', `Bearer ${key}`], ['Connection', 'close']],
      body: null, chunked: false,
    }),
    absolute: () => {
      const body = chatJson();
      return {
        method: 'POST', target: `http://${providerHostPort}/v1/chat/completions`, version: 'HTTP/1.1',
        headers: [['Host', providerHostPort], ['Proxy-Authorization', basic], ['Content-Type', 'application/json'],
          ['Content-Length', String(Buffer.byteLength(body))], ['Connection', 'close']],
        body: Buffer.from(body), chunked: false,
      };
    },
    connect: () => ({
      method: 'CONNECT', target: 'api.openai.com:443', version: 'HTTP/1.1',
      headers: [['Host', 'api.openai.com:443'], ['Proxy-Authorization', basic]],
      body: null, chunked: false,
    }),
    http10: () => {
      const body = chatJson();
      return {
        method: 'POST', target: '/v1/chat/completions', version: 'HTTP/1.0',
        headers: [['Authorization', `Bearer ${key}`], ['Content-Type', 'application/json'],
          ['Content-Length', String(Buffer.byteLength(body))]],
        body: Buffer.from(body), chunked: false,
      };
    },
    pipelined: () => {
      // A keep-alive GET, then the chat (closing) in the same write.
      const first = {
        method: 'GET', target: '/v1/models', version: 'HTTP/1.1',
        headers: [['Host', 'scrim.test'], ['Authorization', `Bearer ${key}`]], body: null, chunked: false,
      };
      const r = post('/v1/chat/completions', chatJson());
      r.prefix = serialize(first);
      return r;
    },
  };
}

const TEMPLATE_WEIGHTS = [
  ['chat', 24], ['stream', 12], ['chunked', 16], ['anthropic', 8], ['embeddings', 5], ['models', 6],
  ['absolute', 10], ['connect', 5], ['http10', 5], ['pipelined', 9],
];

function weighted(r, table) {
  let total = 0;
  for (const [, w] of table) total += w;
  let x = r.next() * total;
  for (const [name, w] of table) {
    if ((x -= w) < 0) return name;
  }
  return table[table.length - 1][0];
}

/** Chunk sizes that cut n bytes into 1..6 random pieces. */
function cutSizes(r, n) {
  const k = Math.min(n, r.range(1, 6));
  const cuts = new Set();
  while (cuts.size < k - 1) cuts.add(r.range(1, n - 1));
  const pts = [0, ...[...cuts].sort((a, b) => a - b), n];
  const out = [];
  for (let i = 1; i < pts.length; i++) out.push(pts[i] - pts[i - 1]);
  return out;
}

/** The chunked encoding of `body` cut into `sizes` (default: one chunk). */
export function encodeChunks(body, sizes = [body.length], { ext = '', eol = '\r\n', last = `0${eol}${eol}` } = {}) {
  const parts = [];
  let at = 0;
  for (const s of sizes) {
    if (s === 0) continue;
    parts.push(Buffer.from(`${s.toString(16)}${ext}${eol}`, 'latin1'), body.subarray(at, at + s), Buffer.from(eol, 'latin1'));
    at += s;
  }
  parts.push(Buffer.from(last, 'latin1'));
  return Buffer.concat(parts);
}

/** The bytes of a request. */
export function serialize(q) {
  const eol = q.eol || '\r\n';
  const line = q.requestLine !== undefined ? q.requestLine : `${q.method} ${q.target} ${q.version}`;
  let head = `${line}${eol}`;
  for (const h of q.headers) head += (typeof h === 'string' ? h : `${h[0]}: ${h[1]}`) + eol;
  head += eol;
  const parts = [];
  if (q.prefix) parts.push(q.prefix);
  parts.push(Buffer.from(head, 'latin1'));
  if (q.rawBody) parts.push(q.rawBody);
  else if (q.body) parts.push(q.chunked ? encodeChunks(q.body, q.chunks || [q.body.length]) : q.body);
  if (q.tail) parts.push(q.tail);
  return Buffer.concat(parts);
}

// ---------------------------------------------------------------- mutations

const CTLS = [0x00, 0x01, 0x07, 0x08, 0x0b, 0x0c, 0x0d, 0x1b, 0x1f, 0x7f];
const tok = (r, n) => r.bytes(n, Buffer.from('abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_')).toString('latin1');
const hdrIndex = (q, name) => q.headers.findIndex((h) => typeof h !== 'string' && h[0].toLowerCase() === name);
const setHeader = (q, name, value) => {
  const i = hdrIndex(q, name.toLowerCase());
  if (i >= 0) q.headers[i] = [q.headers[i][0], value];
  else q.headers.push([name, value]);
};
const dropHeader = (q, name) => { q.headers = q.headers.filter((h) => typeof h === 'string' || h[0].toLowerCase() !== name); };
const insertAt = (r, q, h) => q.headers.splice(r.int(q.headers.length + 1), 0, h);
const bodyLen = (q) => (q.body ? q.body.length : 0);
/** Give a body-less template one, so that framing mutations have something to frame. */
const ensureBody = (q) => {
  if (q.body) return;
  q.body = Buffer.from(chatJson());
  if (q.method === 'GET' || q.method === 'CONNECT') { q.method = 'POST'; q.target = '/v1/chat/completions'; }
  setHeader(q, 'Content-Type', 'application/json');
  setHeader(q, 'Content-Length', String(q.body.length));
};
/** Switch a request to chunked framing. */
const toChunked = (r, q) => {
  ensureBody(q);
  dropHeader(q, 'content-length');
  setHeader(q, 'Transfer-Encoding', 'chunked');
  q.chunked = true;
  q.chunks = cutSizes(r, q.body.length);
};

/*
 * Structural mutations: name -> fn(r, q) changing q in place. Some set
 * `fin` (half-close after sending) or `pieces` (how to split the bytes).
 */
const STRUCTURAL = {
  // -- request line
  'line/method-lower': (r, q) => { q.method = q.method.toLowerCase(); },
  'line/method-junk': (r, q) => { q.method = r.pick(['G@T', 'PO ST', 'P\x00ST', '', 'POST\t', 'BREW', 'PRI', 'OPTIONS', 'TRACE', 'HEAD', 'DELETE', 'PUT', 'PATCH']); },
  'line/method-long': (r, q) => { q.method = 'X'.repeat(r.pick([64, 1000, 9000])); },
  'line/target-no-slash': (r, q) => { q.target = q.target.replace(/^(https?:\/\/)?\/*/, ''); },
  'line/target-star': (r, q) => { q.target = '*'; },
  'line/target-space': (r, q) => { const i = r.range(1, q.target.length); q.target = `${q.target.slice(0, i)} ${q.target.slice(i)}`; },
  'line/target-ctl': (r, q) => { const t = q.target; const i = r.int(t.length + 1); q.target = t.slice(0, i) + String.fromCharCode(r.pick(CTLS)) + t.slice(i); },
  'line/target-encoded': (r, q) => { q.target = r.pick(['/v1/../v1/chat/completions', '/v1/%2e%2e/admin', '/v1/chat/completions%00', '/v1/chat/completions#frag', '/v1//chat/completions', '/%76%31/chat/completions', '/v1/chat/completions?x=%ZZ']); },
  'line/target-long': (r, q) => { q.target = `/v1/chat/completions?q=${'u'.repeat(r.pick([8150, 8200, 20000, 70000]))}`; },
  'line/version': (r, q) => { q.version = r.pick(['HTTP/1.2', 'HTTP/2.0', 'HTTP/9.9', 'HTTP/0.9', 'HTTP/1', 'http/1.1', 'HTTP/1.1 ', 'HTTP/ 1.1', 'HTTP/1.10', 'HTTPS/1.1', 'HTTP/1.1\x00', 'HTTP/3']); },
  'line/no-version': (r, q) => { q.requestLine = `${q.method} ${q.target}`; },
  'line/extra-spaces': (r, q) => { q.requestLine = r.pick([`${q.method}  ${q.target} ${q.version}`, ` ${q.method} ${q.target} ${q.version}`, `${q.method} ${q.target} ${q.version} extra`, `${q.method}\t${q.target}\t${q.version}`]); },
  'line/leading-crlf': (r, q) => { q.prefix = Buffer.concat([Buffer.from('\r\n'.repeat(r.range(1, 8))), q.prefix || Buffer.alloc(0)]); },
  'line/empty': (r, q) => { q.requestLine = ''; },
  // -- Host
  'host/duplicate': (r, q) => { insertAt(r, q, ['Host', r.pick(['scrim.test', 'other.test'])]); },
  'host/missing': (r, q) => { dropHeader(q, 'host'); },
  'host/empty': (r, q) => { setHeader(q, 'Host', ''); },
  'host/junk': (r, q) => { setHeader(q, 'Host', r.pick(['a b', 'x@y', '[::1', 'h:99999', '..', 'é.test', 'host\x01'])); },
  // -- Content-Length
  'cl/duplicate-same': (r, q) => { ensureBody(q); insertAt(r, q, ['Content-Length', String(bodyLen(q))]); },
  'cl/duplicate-diff': (r, q) => { ensureBody(q); insertAt(r, q, ['Content-Length', String(bodyLen(q) + r.range(1, 5))]); },
  'cl/list': (r, q) => { ensureBody(q); setHeader(q, 'Content-Length', `${bodyLen(q)}, ${bodyLen(q)}`); },
  'cl/bad-number': (r, q) => { ensureBody(q); const n = bodyLen(q); setHeader(q, 'Content-Length', r.pick([`+${n}`, `-${n}`, `0x${n.toString(16)}`, `${n}.0`, `${n} 1`, ` ${n}`, `${n}a`, `0${n}`, '', 'abc', `${n}\x00`])); },
  'cl/huge': (r, q) => { ensureBody(q); setHeader(q, 'Content-Length', r.pick(['2000000000', '99999999999999999999', '18446744073709551616', '9223372036854775807', '9223372036854775808', '65537'])); q.fin = true; },
  'cl/with-te': (r, q) => { ensureBody(q); if (q.chunked) insertAt(r, q, ['Content-Length', String(bodyLen(q))]); else { setHeader(q, 'Transfer-Encoding', 'chunked'); } },
  // -- Transfer-Encoding
  'te/variant': (r, q) => { toChunked(r, q); setHeader(q, 'Transfer-Encoding', r.pick(['chunked, gzip', 'gzip, chunked', 'xchunked', 'chunked, chunked', 'identity', 'Chunked', 'CHUNKED', ' chunked', 'chunked ', 'chunked;q=1', '', 'chunk', 'deflate'])); },
  'te/duplicate': (r, q) => { toChunked(r, q); insertAt(r, q, ['Transfer-Encoding', 'chunked']); },
  'te/http10': (r, q) => { toChunked(r, q); q.version = 'HTTP/1.0'; },
  // -- header syntax
  'hdr/space-before-colon': (r, q) => { const i = r.int(q.headers.length); const h = q.headers[i]; if (typeof h !== 'string') q.headers[i] = `${h[0]} : ${h[1]}`; },
  'hdr/bad-name': (r, q) => { insertAt(r, q, `${r.pick(['X@Y', 'X(Y)', 'X Y', 'X"Y', 'X/Y', 'é', 'X\x00Y', '[x]', 'X{Y}'])}: v`); },
  'hdr/empty-name': (r, q) => { insertAt(r, q, ': value'); },
  'hdr/no-colon': (r, q) => { insertAt(r, q, r.pick(['NoColonHere', 'X-Y value', 'Content-Length'])); },
  'hdr/obs-fold': (r, q) => { insertAt(r, q, `X-Folded: first\r\n${r.pick([' ', '\t', '  '])}second`); },
  'hdr/ctl-in-value': (r, q) => { insertAt(r, q, `X-Ctl: a${String.fromCharCode(r.pick(CTLS))}b`); },
  'hdr/bare-cr': (r, q) => { insertAt(r, q, `X-Cr: a\rb`); },
  'hdr/bare-lf-line': (r, q) => { insertAt(r, q, `X-Lf: a\nX-Smuggled: b`); },
  'hdr/obs-text': (r, q) => { insertAt(r, q, `X-Latin: caf\xe9 \xff\x80`); }, // allowed: obs-text
  'hdr/long-value': (r, q) => { insertAt(r, q, ['X-Big', 'b'.repeat(r.pick([16000, 16500, 17000, 40000]))]); },
  'hdr/many': (r, q) => { const n = r.pick([95, 99, 101, 150, 1000]); for (let i = 0; i < n; i++) q.headers.push([`X-H${i}`, 'v']); },
  'hdr/auth': (r, q) => {
    const v = r.pick(['Bearer', 'Bearer ', 'Bearer  sk-scrim-test-0123456789', 'bearer sk-scrim-test-0123456789', 'Basic !!!', 'Basic', `Bearer ${'k'.repeat(5000)}`, 'Bearer sk-scrim-test-0123456789, Bearer x']);
    if (r.chance(0.5)) setHeader(q, 'Authorization', v); else insertAt(r, q, ['Authorization', v]);
  },
  'hdr/proxy-auth': (r, q) => { setHeader(q, 'Proxy-Authorization', r.pick(['Basic', 'Basic ====', 'Basic ' + Buffer.from('nocolon').toString('base64'), 'Bearer', 'Digest x', 'Basic ' + 'A'.repeat(3000)])); },
  'hdr/content-type': (r, q) => { ensureBody(q); setHeader(q, 'Content-Type', r.pick(['text/plain', 'multipart/form-data; boundary=x', 'application/x-www-form-urlencoded', 'application/json; charset=latin1', '', 'application/octet-stream'])); },
  'hdr/expect': (r, q) => { ensureBody(q); setHeader(q, 'Expect', r.pick(['100-continue', '100-Continue', 'something-else', '100-continue, x'])); },
  'hdr/upgrade': (r, q) => { setHeader(q, 'Connection', 'Upgrade'); setHeader(q, 'Upgrade', r.pick(['websocket', 'h2c', 'TLS/1.2'])); },
  'hdr/connection': (r, q) => { setHeader(q, 'Connection', r.pick(['keep-alive', 'close, close', 'Content-Length', 'Authorization', 'x, y, z', '', 'Transfer-Encoding'])); },
  'hdr/content-encoding': (r, q) => {
    // A compressed body: scrim cannot read it, so it must not forward it.
    ensureBody(q);
    q.body = zlib.gzipSync(q.body);
    setHeader(q, 'Content-Encoding', r.pick(['gzip', 'br', 'deflate']));
    if (!q.chunked) setHeader(q, 'Content-Length', String(q.body.length));
  },
  // -- bodies
  'body/truncated': (r, q) => { ensureBody(q); q.body = q.body.subarray(0, r.int(q.body.length)); q.chunked = false; q.fin = r.chance(0.5); if (q.chunks) q.chunks = null; },
  'body/extra': (r, q) => { ensureBody(q); q.tail = Buffer.from(r.pick(['garbage', '\r\n', `GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n`, '{"x":1}', '\x00\x00'])); },
  'body/cl-short': (r, q) => { ensureBody(q); if (!q.chunked) setHeader(q, 'Content-Length', String(r.int(bodyLen(q)))); },
  'body/cl-long': (r, q) => { ensureBody(q); if (!q.chunked) setHeader(q, 'Content-Length', String(bodyLen(q) + r.range(1, 100))); q.fin = r.chance(0.5); },
  'body/empty': (r, q) => { ensureBody(q); q.body = Buffer.alloc(0); if (!q.chunked) setHeader(q, 'Content-Length', '0'); },
  'body/oversize-cl': (r, q) => { ensureBody(q); q.body = Buffer.concat([q.body, Buffer.alloc(r.pick([70000, 200000]), 0x20)]); q.chunked = false; dropHeader(q, 'transfer-encoding'); setHeader(q, 'Content-Length', String(q.body.length)); },
  'body/oversize-chunked': (r, q) => { toChunked(r, q); const pad = Buffer.alloc(80000, 0x20); q.body = Buffer.concat([q.body.subarray(0, q.body.length - 1), pad, q.body.subarray(q.body.length - 1)]); q.chunks = [8192, 8192, 8192, 8192, 8192, 8192, 8192, 8192, 8192, 8192, q.body.length - 81920]; },
  'body/json-broken': (r, q) => {
    ensureBody(q);
    const s = q.body.toString('utf8');
    const v = r.pick([s.slice(0, -1), s.replace('"messages"', 'messages'), s.replace(':', ''), `${s}}`, s.replace('[', '{'), '[' .repeat(5000), `{"a":${'['.repeat(100)}${']'.repeat(100)}}`, s.replace('"role"', '"role\\x"'), s.replace(PII.email, `${PII.email}\udc00`)]);
    q.body = Buffer.from(v);
    if (!q.chunked) setHeader(q, 'Content-Length', String(q.body.length));
  },
  'body/json-escaped': (r, q) => {
    // Valid JSON spelling the personal data with \u escapes: must be scrubbed all the same.
    ensureBody(q);
    const esc = (v) => [...v].map((ch) => (r.chance(0.3) ? `\\u${ch.charCodeAt(0).toString(16).padStart(4, '0')}` : ch)).join('');
    let s = q.body.toString('utf8');
    for (const v of PII_VALUES) s = s.split(v).join(esc(v));
    q.body = Buffer.from(s);
    if (!q.chunked) setHeader(q, 'Content-Length', String(q.body.length));
  },
  'body/nul-or-bad-utf8': (r, q) => {
    ensureBody(q);
    const s = q.body.toString('latin1');
    const at = s.indexOf(PII.email);
    const ins = r.pick(['\\u0000', '\x00', '\xff', '\xc3\x28', '\\ud800', '\xed\xa0\x80', '\xf4\x90\x80\x80']);
    q.body = Buffer.from(at >= 0 ? s.slice(0, at) + ins + s.slice(at) : ins + s, 'latin1');
    if (!q.chunked) setHeader(q, 'Content-Length', String(q.body.length));
  },
  // -- chunked encoding
  'chunk/bad-size': (r, q) => {
    toChunked(r, q);
    const size = r.pick(['zz', '-1', '0x10', ' 10', '10 ', '+10', '', 'fffffffffffffffff1', 'ffffffffffffffff', '7fffffffffffffff', '1e', '0000000000000000000000000001']);
    q.rawBody = Buffer.concat([Buffer.from(`${size}\r\n`), q.body, Buffer.from('\r\n0\r\n\r\n')]);
  },
  'chunk/ext': (r, q) => {
    toChunked(r, q);
    const ext = r.pick([';a=b', ';name="quoted"', ' ;a', `;${'e'.repeat(5000)}`, ';\x00', ';a=b;c=d']);
    q.rawBody = encodeChunks(q.body, q.chunks, { ext });
  },
  'chunk/missing-crlf': (r, q) => { toChunked(r, q); const e = encodeChunks(q.body, q.chunks); const i = e.indexOf('\r\n', e.indexOf('\r\n') + 2 + q.chunks[0]); q.rawBody = Buffer.concat([e.subarray(0, i), e.subarray(i + 2)]); },
  'chunk/data-longer': (r, q) => { toChunked(r, q); q.rawBody = Buffer.concat([Buffer.from(`${(q.body.length - 5).toString(16)}\r\n`), q.body, Buffer.from('\r\n0\r\n\r\n')]); },
  'chunk/data-shorter': (r, q) => { toChunked(r, q); q.rawBody = Buffer.concat([Buffer.from(`${(q.body.length + 5).toString(16)}\r\n`), q.body, Buffer.from('\r\n0\r\n\r\n')]); q.fin = r.chance(0.5); },
  'chunk/no-last': (r, q) => { toChunked(r, q); q.rawBody = encodeChunks(q.body, q.chunks, { last: '' }); q.fin = r.chance(0.5); },
  'chunk/trailers': (r, q) => { toChunked(r, q); q.rawBody = encodeChunks(q.body, q.chunks, { last: `0\r\n${r.pick(['X-T: 1\r\n', 'Content-Length: 5\r\n', 'Host: evil\r\n', 'bad trailer\r\n', 'X-T: a\x00b\r\n'])}\r\n` }); },
  'chunk/bare-lf': (r, q) => { toChunked(r, q); q.rawBody = encodeChunks(q.body, q.chunks, { eol: r.chance(0.5) ? '\n' : '\r' }); },
  'chunk/zero-first': (r, q) => { toChunked(r, q); q.rawBody = Buffer.concat([Buffer.from('0\r\n\r\n'), encodeChunks(q.body, q.chunks)]); },
  // -- delivery
  'deliver/drip': (r, q) => { q.pieces = r.range(3, 20); },
  'deliver/eof-early': (r, q) => { q.cutAt = r.next(); q.fin = true; },
};

/** Byte-level mutations of the serialized request. */
const BYTEWISE = {
  'bytes/flip': (r, b, q) => { const n = r.range(1, 4); for (let i = 0; i < n; i++) b[pos(r, b, q)] = r.int(256); return b; },
  'bytes/bitflip': (r, b, q) => { const n = r.range(1, 3); for (let i = 0; i < n; i++) b[pos(r, b, q)] ^= 1 << r.int(8); return b; },
  'bytes/insert': (r, b, q) => {
    const at = pos(r, b, q);
    const ins = r.chance(0.5) ? Buffer.from(r.pick(['\r\n', '\n', '\r', '\x00', ':', ' ', '\t', '\r\n\r\n', '"', '\\', '}', '0\r\n\r\n', '\xff'])) : r.bytes(r.range(1, 8));
    return Buffer.concat([b.subarray(0, at), ins, b.subarray(at)]);
  },
  'bytes/delete': (r, b, q) => { const at = pos(r, b, q); const n = r.range(1, 16); return Buffer.concat([b.subarray(0, at), b.subarray(Math.min(b.length, at + n))]); },
  'bytes/duplicate': (r, b, q) => { const at = pos(r, b, q); const n = r.range(1, 40); const seg = b.subarray(at, Math.min(b.length, at + n)); return Buffer.concat([b.subarray(0, at), seg, b.subarray(at)]); },
  'bytes/crlf-to-lf': (r, b) => {
    const idx = [];
    for (let i = b.indexOf('\r\n'); i >= 0; i = b.indexOf('\r\n', i + 1)) idx.push(i);
    if (idx.length === 0) return b;
    const at = r.pick(idx);
    return Buffer.concat([b.subarray(0, at), b.subarray(at + 1)]);
  },
  'bytes/truncate': (r, b, q) => { q.fin = r.chance(0.7); return b.subarray(0, r.int(b.length)); },
};

/** A position to mutate: mostly in the head, where the parser is. */
function pos(r, b, q) {
  const headEnd = b.indexOf('\r\n\r\n', q.prefix ? q.prefix.length : 0);
  if (headEnd > 0 && r.chance(0.65)) return r.int(headEnd + 4);
  return r.int(b.length);
}

const STRUCTURAL_NAMES = Object.keys(STRUCTURAL);
const BYTEWISE_NAMES = Object.keys(BYTEWISE);

/**
 * Case `index` of the run seeded `seed`, for a gateway whose key is
 * ctx.key and whose provider listens at ctx.providerHostPort.
 * Returns {index, template, mutation, bytes (Buffer), fin (half-close
 * after sending), pieces (send in this many writes), method (of the first
 * request, for reading HEAD answers)}.
 */
export function generateCase(seed, index, ctx) {
  const r = caseRng(seed, index);
  PROMPT = promptOf(`c${index}`);
  const tpl = weighted(r, TEMPLATE_WEIGHTS);
  const q = templates(ctx)[tpl]();
  if (q.chunked && !q.chunks) q.chunks = cutSizes(r, q.body.length);
  let mutation;
  let bytes;
  const x = r.next();
  if (x < 0.04) {
    mutation = 'none';
    bytes = serialize(q);
  } else if (x < 0.70) {
    mutation = r.pick(STRUCTURAL_NAMES);
    STRUCTURAL[mutation](r, q);
    bytes = serialize(q);
  } else {
    mutation = r.pick(BYTEWISE_NAMES);
    bytes = BYTEWISE[mutation](r, Buffer.from(serialize(q)), q);
  }
  if (q.cutAt !== undefined) bytes = bytes.subarray(0, Math.floor(bytes.length * q.cutAt));
  // A CONNECT that got its 200 would wait for a TLS handshake: hang up.
  const fin = q.fin !== undefined ? q.fin : (tpl === 'connect' || r.chance(0.15));
  const methodAt = (at) => bytes.toString('latin1', at, at + 64).replace(/^(\r\n)+/, '').split(/[ \r\n]/)[0];
  const methods = [methodAt(0)];
  if (q.prefix) methods.push(methodAt(q.prefix.length));
  return {
    index, template: tpl, mutation, bytes, fin,
    pieces: q.pieces || 1,
    method: methods[0],
    methods, // of the requests in the bytes, as far as known (HEAD answers have no body)
  };
}

// ---------------------------------------------------------------- CLI

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const arg = (name, dflt) => {
    const i = process.argv.indexOf(`--${name}`);
    return i > 0 ? process.argv[i + 1] : dflt;
  };
  const seed = Number(arg('seed', '8'));
  const index = Number(arg('case', '0'));
  const port = arg('port', 'PORT');
  const c = generateCase(seed, index, { key: 'sk-scrim-test-0123456789', providerHostPort: `127.0.0.1:${port}` });
  process.stdout.write(`seed ${seed} case ${index}: ${c.template} / ${c.mutation}, ${c.bytes.length} bytes, ` +
    `${c.pieces} piece(s), ${c.fin ? 'half-close after sending' : 'no half-close'}\n`);
  process.stdout.write(`${JSON.stringify(c.bytes.toString('latin1'))}\n`);
}
