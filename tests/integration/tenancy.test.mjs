// Tenancy of the local indexes: virtual keys (in a real redis-server) carry
// an index grant (`scrim keys create --indexes`, or "indexes" in the admin
// API), and a request gets passages only from the indexes both its route
// and its key allow. Two teams, two indexes that answer the same question:
// key A's requests never carry index B's text to the provider, nor B's A's,
// also when Redis is gone and fail-open decides. A route with
// context_grants = required gives keys without a grant nothing.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { startFakeProvider } from '../fake_provider/provider.mjs';
import {
  startScrim, startRedis, configFor, execFile, request, tempDir, waitFor, SCRIM_BIN, TEST_KEY, show,
} from './lib.mjs';

const ADMIN_TOKEN = 'adm-tenancy-0123456789';
const A_SECRET = 'PELICAN-SUNRISE';
const B_SECRET = 'MARMOT-THUNDER';

let provider;
let redis;
let scrim;
let state;
let docs;
const keys = {};

async function config(route = {}, ports = {}) {
  return configFor({
    providerUrl: provider.url, ...ports,
    gateway: { state_dir: state },
    redis: { url: redis.url, admin_token_env: 'SCRIM_ADMIN_TOKEN', fail_mode: 'open' },
    route: { context: 'on', context_index: 'alpha beta', context_top_k: 4, ...route },
  });
}

async function chat(key) {
  provider.reset();
  const r = await request(scrim.port, {
    method: 'POST', path: '/v1/chat/completions',
    headers: { authorization: `Bearer ${key}` },
    body: { model: 'fake-model', messages: [{ role: 'user', content: 'What is the launch codeword of the team?' }] },
  });
  assert.equal(r.status, 200, show(r));
  return provider.requests.at(-1).body;
}

async function keysCmd(...args) {
  return execFile(SCRIM_BIN, ['keys', ...args, '-c', scrim.configPath]);
}

before(async () => {
  provider = await startFakeProvider();
  redis = await startRedis();
  state = tempDir('scrim-tenancy-state-');
  docs = tempDir('scrim-tenancy-docs-');
  for (const [team, secret] of [['alpha', A_SECRET], ['beta', B_SECRET]]) {
    const d = path.join(docs, team);
    fs.mkdirSync(d);
    fs.writeFileSync(path.join(d, 'launch.md'),
      `# Launch\n\nThe ${team} team's launch codeword is ${secret}. Keep the launch codeword to the team.\n`);
  }
  scrim = await startScrim({ config: await config(), env: { SCRIM_ADMIN_TOKEN: ADMIN_TOKEN } });
  for (const team of ['alpha', 'beta']) {
    await execFile(SCRIM_BIN, ['index', 'add', '--index', team, path.join(docs, team), '-c', scrim.configPath]);
  }
  // Key A from the command line, key B from the admin API.
  keys.a = (await keysCmd('create', '--name', 'team-a', '--indexes', 'alpha')).stdout.match(/^key: (\S+)$/m)[1];
  const made = await request(scrim.adminPort, {
    method: 'POST', path: '/admin/keys',
    headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    body: { name: 'team-b', indexes: ['beta'] },
  });
  assert.equal(made.status, 201, show(made));
  assert.equal(made.json.record.indexes, 'beta');
  keys.b = made.json.key;
  keys.open = (await keysCmd('create', '--name', 'no-grant')).stdout.match(/^key: (\S+)$/m)[1];
  keys.none = (await keysCmd('create', '--name', 'nothing', '--indexes', 'none')).stdout.match(/^key: (\S+)$/m)[1];
});

after(async () => {
  // Non-zero also when a sanitizer build finds a leak.
  if (scrim) assert.equal(await scrim.stop(), 0, scrim.stderr());
  await redis?.stop();
  await provider?.close();
  for (const d of [state, docs]) fs.rmSync(d, { recursive: true, force: true });
});

test('each key gets passages from its own index only', async () => {
  for (let i = 0; i < 3; i++) {
    const a = await chat(keys.a);
    assert.ok(a.includes(A_SECRET), 'key A gets index alpha');
    assert.ok(!a.includes(B_SECRET), 'key A never gets index beta');
    const b = await chat(keys.b);
    assert.ok(b.includes(B_SECRET), 'key B gets index beta');
    assert.ok(!b.includes(A_SECRET), 'key B never gets index alpha');
  }
});

test('a key without a grant gets the route\'s indexes; "none" gets none', async () => {
  const open = await chat(keys.open);
  assert.ok(open.includes(A_SECRET) && open.includes(B_SECRET));
  const none = await chat(keys.none);
  assert.equal(JSON.parse(none).messages.length, 1, 'no context message');
});

test('the grant is shown, and a bad one is refused', async () => {
  const list = (await keysCmd('list')).stdout;
  const id = list.split('\n').find((l) => /team-a/.test(l)).split(/\s+/)[0];
  assert.match((await keysCmd('show', id)).stdout, /^indexes: alpha$/m);
  await assert.rejects(keysCmd('create', '--name', 'x', '--indexes', 'alpha,../beta'),
    (e) => e.code === 2 && /--indexes '\S+': index names are letters/.test(e.stderr));
  const bad = await request(scrim.adminPort, {
    method: 'POST', path: '/admin/keys',
    headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    body: { name: 'x', indexes: ['alpha', 'be ta'] },
  });
  assert.equal(bad.status, 400, show(bad));
  assert.match(bad.json.error.message, /^indexes: /);
  // Rotating keeps the grant.
  const rotated = (await keysCmd('rotate', id)).stdout.match(/^key: (\S+)$/m)[1];
  const a = await chat(rotated);
  assert.ok(a.includes(A_SECRET) && !a.includes(B_SECRET));
  keys.a = rotated;
});

test('context_grants = required: a key without a grant gets no context', async () => {
  scrim.reload(await config({ context_grants: 'required' }, { port: scrim.port, adminPort: scrim.adminPort }));
  await waitFor(async () => JSON.parse(await chat(keys.open)).messages.length === 1,
    { timeoutMs: 5000, what: 'the reload to apply context_grants = required' });
  const a = await chat(keys.a);
  assert.ok(a.includes(A_SECRET) && !a.includes(B_SECRET));
  // A [keys] key has no grant either.
  const cfgKey = await chat(TEST_KEY);
  assert.equal(JSON.parse(cfgKey).messages.length, 1);
});

test('fail-open keeps each key to its grant when Redis is gone', async () => {
  await chat(keys.a);
  await chat(keys.b); // Redis vouched for both, grants included
  await redis.kill();
  for (let i = 0; i < 2; i++) {
    const a = await chat(keys.a);
    assert.ok(a.includes(A_SECRET) && !a.includes(B_SECRET), 'A, fail-open');
    const b = await chat(keys.b);
    assert.ok(b.includes(B_SECRET) && !b.includes(A_SECRET), 'B, fail-open');
  }
});
