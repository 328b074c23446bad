// The audit log end to end: a record per request through the gateway,
// the chain verified by `scrim audit verify`, tampering caught at the
// right line, no personal data or key anywhere in the state directory or
// the logs, and a disk that fails under on_failure = block and continue.
// A full disk is made with RLIMIT_FSIZE set on the running gateway
// (prlimit): writes past the file's size fail with EFBIG until the limit
// is lifted again, so "disk full" and "space freed" are both exact.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { startFakeProvider } from '../fake_provider/provider.mjs';
import {
  startScrim, configFor, execFile, request, rawRequest, auth, chatBody, tempDir, sleep,
  SCRIM_BIN, TEST_KEY, PROVIDER_KEY, show, httpGet, waitFor,
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
  assert.equal(a.key_name, 'test', 'a [keys] entry is named by its id');
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

// ---------------------------------------------------------------- full disk

/** The admin /metrics as {name or name{labels}: number}. */
async function metricsOf(g) {
  const r = await httpGet('127.0.0.1', g.adminPort, '/metrics', 2000);
  const m = {};
  for (const line of r.body.split('\n')) {
    const x = line.match(/^([a-z_]+(?:\{[^}]*\})?) (\S+)$/);
    if (x) m[x[1]] = Number(x[2]);
  }
  return m;
}

const WRITTEN = 'scrim_audit_records_total{result="written"}';
const DROPPED = 'scrim_audit_records_total{result="dropped"}';

/** Writes to files past `bytes` fail with EFBIG ("unlimited" lifts it). */
async function fileSizeLimit(g, bytes) {
  await execFile('prlimit', ['--pid', String(g.pid), `--fsize=${bytes}:`]);
}

/** A gateway with its own state dir (the suite's key) and [audit] keys. */
async function fullDiskGateway(auditKeys) {
  const st = tempDir('scrim-audit-fsize-');
  fs.copyFileSync(path.join(state, 'audit.key'), path.join(st, 'audit.key'));
  fs.chmodSync(path.join(st, 'audit.key'), 0o600);
  const extra = '\n[audit]\n' + Object.entries({ fsync: 'always', queue: 16, ...auditKeys })
    .map(([k, v]) => `${k} = ${v}`).join('\n') + '\n';
  const g = await startScrim({ config: await configFor({ providerUrl: provider.url, gateway: { state_dir: st }, extra }) });
  const file = path.join(st, 'audit.jsonl');
  const lines = () => fs.readFileSync(file, 'utf8').trimEnd().split('\n').map((l) => JSON.parse(l));
  return { g, st, file, lines };
}

function chatOn(g, text, headers = {}, extra = {}) {
  return request(g.port, {
    method: 'POST', path: '/v1/chat/completions',
    headers: { ...auth(TEST_KEY), 'content-type': 'application/json', ...headers },
    body: chatBody(text, extra),
  });
}

test('a full disk under on_failure = continue: requests are served, the loss is counted exactly, the file still verifies', async () => {
  const { g, file, lines } = await fullDiskGateway({ on_failure: 'continue' });
  try {
    for (let i = 0; i < 3; i++) assert.equal((await chatOn(g, 'before')).status, 200);
    await waitFor(async () => (await metricsOf(g))[WRITTEN] === 3, { timeoutMs: 5000, what: '3 records written' });
    await fileSizeLimit(g, fs.statSync(file).size);

    // 30 requests with nowhere to write: every one is served; the queue
    // (16) keeps the first records, the other 14 are dropped and counted.
    for (let i = 0; i < 30; i++) {
      const r = await chatOn(g, `during ${i}`);
      assert.equal(r.status, 200, show(r));
    }
    const m = await waitFor(async () => {
      const x = await metricsOf(g);
      return x.scrim_audit_healthy === 0 && x[DROPPED] === 14 ? x : null;
    }, { timeoutMs: 5000, what: 'unhealthy with 14 dropped' });
    assert.equal(m[DROPPED], 14);
    assert.equal(m.scrim_audit_queued, 16);
    assert.equal(m[WRITTEN], 3);
    assert.ok(m.scrim_audit_write_failures_total >= 1, JSON.stringify(m));
    assert.equal(m.scrim_audit_refused_total, 0);

    // What is in the file is intact while the disk is still full.
    let v = await verify([file]);
    assert.equal(v.code, 0, v.out);
    assert.equal(lines().filter((r) => r.type === 'request').length, 3);

    // Space comes back: the 16 queued records are written, and the chain
    // says that 14 were lost.
    await fileSizeLimit(g, 'unlimited');
    await waitFor(async () => {
      const x = await metricsOf(g);
      return x[WRITTEN] === 19 && x.scrim_audit_healthy === 1;
    }, { timeoutMs: 5000, what: 'the queued records written' });
    const all = lines();
    assert.equal(all.filter((r) => r.type === 'request').length, 19);
    const resume = all.filter((r) => r.type === 'checkpoint' && r.event === 'resume');
    assert.equal(resume.length, 1, JSON.stringify(all.filter((r) => r.type === 'checkpoint')));
    assert.equal(resume[0].dropped, 14);
    assert.equal(resume[0].refused, undefined);
    v = await verify([file]);
    assert.equal(v.code, 0, v.out);
  } finally {
    await fileSizeLimit(g, 'unlimited').catch(() => {});
    await g.stop();
  }
});

test('a full disk under on_failure = block: requests in flight keep their records (past the queue cap), new ones get 503 and are counted', async () => {
  const N = 24; // in flight when the disk fills: more than the queue (16) holds
  const { g, file, lines } = await fullDiskGateway({ on_failure: 'block' });
  try {
    const warm = await chatOn(g, 'before');
    assert.equal(warm.status, 200);
    await waitFor(async () => (await metricsOf(g))[WRITTEN] === 1, { timeoutMs: 5000, what: 'first record written' });

    // N slow streams, each under way (first bytes received) before the
    // disk fills.
    let started = 0;
    const streams = [];
    for (let i = 0; i < N; i++) {
      let mark;
      const first = new Promise((resolve) => { mark = resolve; });
      const p = request(g.port, {
        method: 'POST', path: '/v1/chat/completions',
        headers: { ...auth(TEST_KEY), 'content-type': 'application/json', 'x-fake-chunks': '30', 'x-fake-chunk-delay-ms': '100' },
        body: chatBody(`stream ${i}`, { stream: true }),
        timeoutMs: 60_000,
        onChunk: () => { if (mark) { mark(); mark = null; started++; } },
      });
      streams.push(p);
      p.catch(() => {}).finally(() => mark && mark());
      streams[i].first = first;
    }
    await Promise.all(streams.map((p) => p.first));
    assert.equal(started, N, 'every stream under way');
    await fileSizeLimit(g, fs.statSync(file).size);

    // One more request, admitted while the log still looked healthy: its
    // record is the first write that fails.
    const probe = await chatOn(g, 'probe');
    assert.equal(probe.status, 200, show(probe));
    await waitFor(async () => (await metricsOf(g)).scrim_audit_healthy === 0, { timeoutMs: 5000, what: 'unhealthy' });

    // New requests are refused while the streams run on.
    const refused = [];
    for (let i = 0; i < 10; i++) {
      const r = await chatOn(g, `refused ${i}`);
      assert.equal(r.status, 503, show(r));
      assert.match(r.body, /audit_unavailable/);
      refused.push(r.headers['x-request-id']);
    }

    const done = await Promise.all(streams);
    for (const r of done) {
      assert.equal(r.status, 200, show(r));
      assert.match(r.body, /data: \[DONE\]/);
    }
    let m = await metricsOf(g);
    assert.equal(m[DROPPED], 0, JSON.stringify(m));
    assert.equal(m.scrim_audit_refused_total, 10);
    assert.equal(m.scrim_audit_queued, N + 1, 'every record kept, past the cap of 16');
    assert.equal(m[WRITTEN], 1);

    // Space comes back: everything queued is written.
    await fileSizeLimit(g, 'unlimited');
    m = await waitFor(async () => {
      const x = await metricsOf(g);
      return x[WRITTEN] === N + 2 && x.scrim_audit_healthy === 1 ? x : null;
    }, { timeoutMs: 10_000, what: 'all records written' });
    assert.equal(m[DROPPED], 0);
    assert.equal(m.scrim_audit_queued, 0);
    assert.equal((await chatOn(g, 'after')).status, 200, 'served again');
    await waitFor(async () => (await metricsOf(g))[WRITTEN] === N + 3, { timeoutMs: 5000, what: 'last record' });

    const all = lines();
    const ids = new Set(all.filter((r) => r.type === 'request').map((r) => r.request_id));
    for (const r of [warm, probe, ...done]) {
      const id = r.headers['x-request-id'];
      assert.ok(id && ids.has(id), `the record of ${id} (status ${r.status}) is in the file`);
    }
    for (const id of refused) assert.ok(!ids.has(id), `no record for refused ${id}`);
    const resume = all.filter((r) => r.type === 'checkpoint' && r.event === 'resume');
    assert.equal(resume.length, 1);
    assert.equal(resume[0].refused, 10);
    assert.equal(resume[0].dropped, undefined);
    const v = await verify([file]);
    assert.equal(v.code, 0, v.out);
  } finally {
    await fileSizeLimit(g, 'unlimited').catch(() => {});
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
