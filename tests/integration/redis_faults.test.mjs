// Redis killed (SIGKILL, then restarted) and paused (SIGSTOP, then
// SIGCONT) in the middle of a run, under load, with virtual keys and
// limits on, for a fail_mode = closed and a fail_mode = open gateway on
// the same Redis. Clients keep sending streaming and non-streaming
// requests with personal data through every phase.
//
// Asserted: every request completes (none hangs: the client gives up only
// after far more than the Redis timeout budget); during a fault the
// closed gateway answers 200 or 503 limits_unavailable (with Retry-After)
// and forwards nothing it refused, the open one keeps serving the key it
// saw; before and after the faults everything is 200; nothing unscrubbed
// goes upstream; reservations all settle once Redis is back (nothing left
// in flight); both gateways exit 0 with no sanitizer report. The counts
// per phase are printed (REDIS_FAULTS_REPORT=FILE writes them as JSON).
//
// REDIS_FAULT_MS (default 2000) is how long each fault lasts.
//
// Then a flapping Redis (RELIABILITY.md L4): SIGSTOP and SIGCONT every
// 500 ms for SCRIM_FLAP_SECONDS (default 60) while CLIENTS clients load a
// third, fail_mode = closed gateway with the default 50 ms Redis timeout
// (REDIS_FLAP_TIMEOUT). Asserted: it never crashes, every request
// completes as 200 or 503 limits_unavailable, it serves again after the
// last SIGCONT, nothing is left in flight, nothing went upstream
// unscrubbed. The counts and scrim_redis_total (calls, timeouts, errors,
// reconnects) are printed (and added to the REDIS_FAULTS_REPORT file).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import { startFakeProvider } from '../fake_provider/provider.mjs';
import {
  startScrim, startRedis, configFor, execFile, request, chatBody, chatStreamContent, errorOf, waitFor, sleep, show,
  SCRIM_BIN,
} from './lib.mjs';

const FAULT_MS = Number(process.env.REDIS_FAULT_MS || 2000);
const CLIENTS = 8; // per gateway
// A Redis call is given up after REDIS_TIMEOUT: 500 ms rather than the
// default 50 ms keeps a loaded CI machine's scheduling hiccups (other test
// files run alongside) out of the healthy phases; the run passed with 50
// and 200 ms on a quieter machine too (REDIS_FAULTS_TIMEOUT=50ms).
const REDIS_TIMEOUT = process.env.REDIS_FAULTS_TIMEOUT || '500ms';
const CLIENT_TIMEOUT_MS = 15_000; // far beyond the Redis budget: a request that needs it hangs
const SANITIZER_RE = /AddressSanitizer|LeakSanitizer|runtime error:|UndefinedBehaviorSanitizer/;
const FLAP_SECONDS = Number(process.env.SCRIM_FLAP_SECONDS || 60);
const FLAP_MS = 500;
const FLAP_TIMEOUT = process.env.REDIS_FLAP_TIMEOUT || '50ms';
const EMAIL = 'maria.gonzalez@example.com';
const IBAN = 'DE89 3704 0044 0532 0130 00';

let provider;
let redis;
const gw = {}; // closed, open
let key;

before(async () => {
  provider = await startFakeProvider();
  redis = await startRedis({ persist: true }); // keys survive the kill
  for (const mode of ['closed', 'open']) {
    gw[mode] = await startScrim({
      config: await configFor({ providerUrl: provider.url, redis: { url: redis.url, fail_mode: mode, timeout: REDIS_TIMEOUT } }),
    });
  }
  const { stdout } = await execFile(SCRIM_BIN, ['keys', 'create', '--name', 'faults', '--rpm', '1000000',
    '--tpm', '1000000000', '--max-parallel', '64', '-c', gw.closed.configPath]);
  key = { key: stdout.match(/^key: (\S+)$/m)[1], id: stdout.match(/^id:\s+(\S+)$/m)[1] };
});

after(async () => {
  for (const g of Object.values(gw)) if (g) await g.kill();
  if (redis) await redis.stop();
  if (provider) await provider.close();
});

let phase = 'before';
const results = []; // {mode, phase, status, code, ms, marker, stream, ok, why}

/** One request through gateway `mode`; streamed every other time. */
async function one(mode, n, agent) {
  const stream = n % 2 === 0;
  const marker = `rf${crypto.randomBytes(5).toString('hex')}`;
  const text = `${marker} mail ${EMAIL}, IBAN ${IBAN}`;
  const startedIn = phase;
  const t0 = Date.now();
  const res = { mode, phase: startedIn, marker, stream };
  try {
    const r = await request(gw[mode].port, {
      method: 'POST', path: '/v1/chat/completions', agent, timeoutMs: CLIENT_TIMEOUT_MS,
      headers: { authorization: `Bearer ${key.key}`, ...(stream ? { 'x-fake-chunks': '8', 'x-fake-chunk-delay-ms': '10' } : {}) },
      body: chatBody(text, { max_tokens: 16, ...(stream ? { stream: true } : {}) }),
    });
    res.ms = Date.now() - t0;
    res.status = r.status;
    if (r.status === 200) {
      const got = stream ? chatStreamContent(r.body) : r.json?.choices?.[0]?.message?.content;
      res.ok = typeof got === 'string' && got.startsWith(`echo: ${text}`) && (!stream || r.body.includes('data: [DONE]'));
      if (!res.ok) res.why = `incomplete or wrong answer: ${show(r)}`;
    } else if (r.status === 503) {
      const e = errorOf(r);
      res.code = e.code;
      res.ok = e.code === 'limits_unavailable' && Number(r.headers['retry-after']) >= 1;
      if (!res.ok) res.why = `503 without limits_unavailable and retry-after: ${show(r)}`;
    } else {
      res.ok = false;
      res.why = `unexpected ${show(r)}`;
    }
  } catch (e) {
    res.ms = Date.now() - t0;
    res.status = 'error';
    res.ok = false;
    res.why = e.message;
  }
  res.endPhase = phase;
  results.push(res);
  return res;
}

let running = true;
function startLoad() {
  return Object.keys(gw).flatMap((mode) => Array.from({ length: CLIENTS }, async (_, w) => {
    const agent = w % 2 === 0 ? new http.Agent({ keepAlive: true, maxSockets: 1 }) : false;
    try {
      for (let n = w; running; n++) await one(mode, n, agent);
    } finally {
      if (agent) agent.destroy();
    }
  }));
}

/** Both gateways answer 200 again (probing with requests of their own). */
async function recovered(what) {
  for (const mode of Object.keys(gw)) {
    await waitFor(async () => {
      const r = await request(gw[mode].port, {
        method: 'POST', path: '/v1/chat/completions', headers: { authorization: `Bearer ${key.key}` },
        body: chatBody('probe', { max_tokens: 4 }),
      });
      return r.status === 200;
    }, { timeoutMs: 15_000, intervalMs: 100, what: `the ${mode} gateway to answer 200 after ${what}` });
  }
}

/** Requests that started and ended in phase `ph`. */
const within = (ph) => results.filter((r) => r.phase === ph && r.endPhase === ph);

const summary = {};
function count(ph) {
  const out = {};
  for (const mode of Object.keys(gw)) {
    const rs = within(ph).filter((r) => r.mode === mode);
    const by = {};
    for (const r of rs) by[r.status] = (by[r.status] || 0) + 1;
    out[mode] = { requests: rs.length, byStatus: by, maxMs: Math.max(0, ...rs.map((r) => r.ms)) };
  }
  summary[ph] = out;
  return out;
}

test('Redis killed and restarted, then paused and resumed, under load: every request completes, closed refuses, open serves', async (t) => {
  const load = startLoad();
  await sleep(1000);
  phase = 'redis killed';
  await redis.kill();
  await sleep(FAULT_MS);
  phase = 'redis restarting';
  await redis.restart();
  await recovered('the restart');
  phase = 'after restart';
  await sleep(1000);
  phase = 'redis paused';
  redis.pause();
  await sleep(FAULT_MS);
  phase = 'redis resuming';
  redis.resume();
  await recovered('SIGCONT');
  phase = 'after resume';
  await sleep(1000);
  running = false;
  await Promise.all(load);

  for (const ph of ['before', 'redis killed', 'redis restarting', 'after restart', 'redis paused', 'redis resuming', 'after resume']) {
    t.diagnostic(`${ph}: ${JSON.stringify(count(ph))}`);
  }
  const across = results.filter((r) => r.phase !== r.endPhase);
  const acrossBy = {};
  for (const r of across) acrossBy[`${r.mode}: ${r.phase} -> ${r.endPhase}: ${r.status}`] = (acrossBy[`${r.mode}: ${r.phase} -> ${r.endPhase}: ${r.status}`] || 0) + 1;
  summary.acrossPhases = acrossBy;
  summary.total = results.length;
  t.diagnostic(`across a phase change: ${JSON.stringify(acrossBy)}`);
  if (process.env.REDIS_FAULTS_REPORT) fs.writeFileSync(process.env.REDIS_FAULTS_REPORT, JSON.stringify(summary, null, 2));

  const bad = results.filter((r) => !r.ok);
  assert.deepEqual(bad.slice(0, 10).map((r) => `${r.mode} / ${r.phase}: ${r.why}`), [], `${bad.length} of ${results.length} requests failed`);
  // Healthy Redis all along: all served.
  for (const ph of ['before', 'after restart', 'after resume']) {
    const not200 = within(ph).filter((r) => r.status !== 200);
    assert.equal(not200.length, 0, `${ph}: ${not200.length} not served: ${not200.slice(0, 3).map((r) => r.why || r.status).join('; ')}`);
  }
  // During the faults the closed gateway refused, and the open one served.
  for (const ph of ['redis killed', 'redis paused']) {
    const c = summary[ph].closed;
    const o = summary[ph].open;
    assert.ok((c.byStatus[503] || 0) > 0, `${ph}: the closed gateway never refused: ${JSON.stringify(c)}`);
    assert.ok((o.byStatus[200] || 0) > 0, `${ph}: the open gateway served nothing: ${JSON.stringify(o)}`);
    assert.equal(o.byStatus[503] || 0, 0, `${ph}: the open gateway refused a key Redis had vouched for: ${JSON.stringify(o)}`);
  }
  assert.ok(gw.closed.alive() && gw.open.alive(), 'a gateway died');
});

test('nothing refused was forwarded, nothing forwarded was unscrubbed', () => {
  const upstream = new Map();
  for (const rec of provider.requests) {
    assert.ok(!rec.body.includes(EMAIL) && !rec.body.includes(IBAN), `unscrubbed upstream: ${rec.body.slice(0, 300)}`);
    const m = rec.body.match(/rf[0-9a-f]{10}/);
    if (m) upstream.set(m[0], (upstream.get(m[0]) || 0) + 1);
  }
  for (const r of results) {
    const n = upstream.get(r.marker) || 0;
    if (r.status === 503) assert.equal(n, 0, `a refused request reached the provider (${r.mode}, ${r.phase})`);
    if (r.status === 200) assert.equal(n, 1, `a served request reached the provider ${n} times (${r.mode}, ${r.phase})`);
  }
});

test('once Redis is back, every reservation settles: nothing left in flight', async () => {
  let text = '';
  await waitFor(async () => {
    const { stdout } = await execFile(SCRIM_BIN, ['keys', 'usage', key.id, '-c', gw.closed.configPath]);
    text = stdout;
    return /in flight:\s+0\b/.test(stdout);
  }, { timeoutMs: 15_000, intervalMs: 250, what: 'the key to have nothing in flight' }).catch(async (e) => {
    const resv = (await redis.cli('--scan', '--pattern', '*:resv')).split('\n').filter(Boolean);
    const left = [];
    for (const k of resv) left.push(`${k}: ${await redis.cli('HGETALL', k)}`);
    throw new Error(`${e.message}\n${text}\nreservations left: ${left.join('\n')}`);
  });
});

/** scrim_redis_total{event=...} of a gateway, as {call, timeout, error, reconnect}. */
async function redisMetrics(g) {
  const r = await request(g.adminPort, { path: '/metrics' });
  assert.equal(r.status, 200, show(r));
  const out = {};
  for (const m of r.body.matchAll(/^scrim_redis_total\{event="(\w+)"\} (\d+)$/gm)) out[m[1]] = Number(m[2]);
  return out;
}

test(`Redis stopped and continued every ${FLAP_MS} ms for ${FLAP_SECONDS} s under load: fail_mode closed answers 200 or 503, never crashes`, async (t) => {
  gw.flap = await startScrim({
    config: await configFor({ providerUrl: provider.url, redis: { url: redis.url, fail_mode: 'closed', timeout: FLAP_TIMEOUT } }),
  });
  const g = gw.flap;
  const m0 = await redisMetrics(g);
  const flapResults = [];
  let flapping = true;
  let flapWindow = 'before'; // 'stopped N' / 'running N': where each request ended
  const upstreamBefore = provider.requests.length;
  const clients = Array.from({ length: CLIENTS }, async (_, w) => {
    const agent = w % 2 === 0 ? new http.Agent({ keepAlive: true, maxSockets: 1 }) : false;
    try {
      for (let n = w; flapping; n++) {
        const stream = n % 2 === 0;
        const text = `flap ${w}.${n} mail ${EMAIL}, IBAN ${IBAN}`;
        const res = { stream };
        try {
          const r = await request(g.port, {
            method: 'POST', path: '/v1/chat/completions', agent, timeoutMs: CLIENT_TIMEOUT_MS,
            headers: { authorization: `Bearer ${key.key}`, ...(stream ? { 'x-fake-chunks': '4', 'x-fake-chunk-delay-ms': '5' } : {}) },
            body: chatBody(text, { max_tokens: 16, ...(stream ? { stream: true } : {}) }),
          });
          res.status = r.status;
          if (r.status === 200) {
            const got = stream ? chatStreamContent(r.body) : r.json?.choices?.[0]?.message?.content;
            res.ok = typeof got === 'string' && got.startsWith(`echo: ${text}`) && (!stream || r.body.includes('data: [DONE]'));
            if (!res.ok) res.why = `incomplete or wrong answer: ${show(r)}`;
          } else if (r.status === 503) {
            const e = errorOf(r);
            res.ok = e.code === 'limits_unavailable' && Number(r.headers['retry-after']) >= 1;
            if (!res.ok) res.why = `503 without limits_unavailable and retry-after: ${show(r)}`;
          } else {
            res.ok = false;
            res.why = `unexpected ${show(r)}`;
          }
        } catch (e) {
          res.status = 'error';
          res.ok = false;
          res.why = e.message;
        }
        res.window = flapWindow;
        flapResults.push(res);
      }
    } finally {
      if (agent) agent.destroy();
    }
  });
  const tEnd = Date.now() + FLAP_SECONDS * 1000;
  let stops = 0;
  try {
    while (Date.now() < tEnd) {
      redis.pause();
      stops++;
      flapWindow = `stopped ${stops}`;
      await sleep(FLAP_MS);
      redis.resume();
      flapWindow = `running ${stops}`;
      await sleep(FLAP_MS);
    }
  } finally {
    redis.resume();
  }
  flapping = false;
  await Promise.all(clients);
  assert.ok(g.alive(), `the flapping gateway died: ${g.stderr().slice(-3000)}`);
  const m1 = await redisMetrics(g);
  const by = {};
  for (const r of flapResults) by[r.status] = (by[r.status] || 0) + 1;
  const delta = Object.fromEntries(Object.keys(m1).map((k) => [k, m1[k] - (m0[k] || 0)]));
  // Reported, not asserted: in how many of the 500 ms windows with Redis
  // running (and stopped) at least one request ended served.
  const served = new Set(flapResults.filter((r) => r.status === 200).map((r) => r.window));
  const servedWindows = {
    running: [...served].filter((w) => w.startsWith('running')).length,
    stopped: [...served].filter((w) => w.startsWith('stopped')).length,
  };
  const flap = { seconds: FLAP_SECONDS, stops, redisTimeout: FLAP_TIMEOUT, requests: flapResults.length,
    streamed: flapResults.filter((r) => r.stream).length, byStatus: by, windowsWithA200: servedWindows, redis: delta };
  t.diagnostic(`flap: ${JSON.stringify(flap)}`);
  if (process.env.REDIS_FAULTS_REPORT) {
    const rep = fs.existsSync(process.env.REDIS_FAULTS_REPORT) ? JSON.parse(fs.readFileSync(process.env.REDIS_FAULTS_REPORT, 'utf8')) : {};
    rep.flap = flap;
    fs.writeFileSync(process.env.REDIS_FAULTS_REPORT, JSON.stringify(rep, null, 2));
  }
  const bad = flapResults.filter((r) => !r.ok);
  assert.deepEqual(bad.slice(0, 10).map((r) => r.why), [], `${bad.length} of ${flapResults.length} requests failed`);
  assert.ok(flapResults.length > 0, 'no request completed');
  for (const rec of provider.requests.slice(upstreamBefore)) {
    assert.ok(!rec.body.includes(EMAIL) && !rec.body.includes(IBAN), `unscrubbed upstream: ${rec.body.slice(0, 300)}`);
  }
  // Serves again once Redis stays up, and every reservation settles.
  await waitFor(async () => {
    const r = await request(g.port, {
      method: 'POST', path: '/v1/chat/completions', headers: { authorization: `Bearer ${key.key}` },
      body: chatBody('probe', { max_tokens: 4 }),
    });
    return r.status === 200;
  }, { timeoutMs: 15_000, intervalMs: 100, what: 'the flapping gateway to answer 200 after the last SIGCONT' });
  let text = '';
  await waitFor(async () => {
    const { stdout } = await execFile(SCRIM_BIN, ['keys', 'usage', key.id, '-c', g.configPath]);
    text = stdout;
    return /in flight:\s+0\b/.test(stdout);
  }, { timeoutMs: 15_000, intervalMs: 250, what: `the key to have nothing in flight after the flapping` }).catch((e) => {
    throw new Error(`${e.message}\n${text}`);
  });
});

test('both gateways exit 0 on SIGTERM with no sanitizer report', async () => {
  for (const mode of Object.keys(gw)) {
    const g = gw[mode];
    if (!g) continue;
    const code = await g.stop();
    gw[mode] = null;
    assert.ok(!SANITIZER_RE.test(g.stderr()), g.stderr().slice(-4000));
    assert.equal(code, 0, `${mode}: exit code ${code}; stderr tail:\n${g.stderr().slice(-3000)}`);
  }
});
