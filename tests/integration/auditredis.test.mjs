// The audit log's Redis Stream copy ([audit] redis_stream) against a real
// redis-server: every sealed line of the file reaches the stream as is,
// the stream stays capped (MAXLEN ~), and a Redis that is stalled or gone
// costs stream lines (counted), never a request; what waited while it was
// gone is sent once it is back.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { startFakeProvider } from '../fake_provider/provider.mjs';
import {
  startScrim, startRedis, configFor, execFile, request, auth, chatBody, tempDir, httpGet, waitFor,
  SCRIM_BIN, TEST_KEY, show,
} from './lib.mjs';

let provider;
let redis;

before(async () => {
  provider = await startFakeProvider();
  redis = await startRedis();
});

after(async () => {
  await redis?.stop();
  await provider?.close();
});

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

const SENT = 'scrim_audit_redis_total{result="sent"}';

/** A gateway with a state dir of its own, its audit copied to `stream`. */
async function gateway(stream, audit = {}) {
  const st = tempDir('scrim-auditredis-');
  const extra = '\n[audit]\n' + Object.entries({ redis_stream: stream, ...audit })
    .map(([k, v]) => `${k} = ${v}`).join('\n') + '\n';
  // Config keys only: limits never ask Redis, so requests cannot depend on it.
  const g = await startScrim({
    config: await configFor({ providerUrl: provider.url, gateway: { state_dir: st },
      redis: { url: redis.url, fail_mode: 'open' }, extra }),
  });
  const file = path.join(st, 'audit.jsonl');
  const fileLines = () => fs.readFileSync(file, 'utf8').trimEnd().split('\n');
  return { g, st, file, fileLines };
}

function chatOn(g, text) {
  return request(g.port, {
    method: 'POST', path: '/v1/chat/completions',
    headers: { ...auth(TEST_KEY), 'content-type': 'application/json' },
    body: chatBody(text),
    timeoutMs: 20_000,
  });
}

/** The stream's entries, oldest first, as {id, record, boot}. redis-cli
 * prints raw replies one element a line (id, then field and value pairs),
 * and a sealed line holds no raw newline. */
async function streamEntries(key) {
  const out = await redis.cli('--raw', 'XRANGE', key, '-', '+');
  const entries = [];
  const lines = out.split('\n');
  for (let i = 0; i < lines.length; i++) {
    if (/^\d+-\d+$/.test(lines[i])) entries.push({ id: lines[i] });
    else if (entries.length && (lines[i] === 'record' || lines[i] === 'boot')) entries.at(-1)[lines[i]] = lines[++i];
  }
  return entries;
}
const streamLines = async (key) => (await streamEntries(key)).map((e) => e.record);

test('every sealed line reaches the stream as it is in the file, close checkpoint included; a run\'s lines verify', async () => {
  const key = 'scrim:audit:same';
  const { g, st, fileLines } = await gateway(key);
  let stopped = false;
  try {
    for (let i = 0; i < 5; i++) assert.equal((await chatOn(g, `hello ${i}`)).status, 200);
    await waitFor(async () => (await metricsOf(g))[SENT] >= 6, { timeoutMs: 5000, what: '6 lines sent' });
    await g.stop();
    stopped = true;
    const lines = fileLines();
    assert.equal(lines.filter((l) => l.startsWith('{"type":"request"')).length, 5);
    assert.match(lines.at(-1), /"event":"close"/);
    const entries = await streamEntries(key);
    assert.deepEqual(entries.map((e) => e.record), lines, 'the stream holds the file, line for line');
    assert.equal(Number(await redis.cli('XLEN', key)), 7);
    // Each entry names its run, as the run's checkpoints do; read back
    // into a file, one run's lines are a chain that verifies.
    const boot = JSON.parse(lines[0]).boot;
    assert.match(boot, /^[0-9a-f]{32}$/);
    for (const e of entries) assert.equal(e.boot, boot);
    const back = path.join(st, 'from-stream.jsonl');
    fs.writeFileSync(back, entries.filter((e) => e.boot === boot).map((e) => e.record).join('\n') + '\n');
    const v = await execFile(SCRIM_BIN, ['audit', 'verify', '--key', path.join(st, 'audit.key'), back])
      .then((r) => ({ code: 0, out: r.stdout + r.stderr }), (e) => ({ code: e.code, out: (e.stdout || '') + (e.stderr || '') }));
    assert.equal(v.code, 0, v.out);
    assert.match(v.out, /^OK: 7 records in 1 file/m);
  } finally {
    if (!stopped) await g.stop();
  }
});

test('the stream is capped: MAXLEN ~ redis_stream_maxlen keeps the newest lines', async () => {
  const key = 'scrim:audit:capped';
  // Small stream nodes, so approximate trimming bites at this scale.
  await redis.cli('CONFIG', 'SET', 'stream-node-max-entries', '4');
  const { g, fileLines } = await gateway(key, { redis_stream_maxlen: 10 });
  try {
    for (let i = 0; i < 40; i++) assert.equal((await chatOn(g, `many ${i}`)).status, 200);
    await waitFor(async () => (await metricsOf(g))[SENT] >= 41, { timeoutMs: 10_000, what: '41 lines sent' });
    const len = Number(await redis.cli('XLEN', key));
    assert.ok(len >= 10 && len < 10 + 4, `XLEN ${len}: at least maxlen, less than maxlen + one node`);
    const lines = fileLines();
    const stream = await streamLines(key);
    assert.deepEqual(stream, lines.slice(-stream.length), 'the newest lines, in order');
  } finally {
    await g.stop();
    await redis.cli('CONFIG', 'SET', 'stream-node-max-entries', '100');
  }
});

test('Redis stalled or gone: requests are served, the copy waits (bounded) and is sent when Redis is back', async () => {
  const key = 'scrim:audit:outage';
  const { g, fileLines } = await gateway(key);
  try {
    assert.equal((await chatOn(g, 'before')).status, 200);
    await waitFor(async () => (await metricsOf(g))[SENT] >= 2, { timeoutMs: 5000, what: 'first lines sent' });

    // Stalled (SIGSTOP): the copy's calls hang, requests do not.
    redis.pause();
    try {
      for (let i = 0; i < 3; i++) {
        const r = await chatOn(g, `stalled ${i}`);
        assert.equal(r.status, 200, show(r));
      }
    } finally {
      redis.resume();
    }

    // Gone (killed, and nothing kept: the new one starts empty).
    await redis.kill();
    const during = [];
    for (let i = 0; i < 5; i++) {
      const r = await chatOn(g, `gone ${i}`);
      assert.equal(r.status, 200, show(r));
      during.push(r.headers['x-request-id']);
    }
    const m = await waitFor(async () => {
      const x = await metricsOf(g);
      return x.scrim_audit_redis_pending >= 5 ? x : null;
    }, { timeoutMs: 5000, what: 'lines waiting for Redis' });
    assert.equal(m.scrim_audit_healthy, 1, 'the file is fine');
    assert.equal(m['scrim_audit_records_total{result="written"}'], 9);

    await redis.restart();
    await waitFor(async () => (await metricsOf(g)).scrim_audit_redis_pending === 0,
      { timeoutMs: 15_000, what: 'the waiting lines sent' });
    const stream = await streamLines(key);
    const ids = new Set(stream.map((l) => JSON.parse(l).request_id));
    for (const id of during) assert.ok(ids.has(id), `${id}, written while Redis was gone, reached the stream`);
    const file = new Set(fileLines());
    for (const l of stream) assert.ok(file.has(l), 'every stream line is a line of the file');
    assert.equal((await chatOn(g, 'after')).status, 200);
  } finally {
    await g.stop();
  }
});

test('scrim check: redis_stream needs a [redis] url', async () => {
  const dir = tempDir('scrim-auditredis-check-');
  const text = (await configFor({ providerUrl: provider.url, gateway: { state_dir: dir } })) +
    '\n[audit]\nredis_stream = scrim:audit\n';
  const conf = path.join(dir, 'scrim.conf');
  fs.writeFileSync(conf, text);
  const r = await execFile(SCRIM_BIN, ['check', '-c', conf]).then(() => ({ code: 0, out: '' }),
    (e) => ({ code: e.code, out: (e.stdout || '') + (e.stderr || '') }));
  assert.notEqual(r.code, 0);
  assert.match(r.out, /redis_stream needs a \[redis\] url/);
});
