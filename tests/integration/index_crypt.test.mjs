// Encryption at rest of the document index (docs/index.md), end to end:
// a folder indexed with [index] encrypt_key_file, searched from the
// command line, its files searched byte for byte for the document's
// phrase, words, e-mail address, card number and file name (none there,
// while a plain index of the same folder holds them all), a wrong or
// missing key refused with a clear message, and the gateway injecting
// the passage from the encrypted index, scrubbed, into a request.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { startFakeProvider } from '../fake_provider/provider.mjs';
import {
  startScrim, configFor, execFile, request, auth, tempDir, waitFor, SCRIM_BIN, TEST_KEY, show,
} from './lib.mjs';

const PHRASE = 'the quokkafication committee convenes beside the zanzibarian aquarium';
const EMAIL = 'marigold.featherstonehaugh@corp.example';
const CARD = '4111 1111 1111 1111';
const DOC = `# Vellichor procedures for the Pemberton archive

Every fortnight ${PHRASE}, where Wolfgang Thistlewood reads the
lugubrious minutes aloud. Reimbursements for the marmalade sandwiches go
to ${EMAIL}; the expenses card is ${CARD}.

## Snickersnee storage

Ceremonial snickersnees are kept in the oubliette behind the
gramophone cabinet, wrapped in tarpaulin.
`;

let provider;
let scrim;
let state;
let docs;
let keys;
let keyPath;

async function index(config, ...args) {
  return execFile(SCRIM_BIN, ['index', ...args, '-c', config], { timeout: 60_000 });
}
// An ASan build reports through stderr; the exit status of a run that
// is meant to fail would not show it.
function noSanitizerReport(text, who) {
  assert.ok(!/Sanitizer|runtime error:/.test(text), `${who}: ${text}`);
}
async function indexFails(config, ...args) {
  try {
    await index(config, ...args);
  } catch (e) {
    noSanitizerReport(e.stderr, `scrim index ${args.join(' ')}`);
    return e;
  }
  assert.fail(`scrim index ${args.join(' ')} succeeded`);
}

// Every file of one index (the database, -wal, -shm, -journal).
function indexFiles(name) {
  const dir = path.join(state, 'index');
  return fs.readdirSync(dir).filter((f) => f === `${name}.db` || f.startsWith(`${name}.db-`))
    .map((f) => path.join(dir, f));
}

// The words of the document worth looking for: 5 letters or more.
function docWords() {
  return [...new Set(DOC.match(/[A-Za-z]{5,}/g))];
}

// What each needle is found in, among the files of an index.
function grep(name, needles) {
  const found = [];
  const files = indexFiles(name);
  for (const f of files) {
    const bytes = fs.readFileSync(f);
    for (const n of needles) {
      for (const v of new Set([n, n.toLowerCase()])) {
        if (bytes.includes(Buffer.from(v))) found.push(`${path.basename(f)}: ${v}`);
      }
    }
  }
  return { files: files.map((f) => path.basename(f)), found };
}

const needles = () => [
  PHRASE, EMAIL, CARD, CARD.replace(/ /g, ''), 'corp.example', 'vellichor.md', path.basename(docs),
  ...docWords(),
];

function writeKey(name) {
  const p = path.join(keys, name);
  fs.writeFileSync(p, crypto.randomBytes(32), { mode: 0o600 });
  return p;
}

// The gateway's configuration with its index sections (the last ones in
// the file) replaced.
function otherConfig(name, indexSection) {
  const text = fs.readFileSync(scrim.configPath, 'utf8')
    .replace(/\n\[index\]\n[\s\S]*$/, `\n${indexSection}\n`);
  const p = path.join(keys, name);
  fs.writeFileSync(p, text);
  return p;
}

before(async () => {
  provider = await startFakeProvider();
  state = tempDir('scrim-crypt-state-');
  docs = tempDir('scrim-crypt-docs-');
  keys = tempDir('scrim-crypt-keys-');
  keyPath = writeKey('index.key');
  fs.writeFileSync(path.join(docs, 'vellichor.md'), DOC);
  scrim = await startScrim({
    config: await configFor({
      providerUrl: provider.url, gateway: { state_dir: state },
      route: { context: 'on', context_top_k: 2 },
      // [index plain] starts from the defaults: no key. The same folder,
      // indexed in clear, shows that the byte search below finds words.
      extra: `[index]\nencrypt_key_file = ${keyPath}\n\n[index plain]\n`,
    }),
  });
});

after(async () => {
  await scrim?.stop();
  await provider?.close();
  if (scrim) noSanitizerReport(scrim.stderr(), 'scrim serve');
});

test('an encrypted index is made and searched with the configured key', async () => {
  const add = await index(scrim.configPath, 'add', docs);
  assert.match(add.stdout, /1 indexed/);
  const st = JSON.parse((await index(scrim.configPath, 'stats', '--json')).stdout);
  assert.equal(st.encrypted, true);
  assert.equal(st.files, 1);
  for (const f of indexFiles('default')) {
    assert.equal(fs.statSync(f).mode & 0o777, 0o600, `${f} mode`);
  }
  const r = await index(scrim.configPath, 'search', 'quokkafication committee');
  assert.match(r.stdout, /vellichor\.md:/);
  assert.match(r.stdout, /quokkafication committee convenes/);
  const j = JSON.parse((await index(scrim.configPath, 'search', '--json', 'snickersnee oubliette')).stdout);
  assert.match(j.hits[0].text, /oubliette behind the\s+gramophone/);
  assert.equal(j.hits[0].title, 'Vellichor procedures for the Pemberton archive > Snickersnee storage');
});

test('the index files hold no phrase, word, e-mail, card number or file name', async () => {
  await index(scrim.configPath, 'add', '--index', 'plain', docs);
  const plain = grep('plain', needles());
  // The method finds what is there: the plain index holds all of it.
  for (const n of [PHRASE, EMAIL, CARD, 'vellichor.md', ...docWords()]) {
    assert.ok(plain.found.some((f) => f.endsWith(`: ${n}`) || f.endsWith(`: ${n.toLowerCase()}`)),
      `${n} not found in the plain index: the byte search is broken`);
  }
  const enc = grep('default', needles());
  assert.ok(enc.files.includes('default.db'), enc.files.join(' '));
  assert.deepEqual(enc.found, [], `found in the encrypted index (${enc.files.join(', ')})`);
});

test('an update while the gateway holds the index open leaves its -wal ciphertext too', async () => {
  // The gateway opens the index on its first request and keeps it open,
  // so the writer's pages stay in the -wal after the update.
  assert.equal((await request(scrim.port, {
    method: 'POST', path: '/v1/chat/completions',
    headers: { ...auth(TEST_KEY), 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'fake-model', messages: [{ role: 'user', content: 'marmalade sandwiches' }] }),
  })).status, 200);
  fs.appendFileSync(path.join(docs, 'vellichor.md'),
    '\n## Addendum\n\nThe pemberton quokkafication ledger moved to the orangery.\n');
  assert.match((await index(scrim.configPath, 'add', docs)).stdout, /1 indexed/);
  const enc = grep('default', [...needles(), 'orangery', 'Addendum', 'ledger']);
  assert.deepEqual(enc.found, [], `found in ${enc.files.join(', ')}`);
  assert.ok(enc.files.includes('default.db-wal'), `files: ${enc.files.join(', ')}`);
  assert.ok(fs.statSync(path.join(state, 'index', 'default.db-wal')).size > 0, 'the -wal was looked at empty');
});

test('a wrong key, no key, and a key others can read are refused, each saying so', async () => {
  const wrong = otherConfig('wrong.conf', `[index]\nencrypt_key_file = ${writeKey('wrong.key')}\n`);
  let e = await indexFails(wrong, 'search', 'quokkafication');
  assert.equal(e.code, 1);
  assert.match(e.stderr, /default\.db: the configured key \(encrypt_key_file\) is not the key this index was encrypted with/);
  e = await indexFails(wrong, 'add', docs);
  assert.match(e.stderr, /is not the key this index was encrypted with/);

  const none = otherConfig('none.conf', '[index]\n');
  e = await indexFails(none, 'search', 'quokkafication');
  assert.match(e.stderr, /default\.db is encrypted and no key is configured for it: set encrypt_key_file/);

  // A plain index given a key: refused, not mixed.
  const both = otherConfig('both.conf', `[index]\nencrypt_key_file = ${keyPath}\n[index plain]\nencrypt_key_file = ${keyPath}\n`);
  e = await indexFails(both, 'add', '--index', 'plain', docs);
  assert.match(e.stderr, /plain\.db is not encrypted, but encrypt_key_file is configured for it/);

  const loose = path.join(keys, 'loose.key');
  fs.copyFileSync(keyPath, loose);
  fs.chmodSync(loose, 0o644);
  const looseConf = otherConfig('loose.conf', `[index]\nencrypt_key_file = ${loose}\n`);
  e = await indexFails(looseConf, 'search', 'quokkafication');
  assert.match(e.stderr, /loose\.key is accessible to group or others \(mode 0644\): chmod 600 it/);
  try {
    await execFile(SCRIM_BIN, ['check', '-c', looseConf], { timeout: 30_000 });
    assert.fail('scrim check accepted a key file others can read');
  } catch (err) {
    assert.match(err.stderr, /chmod 600 it/);
  }
  // Nothing was written in clear by any of these attempts.
  assert.deepEqual(grep('default', needles()).found, []);
});

test('the gateway injects the passage from the encrypted index, scrubbed', async () => {
  provider.reset();
  const r = await request(scrim.port, {
    method: 'POST', path: '/v1/chat/completions',
    headers: { ...auth(TEST_KEY), 'content-type': 'application/json' },
    body: JSON.stringify({
      model: 'fake-model',
      messages: [{ role: 'user', content: 'Where does the quokkafication committee convene?' }],
    }),
  });
  assert.equal(r.status, 200, show(r));
  const raw = provider.requests.at(-1).body;
  const body = JSON.parse(raw);
  assert.equal(body.messages[0].role, 'system');
  assert.match(body.messages[0].content, /quokkafication committee convenes beside the zanzibarian aquarium/);
  assert.match(body.messages[0].content, /vellichor\.md/);
  for (const v of [EMAIL, CARD, CARD.replace(/ /g, '')]) {
    assert.ok(!raw.includes(v), `${v} reached the provider`);
  }
});

test('a gateway with the wrong key answers without context, logs why (not what), and uses the index once reloaded with its key', async () => {
  const wrongKey = writeKey('wrong2.key');
  const gatewayConfig = (key, ports = {}) => configFor({
    providerUrl: provider.url, gateway: { state_dir: state }, ...ports,
    route: { context: 'on', context_top_k: 2 },
    // Its own audit file: the first gateway holds the lock on its own.
    extra: `[audit]\nfile = ${path.join(keys, 'audit2.jsonl')}\n[index]\nencrypt_key_file = ${key}\n`,
  });
  const other = await startScrim({ config: await gatewayConfig(wrongKey) });
  const ask = async () => {
    provider.reset();
    const r = await request(other.port, {
      method: 'POST', path: '/v1/chat/completions',
      headers: { ...auth(TEST_KEY), 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'fake-model', messages: [{ role: 'user', content: 'quokkafication committee?' }] }),
    });
    assert.equal(r.status, 200, show(r));
    return JSON.parse(provider.requests.at(-1).body);
  };
  try {
    assert.equal((await ask()).messages.length, 1, 'context injected with the wrong key');
    const log = other.stderr();
    assert.match(log, /is not the key this index was encrypted with/);
    for (const w of ['quokkafication committee convenes', EMAIL, 'zanzibarian']) {
      assert.ok(!log.includes(w), `the log holds ${w}`);
    }
    // The right key, by reload: the worker reopens the index with it.
    other.reload(await gatewayConfig(keyPath, { port: other.port, adminPort: other.adminPort }));
    await waitFor(async () => (await ask()).messages.length === 2,
      { timeoutMs: 5000, what: 'context from the index after the reload' });
    assert.match((await ask()).messages[0].content, /quokkafication committee convenes/);
  } catch (e) {
    console.log(`the second gateway's log:\n${other.stderr()}`);
    throw e;
  } finally {
    await other.stop();
  }
  noSanitizerReport(other.stderr(), 'scrim serve (wrong key)');
});
