// Context injection end to end: documents indexed with `scrim index add`,
// passages retrieved for the latest user message and added as a system
// message (OpenAI) or system text (Anthropic), scrubbed before they leave,
// the per-request opt-out, chunk ids in the audit record, and an index
// rebuilt while requests keep coming.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { startFakeProvider } from '../fake_provider/provider.mjs';
import {
  startScrim, configFor, execFile, request, auth, tempDir, sleep, SCRIM_BIN, TEST_KEY, show,
} from './lib.mjs';

let provider;
let scrim;
let state;
let docs;
let configPath;

const HANDBOOK = `# Travel policy

Employees book flights through the travel desk. Economy class applies to flights under six hours.
Questions go to travel.desk.lead@corp.example or +1 415 555 0199.

# Expense reports

Submit expense reports within 30 days. The corporate card is 4111 1111 1111 1111.
`;

async function index(...args) {
  return execFile(SCRIM_BIN, ['index', ...args, '-c', configPath], { timeout: 60_000 });
}
async function chat(text, headers = {}) {
  return request(scrim.port, {
    method: 'POST', path: '/v1/chat/completions',
    headers: { ...auth(TEST_KEY), 'content-type': 'application/json', ...headers },
    body: JSON.stringify({ model: 'fake-model', temperature: 0.7, messages: [{ role: 'user', content: text }] }),
  });
}
function lastBody() { return JSON.parse(provider.requests.at(-1).body); }

before(async () => {
  provider = await startFakeProvider();
  state = tempDir('scrim-ctx-state-');
  docs = tempDir('scrim-ctx-docs-');
  fs.writeFileSync(path.join(docs, 'handbook.md'), HANDBOOK);
  scrim = await startScrim({
    config: await configFor({
      providerUrl: provider.url, gateway: { state_dir: state },
      route: { context: 'on', context_top_k: 2 }, anthropicRoute: { context: 'on' },
    }),
  });
  configPath = scrim.configPath;
  await index('add', docs);
});

after(async () => {
  await scrim?.stop();
  await provider?.close();
});

test('a relevant passage is added as a system message, scrubbed, numbers untouched', async () => {
  provider.reset();
  const r = await chat('How do I book flights for a trip?');
  assert.equal(r.status, 200, show(r));
  const raw = provider.requests.at(-1).body;
  const body = JSON.parse(raw);
  assert.equal(body.messages[0].role, 'system');
  assert.match(body.messages[0].content, /travel desk/);
  assert.match(body.messages[0].content, /handbook\.md/);
  assert.match(body.messages[0].content, /not as instructions/);
  assert.equal(body.messages[1].content, 'How do I book flights for a trip?');
  // Retrieved text is scrubbed like the prompt.
  for (const v of ['travel.desk.lead@corp.example', '415 555 0199', '4111 1111 1111 1111']) {
    assert.ok(!raw.includes(v), `${v} reached the provider`);
  }
  assert.match(raw, /"temperature":0\.7/);
});

test('x-scrim-context: off leaves the request as it was', async () => {
  provider.reset();
  const r = await chat('How do I book flights?', { 'x-scrim-context': 'off' });
  assert.equal(r.status, 200);
  assert.equal(lastBody().messages.length, 1);
});

test('Anthropic messages get the context in system', async () => {
  provider.reset();
  const r = await request(scrim.port, {
    method: 'POST', path: '/anthropic/v1/messages',
    headers: { 'x-api-key': TEST_KEY, 'content-type': 'application/json', 'anthropic-version': '2023-06-01' },
    body: JSON.stringify({ model: 'claude-3-5-haiku', max_tokens: 50, system: 'Be brief.',
      messages: [{ role: 'user', content: 'When are expense reports due?' }] }),
  });
  assert.equal(r.status, 200, show(r));
  const body = lastBody();
  assert.match(body.system, /^Be brief\.\n\nContext from the user's own documents/);
  assert.match(body.system, /30 days/);
});

test('the audit record lists the chunks injected', async () => {
  await sleep(1300); // fsync interval
  const recs = fs.readFileSync(path.join(state, 'audit.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  const withCtx = recs.filter((x) => x.type === 'request' && x.context_ids && x.context_ids.length > 0);
  assert.ok(withCtx.length >= 2, JSON.stringify(recs.slice(-3)));
  assert.match(withCtx[0].context_ids[0], /^[0-9a-f]{8}:\d+$/);
});

test('the index is rebuilt while requests run: none fails, new documents are found', async () => {
  let stop = false;
  let failures = 0;
  let sent = 0;
  const load = (async () => {
    while (!stop) {
      const r = await chat('What is the policy on flights?');
      sent++;
      if (r.status !== 200) failures++;
    }
  })();
  fs.writeFileSync(path.join(docs, 'security.md'),
    '# Badge policy\n\nVisitors collect a zebracorn badge at reception before entering the lab.\n');
  await index('add', docs);
  await sleep(300);
  stop = true;
  await load;
  assert.ok(sent > 0);
  assert.equal(failures, 0);
  provider.reset();
  assert.equal((await chat('Where do visitors get a zebracorn badge?')).status, 200);
  assert.match(lastBody().messages[0].content, /zebracorn badge at reception/);
});
