// Virtual keys and their usage limits, kept in Redis (src/limits.h): exact
// requests-per-minute under concurrency, one limit shared by two scrim
// processes, token and budget accounting from the provider's usage (chat,
// streams with and without include_usage, Anthropic), tokens/day/budget/
// parallel limits, key states (model globs, expiry, revocation, rotation),
// Redis killed, restarted and paused in both fail modes, and the
// x-ratelimit-* headers.
//
// Every test works on keys of its own (`scrim keys create`), so counts never
// mix. LIMITS_TRIALS (default 10) sets how many times the concurrency trial
// of test 1 runs.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import http from 'node:http';
import net from 'node:net';
import fs from 'node:fs';
import path from 'node:path';
import { startFakeProvider, countTokens } from '../fake_provider/provider.mjs';
import {
  startScrim, startRedis, configFor, execFile, request, auth, chatBody, parseSSE, chatStreamContent,
  errorOf, waitFor, show, sleep, sha256hex, SCRIM_BIN, TEST_KEY,
} from './lib.mjs';

const TRIALS = Number(process.env.LIMITS_TRIALS || 10);
const SANITIZER_RE = /AddressSanitizer|LeakSanitizer|runtime error:|UndefinedBehaviorSanitizer/;
const DEFAULT_MAX_TOKENS = 4096; // [redis] default_max_tokens, left at its default

// Prices in USD per million tokens = micro-USD per token, so expected costs
// are exact integers of micro-USD.
const PRICES = { 'acct-*': '2 3', 'budget-*': '100 100' };

let provider;
let redis;
let scrim; // fail_mode = closed, on `redis`
const gateways = []; // every scrim started here, checked at the end
const redises = []; // every redis-server started here

// ---------------------------------------------------------------- helpers

/** A unique word to put in a prompt, to find what reached the provider. */
const marker = () => `zq${crypto.randomBytes(6).toString('hex')}`;

/** How many requests carrying `m` reached the provider. */
const upstreamWith = (m) => provider.requests.filter((r) => r.body.includes(m)).length;

/** `scrim keys ARGS -c CONFIG`; resolves stdout (rejects on a non-zero exit). */
async function keysCmd(configPath, ...args) {
  const { stdout } = await execFile(SCRIM_BIN, ['keys', ...args, '-c', configPath]);
  return stdout;
}

let keyCount = 0;
/** A new virtual key: {key, id, hash}. */
async function createKey(configPath, o = {}) {
  const args = ['create', '--name', o.name || `lim${++keyCount}`];
  const flags = {
    rpm: '--rpm', tpm: '--tpm', tpd: '--tokens-per-day', budget: '--budget-usd-month',
    maxParallel: '--max-parallel', models: '--models', expires: '--expires',
  };
  for (const [k, flag] of Object.entries(flags)) if (o[k] !== undefined) args.push(flag, String(o[k]));
  if (o.meta) args.push('--meta', o.meta);
  const out = await keysCmd(configPath, ...args);
  const key = out.match(/^key: (\S+)$/m)?.[1];
  const id = out.match(/^id:\s+(\S+)$/m)?.[1];
  assert.ok(key && id, `scrim keys create printed no key/id:\n${out}`);
  return { key, id, hash: sha256hex(key) };
}

/** `scrim keys usage ID`, parsed. */
async function usageOf(configPath, id) {
  const text = await keysCmd(configPath, 'usage', id);
  const num = (re) => {
    const m = text.match(re);
    assert.ok(m, `${re} not in \`scrim keys usage\` output:\n${text}`);
    return Number(m[1]);
  };
  return {
    requests: num(/requests, last 60 s:\s+(-?\d+)/),
    minute: num(/tokens, this minute:\s+(-?\d+)/),
    today: num(/tokens, today \(UTC\):\s+(-?\d+)/),
    usd: num(/USD, this month \(UTC\):\s+(-?[\d.]+)/),
    inFlight: num(/in flight:\s+(-?\d+)/),
    text,
  };
}

/** Usage once every reservation of the key is settled (settling is fire and forget). */
async function settledUsage(configPath, id) {
  let u;
  await waitFor(async () => { u = await usageOf(configPath, id); return u.inFlight === 0; },
    { timeoutMs: 3000, what: `key ${id} to have nothing in flight` });
  return u;
}

/** Sum of the Redis counters matching a pattern (read straight from Redis). */
async function redisSum(r, pattern) {
  const keys = (await r.cli('--scan', '--pattern', pattern)).split('\n').filter(Boolean);
  let sum = 0;
  for (const k of keys) sum += Number(await r.cli('GET', k));
  return sum;
}

/** What scrim reserves for a body: its bytes / 4 + 1, plus max_tokens (or the default). */
function reservationOf(body) {
  const len = Buffer.byteLength(JSON.stringify(body));
  return Math.floor(len / 4) + 1 + (body.max_tokens > 0 ? body.max_tokens : DEFAULT_MAX_TOKENS);
}

/** The fake provider's usage for one user turn (and an optional system text). */
const promptTokensOf = (text, system = '') => countTokens(system) + countTokens(text);
const completionTokensOf = (text) => countTokens(`echo: ${text}`);

/** Token windows are minutes: keep a test that needs one window away from its edge. */
async function awayFromMinuteEdge(marginMs = 4000) {
  const left = 60000 - (Date.now() % 60000);
  if (left < marginMs) await sleep(left + 100);
}

function chat(port, key, body, { headers = {}, agent } = {}) {
  return request(port, { method: 'POST', path: '/v1/chat/completions', headers: { ...auth(key), ...headers }, body, agent });
}

function anthropicMessages(port, key, body, headers = {}) {
  return request(port, { method: 'POST', path: '/anthropic/v1/messages', headers: { 'x-api-key': key, ...headers }, body });
}

/** `clients` keep-alive clients, each sending `attempts` requests one after the other. */
async function hammer(port, key, body, { clients, attempts }) {
  const results = [];
  await Promise.all(Array.from({ length: clients }, async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      for (let i = 0; i < attempts; i++) {
        const r = await chat(port, key, body, { agent });
        results.push({ status: r.status, headers: r.headers, body: r.body, json: r.json });
      }
    } finally {
      agent.destroy();
    }
  }));
  return results;
}

const countStatus = (results) => {
  const by = {};
  for (const r of results) by[r.status] = (by[r.status] || 0) + 1;
  return by;
};

/** A 429 from the limits: OpenAI-shaped, naming the limit, with retry-after. */
function assertLimited(r, which, keyId) {
  assert.equal(r.status, 429, show(r));
  const e = errorOf(r);
  assert.equal(e.code, 'rate_limit_exceeded', show(r));
  assert.equal(e.type, 'rate_limit_error', show(r));
  assert.ok(new RegExp(`\\b${which}\\b`).test(e.message), `429 message should name "${which}": ${e.message}`);
  if (keyId) assert.ok(e.message.includes(keyId), `429 message should name the key id ${keyId}: ${e.message}`);
  const ra = Number(r.headers['retry-after']);
  assert.ok(Number.isInteger(ra) && ra >= 1, `retry-after must be a positive number of seconds: ${show(r)}`);
  return ra;
}

/** "1m0s", "59s", "250ms" -> ms (OpenAI's reset format). */
function resetMs(s) {
  const m = /^(?:(\d+)m)?(?:(\d+)s)?$|^(\d+)ms$/.exec(s || '');
  assert.ok(m && s, `not an OpenAI reset duration: ${JSON.stringify(s)}`);
  if (m[3] !== undefined) return Number(m[3]);
  return (Number(m[1] || 0) * 60 + Number(m[2] || 0)) * 1000;
}

async function newGateway(opts) {
  const config = await configFor({ providerUrl: provider.url, prices: PRICES, ...opts });
  const g = await startScrim({ config });
  gateways.push(g);
  return g;
}

before(async () => {
  provider = await startFakeProvider();
  redis = await startRedis();
  redises.push(redis);
  // A generous Redis timeout on the shared gateways keeps a busy machine's
  // scheduling hiccups out of the exactness checks; the outage tests (6)
  // run their own gateways with the default 50 ms.
  scrim = await newGateway({ redis: { url: redis.url, fail_mode: 'closed', timeout: '1s' } });
});

after(async () => {
  for (const g of gateways) await g.kill();
  for (const r of redises) await r.stop();
  if (provider) await provider.close();
});

// ------------------------------------------------ 1. exact under concurrency

for (let trial = 1; trial <= TRIALS; trial++) {
  test(`1. rpm 100, 64 keep-alive clients x 20 attempts: exactly 100 get 200, 1,180 get 429 (trial ${trial}/${TRIALS})`, async () => {
    const k = await createKey(scrim.configPath, { rpm: 100 });
    const m = marker();
    const body = chatBody(`trial ${m}`, { max_tokens: 5 });
    const results = await hammer(scrim.port, k.key, body, { clients: 64, attempts: 20 });
    const by = countStatus(results);
    assert.equal(results.length, 1280);
    if (by[200] !== 100 || by[429] !== 1180) {
      // Say what happened before failing: the odd answers and what Redis counted.
      const odd = {};
      for (const r of results) if (r.status !== 200 && !odd[r.status]) odd[r.status] = show(r);
      const u = await usageOf(scrim.configPath, k.id).catch((e) => ({ text: String(e) }));
      assert.fail(`statuses ${JSON.stringify(by)}, want {200: 100, 429: 1180}; upstream got ${upstreamWith(m)}\n` +
        `${Object.values(odd).join('\n')}\n${u.text}\nscrim's redis/limits log lines:\n${scrim.stderr().split('\n').filter((l) => /redis|limits/.test(l)).slice(-20).join('\n')}`);
    }
    assert.equal(upstreamWith(m), 100, 'exactly the 100 admitted requests reach the provider');
    for (const r of results.filter((x) => x.status === 429)) {
      assertLimited(r, 'requests', k.id);
      assert.equal(r.headers['x-ratelimit-limit-requests'], '100', show(r));
      assert.equal(r.headers['x-ratelimit-remaining-requests'], '0', show(r));
      assert.ok(resetMs(r.headers['x-ratelimit-reset-requests']) <= 60000, show(r));
    }
    const u = await settledUsage(scrim.configPath, k.id);
    assert.equal(u.requests, 100, u.text);
  });
}

// ------------------------------------------- 2. two processes, one limit

test('2. two scrim processes on one Redis enforce one limit: rpm 50, both hammered -> exactly 50 in total (3 trials)', async () => {
  const second = await newGateway({ redis: { url: redis.url, fail_mode: 'closed', timeout: '1s' } });
  for (let trial = 0; trial < 3; trial++) {
    const k = await createKey(scrim.configPath, { rpm: 50 });
    const m = marker();
    const body = chatBody(`two ${m}`, { max_tokens: 5 });
    const [a, b] = await Promise.all([
      hammer(scrim.port, k.key, body, { clients: 32, attempts: 20 }),
      hammer(second.port, k.key, body, { clients: 32, attempts: 20 }),
    ]);
    const ba = countStatus(a);
    const bb = countStatus(b);
    const ok = (ba[200] || 0) + (bb[200] || 0);
    assert.equal(ok, 50, `first: ${JSON.stringify(ba)}, second: ${JSON.stringify(bb)}`);
    assert.equal((ba[429] || 0) + (bb[429] || 0), 1280 - 50, `first: ${JSON.stringify(ba)}, second: ${JSON.stringify(bb)}`);
    assert.equal(upstreamWith(m), 50);
    // A third request on either, now: refused too.
    assertLimited(await chat(second.port, k.key, body), 'requests', k.id);
    assertLimited(await chat(scrim.port, k.key, body), 'requests', k.id);
  }
  assert.equal(await second.stop(), 0, 'the second scrim exits 0 on SIGTERM');
  assert.ok(!SANITIZER_RE.test(second.stderr()), second.stderr().slice(-3000));
});

// ------------------------------------------------ 3. token accounting

test('3a. non-streaming chat: minute, day and month counters hold exactly the provider\'s prompt + completion tokens', async () => {
  await awayFromMinuteEdge();
  const k = await createKey(scrim.configPath, { rpm: 1000, tpm: 1000000 });
  const text = `${marker()} count these six words please`;
  const body = chatBody(text, { model: 'acct-model', max_tokens: 300 });
  const r = await chat(scrim.port, k.key, body);
  assert.equal(r.status, 200, show(r));
  const pin = promptTokensOf(text);
  const pout = completionTokensOf(text);
  assert.deepEqual(r.json.usage, { prompt_tokens: pin, completion_tokens: pout, total_tokens: pin + pout }, 'the fake reports this usage');
  const u = await settledUsage(scrim.configPath, k.id);
  assert.equal(u.today, pin + pout, u.text);
  assert.equal(u.minute, pin + pout, u.text);
  assert.equal(await redisSum(redis, `scrim:{${k.hash}}:tpm:*`), pin + pout, 'the minute counter, read from Redis');
  assert.equal(await redisSum(redis, `scrim:{${k.hash}}:tpd:*`), pin + pout, 'the day counter, read from Redis');
  assert.equal(await redisSum(redis, `scrim:{${k.hash}}:usd:*`), 2 * pin + 3 * pout, 'micro-USD at acct-* = 2 3');
  assert.equal(u.usd.toFixed(6), ((2 * pin + 3 * pout) / 1e6).toFixed(6), u.text);
  assert.equal(u.requests, 1, u.text);
  // The audit record names the virtual key by id and by --name.
  const stateDir = fs.readFileSync(scrim.configPath, 'utf8').match(/^state_dir = (.+)$/m)[1];
  const rid = r.headers['x-request-id'];
  const rec = await waitFor(() => {
    try {
      return fs.readFileSync(path.join(stateDir, 'audit.jsonl'), 'utf8').trim().split('\n')
        .map((l) => JSON.parse(l)).find((x) => x.request_id === rid);
    } catch { return undefined; }
  }, { timeoutMs: 5000, what: 'the audit record' });
  assert.equal(rec.key_id, k.id, JSON.stringify(rec));
  assert.match(rec.key_name || '', /^lim\d+$/, JSON.stringify(rec));
});

test('3b. stream without include_usage: scrim asks for usage, the client sees no usage chunk, the tokens are accounted', async () => {
  await awayFromMinuteEdge();
  const k = await createKey(scrim.configPath, { rpm: 1000 });
  const m = marker();
  const text = `${m} stream me a few words`;
  const r = await chat(scrim.port, k.key, chatBody(text, { model: 'acct-model', stream: true, max_tokens: 200 }));
  assert.equal(r.status, 200, show(r));
  const events = parseSSE(r.body);
  assert.equal(chatStreamContent(r.body), `echo: ${text}`);
  assert.equal(events[events.length - 1].data, '[DONE]', 'the stream still ends with [DONE]');
  for (const e of events) {
    if (e.data === '[DONE]') continue;
    const j = JSON.parse(e.data);
    assert.ok(!('usage' in j), `the client did not ask for usage, yet got: ${e.data}`);
    assert.ok(Array.isArray(j.choices) && j.choices.length > 0, `a chunk without choices reached the client: ${e.data}`);
  }
  const up = provider.requests.find((x) => x.body.includes(m));
  assert.deepEqual(JSON.parse(up.body).stream_options, { include_usage: true }, 'scrim asks the provider for usage');
  const u = await settledUsage(scrim.configPath, k.id);
  const expected = promptTokensOf(text) + completionTokensOf(text);
  assert.equal(u.today, expected, u.text);
  assert.equal(await redisSum(redis, `scrim:{${k.hash}}:tpm:*`), expected);
  assert.equal(await redisSum(redis, `scrim:{${k.hash}}:usd:*`), 2 * promptTokensOf(text) + 3 * completionTokensOf(text));
});

test('3c. stream with include_usage asked by the client: the client gets the usage chunk, and the tokens are accounted', async () => {
  const k = await createKey(scrim.configPath, { rpm: 1000 });
  const text = `${marker()} and with usage this time`;
  const r = await chat(scrim.port, k.key, chatBody(text, { model: 'acct-model', stream: true, stream_options: { include_usage: true }, max_tokens: 200 }));
  assert.equal(r.status, 200, show(r));
  const usageChunks = parseSSE(r.body).filter((e) => e.data !== '[DONE]').map((e) => JSON.parse(e.data)).filter((j) => j.usage);
  const pin = promptTokensOf(text);
  const pout = completionTokensOf(text);
  assert.equal(usageChunks.length, 1, r.body);
  assert.deepEqual(usageChunks[0].choices, []);
  assert.deepEqual(usageChunks[0].usage, { prompt_tokens: pin, completion_tokens: pout, total_tokens: pin + pout });
  const u = await settledUsage(scrim.configPath, k.id);
  assert.equal(u.today, pin + pout, u.text);
});

test('3d. Anthropic messages, not streamed: accounted from input_tokens + output_tokens', async () => {
  const k = await createKey(scrim.configPath, { rpm: 1000 });
  const text = `${marker()} anthropic counts like this`;
  const system = 'be brief and kind';
  const r = await anthropicMessages(scrim.port, k.key, { model: 'acct-claude', max_tokens: 100, system, messages: [{ role: 'user', content: text }] });
  assert.equal(r.status, 200, show(r));
  const pin = promptTokensOf(text, system);
  const pout = completionTokensOf(text);
  assert.deepEqual(r.json.usage, { input_tokens: pin, output_tokens: pout });
  const u = await settledUsage(scrim.configPath, k.id);
  assert.equal(u.today, pin + pout, u.text);
  assert.equal(await redisSum(redis, `scrim:{${k.hash}}:usd:*`), 2 * pin + 3 * pout);
});

test('3e. Anthropic messages, streamed: accounted from message_start and message_delta usage', async () => {
  const k = await createKey(scrim.configPath, { rpm: 1000 });
  const text = `${marker()} streamed anthropic usage counts too`;
  const r = await anthropicMessages(scrim.port, k.key, { model: 'acct-claude', max_tokens: 100, stream: true, messages: [{ role: 'user', content: text }] });
  assert.equal(r.status, 200, show(r));
  const types = parseSSE(r.body).map((e) => e.event);
  assert.ok(types.includes('message_start') && types.includes('message_delta') && types.includes('message_stop'), types.join(','));
  const pin = promptTokensOf(text);
  const pout = completionTokensOf(text);
  const u = await settledUsage(scrim.configPath, k.id);
  assert.equal(u.today, pin + pout, u.text);
  assert.equal(await redisSum(redis, `scrim:{${k.hash}}:usd:*`), 2 * pin + 3 * pout);
});

test('3f. a request without max_tokens reserves default_max_tokens until it is settled', async () => {
  await awayFromMinuteEdge();
  const k = await createKey(scrim.configPath, { rpm: 1000, tpm: 100000 });
  const text = `${marker()} slow one`;
  const body = chatBody(text);
  const pending = chat(scrim.port, k.key, body, { headers: { 'x-fake-delay-ms': '600' } });
  let during;
  await waitFor(async () => { during = await usageOf(scrim.configPath, k.id); return during.inFlight === 1; }, { timeoutMs: 2000, what: 'the request to be in flight' });
  assert.equal(during.minute, reservationOf(body), `reserved while in flight:\n${during.text}`);
  assert.equal((await pending).status, 200);
  const u = await settledUsage(scrim.configPath, k.id);
  assert.equal(u.minute, promptTokensOf(text) + completionTokensOf(text), u.text);
});

test('3g. `scrim keys usage` counts the requests of the last 60 s of a key that has no rpm limit', async () => {
  const k = await createKey(scrim.configPath, { tpm: 100000 });
  for (let i = 0; i < 3; i++) assert.equal((await chat(scrim.port, k.key, chatBody(`${marker()} count me`, { max_tokens: 5 }))).status, 200);
  const u = await settledUsage(scrim.configPath, k.id);
  assert.ok(u.today > 0, u.text);
  assert.equal(u.requests, 3, u.text);
});

// ------------------------------------------------ 4. token, budget, parallel limits

test('3h. scripts flushed from Redis (SCRIPT FLUSH): check and settle load theirs again (NOSCRIPT -> EVAL), usage is exact, and every counter keeps an expiry', async () => {
  await awayFromMinuteEdge();
  const k = await createKey(scrim.configPath, { rpm: 1000, tpm: 1000000, tpd: 10000000, budget: 100, maxParallel: 8 });
  let pin = 0;
  let pout = 0;
  for (let i = 0; i < 3; i++) {
    // Before each request: the check and, after its answer, the settle
    // both find their script gone.
    assert.equal(await redis.cli('SCRIPT', 'FLUSH'), 'OK');
    const text = `${marker()} flushed scripts round ${i}`;
    const r = await chat(scrim.port, k.key, chatBody(text, { model: 'acct-model', max_tokens: 300 }));
    assert.equal(r.status, 200, show(r));
    pin += promptTokensOf(text);
    pout += completionTokensOf(text);
    await settledUsage(scrim.configPath, k.id);
  }
  const u = await settledUsage(scrim.configPath, k.id);
  assert.equal(u.minute, pin + pout, u.text);
  assert.equal(u.today, pin + pout, u.text);
  assert.equal(u.requests, 3, u.text);
  assert.equal(await redisSum(redis, `scrim:{${k.hash}}:usd:*`), 2 * pin + 3 * pout, 'micro-USD at acct-* = 2 3');
  // Expiries are set when a counter is made, not on every request: none
  // of the key's data but its record may be left without one.
  const keys = (await redis.cli('--scan', '--pattern', `scrim:{${k.hash}}:*`)).split('\n').filter(Boolean);
  assert.ok(keys.some((x) => x.endsWith(':par')) && keys.some((x) => x.includes(':tpm:')), keys.join(' '));
  for (const x of keys) {
    if (x.endsWith(':key')) continue;
    const ttl = Number(await redis.cli('PTTL', x));
    assert.ok(ttl > 0, `${x} has no expiry (PTTL ${ttl})`);
  }
});

test('4a. tpm: a request whose reservation exceeds the tokens left gets 429 tokens; one that fits exactly gets 200', async () => {
  await awayFromMinuteEdge(6000);
  const k = await createKey(scrim.configPath, { tpm: 1000 });
  const first = chatBody(`${marker()} warm up`, { max_tokens: 100 });
  assert.equal((await chat(scrim.port, k.key, first)).status, 200);
  const used = (await settledUsage(scrim.configPath, k.id)).minute;
  assert.equal(used, promptTokensOf(first.messages[0].content) + completionTokensOf(first.messages[0].content));
  const left = 1000 - used;
  // A body whose reservation is exactly `want` tokens.
  const m = marker();
  const sized = (want) => {
    let b = chatBody(`${m} sized`, { max_tokens: 1 });
    for (let i = 0; i < 5; i++) b = { ...b, max_tokens: b.max_tokens + want - reservationOf(b) };
    assert.equal(reservationOf(b), want);
    return b;
  };
  const over = await chat(scrim.port, k.key, sized(left + 1));
  assertLimited(over, 'tokens', k.id);
  assert.equal(over.headers['x-ratelimit-limit-tokens'], '1000', show(over));
  assert.equal(over.headers['x-ratelimit-remaining-tokens'], String(left), show(over));
  assert.ok(Number(over.headers['retry-after']) <= 60, show(over));
  assert.equal(upstreamWith(m), 0, 'a refused request is not forwarded');
  const fits = await chat(scrim.port, k.key, sized(left));
  assert.equal(fits.status, 200, `a reservation of exactly the ${left} tokens left fits: ${show(fits)}`);
  assert.equal(fits.headers['x-ratelimit-remaining-tokens'], '0', show(fits));
});

test('4b. tokens per day: over the day\'s tokens -> 429 tokens_per_day, retry-after until UTC midnight', async () => {
  const k = await createKey(scrim.configPath, { tpd: 500 });
  const big = await chat(scrim.port, k.key, chatBody(`${marker()} big`, { max_tokens: 600 }));
  const ra = assertLimited(big, 'tokens_per_day', k.id);
  const toMidnight = (86400000 - (Date.now() % 86400000)) / 1000;
  assert.ok(Math.abs(ra - toMidnight) <= 5, `retry-after ${ra} s, UTC midnight in ${toMidnight} s`);
  assert.equal((await chat(scrim.port, k.key, chatBody(`${marker()} small`, { max_tokens: 100 }))).status, 200);
});

test('4c. budget: spent by real usage (priced from [prices]) -> the next request gets 429 budget', async () => {
  const k = await createKey(scrim.configPath, { budget: 0.01 }); // 10,000 micro-USD
  // 101 words in, 102 out at 100 micro-USD a token: 20,300 micro-USD, well
  // over the budget, while the reservation (~2 words a token) fits in it.
  const text = `${marker()} ${'a '.repeat(100).trim()}`;
  const body = chatBody(text, { model: 'budget-model', max_tokens: 1 });
  assert.ok(reservationOf(body) * 100 <= 10000, `reservation ${reservationOf(body)} tokens must fit the budget`);
  const r = await chat(scrim.port, k.key, body);
  assert.equal(r.status, 200, show(r));
  const spent = 100 * (promptTokensOf(text) + completionTokensOf(text));
  const u = await settledUsage(scrim.configPath, k.id);
  assert.equal(u.usd.toFixed(6), (spent / 1e6).toFixed(6), u.text);
  const m = marker();
  const next = await chat(scrim.port, k.key, chatBody(`${m} one more`, { model: 'budget-model', max_tokens: 1 }));
  const ra = assertLimited(next, 'budget', k.id);
  assert.ok(ra > 0 && ra <= 31 * 86400, `retry-after until the next month: ${ra}`);
  assert.equal(upstreamWith(m), 0);
  // A spent budget refuses everything, even a model with no price.
  assertLimited(await chat(scrim.port, k.key, chatBody(`${marker()} free`, { model: 'fake-model', max_tokens: 1 })), 'budget', k.id);
});

test('4d. max-parallel 1: a second request while a slow one is in flight gets 429 parallel; after it, 200 again', async () => {
  const k = await createKey(scrim.configPath, { maxParallel: 1 });
  const m1 = marker();
  const slow = chat(scrim.port, k.key, chatBody(`${m1} slow`, { max_tokens: 5 }), { headers: { 'x-fake-delay-ms': '800' } });
  await waitFor(() => upstreamWith(m1) === 1, { timeoutMs: 2000, what: 'the slow request to reach the provider' });
  const m2 = marker();
  const t0 = Date.now();
  const second = await chat(scrim.port, k.key, chatBody(`${m2} second`, { max_tokens: 5 }), { headers: { 'x-fake-delay-ms': '800' } });
  assert.ok(Date.now() - t0 < 500, 'refused at once, not queued');
  assertLimited(second, 'parallel', k.id);
  assert.equal(upstreamWith(m2), 0);
  assert.equal((await slow).status, 200);
  const third = await chat(scrim.port, k.key, chatBody(`${marker()} third`, { max_tokens: 5 }));
  assert.equal(third.status, 200, `the slot is free again once the first is done: ${show(third)}`);
  assert.equal((await settledUsage(scrim.configPath, k.id)).inFlight, 0);
});

// ------------------------------------------------ 5. key states

test('5a. a model outside the key\'s globs -> 403 model_not_allowed, not forwarded, nothing kept reserved', async () => {
  const k = await createKey(scrim.configPath, { models: 'gpt-*,acct-*', tpm: 1000000 });
  const m = marker();
  const r = await chat(scrim.port, k.key, chatBody(`${m} no`, { model: 'claude-3-5-sonnet-latest', max_tokens: 5 }));
  assert.equal(r.status, 403, show(r));
  assert.equal(errorOf(r).code, 'model_not_allowed');
  assert.equal(upstreamWith(m), 0);
  const text = `${marker()} yes`;
  const ok = await chat(scrim.port, k.key, chatBody(text, { model: 'gpt-4o-mini', max_tokens: 5 }));
  assert.equal(ok.status, 200, show(ok));
  const u = await settledUsage(scrim.configPath, k.id);
  assert.equal(u.today, promptTokensOf(text) + completionTokensOf(text), `only the allowed request is counted:\n${u.text}`);
});

test('5a2. a request refused for its model does not use up the key\'s requests per minute', async () => {
  const k = await createKey(scrim.configPath, { models: 'gpt-*', rpm: 2 });
  assert.equal((await chat(scrim.port, k.key, chatBody('no', { model: 'claude-3-5-sonnet-latest', max_tokens: 5 }))).status, 403);
  const a = await chat(scrim.port, k.key, chatBody('yes', { model: 'gpt-4o-mini', max_tokens: 5 }));
  const b = await chat(scrim.port, k.key, chatBody('yes', { model: 'gpt-4o-mini', max_tokens: 5 }));
  assert.deepEqual([a.status, b.status], [200, 200], `rpm 2, two allowed requests after one refused:\n${show(a)}\n${show(b)}`);
});

test('5b. an expired key -> 401 saying so; one expiring later works', async () => {
  const old = await createKey(scrim.configPath, { expires: '2020-01-01' });
  const r = await chat(scrim.port, old.key, chatBody('expired', { max_tokens: 5 }));
  assert.equal(r.status, 401, show(r));
  assert.match(errorOf(r).message, /expired/i);
  const later = await createKey(scrim.configPath, { expires: '2099-01-01' });
  assert.equal((await chat(scrim.port, later.key, chatBody('fine', { max_tokens: 5 }))).status, 200);
});

test('5c. unknown key -> 401 invalid_api_key, not forwarded', async () => {
  const m = marker();
  const r = await chat(scrim.port, `sk-scrim-${crypto.randomBytes(24).toString('base64url')}`, chatBody(`${m} who`, { max_tokens: 5 }));
  assert.equal(r.status, 401, show(r));
  assert.equal(errorOf(r).code, 'invalid_api_key');
  assert.equal(upstreamWith(m), 0);
});

test('5d. revoke: the very next request gets 401 revoked', async () => {
  const k = await createKey(scrim.configPath, {});
  assert.equal((await chat(scrim.port, k.key, chatBody('before', { max_tokens: 5 }))).status, 200);
  assert.match(await keysCmd(scrim.configPath, 'revoke', k.id), /revoked/);
  const r = await chat(scrim.port, k.key, chatBody('after', { max_tokens: 5 }));
  assert.equal(r.status, 401, show(r));
  assert.match(errorOf(r).message, /revoked/i);
  assert.match(await keysCmd(scrim.configPath, 'show', k.id), /\brevoked\b/);
});

test('5e. rotate: the old key gets 401 at once, the new one 200, same id and limits', async () => {
  const k = await createKey(scrim.configPath, { rpm: 77, models: 'gpt-*' });
  assert.equal((await chat(scrim.port, k.key, chatBody('old', { model: 'gpt-4o-mini', max_tokens: 5 }))).status, 200);
  const out = await keysCmd(scrim.configPath, 'rotate', k.id);
  const fresh = out.match(/^key: (\S+)$/m)?.[1];
  assert.ok(fresh && fresh !== k.key, out);
  assert.match(out, new RegExp(`^id:\\s+${k.id}$`, 'm'));
  const old = await chat(scrim.port, k.key, chatBody('old again', { model: 'gpt-4o-mini', max_tokens: 5 }));
  assert.equal(old.status, 401, show(old));
  const r = await chat(scrim.port, fresh, chatBody('new', { model: 'gpt-4o-mini', max_tokens: 5 }));
  assert.equal(r.status, 200, show(r));
  assert.equal(r.headers['x-ratelimit-limit-requests'], '77', 'the limits came along');
  assert.equal((await chat(scrim.port, fresh, chatBody('new', { model: 'claude-x', max_tokens: 5 }))).status, 403, 'and so did the model globs');
  assert.match(await keysCmd(scrim.configPath, 'show', k.id), /\bactive\b/);
});

// ------------------------------------------------ 7. headers (before the outages)

test('7. x-ratelimit-* headers on successful answers: limit, remaining, reset for requests and tokens', async () => {
  await awayFromMinuteEdge(6000);
  const k = await createKey(scrim.configPath, { rpm: 10, tpm: 10000 });
  const b1 = chatBody(`${marker()} headers one`, { max_tokens: 50 });
  const r1 = await chat(scrim.port, k.key, b1);
  assert.equal(r1.status, 200, show(r1));
  const h = r1.headers;
  assert.equal(h['x-ratelimit-limit-requests'], '10', show(r1));
  assert.equal(h['x-ratelimit-remaining-requests'], '9', show(r1));
  assert.ok(resetMs(h['x-ratelimit-reset-requests']) > 58000 && resetMs(h['x-ratelimit-reset-requests']) <= 60000, show(r1));
  assert.equal(h['x-ratelimit-limit-tokens'], '10000', show(r1));
  assert.equal(h['x-ratelimit-remaining-tokens'], String(10000 - reservationOf(b1)), `remaining = limit - this reservation: ${show(r1)}`);
  const toMinute = 60000 - (Date.now() % 60000);
  assert.ok(Math.abs(resetMs(h['x-ratelimit-reset-tokens']) - toMinute) <= 2000, `tokens reset at the minute (${toMinute} ms): ${show(r1)}`);
  const used1 = promptTokensOf(b1.messages[0].content) + completionTokensOf(b1.messages[0].content);
  // Streamed, the second: the headers come with the stream's head.
  const b2 = chatBody(`${marker()} headers two`, { max_tokens: 70, stream: true });
  const r2 = await chat(scrim.port, k.key, b2);
  assert.equal(r2.status, 200, show(r2));
  assert.equal(r2.headers['x-ratelimit-remaining-requests'], '8', show(r2));
  assert.equal(r2.headers['x-ratelimit-remaining-tokens'], String(10000 - used1 - reservationOf(b2)), `the first is settled to its real use: ${show(r2)}`);
  // Config keys carry no limits, and no such headers.
  const c = await chat(scrim.port, TEST_KEY, chatBody('config key', { max_tokens: 5 }));
  assert.equal(c.status, 200, show(c));
  assert.equal(c.headers['x-ratelimit-limit-requests'], undefined, show(c));
});

// ------------------------------------------------ 6. Redis outages

let outage; // {redis, closed, open, keys}

test('6a. Redis killed: fail_mode closed -> 503 limits_unavailable with retry-after, nothing forwarded; open -> keys seen before go on under local counters', async () => {
  const r2 = await startRedis({ persist: true });
  redises.push(r2);
  const closed = await newGateway({ redis: { url: r2.url, fail_mode: 'closed' } });
  const open = await newGateway({ redis: { url: r2.url, fail_mode: 'open' } });
  const cfg = closed.configPath;
  const seen = await createKey(cfg, { rpm: 1000 });
  const local = await createKey(cfg, { rpm: 3 });
  const unseen = await createKey(cfg, { rpm: 1000 });
  const revoked = await createKey(cfg, { rpm: 1000 });
  outage = { redis: r2, closed, open, seen, local, unseen, revoked };
  // Vouched for by Redis on `open`, then revoked there (checked below, in 6a2).
  assert.equal((await chat(open.port, revoked.key, chatBody('before', { max_tokens: 5 }))).status, 200);
  await keysCmd(cfg, 'revoke', revoked.id);
  assert.equal((await chat(open.port, revoked.key, chatBody('revoked', { max_tokens: 5 }))).status, 401);
  for (const g of [closed, open]) assert.equal((await chat(g.port, seen.key, chatBody('before', { max_tokens: 5 }))).status, 200);
  assert.equal((await chat(open.port, local.key, chatBody('before', { max_tokens: 5 }))).status, 200);
  assert.equal((await chat(closed.port, unseen.key, chatBody('before', { max_tokens: 5 }))).status, 200);

  await r2.kill();
  await sleep(100);
  for (let i = 0; i < 3; i++) {
    const m = marker();
    const t0 = Date.now();
    const r = await chat(closed.port, seen.key, chatBody(`${m} down`, { max_tokens: 5 }));
    assert.ok(Date.now() - t0 < 1000, 'answered at once');
    assert.equal(r.status, 503, show(r));
    assert.equal(errorOf(r).code, 'limits_unavailable');
    assert.ok(Number(r.headers['retry-after']) >= 1, show(r));
    assert.equal(upstreamWith(m), 0, 'fail closed: nothing forwarded');
  }
  const m = marker();
  const ro = await chat(open.port, seen.key, chatBody(`${m} down`, { max_tokens: 5 }));
  assert.equal(ro.status, 200, `fail open: a key Redis vouched for goes on: ${show(ro)}`);
  assert.equal(upstreamWith(m), 1);
  // The local counters still hold the key's rpm (3 here, counted per instance).
  const statuses = [];
  for (let i = 0; i < 4; i++) statuses.push(await chat(open.port, local.key, chatBody('local', { max_tokens: 5 })));
  assert.deepEqual(statuses.map((x) => x.status), [200, 200, 200, 429], statuses.map(show).join('\n'));
  assertLimited(statuses[3], 'requests', local.id);
  // A key this instance never saw from Redis is not let in blind.
  const ru = await chat(open.port, unseen.key, chatBody('unseen', { max_tokens: 5 }));
  assert.equal(ru.status, 503, show(ru));
  assert.equal(errorOf(ru).code, 'limits_unavailable');
  assert.ok(closed.alive() && open.alive(), 'no crash');
});

test('6a2. fail open: a key Redis said was revoked stays refused while Redis is down', {
}, async () => {
  assert.ok(outage, 'needs 6a');
  const m = marker();
  const r = await chat(outage.open.port, outage.revoked.key, chatBody(`${m} revoked, redis down`, { max_tokens: 5 }));
  assert.ok(r.status === 401 || r.status === 503, `a revoked key must not get through: ${show(r)}`);
  assert.equal(upstreamWith(m), 0, 'the revoked key\'s request reached the provider');
});

test('6b. Redis restarted: both modes answer 200 again within a few seconds (reconnect with backoff)', async (t) => {
  assert.ok(outage, 'needs 6a');
  const { redis: r2, closed, open, seen, unseen } = outage;
  await sleep(1500); // let the backoff grow a little
  await r2.restart();
  const t0 = Date.now();
  let last;
  await waitFor(async () => {
    last = await chat(closed.port, seen.key, chatBody('back', { max_tokens: 5 }));
    return last.status === 200;
  }, { timeoutMs: 8000, intervalMs: 50, what: `the closed gateway to answer 200 again (last: ${last && show(last)})` });
  const recovery = Date.now() - t0;
  t.diagnostic(`closed gateway recovered ${recovery} ms after the restart`);
  assert.ok(recovery < 6000, `recovered in ${recovery} ms`);
  await waitFor(async () => (await chat(open.port, unseen.key, chatBody('back', { max_tokens: 5 }))).status === 200,
    { timeoutMs: 8000, intervalMs: 50, what: 'the open gateway to check keys in Redis again' });
  assert.ok(closed.alive() && open.alive(), 'no crash');
});

test('6c. Redis paused (SIGSTOP): answers come within the timeout plus a little, 503 when closed; SIGCONT -> recovers', async (t) => {
  assert.ok(outage, 'needs 6a');
  const { redis: r2, closed, open, seen } = outage;
  assert.equal((await chat(closed.port, seen.key, chatBody('pre', { max_tokens: 5 }))).status, 200);
  assert.equal((await chat(open.port, seen.key, chatBody('pre', { max_tokens: 5 }))).status, 200);
  r2.pause();
  try {
    const times = [];
    for (let i = 0; i < 4; i++) {
      const m = marker();
      const t0 = Date.now();
      const r = await chat(closed.port, seen.key, chatBody(`${m} paused`, { max_tokens: 5 }));
      times.push(Date.now() - t0);
      assert.equal(r.status, 503, show(r));
      assert.equal(errorOf(r).code, 'limits_unavailable');
      assert.ok(Number(r.headers['retry-after']) >= 1, show(r));
      assert.equal(upstreamWith(m), 0);
      const t1 = Date.now();
      const ro = await chat(open.port, seen.key, chatBody(`paused open`, { max_tokens: 5 }));
      times.push(Date.now() - t1);
      assert.equal(ro.status, 200, `fail open while Redis hangs: ${show(ro)}`);
    }
    t.diagnostic(`answer times with Redis paused (timeout 50 ms): ${times.join(', ')} ms`);
    for (const t of times) assert.ok(t < 500, `an answer took ${t} ms with Redis paused (timeout 50 ms): ${times.join(', ')}`);
  } finally {
    r2.resume();
  }
  await waitFor(async () => (await chat(closed.port, seen.key, chatBody('resumed', { max_tokens: 5 }))).status === 200,
    { timeoutMs: 8000, intervalMs: 50, what: 'the closed gateway to answer 200 after SIGCONT' });
  assert.ok(closed.alive() && open.alive(), 'no crash');
});

test('6d. a check that timed out while Redis was paused leaves nothing reserved (max-parallel 1 key works right after)', {
}, async () => {
  assert.ok(outage, 'needs 6a');
  const { redis: r2, closed } = outage;
  const cfg = closed.configPath;
  const k = await createKey(cfg, { maxParallel: 1, rpm: 1000 });
  assert.equal((await chat(closed.port, k.key, chatBody('pre', { max_tokens: 5 }))).status, 200);
  await waitFor(async () => (await usageOf(cfg, k.id)).inFlight === 0, { timeoutMs: 2000, what: 'settled' });
  r2.pause();
  try {
    const r = await chat(closed.port, k.key, chatBody('paused', { max_tokens: 5 }));
    assert.equal(r.status, 503, show(r));
  } finally {
    r2.resume();
  }
  await waitFor(async () => (await chat(closed.port, outage.seen.key, chatBody('resumed', { max_tokens: 5 }))).status === 200,
    { timeoutMs: 8000, intervalMs: 50, what: 'recovery' });
  const u = await usageOf(cfg, k.id);
  const r = await chat(closed.port, k.key, chatBody('after', { max_tokens: 5 }));
  assert.equal(r.status, 200, `${show(r)}\n${u.text}`);
  assert.equal(u.inFlight, 0, u.text);
  assert.equal(u.requests, 1, `the refused request must not count: ${u.text}`);
});

/**
 * A TCP relay to Redis that can hold back what one connection sends
 * (as a stalled network path or a paused Redis reading one socket late
 * would), while later connections pass straight through.
 */
async function holdingRelay(target) {
  const st = { conns: [] };
  st.server = net.createServer((c) => {
    const u = net.connect({ host: '127.0.0.1', port: target });
    const conn = { held: st.holdNew ? [] : null, u, clientEnded: false };
    st.conns.push(conn);
    c.on('data', (d) => { if (conn.held) conn.held.push(d); else u.write(d); });
    c.on('end', () => { conn.clientEnded = true; if (!conn.held) u.end(); });
    u.on('data', (d) => { if (!c.destroyed) c.write(d); });
    c.on('error', () => {});
    u.on('error', () => {});
    u.on('close', () => c.destroy());
  });
  await new Promise((resolve) => st.server.listen(0, '127.0.0.1', resolve));
  st.port = st.server.address().port;
  /** Hold back what the connections open now send, from here on. */
  st.holdCurrent = () => { for (const c of st.conns) if (!c.held) c.held = []; };
  /** Deliver what was held (in order), as late as that. */
  st.release = () => {
    for (const c of st.conns) {
      if (!c.held) continue;
      for (const d of c.held) c.u.write(d);
      c.held = null;
      if (c.clientEnded) c.u.end();
    }
  };
  st.close = () => { for (const c of st.conns) c.u.destroy(); st.server.close(); };
  return st;
}

test('6e. a refund that reaches Redis before its check (sent on an older connection, delivered late) still wins: nothing stays reserved', async () => {
  const relay = await holdingRelay(redis.port);
  const g = await newGateway({ redis: { url: `redis://127.0.0.1:${relay.port}`, fail_mode: 'closed', timeout: '50ms' } });
  try {
    const k = await createKey(g.configPath, { maxParallel: 3, rpm: 1000 });
    assert.equal((await chat(g.port, k.key, chatBody('pre', { max_tokens: 5 }))).status, 200);
    await waitFor(async () => (await usageOf(g.configPath, k.id)).inFlight === 0, { timeoutMs: 2000, what: 'settled' });
    // The connection stalls: checks time out (503) and their refunds are
    // queued; after five timeouts scrim reconnects, and the refunds go out
    // on the new connection, ahead of the checks still held on the old one.
    relay.holdCurrent();
    for (let i = 0; i < 6; i++) {
      const r = await chat(g.port, k.key, chatBody(`stalled ${i}`, { max_tokens: 5 }));
      assert.equal(r.status, 503, show(r));
    }
    await waitFor(() => relay.conns.length >= 2, { timeoutMs: 3000, what: 'scrim to reconnect' });
    await sleep(500); // the refunds run on the new connection
    relay.release(); // now the old checks run, late
    await sleep(500);
    const u = await usageOf(g.configPath, k.id);
    assert.equal(u.inFlight, 0, `checks that ran after their refund kept their reservation:\n${u.text}`);
    // And the key's three parallel slots are all there.
    const rs = await Promise.all([1, 2, 3].map((i) => chat(g.port, k.key, chatBody(`after ${i}`, { max_tokens: 5 }),
      { headers: { 'x-fake-delay-ms': '300' } })));
    assert.deepEqual(rs.map((r) => r.status), [200, 200, 200], rs.map(show).join('\n'));
  } finally {
    relay.close();
  }
});

// ------------------------------------------------ the end

test('8. every gateway started here exits 0 on SIGTERM, with no sanitizer report', async () => {
  for (const g of gateways) {
    if (!g.alive()) continue;
    const code = await g.stop();
    assert.equal(code, 0, `scrim exited ${code}; stderr:\n${g.stderr().slice(-3000)}`);
    assert.ok(!SANITIZER_RE.test(g.stderr()), g.stderr().slice(-3000));
  }
});
