// The audit log end to end: a record per request through the gateway,
// the chain verified by `scrim audit verify`, tampering caught at the
// right line, no personal data or key anywhere in the state directory or
// the logs, and a disk that fails under on_failure = block.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { startFakeProvider } from '../fake_provider/provider.mjs';
import {
  startScrim, configFor, execFile, request, rawRequest, auth, chatBody, tempDir, sleep,
  SCRIM_BIN, TEST_KEY, PROVIDER_KEY, show,
} from './lib.mjs';

const PII = ['maria.gonzalez@example.com', '4111 1111 1111 1111', 'DE89 3704 0044 0532 0130 00',
  '123-45-6789', 'AKIAIOSFODNN7EXAMPLE', 'Maria Gonzalez'];
const PROMPT = `Dear team, my name is Maria Gonzalez, mail maria.gonzalez@example.com, card 4111 1111 1111 1111, ` +
  `IBAN DE89 3704 0044 0532 0130 00, SSN 123-45-6789, aws key AKIAIOSFODNN7EXAMPLE. Thanks`;

let provider;
let scrim;
let state;

function auditFile() { return path.join(state, 'audit.jsonl'); }
function records() {
  return fs.readFileSync(auditFile(), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
}
async function verify(files, keyFile = path.join(state, 'audit.key')) {
  try {
    const { stdout, stderr } = await execFile(SCRIM_BIN, ['audit', 'verify', '--key', keyFile, ...files]);
    return { code: 0, out: stdout + stderr };
  } catch (e) {
    return { code: e.code, out: (e.stdout || '') + (e.stderr || '') };
  }
}
async function chat(text, extra = {}) {
  return request(scrim.port, {
    method: 'POST', path: '/v1/chat/completions',
    headers: { ...auth(TEST_KEY), 'content-type': 'application/json' },
    body: chatBody(text, extra),
  });
}

before(async () => {
  provider = await startFakeProvider();
  state = tempDir('scrim-audit-');
  scrim = await startScrim({
    config: await configFor({ providerUrl: provider.url, gateway: { state_dir: state, log_level: 'debug' } }),
  });
  assert.equal((await chat(PROMPT)).status, 200);
  assert.equal((await chat(PROMPT, { stream: true, stream_options: { include_usage: true } })).status, 200);
  assert.equal((await request(scrim.port, { method: 'GET', path: '/v1/models' })).status, 401);
  assert.equal((await request(scrim.port, {
    method: 'POST', path: '/v1/chat/completions',
    headers: { ...auth(TEST_KEY), 'content-type': 'application/json' }, body: '{"model": ',
  })).status, 400);
  // Let the writer flush (fsync = interval).
  for (let i = 0; i < 50 && records().filter((r) => r.type === 'request').length < 4; i++) await sleep(100);
});

after(async () => {
  await scrim?.stop();
  await provider?.close();
});

test('one record per request, with decision, counts and sizes', () => {
  const reqs = records().filter((r) => r.type === 'request');
  assert.equal(reqs.length, 4, JSON.stringify(reqs));
  const [a, b, c, d] = reqs;
  assert.equal(a.decision, 'forwarded');
  assert.equal(a.key_id, 'test');
  assert.equal(a.status, 200);
  assert.equal(a.path, '/v1/chat/completions');
  assert.ok(a.redactions.EMAIL >= 1 && a.redactions.CREDIT_CARD >= 1 && a.redactions.IBAN >= 1, JSON.stringify(a));
  assert.ok(a.tokens_in > 0 && a.tokens_out > 0, 'tokens from the answer');
  assert.equal(b.decision, 'forwarded');
  assert.ok(b.tokens_out > 0, 'tokens from the stream');
  assert.equal(c.decision, 'refused');
  assert.equal(c.reason, 'invalid_api_key');
  assert.equal(d.status, 400);
  assert.equal(d.reason, 'invalid_json');
});

test('the chain verifies', async () => {
  const v = await verify([auditFile()]);
  assert.equal(v.code, 0, v.out);
  assert.match(v.out, /^OK: \d+ records in 1 file/m);
});

test('no personal data, prompt or key anywhere in the state directory or the logs', () => {
  const files = [];
  const walk = (d) => { for (const e of fs.readdirSync(d, { withFileTypes: true })) { const p = path.join(d, e.name); if (e.isDirectory()) walk(p); else files.push(p); } };
  walk(state);
  const haystacks = files.map((f) => [f, fs.readFileSync(f).toString('latin1')]);
  haystacks.push(['stderr', scrim.stderr()]);
  for (const [f, text] of haystacks) {
    for (const v of [...PII, TEST_KEY, PROVIDER_KEY, 'Dear team']) {
      assert.ok(!text.includes(v), `${v} found in ${f}`);
    }
  }
});

test('tampering is caught at the right line: an edited byte, a deleted line, swapped lines', async () => {
  const lines = fs.readFileSync(auditFile(), 'utf8').trimEnd().split('\n');
  const dir = tempDir('scrim-audit-tamper-');
  const write = (name, ls) => { const p = path.join(dir, name); fs.writeFileSync(p, ls.join('\n') + '\n'); return p; };

  const edited = [...lines];
  edited[2] = edited[2].replace('"status":200', '"status":201');
  let v = await verify([write('edited.jsonl', edited)]);
  assert.notEqual(v.code, 0);
  assert.match(v.out, /edited\.jsonl:3:/, v.out);

  v = await verify([write('deleted.jsonl', lines.filter((_, i) => i !== 2))]);
  assert.notEqual(v.code, 0);
  assert.match(v.out, /deleted\.jsonl:3:/, v.out);

  const swapped = [...lines];
  [swapped[1], swapped[2]] = [swapped[2], swapped[1]];
  v = await verify([write('swapped.jsonl', swapped)]);
  assert.notEqual(v.code, 0);
  assert.match(v.out, /swapped\.jsonl:2:/, v.out);
});

test('a failing disk under on_failure = block: new requests get 503, nothing is served unaudited', async () => {
  const st = tempDir('scrim-audit-full-');
  fs.copyFileSync(path.join(state, 'audit.key'), path.join(st, 'audit.key'));
  fs.chmodSync(path.join(st, 'audit.key'), 0o600);
  const g = await startScrim({
    config: await configFor({ providerUrl: provider.url, gateway: { state_dir: st },
      extra: '\n[audit]\nfile = /dev/full\nfsync = always\non_failure = block\nqueue = 16\n' }),
  }).catch((e) => ({ failed: e }));
  if (g.failed) {
    // Refusing to start on an unwritable log is also a safe answer.
    assert.match(String(g.failed), /audit/i);
    return;
  }
  try {
    let saw503 = false;
    for (let i = 0; i < 40 && !saw503; i++) {
      const r = await request(g.port, {
        method: 'POST', path: '/v1/chat/completions',
        headers: { ...auth(TEST_KEY), 'content-type': 'application/json' }, body: chatBody('hi'),
      });
      if (r.status === 503) {
        assert.match(r.body.toString(), /audit_unavailable/, show(r));
        saw503 = true;
      }
      await sleep(25);
    }
    assert.ok(saw503, 'never refused while the audit log could not be written');
  } finally {
    await g.stop();
  }
});

test('requests refused before their head parses (bad framing, 414, 431, 505, header deadline) get an audit record and a metric', async () => {
  const st = tempDir('scrim-audit-framing-');
  const g = await startScrim({
    config: await configFor({ providerUrl: provider.url, gateway: { state_dir: st, header_timeout: '1s' } }),
  });
  try {
    const AUTHZ = `Authorization: Bearer ${TEST_KEY}\r\n`;
    const cases = [
      [`POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n${AUTHZ}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`, 400, 'bad_request'],
      [`GET /v1/models HTTP/1.1\nHost: x\n\n`, 400, 'bad_request'],
      [`GET /v1/models?q=${'u'.repeat(9000)} HTTP/1.1\r\nHost: x\r\n\r\n`, 414, 'uri_too_long'],
      [`GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Big: ${'b'.repeat(17000)}\r\n\r\n`, 431, 'headers_too_large'],
      [`GET /v1/models HTTP/9.9\r\nHost: x\r\n\r\n`, 505, 'http_version_not_supported'],
      [`GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Slow: `, 408, 'request_timeout'],
    ];
    const ids = [];
    for (const [raw, status, code] of cases) {
      const r = await rawRequest(g.port, raw, { timeoutMs: 4000 });
      assert.equal(r.status, status, show(r));
      assert.ok(r.headers['x-request-id'], show(r));
      ids.push([r.headers['x-request-id'], status, code]);
    }
    let recs = [];
    for (let i = 0; i < 50; i++) {
      recs = fs.readFileSync(path.join(st, 'audit.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((x) => x.type === 'request');
      if (recs.length >= ids.length) break;
      await sleep(100);
    }
    for (const [id, status, code] of ids) {
      const rec = recs.find((x) => x.request_id === id);
      assert.ok(rec, `no audit record for the ${status} ${code} (request ${id}): ${JSON.stringify(recs)}`);
      assert.equal(rec.status, status);
      assert.equal(rec.decision, 'refused');
      assert.equal(rec.reason, code);
    }
    const m = await request(g.adminPort, { path: '/metrics' });
    for (const code of ['bad_request', 'uri_too_long', 'headers_too_large', 'http_version_not_supported', 'request_timeout']) {
      assert.match(m.body, new RegExp(`^scrim_errors_total\\{code="${code}"\\} [1-9]`, 'm'), `no ${code} in /metrics`);
    }
    const v = await verify([path.join(st, 'audit.jsonl')], path.join(st, 'audit.key'));
    assert.equal(v.code, 0, v.out);
  } finally {
    await g.stop();
  }
});
