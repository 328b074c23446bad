// The soak's load generator (bench/soak.sh): for --seconds, --workers
// clients send a mix of requests through one scrim and check every answer.
//
//   base-URL chat, not streamed         (keep-alive or a fresh connection)
//   base-URL chat, streamed (SSE)
//   Anthropic messages through /anthropic/
//   GET /v1/models
//   HTTPS proxy mode: CONNECT api.openai.com:443 with the virtual key as
//     Proxy-Authorization, TLS with scrim's CA, chat (streamed or not)
//     inside; a worker keeps its tunnel and opens a fresh one now and then
//   a virtual key with a small rpm limit: 200 or an expected 429
//
// Every prompt carries personal data; an answer must hold it restored
// (the provider echoes the scrubbed prompt). Anything else counts as an
// error.
//
// Bad traffic: --bad-pct percent (default 10) of a worker's requests,
// picked with a seeded PRNG (--seed, default 1; one stream per worker), are
// one of the kinds in BAD below, each with its expected outcome:
//
//   head-bad-line     "GET /v1/models HTTP/1.1 junk"       400 (or close)
//   head-cl-te        Content-Length and Transfer-Encoding 400 (or close)
//   head-nul          a NUL byte inside a header value      400 (or close)
//   head-obs-fold     a header continued on the next line   400 (or close)
//   head-huge         one 20 KiB header (max 16 KiB)        431 (or close)
//   json-invalid      a chat body that is not JSON          400 invalid_json
//   body-over-cap     Content-Length 9 MiB (cap 8 MiB), 4 KiB sent, then
//                     wait                                  413 (or close)
//   key-unknown       a well-formed key scrim never issued  401
//                     (a different one each time)
//   key-revoked       --revoked-key, revoked before the run 401
//   abort-request     half the body sent, then the socket destroyed
//                     (nothing to check on the client: scrim's fds and
//                     memory tell)
//   abort-stream      a slow SSE answer, the socket destroyed after its
//                     first bytes                           200 head first
//   slow-client       half a request head, then nothing     408 or close
//                     within header_timeout (10 s) + 5 s; at most one at a
//                     time in the whole run, run beside the worker's loop
//
// An outcome other than the expected one counts as an error. Prints a
// progress line every 30 s and, at the end, one line `SOAK_LOAD {json}` with
// the counts (bad traffic under "bad", per kind: sent, as expected,
// unexpected, and the outcomes seen).
//
//   node bench/soak_load.mjs --scrim 127.0.0.1:PORT --key K --limited-key K2
//        --revoked-key K3 --ca scrim-ca.pem --seconds 600 [--workers 4]
//        [--pause-ms 20] [--bad-pct 10] [--seed 1]

import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { openConnection, requestBytes, ResponseParser, parseArgs, hostPort } from './proxy/common.mjs';

const o = parseArgs(process.argv.slice(2), {
  scrim: '', key: '', 'limited-key': '', 'revoked-key': '', ca: '', seconds: 600, workers: 4, 'pause-ms': 20,
  'bad-pct': 10, seed: 1,
});
const scrim = hostPort(o.scrim);
const ca = fs.readFileSync(o.ca, 'utf8');
const EMAIL = 'maria.gonzalez@example.com';
const CARD = '4111 1111 1111 1111';
const IBAN = 'DE89 3704 0044 0532 0130 00';

const counts = { total: 0, ok: 0, limited429: 0, errors: 0, byKind: {}, badTotal: 0, bad: {}, errorSamples: [] };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
let seq = 0;
const promptOf = (kind) => `soak ${kind} ${++seq}: mail ${EMAIL}, card ${CARD}, IBAN ${IBAN}`;

/** Text of an SSE body: OpenAI deltas or Anthropic text deltas, joined. */
function sseText(body) {
  let s = '';
  for (const line of body.split(/\r?\n/)) {
    if (!line.startsWith('data:')) continue;
    const d = line.slice(5).trim();
    if (d === '[DONE]') continue;
    try {
      const j = JSON.parse(d);
      for (const c of j.choices || []) if (c.delta && typeof c.delta.content === 'string') s += c.delta.content;
      if (j.type === 'content_block_delta' && j.delta && typeof j.delta.text === 'string') s += j.delta.text;
    } catch { /* not JSON */ }
  }
  return s;
}

function record(kind, ok, why) {
  counts.total++;
  const k = counts.byKind[kind] || (counts.byKind[kind] = { ok: 0, errors: 0, limited429: 0 });
  if (ok === 'limited') { counts.limited429++; k.limited429++; return; }
  if (ok) { counts.ok++; k.ok++; return; }
  counts.errors++;
  k.errors++;
  if (counts.errorSamples.length < 20) counts.errorSamples.push(`${new Date().toISOString()} ${kind}: ${why}`);
}

/** Check an answer to a prompt: status 200 and the prompt restored. */
function check(kind, status, body, text, { stream, anthropic = false }) {
  if (status !== 200) return record(kind, false, `status ${status}: ${String(body).slice(0, 200)}`);
  let got;
  if (text === null) got = null;
  else if (stream) got = sseText(body);
  else {
    try {
      const j = JSON.parse(body);
      got = anthropic ? (j.content || []).map((c) => c.text || '').join('') : j.choices?.[0]?.message?.content;
    } catch { got = undefined; }
  }
  if (text !== null && (typeof got !== 'string' || !got.startsWith(`echo: ${text}`))) {
    return record(kind, false, `answer ${JSON.stringify(String(got).slice(0, 160))}`);
  }
  if (stream && !anthropic && !body.includes('data: [DONE]')) return record(kind, false, 'stream without [DONE]');
  return record(kind, true);
}

/** One request over node's http client (base-URL mode). */
function httpReq(agent, { method = 'POST', path, headers = {}, body }) {
  return new Promise((resolve, reject) => {
    const h = { ...headers };
    if (body !== undefined) { h['content-type'] = 'application/json'; h['content-length'] = Buffer.byteLength(body); }
    const req = http.request({ host: scrim.host, port: scrim.port, method, path, headers: h, agent }, (res) => {
      const parts = [];
      res.on('data', (d) => parts.push(d));
      res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(parts).toString('utf8') }));
      res.on('error', reject);
      res.on('aborted', () => reject(new Error('response aborted')));
    });
    req.setTimeout(60_000, () => req.destroy(new Error('timeout after 60 s')));
    req.on('error', reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

const chat = (text, extra = {}) => JSON.stringify({ model: 'gpt-4o-mini', max_tokens: 64, messages: [{ role: 'user', content: text }], ...extra });
const STREAM_HEADERS = { 'x-fake-chunks': '16', 'x-fake-chunk-delay-ms': '5' };

/** A proxy-mode tunnel: requests one after another over one TLS connection. */
class Tunnel {
  async open() {
    const { sock } = await openConnection({
      target: scrim, connect: 'api.openai.com:443',
      proxyAuth: `Basic ${Buffer.from(`soak:${o.key}`).toString('base64')}`,
      tls: { servername: 'api.openai.com', ca }, timeoutMs: 30_000,
    });
    this.sock = sock;
    this.parser = new ResponseParser();
    this.waiting = null;
    sock.on('data', (d) => {
      let done;
      try { done = this.parser.feed(d); } catch (e) { this.fail(e); return; }
      if (done.length && this.waiting) { const w = this.waiting; this.waiting = null; w.resolve(done[0]); }
    });
    sock.on('error', (e) => this.fail(e));
    sock.on('close', () => this.fail(new Error('tunnel closed')));
  }

  fail(e) {
    this.dead = true;
    if (this.waiting) { const w = this.waiting; this.waiting = null; w.reject(e); }
  }

  request(path, headers, body) {
    return new Promise((resolve, reject) => {
      this.waiting = { resolve, reject };
      this.sock.write(requestBytes({ path, host: 'api.openai.com', headers: { 'Content-Type': 'application/json', ...headers }, body }));
      setTimeout(() => { if (this.waiting) this.fail(new Error('timeout after 60 s')); }, 60_000).unref();
    });
  }

  close() { if (this.sock) this.sock.destroy(); }
}

// ---------------------------------------------------------------- bad traffic

/** mulberry32: a small seeded PRNG, so a run's mix can be repeated. */
function prng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function recordBad(kind, outcome, expected, why) {
  counts.badTotal++;
  const k = counts.bad[kind] || (counts.bad[kind] = { sent: 0, expected: 0, unexpected: 0, outcomes: {} });
  k.sent++;
  k.outcomes[outcome] = (k.outcomes[outcome] || 0) + 1;
  if (expected) { k.expected++; return; }
  k.unexpected++;
  counts.errors++;
  if (counts.errorSamples.length < 20) counts.errorSamples.push(`${new Date().toISOString()} bad ${kind}: ${outcome}${why ? `: ${why}` : ''}`);
}

/**
 * Send raw bytes to scrim and wait for the first response's status, or the
 * connection's end. Resolves { status, body } or { closed: 'close'|'reset'|
 * 'timeout' }. With `onHead` it resolves as soon as the status line, the
 * head and the first bytes of the body are in, and destroys the socket
 * (abort-stream).
 */
function rawExchange(bytes, { timeoutMs = 20_000, onHead = false } = {}) {
  return new Promise((resolve) => {
    const sock = net.connect({ host: scrim.host, port: scrim.port });
    const parser = new ResponseParser();
    let settled = false;
    let raw = Buffer.alloc(0);
    const done = (r) => { if (settled) return; settled = true; clearTimeout(timer); sock.destroy(); resolve(r); };
    const timer = setTimeout(() => done({ closed: 'timeout' }), timeoutMs);
    sock.on('connect', () => { if (bytes.length) sock.write(bytes); });
    sock.on('data', (d) => {
      raw = Buffer.concat([raw, d]);
      if (onHead) {
        const m = /^HTTP\/1\.[01] (\d{3})/.exec(raw.toString('latin1', 0, 16));
        if (m && raw.indexOf('\r\n\r\n') > 0 && raw.length > raw.indexOf('\r\n\r\n') + 4) {
          done({ status: Number(m[1]), body: '' });
        }
        return;
      }
      let r;
      try { r = parser.feed(d); } catch (e) { done({ closed: `unparsable answer (${e.message})` }); return; }
      if (r.length) done({ status: r[0].status, body: r[0].body.toString("utf8") });
    });
    sock.on('error', (e) => {
      // A reset after a complete status line still counts as that status.
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(raw.toString('latin1', 0, 16));
      done(m ? { status: Number(m[1]), body: raw.toString('utf8') } : { closed: e.code === 'ECONNRESET' || e.code === 'EPIPE' ? 'reset' : `error ${e.code || e.message}` });
    });
    sock.on('end', () => {
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(raw.toString('latin1', 0, 16));
      done(m ? { status: Number(m[1]), body: raw.toString('utf8') } : { closed: 'close' });
    });
  });
}

const head = (lines) => Buffer.from(`${lines.join('\r\n')}\r\n\r\n`, 'latin1');
const outcomeOf = (r) => (r.status ? String(r.status) : r.closed);

/** Expect one of `statuses`, or (when closeOk) scrim closing without one. */
function expectStatus(kind, r, statuses, { closeOk = false, bodyRe = null } = {}) {
  const out = outcomeOf(r);
  let ok = r.status ? statuses.includes(r.status) : closeOk && (r.closed === 'close' || r.closed === 'reset');
  if (ok && r.status && bodyRe && !bodyRe.test(r.body)) ok = false;
  recordBad(kind, out, ok, ok ? '' : String(r.body || '').slice(0, 160));
}

let slowOutstanding = null; // the one slow client allowed at a time

async function slowClient() {
  const t = Date.now();
  const r = await rawExchange(Buffer.from(`POST /v1/chat/completions HTTP/1.1\r\nHost: scrim\r\nAuthorization: Bearer ${o.key}\r\n`, 'latin1'), { timeoutMs: 15_000 });
  const s = ((Date.now() - t) / 1000).toFixed(0);
  const ok = r.status === 408 || r.closed === 'close' || r.closed === 'reset';
  recordBad('slow-client', outcomeOf(r), ok, ok ? '' : `after ${s} s`);
}

const BAD = {
  'head-bad-line': async () => {
    const r = await rawExchange(head(['GET /v1/models HTTP/1.1 junk', 'Host: scrim', `Authorization: Bearer ${o.key}`]));
    expectStatus('head-bad-line', r, [400], { closeOk: true });
  },
  'head-cl-te': async () => {
    const r = await rawExchange(Buffer.concat([head(['POST /v1/chat/completions HTTP/1.1', 'Host: scrim', `Authorization: Bearer ${o.key}`,
      'Content-Type: application/json', 'Content-Length: 5', 'Transfer-Encoding: chunked']), Buffer.from('0\r\n\r\n')]));
    expectStatus('head-cl-te', r, [400], { closeOk: true });
  },
  'head-nul': async () => {
    const r = await rawExchange(head(['GET /v1/models HTTP/1.1', 'Host: scrim', `Authorization: Bearer ${o.key}`, 'X-Soak: a\0b']));
    expectStatus('head-nul', r, [400], { closeOk: true });
  },
  'head-obs-fold': async () => {
    const r = await rawExchange(head(['GET /v1/models HTTP/1.1', 'Host: scrim', `Authorization: Bearer ${o.key}`, 'X-Soak: first', ' folded']));
    expectStatus('head-obs-fold', r, [400], { closeOk: true });
  },
  'head-huge': async () => {
    const r = await rawExchange(head(['GET /v1/models HTTP/1.1', 'Host: scrim', `Authorization: Bearer ${o.key}`, `X-Soak: ${'h'.repeat(20 * 1024)}`]));
    expectStatus('head-huge', r, [431], { closeOk: true });
  },
  'json-invalid': async () => {
    const r = await httpReq(false, { path: '/v1/chat/completions', headers: { authorization: `Bearer ${o.key}` }, body: `{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "${promptOf('bad')}"` });
    expectStatus('json-invalid', r, [400], { bodyRe: /invalid_json/ });
  },
  'body-over-cap': async () => {
    const r = await rawExchange(Buffer.concat([head(['POST /v1/chat/completions HTTP/1.1', 'Host: scrim', `Authorization: Bearer ${o.key}`,
      'Content-Type: application/json', `Content-Length: ${9 * 1024 * 1024}`]), Buffer.alloc(4096, 0x20)]));
    expectStatus('body-over-cap', r, [413], { closeOk: true });
  },
  'key-unknown': async () => {
    const r = await httpReq(false, { path: '/v1/chat/completions', headers: { authorization: `Bearer sk-scrim-${`soakunknown${++seq}`.padEnd(43, 'x')}` }, body: chat(promptOf('bad')) });
    expectStatus('key-unknown', r, [401], { bodyRe: /invalid_api_key/ });
  },
  'key-revoked': async () => {
    const r = await httpReq(false, { path: '/v1/chat/completions', headers: { authorization: `Bearer ${o['revoked-key']}` }, body: chat(promptOf('bad')) });
    expectStatus('key-revoked', r, [401], { bodyRe: /invalid_api_key/ });
  },
  'abort-request': async () => {
    const body = Buffer.from(chat(promptOf('abort')));
    const bytes = Buffer.concat([head(['POST /v1/chat/completions HTTP/1.1', 'Host: scrim', `Authorization: Bearer ${o.key}`,
      'Content-Type: application/json', `Content-Length: ${body.length}`]), body.subarray(0, body.length >> 1)]);
    await new Promise((resolve) => {
      const sock = net.connect({ host: scrim.host, port: scrim.port }, () => {
        sock.write(bytes, () => setTimeout(() => { sock.destroy(); resolve(); }, 5));
      });
      sock.on('error', () => { sock.destroy(); resolve(); });
    });
    recordBad('abort-request', 'aborted', true);
  },
  'abort-stream': async () => {
    const body = Buffer.from(chat(promptOf('abort'), { stream: true }));
    const r = await rawExchange(Buffer.concat([head(['POST /v1/chat/completions HTTP/1.1', 'Host: scrim', `Authorization: Bearer ${o.key}`,
      'Content-Type: application/json', 'X-Fake-Chunks: 40', 'X-Fake-Chunk-Delay-Ms: 50', `Content-Length: ${body.length}`]), body]), { onHead: true });
    expectStatus('abort-stream', r, [200]);
  },
};
const BAD_KINDS = Object.keys(BAD);

/** One bad request of a kind picked with `rnd`; the slow client runs beside. */
async function badRequest(rnd) {
  let kind = BAD_KINDS[Math.floor(rnd() * (BAD_KINDS.length + 1))] || 'slow-client';
  if (kind === 'slow-client') {
    if (!slowOutstanding) {
      slowOutstanding = slowClient().finally(() => { slowOutstanding = null; });
      return;
    }
    kind = BAD_KINDS[Math.floor(rnd() * BAD_KINDS.length)];
  }
  await BAD[kind]();
}

async function worker(w, deadline) {
  const keepAlive = new http.Agent({ keepAlive: true, maxSockets: 1 });
  let tunnel = null;
  let n = 0;
  const rnd = prng((o.seed * 1000003 + w * 7919) >>> 0);
  while (Date.now() < deadline) {
    n++;
    if (rnd() * 100 < o['bad-pct']) {
      try { await badRequest(rnd); } catch (e) { recordBad('network', e.message, false); }
      if (o['pause-ms'] > 0) await sleep(o['pause-ms']);
      continue;
    }
    const roll = (n * 7 + w * 3) % 20; // a fixed, even mix
    const agent = n % 3 === 0 ? false : keepAlive;
    const auth = { authorization: `Bearer ${o.key}` };
    try {
      if (roll < 5) {
        const text = promptOf('chat');
        const r = await httpReq(agent, { path: '/v1/chat/completions', headers: auth, body: chat(text) });
        check('base chat', r.status, r.body, text, { stream: false });
      } else if (roll < 9) {
        const text = promptOf('stream');
        const r = await httpReq(agent, { path: '/v1/chat/completions', headers: { ...auth, ...STREAM_HEADERS }, body: chat(text, { stream: true }) });
        check('base stream', r.status, r.body, text, { stream: true });
      } else if (roll < 11) {
        const text = promptOf('anthropic');
        const stream = n % 2 === 0;
        const body = JSON.stringify({ model: 'claude-3-5-sonnet-latest', max_tokens: 64, stream, messages: [{ role: 'user', content: text }] });
        const r = await httpReq(agent, { path: '/anthropic/v1/messages', headers: { 'x-api-key': o.key, 'anthropic-version': '2023-06-01', ...(stream ? STREAM_HEADERS : {}) }, body });
        check(stream ? 'anthropic stream' : 'anthropic', r.status, r.body, text, { stream, anthropic: true });
      } else if (roll < 12) {
        const r = await httpReq(agent, { method: 'GET', path: '/v1/models', headers: auth });
        check('models', r.status, r.body, null, { stream: false });
      } else if (roll < 18) {
        // A fresh tunnel every 25 proxy requests or so: handshakes and the leaf cache too.
        if (!tunnel || tunnel.dead || n % 25 === 0) {
          if (tunnel) tunnel.close();
          tunnel = new Tunnel();
          await tunnel.open();
        }
        const stream = n % 2 === 1;
        const text = promptOf('proxy');
        const r = await tunnel.request('/v1/chat/completions', stream ? STREAM_HEADERS : {}, chat(text, stream ? { stream: true } : {}));
        check(stream ? 'proxy stream' : 'proxy chat', r.status, r.body.toString('utf8'), text, { stream });
      } else {
        const text = promptOf('limited');
        const r = await httpReq(agent, { path: '/v1/chat/completions', headers: { authorization: `Bearer ${o['limited-key']}` }, body: chat(text) });
        if (r.status === 429 && /rate_limit_exceeded/.test(r.body)) record('limited key', 'limited');
        else check('limited key', r.status, r.body, text, { stream: false });
      }
    } catch (e) {
      record('network', false, e.message);
      if (tunnel) { tunnel.close(); tunnel = null; }
      await sleep(200);
    }
    if (o['pause-ms'] > 0) await sleep(o['pause-ms']);
  }
  if (tunnel) tunnel.close();
  keepAlive.destroy();
}

const t0 = Date.now();
const deadline = t0 + o.seconds * 1000;
const progress = setInterval(() => {
  const s = Math.round((Date.now() - t0) / 1000);
  console.log(`SOAK_PROGRESS t=${s}s total=${counts.total} ok=${counts.ok} 429=${counts.limited429} bad=${counts.badTotal} errors=${counts.errors}`);
}, 30_000);
await Promise.all(Array.from({ length: o.workers }, (_, w) => worker(w, deadline)));
while (slowOutstanding) await slowOutstanding;
clearInterval(progress);
counts.seconds = (Date.now() - t0) / 1000;
console.log(`SOAK_LOAD ${JSON.stringify(counts)}`);
