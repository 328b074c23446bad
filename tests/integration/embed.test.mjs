// An index built by an OpenAI-compatible embeddings endpoint (the fake
// provider's fake-bow-96 model, a deterministic bag of words): `scrim index
// add` sends chunks of several files per request, search finds by vectors,
// an index is never mixed with another embedder's vectors (add and search
// refuse, naming both), an endpoint that is down is a clear error for the
// command and a fallback to words for the gateway, and an endpoint that is
// not on this machine must be asked for.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { startFakeProvider } from '../fake_provider/provider.mjs';
import {
  startScrim, configFor, execFile, request, auth, tempDir, freePort, SCRIM_BIN, TEST_KEY, show,
} from './lib.mjs';

let provider;
let state;
let docs;
let work;

const FILES = {
  'security.md': '# Badge policy\n\nVisitors collect a zebracorn badge at reception before entering the lab.\n',
  'travel.md': '# Travel\n\nEmployees book flights through the travel desk; economy class under six hours.\n',
  'expenses.md': '# Expenses\n\nSubmit expense reports within thirty days of the purchase.\n',
  'oncall.md': '# On call\n\nThe pager rotation changes every Monday at nine in the morning.\n',
  'kitchen.md': '# Kitchen\n\nThe espresso machine is descaled on the first Friday of each month.\n',
  'parking.md': '# Parking\n\nBicycles are parked in the basement racks beside the lifts.\n',
};

function indexSection(over = {}) {
  const o = {
    embedder: 'openai', embed_url: `${provider.url}/v1`, embed_model: 'fake-bow-96', embed_batch: 4, ...over,
  };
  return `[index]\n${Object.entries(o).map(([k, v]) => `${k} = ${v}`).join('\n')}\n`;
}

async function writeConfig(name, extra, more = {}) {
  const p = path.join(work, name);
  fs.writeFileSync(p, await configFor({
    providerUrl: provider.url, gateway: { state_dir: state }, extra, ...more,
  }));
  return p;
}

async function scrimIndex(conf, ...args) {
  try {
    const r = await execFile(SCRIM_BIN, ['index', ...args, '-c', conf], { timeout: 60_000 });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (e) {
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

const embedCalls = () => provider.requests.filter((r) => r.path === '/v1/embeddings')
  .map((r) => JSON.parse(r.body));

let confOpenai;

before(async () => {
  provider = await startFakeProvider();
  state = tempDir('scrim-embed-state-');
  docs = tempDir('scrim-embed-docs-');
  work = tempDir('scrim-embed-work-');
  for (const [n, t] of Object.entries(FILES)) fs.writeFileSync(path.join(docs, n), t);
  confOpenai = await writeConfig('openai.conf', indexSection());
});

after(async () => {
  await provider?.close();
  for (const d of [state, docs, work]) fs.rmSync(d, { recursive: true, force: true });
});

test('index add embeds through the endpoint, several files per request', async () => {
  provider.reset();
  const r = await scrimIndex(confOpenai, 'add', docs);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /6 indexed \(6 chunks/);
  const calls = embedCalls();
  // One short probe for the dimension, then the chunks in batches of 4.
  assert.deepEqual(calls[0].input, ['dimension probe']);
  const batches = calls.slice(1).map((c) => c.input);
  assert.ok(batches.every((b) => Array.isArray(b) && b.length <= 4), JSON.stringify(batches));
  assert.equal(batches.flat().length, 6);
  assert.ok(batches.some((b) => b.length > 1), 'chunks of several files share a request');
  assert.ok(calls.every((c) => c.model === 'fake-bow-96'));
  // What is embedded: the document's name (folder/file), its heading, its text.
  assert.ok(batches.flat().some((t) => /\/security\.md\nBadge policy\nVisitors/.test(t)), JSON.stringify(batches));

  const st = await scrimIndex(confOpenai, 'stats', '--json');
  assert.equal(st.code, 0, st.stderr);
  assert.equal(JSON.parse(st.stdout).embedder, 'openai:fake-bow-96/96');

  // Again: nothing changed, so nothing is embedded but the probe.
  provider.reset();
  assert.equal((await scrimIndex(confOpenai, 'add', docs)).code, 0);
  assert.equal(embedCalls().length, 1);
});

test('search by the endpoint\'s vectors finds the passage', async () => {
  provider.reset();
  const r = await scrimIndex(confOpenai, 'search', '--json', '--mode', 'vector', '-k', '1', 'zebracorn badge reception');
  assert.equal(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  assert.equal(j.hits.length, 1);
  assert.match(j.hits[0].file, /security\.md$/);
  assert.ok(j.hits[0].cosine > 0.3, String(j.hits[0].cosine));
  assert.deepEqual(embedCalls().map((c) => c.input), [['zebracorn badge reception']]);
});

test('vectors of two embedders are never mixed: add and search refuse, naming both', async () => {
  const builtin = await writeConfig('builtin.conf', '');
  const other = await writeConfig('other.conf', indexSection({ embed_model: 'fake-bow-64' }));
  fs.writeFileSync(path.join(docs, 'new.md'), '# New\n\nA new page about zebracorn badges.\n');
  for (const conf of [builtin, other]) {
    const add = await scrimIndex(conf, 'add', docs);
    assert.equal(add.code, 1, add.stdout);
    assert.match(add.stderr, /built with embedder openai:fake-bow-96\/96/);
    assert.match(add.stderr, conf === builtin ? /scrim-hash\/512 v1/ : /openai:fake-bow-64\/64/);
    assert.match(add.stderr, /cannot be mixed/);
    const s = await scrimIndex(conf, 'search', 'zebracorn');
    assert.equal(s.code, 1, s.stdout);
    assert.match(s.stderr, /built with embedder openai:fake-bow-96\/96, but (the built-in embedder|openai:fake-bow-64) is configured/);
  }
  // The index still holds what it held.
  const st = JSON.parse((await scrimIndex(confOpenai, 'stats', '--json')).stdout);
  assert.equal(st.files, 6);
  fs.rmSync(path.join(docs, 'new.md'));
});

test('an endpoint that is down is a clear error for the command', async () => {
  const port = await freePort(); // nothing listens there
  const down = await writeConfig('down.conf', indexSection({ embed_url: `http://127.0.0.1:${port}/v1` }));
  const add = await scrimIndex(down, 'add', docs);
  assert.equal(add.code, 1);
  assert.match(add.stderr, new RegExp(`embeddings endpoint http://127\\.0\\.0\\.1:${port}/v1/embeddings: .*(refused|connect)`, 'i'));
  const s = await scrimIndex(down, 'search', 'zebracorn');
  assert.equal(s.code, 1);
  assert.match(s.stderr, /embeddings endpoint .*--mode bm25 searches by words alone/);
  // By words alone it still answers.
  const b = await scrimIndex(down, 'search', '--mode', 'bm25', 'zebracorn');
  assert.equal(b.code, 0, b.stderr);
  assert.match(b.stdout, /security\.md/);
  // An endpoint that answers an error: its status and message are shown.
  const bad = await writeConfig('bad.conf', indexSection({ embed_url: `${provider.url}/v2` }));
  const e = await scrimIndex(bad, 'search', 'zebracorn');
  assert.equal(e.code, 1);
  assert.match(e.stderr, /answered HTTP 404: Unknown request URL/);
});

test('an endpoint off this machine is refused unless embed_remote = yes', async () => {
  const far = await writeConfig('far.conf', indexSection({ embed_url: 'http://192.0.2.10:11434/v1' }));
  await assert.rejects(execFile(SCRIM_BIN, ['check', '-c', far]),
    (e) => /192\.0\.2\.10 is not this machine; documents and prompts are sent to it unscrubbed/.test(e.stderr));
  const ok = await writeConfig('far-ok.conf', indexSection({ embed_url: 'http://192.0.2.10:11434/v1', embed_remote: 'yes' }));
  const r = await execFile(SCRIM_BIN, ['check', '-c', ok]);
  assert.match(r.stdout + r.stderr, /ok|valid/i);
});

test('the gateway embeds the query with the endpoint, and falls back to words when it is down', async () => {
  let scrim = await startScrim({
    config: await configFor({
      providerUrl: provider.url, gateway: { state_dir: state },
      route: { context: 'on', context_top_k: 1 }, extra: indexSection(),
    }),
  });
  const chat = (text) => request(scrim.port, {
    method: 'POST', path: '/v1/chat/completions', headers: { ...auth(TEST_KEY) },
    body: { model: 'fake-model', messages: [{ role: 'user', content: text }] },
  });
  try {
    provider.reset();
    const r = await chat('Where do visitors get a zebracorn badge?');
    assert.equal(r.status, 200, show(r));
    assert.deepEqual(embedCalls().map((c) => c.input), [['Where do visitors get a zebracorn badge?']]);
    const sent = JSON.parse(provider.requests.find((x) => x.path === '/v1/chat/completions').body);
    assert.equal(sent.messages[0].role, 'system');
    assert.match(sent.messages[0].content, /zebracorn badge at reception/);
  } finally {
    // Non-zero also when a sanitizer build finds a leak.
    assert.equal(await scrim.stop(), 0, scrim.stderr());
  }

  const port = await freePort();
  scrim = await startScrim({
    config: await configFor({
      providerUrl: provider.url, gateway: { state_dir: state },
      route: { context: 'on', context_top_k: 1 },
      extra: indexSection({ embed_url: `http://127.0.0.1:${port}/v1` }),
    }),
  });
  try {
    provider.reset();
    const r = await chat('Where do visitors get a zebracorn badge?');
    assert.equal(r.status, 200, show(r));
    const sent = JSON.parse(provider.requests.at(-1).body);
    assert.match(sent.messages[0].content, /zebracorn badge at reception/);
    assert.match(scrim.stderr(), /embeddings endpoint .* searched by words alone/);
    // The log names the endpoint, never the prompt.
    assert.ok(!scrim.stderr().includes('visitors'), scrim.stderr());
  } finally {
    // Non-zero also when a sanitizer build finds a leak.
    assert.equal(await scrim.stop(), 0, scrim.stderr());
  }
});
