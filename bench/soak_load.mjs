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
// error. Prints a progress line every 30 s and, at the end, one line
// `SOAK_LOAD {json}` with the counts.
//
//   node bench/soak_load.mjs --scrim 127.0.0.1:PORT --key K --limited-key K2
//        --ca scrim-ca.pem --seconds 600 [--workers 4] [--pause-ms 20]

import fs from 'node:fs';
import http from 'node:http';
import { openConnection, requestBytes, ResponseParser, parseArgs, hostPort } from './proxy/common.mjs';

const o = parseArgs(process.argv.slice(2), {
  scrim: '', key: '', 'limited-key': '', ca: '', seconds: 600, workers: 4, 'pause-ms': 20,
});
const scrim = hostPort(o.scrim);
const ca = fs.readFileSync(o.ca, 'utf8');
const EMAIL = 'maria.gonzalez@example.com';
const CARD = '4111 1111 1111 1111';
const IBAN = 'DE89 3704 0044 0532 0130 00';

const counts = { total: 0, ok: 0, limited429: 0, errors: 0, byKind: {}, errorSamples: [] };
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

async function worker(w, deadline) {
  const keepAlive = new http.Agent({ keepAlive: true, maxSockets: 1 });
  let tunnel = null;
  let n = 0;
  while (Date.now() < deadline) {
    n++;
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
  console.log(`SOAK_PROGRESS t=${s}s total=${counts.total} ok=${counts.ok} 429=${counts.limited429} errors=${counts.errors}`);
}, 30_000);
await Promise.all(Array.from({ length: o.workers }, (_, w) => worker(w, deadline)));
clearInterval(progress);
counts.seconds = (Date.now() - t0) / 1000;
console.log(`SOAK_LOAD ${JSON.stringify(counts)}`);
