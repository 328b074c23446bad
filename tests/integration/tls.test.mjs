// An HTTPS provider: trusted through ca_file it works; untrusted or for the
// wrong host it is refused with 502, and no request ever reaches it.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { startFakeProvider } from '../fake_provider/provider.mjs';
import {
  startScrim, configFor, makeTestPKI, makeLeaf, tempDir, request, auth, chatBody, chatStreamContent, errorOf, show,
} from './lib.mjs';

let dir;
let pki;
let provider; // TLS, cert for localhost + 127.0.0.1 signed by the test CA
let wrongHost; // TLS, cert for wrong.example only, signed by the test CA
const scrims = [];

before(async () => {
  dir = tempDir('scrim-pki-');
  pki = await makeTestPKI(dir);
  provider = await startFakeProvider({ tls: { cert: pki.certPem, key: pki.keyPem } });
  const leaf = await makeLeaf(pki, 'wrong', ['DNS:wrong.example']);
  wrongHost = await startFakeProvider({ tls: { cert: leaf.certPem, key: leaf.keyPem } });
});

after(async () => {
  for (const s of scrims) await s.stop();
  if (provider) await provider.close();
  if (wrongHost) await wrongHost.close();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

async function scrimFor(opts) {
  const s = await startScrim({ config: await configFor(opts) });
  scrims.push(s);
  return s;
}

test('10a. the PKI is sound: the server certificate verifies against the CA for 127.0.0.1', async () => {
  assert.match(provider.url, /^https:\/\/127\.0\.0\.1:\d+$/);
  // node itself, trusting only the test CA, accepts the provider
  const https = await import('node:https');
  const status = await new Promise((resolve, reject) => {
    https.get(`${provider.url}/v1/models`, { ca: pki.caPem, agent: false }, (res) => { res.resume(); resolve(res.statusCode); }).on('error', reject);
  });
  assert.equal(status, 200);
  provider.reset();
});

test('10b. HTTPS provider trusted with ca_file: non-streaming and streaming chat work', async () => {
  const s = await scrimFor({ providerUrl: provider.url, caFile: pki.caCert });
  const r = await request(s.port, { method: 'POST', path: '/v1/chat/completions', headers: auth(), body: chatBody('over tls') });
  assert.equal(r.status, 200, show(r));
  assert.equal(r.json.choices[0].message.content, 'echo: over tls');
  const st = await request(s.port, { method: 'POST', path: '/v1/chat/completions', headers: auth(), body: chatBody('tls stream', { stream: true }) });
  assert.equal(st.status, 200, show(st));
  assert.equal(chatStreamContent(st.body), 'echo: tls stream');
  const a = await request(s.port, {
    method: 'POST', path: '/anthropic/v1/messages', headers: auth(),
    body: { model: 'c', max_tokens: 5, messages: [{ role: 'user', content: 'tls anthropic' }] },
  });
  assert.equal(a.status, 200, show(a));
  assert.equal(a.json.content[0].text, 'echo: tls anthropic');
  assert.equal(provider.requests.length, 3);
  provider.reset();
});

test('10c. the same HTTPS provider without ca_file (untrusted CA) gets 502 and is never sent the request', async () => {
  const s = await scrimFor({ providerUrl: provider.url });
  provider.reset();
  const r = await request(s.port, { method: 'POST', path: '/v1/chat/completions', headers: auth(), body: chatBody('must not leave') });
  assert.equal(r.status, 502, show(r));
  errorOf(r);
  const st = await request(s.port, { method: 'POST', path: '/v1/chat/completions', headers: auth(), body: chatBody('nor this', { stream: true }) });
  assert.equal(st.status, 502, show(st));
  assert.equal(provider.requests.length, 0, 'an untrusted provider must never receive a request');
  assert.ok(!s.stderr().includes('must not leave'));
});

test('10d. a certificate from the trusted CA but for another host gets 502 and no request', async () => {
  const s = await scrimFor({ providerUrl: wrongHost.url, caFile: pki.caCert });
  const r = await request(s.port, { method: 'POST', path: '/v1/chat/completions', headers: auth(), body: chatBody('wrong host') });
  assert.equal(r.status, 502, show(r));
  errorOf(r);
  assert.equal(wrongHost.requests.length, 0, 'a wrong-host provider must never receive a request');
});

test('10e. a ca_file that does not exist is a config error: scrim check fails', async () => {
  const { execFile, SCRIM_BIN } = await import('./lib.mjs');
  const cfg = path.join(dir, 'bad-ca.conf');
  fs.writeFileSync(cfg, await configFor({ providerUrl: provider.url, caFile: path.join(dir, 'no-such-ca.pem') }));
  await assert.rejects(execFile(SCRIM_BIN, ['check', '-c', cfg]), (e) => {
    assert.notEqual(e.code, 0);
    assert.match(e.stderr, /no-such-ca\.pem|ca_file/);
    return true;
  });
});
