// Client abort at a random byte, ABORT_RUNS times (RELIABILITY.md L4:
// "Client abort at a random byte, 1,000 runs"). Each run opens a fresh
// connection, sends a chat request with personal data (streamed or not)
// and closes the socket (FIN, or RST now and then) at a point drawn from
// a seeded RNG (ABORT_SEED, default 1; mulberry32):
//
//   request  at a random byte of the request (head or body): nothing may
//            reach the provider
//   wait     after the whole request, a random 0-250 ms before any answer
//            byte (the provider holds a non-stream answer 300 ms, a stream
//            is slow): the request reached the provider, or scrim had not
//            forwarded it yet
//   answer   after a random byte k of the answer, k in [0, L) where L is
//            the answer's length measured before the run
//
// ABORT_CONCURRENCY runs at a time. Asserted: no upstream transfer is left
// open (each one the provider saw ends finished or aborted); a streamed
// answer cut before half its bytes has its upstream transfer cancelled
// (the provider had at least 50 more events, 10 ms apart, to send);
// nothing cut inside the request reached the provider; nothing went
// upstream unscrubbed; scrim serves normal requests afterwards; its open
// fds come back to the baseline taken after a warm-up (all but idle pooled
// upstream connections exactly, and no more pooled ones than
// ABORT_CONCURRENCY or the baseline had); it exits 0 on
// SIGTERM with no sanitizer (LeakSanitizer) report. Counts are printed.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import { startFakeProvider } from '../fake_provider/provider.mjs';
import {
  startScrim, configFor, request, auth, chatBody, chatStreamContent, waitFor, show, sleep, tempDir, TEST_KEY,
} from './lib.mjs';
import path from 'node:path';

const RUNS = Number(process.env.ABORT_RUNS || 1000);
const SEED = Number(process.env.ABORT_SEED || 1);
const CONCURRENCY = Number(process.env.ABORT_CONCURRENCY || 16);
const STREAM_CHUNKS = 100;
const CHUNK_DELAY_MS = 10;
const NONSTREAM_DELAY_MS = 300;
const SANITIZER_RE = /AddressSanitizer|LeakSanitizer|runtime error:|UndefinedBehaviorSanitizer/;
const EMAIL = 'maria.gonzalez@example.com';
const CARD = '4111 1111 1111 1111';

function mulberry32(a) {
  return () => {
    a |= 0; a = (a + 0x6D2B79F5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

let provider;
let scrim;
const state = tempDir('scrim-abort-');

before(async () => {
  provider = await startFakeProvider();
  scrim = await startScrim({ config: await configFor({ providerUrl: provider.url, gateway: { state_dir: state } }) });
});

after(async () => {
  if (scrim) await scrim.kill();
  if (provider) await provider.close();
});

/**
 * scrim's open fds: {total, upstream, other}. `upstream` are TCP sockets
 * whose peer is the fake provider (libcurl's pool of idle connections,
 * which the provider may close at its keep-alive timeout); `other` is
 * every other fd (listeners, client connections, epoll, files, Redis).
 */
function fdCount() {
  const pid = scrim.proc.pid;
  const provPort = new URL(provider.url).port;
  const peer = new Map(); // socket inode -> remote port
  for (const f of ['tcp', 'tcp6']) {
    let text = '';
    try { text = fs.readFileSync(`/proc/${pid}/net/${f}`, 'utf8'); } catch { continue; }
    for (const line of text.split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length < 10) continue;
      peer.set(cols[9], String(parseInt(cols[2].split(':')[1], 16)));
    }
  }
  let total = 0;
  let upstream = 0;
  for (const f of fs.readdirSync(`/proc/${pid}/fd`)) {
    let target;
    try { target = fs.readlinkSync(`/proc/${pid}/fd/${f}`); } catch { continue; }
    total++;
    const m = target.match(/^socket:\[(\d+)\]$/);
    if (m && peer.get(m[1]) === provPort) upstream++;
  }
  return { total, upstream, other: total - upstream };
}
function fdList() {
  const out = [];
  for (const f of fs.readdirSync(`/proc/${scrim.proc.pid}/fd`)) {
    try { out.push(`${f}->${fs.readlinkSync(`/proc/${scrim.proc.pid}/fd/${f}`)}`); } catch { /* closed meanwhile */ }
  }
  return out;
}

/** Marker of run i: fixed length, so every answer of a kind has the same length. */
const markerOf = (i) => `ar${String(i).padStart(6, '0')}`;

function requestBytes(i, stream) {
  const body = JSON.stringify(chatBody(`${markerOf(i)} mail ${EMAIL} card ${CARD}`, stream ? { stream: true } : {}));
  const extra = stream
    ? `x-fake-chunks: ${STREAM_CHUNKS}\r\nx-fake-chunk-delay-ms: ${CHUNK_DELAY_MS}\r\n`
    : `x-fake-delay-ms: ${NONSTREAM_DELAY_MS}\r\n`;
  return Buffer.from(
    `POST /v1/chat/completions HTTP/1.1\r\nHost: scrim\r\nAuthorization: Bearer ${TEST_KEY}\r\n` +
    `Content-Type: application/json\r\n${extra}Connection: close\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
}

/**
 * One connection: send `bytes` (or the first `cutReq` of them), then close
 * at the point the plan says. Resolves {received, completed, answer}.
 */
function runOne(bytes, plan) {
  return new Promise((resolve) => {
    const sock = net.connect(scrim.port, '127.0.0.1');
    let received = 0;
    let done = false;
    let closedAt = null;
    const chunks = [];
    const finish = (completed) => {
      if (done) return;
      done = true;
      clearTimeout(guard);
      resolve({ received, completed, closedAt, answer: Buffer.concat(chunks).toString('latin1') });
    };
    const close = () => {
      closedAt = Date.now();
      if (plan.rst) sock.resetAndDestroy(); else sock.destroy();
      finish(false);
    };
    const guard = setTimeout(() => { sock.destroy(); finish('timeout'); }, 30_000);
    sock.on('error', () => finish(false));
    sock.on('end', () => finish(true));
    sock.on('close', () => finish(received > 0));
    sock.on('data', (d) => {
      if (done) return;
      received += d.length;
      chunks.push(d);
      if (plan.where === 'answer' && received > plan.k) close();
    });
    sock.on('connect', () => {
      if (plan.where === 'request') {
        sock.write(bytes.subarray(0, plan.k), () => setImmediate(close));
      } else if (plan.where === 'wait') {
        sock.write(bytes, () => setTimeout(close, plan.waitMs));
      } else if (plan.k === 0) {
        sock.write(bytes, () => setImmediate(close)); // byte 0 of the answer: right after sending
      } else {
        sock.write(bytes);
      }
    });
  });
}

let baselineFds;
const answerLen = {};
const runs = [];

test('warm-up: measure each kind of answer, then the fd baseline', async () => {
  for (const stream of [false, true]) {
    const r = await runOne(requestBytes(999_999, stream), { where: 'none' });
    assert.equal(r.completed, true, `warm-up ${stream ? 'stream' : 'json'}: not completed`);
    assert.match(r.answer, /^HTTP\/1\.1 200 /, r.answer.slice(0, 300));
    if (stream) assert.ok(r.answer.includes('[DONE]'), r.answer.slice(-300));
    answerLen[stream] = r.received;
  }
  // CONCURRENCY at once, so the upstream connection pool is as full as it gets.
  const rs = await Promise.all(Array.from({ length: CONCURRENCY }, (_, i) => runOne(requestBytes(999_000 + i, i % 2 === 1), { where: 'none' })));
  for (const r of rs) assert.equal(r.completed, true);
  await sleep(200);
  baselineFds = fdCount();
});

test(`${RUNS} clients abort at a random byte (seed ${SEED}): upstream cancelled, scrim keeps serving`, async (t) => {
  const rng = mulberry32(SEED);
  const plans = [];
  for (let i = 0; i < RUNS; i++) {
    const stream = rng() < 0.5;
    const bytes = requestBytes(i, stream);
    const x = rng();
    const where = x < 0.3 ? 'request' : x < 0.5 ? 'wait' : 'answer';
    const plan = { i, stream, where, rst: rng() < 0.2, bytes };
    if (where === 'request') plan.k = Math.floor(rng() * bytes.length);
    else if (where === 'wait') plan.waitMs = Math.floor(rng() * 250);
    else plan.k = Math.floor(rng() * answerLen[stream]);
    plans.push(plan);
  }
  let next = 0;
  await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
    while (next < plans.length) {
      const plan = plans[next++];
      const r = await runOne(plan.bytes, plan);
      plan.bytes = null;
      runs.push({ ...plan, ...r, answer: undefined, status: r.answer.slice(9, 12) });
    }
  }));
  assert.ok(scrim.alive(), 'scrim died');
  assert.equal(runs.filter((r) => r.completed === 'timeout').length, 0, 'a run hung 30 s');

  const byMarker = new Map();
  for (const rec of provider.requests) {
    assert.ok(!rec.body.includes(EMAIL) && !rec.body.includes(CARD), `unscrubbed upstream: ${rec.body.slice(0, 300)}`);
    const m = rec.body.match(/ar\d{6}/);
    if (m) byMarker.set(m[0], rec);
  }
  // Every upstream transfer ends (finished or cancelled): wait for the ones
  // still running (streams cut late, finishing on their own).
  await waitFor(() => [...byMarker.values()].every((rec) => rec.finished || rec.aborted),
    { timeoutMs: 20_000, intervalMs: 100, what: 'every upstream transfer to end' }).catch((e) => {
    const open = [...byMarker.entries()].filter(([, rec]) => !rec.finished && !rec.aborted).map(([m]) => m);
    throw new Error(`${e.message}: ${open.length} still open: ${open.slice(0, 10).join(' ')}`);
  });

  const counts = {};
  const problems = [];
  const cancelMs = []; // client close -> provider saw its transfer cancelled (reported, not asserted)
  for (const r of runs) {
    const rec = byMarker.get(markerOf(r.i));
    const up = !rec ? 'not forwarded' : rec.aborted ? 'upstream cancelled' : 'upstream finished';
    const kind = `${r.stream ? 'stream' : 'json'} / ${r.where}`;
    const c = counts[kind] || (counts[kind] = { runs: 0, rst: 0, completed: 0 });
    c.runs++;
    if (r.rst) c.rst++;
    if (r.completed === true) c.completed++;
    c[up] = (c[up] || 0) + 1;
    if (rec && rec.aborted && r.closedAt) cancelMs.push(Math.max(0, rec.endTime - r.closedAt));
    if (r.where === 'request' && rec) problems.push(`run ${r.i}: cut at request byte ${r.k} but the provider got it`);
    if (r.where === 'answer' && r.stream && r.k < answerLen[true] / 2 && rec && !rec.aborted) {
      problems.push(`run ${r.i}: stream cut at answer byte ${r.k} of ${answerLen[true]} but the upstream transfer was not cancelled (${up})`);
    }
    if (r.where === 'answer' && rec === undefined && r.k > 0 && r.status === '200') {
      problems.push(`run ${r.i}: a 200 answer but the provider never saw the request`);
    }
  }
  t.diagnostic(`answer lengths: json ${answerLen[false]} B, stream ${answerLen[true]} B; baseline fds ${JSON.stringify(baselineFds)}`);
  for (const [k, v] of Object.entries(counts).sort()) t.diagnostic(`${k}: ${JSON.stringify(v)}`);
  cancelMs.sort((a, b) => a - b);
  const pct = (p) => cancelMs[Math.min(cancelMs.length - 1, Math.floor(p * cancelMs.length))];
  const cancel = cancelMs.length ? { n: cancelMs.length, p50: pct(0.5), p99: pct(0.99), max: cancelMs[cancelMs.length - 1] } : null;
  t.diagnostic(`upstream cancelled after the client closed (ms): ${JSON.stringify(cancel)}`);
  if (process.env.ABORT_REPORT) fs.writeFileSync(process.env.ABORT_REPORT, JSON.stringify({ seed: SEED, runs: RUNS, answerLen, baselineFds, counts, cancel }, null, 2));
  assert.deepEqual(problems.slice(0, 10), [], `${problems.length} problems`);
  // The audit log: a record for every forwarded run, and one marked
  // client_aborted (status 499) at least for every run whose upstream
  // transfer was cancelled (records carry no marker, so these are counts).
  const forwarded = runs.filter((r) => byMarker.has(markerOf(r.i))).length;
  const cancelled = runs.filter((r) => byMarker.get(markerOf(r.i))?.aborted).length;
  let audit = {};
  await waitFor(() => {
    let recs = [];
    try {
      recs = fs.readFileSync(path.join(state, 'audit.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l))
        .filter((x) => x.type === 'request' && x.path === '/v1/chat/completions');
    } catch { /* not there yet */ }
    audit = { records: recs.length, client_aborted: recs.filter((x) => x.decision === 'client_aborted').length,
      client_aborted_499: recs.filter((x) => x.decision === 'client_aborted' && x.status === 499).length };
    return audit.records >= forwarded + 2 + CONCURRENCY /* the warm-up */ && audit.client_aborted >= cancelled;
  }, { timeoutMs: 10_000, intervalMs: 200, what: 'the audit records' }).catch((e) => {
    throw new Error(`${e.message}: ${JSON.stringify(audit)}, ${forwarded} forwarded, ${cancelled} cancelled upstream`);
  });
  assert.equal(audit.client_aborted_499, audit.client_aborted);
  t.diagnostic(`audit: ${JSON.stringify(audit)} (runs forwarded ${forwarded}, cancelled upstream ${cancelled})`);
  // Cancellation was actually exercised.
  assert.ok((counts['stream / answer']?.['upstream cancelled'] || 0) > 0, 'no streamed answer was cancelled upstream');
});

test('afterwards scrim serves, and its open fds come back to the baseline', async (t) => {
  for (const stream of [false, true]) {
    const r = await request(scrim.port, {
      method: 'POST', path: '/v1/chat/completions', headers: auth(),
      body: chatBody(`after the aborts ${EMAIL}`, stream ? { stream: true } : {}),
    });
    assert.equal(r.status, 200, show(r));
    const got = stream ? chatStreamContent(r.body) : r.json.choices[0].message.content;
    assert.equal(got, `echo: after the aborts ${EMAIL}`);
  }
  // Every fd but pooled upstream connections exactly as before the runs;
  // the pool no larger than the baseline's.
  let n = {};
  await waitFor(async () => {
    n = fdCount();
    return n.other === baselineFds.other && n.upstream <= Math.max(baselineFds.upstream, CONCURRENCY);
  }, { timeoutMs: 15_000, intervalMs: 250, what: `scrim's open fds to come back to ${JSON.stringify(baselineFds)}` }).catch((e) => {
    throw new Error(`${e.message}: ${JSON.stringify(n)} open:\n${fdList().join('\n')}`);
  });
  t.diagnostic(`open fds: baseline ${JSON.stringify(baselineFds)}, after ${JSON.stringify(n)}`);
});

test('scrim exits 0 on SIGTERM with no sanitizer report', async () => {
  const s = scrim;
  scrim = null;
  const code = await s.stop();
  assert.ok(!SANITIZER_RE.test(s.stderr()), s.stderr().slice(-4000));
  assert.equal(code, 0, `exit code ${code}; stderr tail:\n${s.stderr().slice(-3000)}`);
});
