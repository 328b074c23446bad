// A virtual key's request works ahead of its limits answer (src/request.c,
// stage_limits and stage_admit): context and scrub run on the grant Redis
// gave the key last while the check is in flight, and nothing is forwarded
// before the answer. These tests hold the answer back (Redis paused with
// SIGSTOP) until scrub is long done, and check every way the answer and
// the stages ahead can disagree: a 429 forwards nothing, a block rule's 403
// refunds the reservation, a key revoked meanwhile gets its 401, a key whose
// actions changed since is scrubbed again under the new ones, the local
// action is accounted, and a client that leaves while the check is out
// gives its reservation back.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { startFakeProvider, countTokens } from '../fake_provider/provider.mjs';
import {
  startScrim, startRedis, configFor, execFile, request, auth, chatBody, waitFor, show, sleep,
  sha256hex, SCRIM_BIN,
} from './lib.mjs';

const SANITIZER_RE = /AddressSanitizer|LeakSanitizer|runtime error:|UndefinedBehaviorSanitizer/;
// How long Redis stays paused: far longer than scrub takes, far shorter
// than the gateway's [redis] timeout (2 s below).
const PAUSE_MS = 400;

let provider;
let localFake; // behind [gateway] local_provider
let redis;
let scrim;

const marker = () => `zq${crypto.randomBytes(6).toString('hex')}`;
const reached = (fake, m) => fake.requests.filter((r) => r.body.includes(m)).length;

async function keysCmd(...args) {
  const { stdout } = await execFile(SCRIM_BIN, ['keys', ...args, '-c', scrim.configPath]);
  return stdout;
}

let keyCount = 0;
async function createKey(o = {}) {
  const args = ['create', '--name', `ahead${++keyCount}`];
  if (o.rpm !== undefined) args.push('--rpm', String(o.rpm));
  if (o.actions !== undefined) args.push('--actions', o.actions);
  const out = await keysCmd(...args);
  const key = out.match(/^key: (\S+)$/m)?.[1];
  const id = out.match(/^id:\s+(\S+)$/m)?.[1];
  assert.ok(key && id, out);
  return { key, id, hash: sha256hex(key) };
}

/** `scrim keys usage`, once nothing of the key is in flight. */
async function settledUsage(id) {
  let u;
  await waitFor(async () => {
    const text = await keysCmd('usage', id);
    const num = (re) => Number(text.match(re)[1]);
    u = {
      requests: num(/requests, last 60 s:\s+(-?\d+)/),
      minute: num(/tokens, this minute:\s+(-?\d+)/),
      today: num(/tokens, today \(UTC\):\s+(-?\d+)/),
      usd: num(/USD, this month \(UTC\):\s+(-?[\d.]+)/),
      inFlight: num(/in flight:\s+(-?\d+)/),
    };
    return u.inFlight === 0;
  }, { timeoutMs: 3000, what: `key ${id} to have nothing in flight` });
  return u;
}

/** Token windows are minutes: keep a comparison of two usages in one. */
async function awayFromMinuteEdge(marginMs = 5000) {
  const left = 60000 - (Date.now() % 60000);
  if (left < marginMs) await sleep(left + 100);
}

const chat = (key, body, o = {}) => request(scrim.port, {
  method: 'POST', path: '/v1/chat/completions', headers: { ...auth(key) }, body, ...o,
});

/** One request sent while Redis is paused: its check is answered only
 * after PAUSE_MS, long after scrub ran. */
async function chatWhilePaused(key, body) {
  redis.pause();
  let r;
  try {
    const pending = chat(key, body);
    await sleep(PAUSE_MS);
    redis.resume();
    r = await pending;
  } finally {
    redis.resume();
  }
  return r;
}

/** A first request, so scrim has the key's grant from an answer. */
async function warm(k) {
  const r = await chat(k.key, chatBody('hello', { model: 'acct-model', max_tokens: 5 }));
  assert.equal(r.status, 200, show(r));
}

before(async () => {
  provider = await startFakeProvider();
  localFake = await startFakeProvider();
  redis = await startRedis();
  scrim = await startScrim({
    config: await configFor({
      providerUrl: provider.url,
      redis: { url: redis.url, fail_mode: 'closed', timeout: '2s' },
      prices: { 'acct-*': '2 3' },
      gateway: { local_provider: 'localfake' },
      route: { actions: 'secret.*=block' },
      extra: `[provider localfake]\nbase_url = ${localFake.url}/v1\nauth_header = none\nconnect_timeout = 2s\ntimeout = 30s\n`,
    }),
  });
});

after(async () => {
  const err = scrim?.stderr() || '';
  await scrim?.stop();
  await redis?.stop();
  await provider?.close();
  await localFake?.close();
  assert.ok(!SANITIZER_RE.test(err), `sanitizer report in scrim's log:\n${err}`);
});

const TOKEN = 'ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789'; // secret.github_token

test('a block rule on a virtual key: 403, nothing forwarded, the key\'s usage unchanged', async () => {
  await awayFromMinuteEdge();
  const k = await createKey({ rpm: 100 });
  await warm(k);
  const before = await settledUsage(k.id);
  const m = marker();
  const r = await chat(k.key, chatBody(`${m} my token ${TOKEN}`, { model: 'acct-model', max_tokens: 50 }));
  assert.equal(r.status, 403, show(r));
  assert.match(r.body.toString(), /secret\.github_token/);
  assert.equal(reached(provider, m), 0);
  assert.deepEqual(await settledUsage(k.id), before, 'the blocked request is refunded whole');
});

test('Redis paused: the 429 arrives after scrub ran, and nothing is forwarded', async () => {
  const k = await createKey({ rpm: 1 });
  await warm(k);
  const m = marker();
  const r = await chatWhilePaused(k.key, chatBody(`${m} one too many`, { model: 'acct-model' }));
  assert.equal(r.status, 429, show(r));
  assert.match(r.json.error.message, /\brequests\b/);
  assert.ok(Number(r.headers['retry-after']) >= 1, show(r));
  assert.equal(reached(provider, m), 0, 'a request over its limit reached the provider');
  assert.equal((await settledUsage(k.id)).requests, 1);
});

test('Redis paused: a block rule\'s 403 is told once the answer is in, and the reservation is refunded', async () => {
  await awayFromMinuteEdge();
  const k = await createKey({ rpm: 100 });
  await warm(k);
  const before = await settledUsage(k.id);
  const m = marker();
  const t0 = Date.now();
  const r = await chatWhilePaused(k.key, chatBody(`${m} my token ${TOKEN}`, { model: 'acct-model', max_tokens: 50 }));
  assert.equal(r.status, 403, show(r));
  assert.ok(Date.now() - t0 >= PAUSE_MS - 20, 'the 403 waited for the limits answer');
  assert.match(r.body.toString(), /secret\.github_token/);
  assert.equal(reached(provider, m), 0);
  assert.deepEqual(await settledUsage(k.id), before, 'the blocked request is refunded whole');
  // And the key goes on as before.
  const ok = await chat(k.key, chatBody('after', { model: 'acct-model', max_tokens: 5 }));
  assert.equal(ok.status, 200, show(ok));
});

test('a key revoked since its last check: a body a rule blocks still gets the 401, not the 403', async () => {
  const k = await createKey({ rpm: 100 });
  await warm(k);
  await keysCmd('revoke', k.id);
  const m = marker();
  const r = await chatWhilePaused(k.key, chatBody(`${m} my token ${TOKEN}`));
  assert.equal(r.status, 401, show(r));
  assert.match(r.json.error.message, /revoked/, show(r));
  assert.equal(reached(provider, m), 0);
});

test('a key whose actions changed since its last check is scrubbed again under the new ones', async () => {
  await awayFromMinuteEdge();
  const k = await createKey({ rpm: 100, actions: 'EMAIL=redact' });
  await warm(k);
  const rec = `scrim:{${k.hash}}:key`;

  // redact -> hash: the body that goes out is the one the new action made.
  assert.equal(await redis.cli('HSET', rec, 'actions', 'EMAIL=hash'), '0');
  let m = marker();
  let r = await chatWhilePaused(k.key, chatBody(`${m} mail ana.lopez@example.com`, { model: 'acct-model' }));
  assert.equal(r.status, 200, show(r));
  const sent = provider.requests.filter((x) => x.body.includes(m));
  assert.equal(sent.length, 1);
  const content = JSON.parse(sent[0].body).messages[0].content;
  assert.match(content, /^zq[0-9a-f]+ mail EMAIL-[0-9a-f]{12}$/, content);
  // It went ahead on the old grant, and was caught at the gate.
  assert.match(scrim.stderr(), new RegExp(`key ${k.id} changed since its last check`));

  // hash -> block: refused, nothing forwarded, refunded.
  const before = await settledUsage(k.id);
  assert.equal(await redis.cli('HSET', rec, 'actions', 'EMAIL=block'), '0');
  m = marker();
  r = await chat(k.key, chatBody(`${m} mail ana.lopez@example.com`, { model: 'acct-model', max_tokens: 50 }));
  assert.equal(r.status, 403, show(r));
  assert.equal(reached(provider, m), 0);
  assert.deepEqual(await settledUsage(k.id), before);

  // block -> local: the request goes whole to the local provider.
  assert.equal(await redis.cli('HSET', rec, 'actions', 'EMAIL=local'), '0');
  m = marker();
  r = await chat(k.key, chatBody(`${m} mail ana.lopez@example.com`, { model: 'acct-model' }));
  assert.equal(r.status, 200, show(r));
  assert.equal(reached(provider, m), 0);
  assert.equal(reached(localFake, m), 1);
});

test('Redis paused: a request the key\'s local action sends to local_provider is accounted from its answer', async () => {
  await awayFromMinuteEdge();
  const k = await createKey({ rpm: 100, actions: 'EMAIL=local' });
  await warm(k);
  const before = await settledUsage(k.id);
  const m = marker();
  const text = `${m} mail ana.lopez@example.com`;
  const r = await chatWhilePaused(k.key, chatBody(text, { model: 'acct-model', max_tokens: 50 }));
  assert.equal(r.status, 200, show(r));
  assert.equal(reached(provider, m), 0);
  assert.equal(reached(localFake, m), 1);
  const used = countTokens(text) + countTokens(`echo: ${text}`);
  assert.deepEqual(r.json.usage.total_tokens, used, show(r));
  const after = await settledUsage(k.id);
  assert.equal(after.requests, before.requests + 1);
  assert.equal(after.minute, before.minute + used);
  assert.equal(after.today, before.today + used);
});

test('Redis paused: a client that leaves while the check is out gets its reservation back', async () => {
  await awayFromMinuteEdge();
  const k = await createKey({ rpm: 100 });
  await warm(k);
  const before = await settledUsage(k.id);
  const m = marker();
  redis.pause();
  try {
    const gone = chat(k.key, chatBody(`${m} leaving`, { model: 'acct-model', max_tokens: 50 }), { timeoutMs: 150 })
      .then(() => null, (e) => e);
    assert.ok(await gone, 'the client gave up');
    await sleep(100);
  } finally {
    redis.resume();
  }
  await waitFor(async () => {
    const u = await settledUsage(k.id);
    return u.requests === before.requests && u.minute === before.minute;
  }, { timeoutMs: 3000, what: 'the reservation to be refunded' });
  assert.equal(reached(provider, m), 0);
});
