// SIGHUP reloads (a broken config is refused, a good one applies) and
// SIGTERM drains (a stream in flight completes, then exit 0).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { startFakeProvider, streamedText } from '../fake_provider/provider.mjs';
import {
  startScrim, configFor, request, auth, chatBody, chatStreamContent, waitFor, show, sleep, TEST_KEY,
} from './lib.mjs';

let provider;
const scrims = [];

before(async () => {
  provider = await startFakeProvider();
});

after(async () => {
  for (const s of scrims) await s.kill();
  if (provider) await provider.close();
});

async function start(opts = {}) {
  const s = await startScrim({ config: await configFor({ providerUrl: provider.url, ...opts }) });
  scrims.push(s);
  return s;
}

const chat = (s, key, text = 'x') => request(s.port, {
  method: 'POST', path: '/v1/chat/completions', headers: auth(key), body: chatBody(text),
});

test('11a. SIGHUP with a broken config: refused with a reason on stderr, the old config keeps serving', async () => {
  const s = await start();
  assert.equal((await chat(s, TEST_KEY)).status, 200);
  const good = await configFor({ providerUrl: provider.url, port: s.port, adminPort: s.adminPort });
  const lines = good.split('\n');
  const gw = lines.indexOf('[gateway]');
  lines.splice(gw + 1, 0, 'frobnicate_the_widgets = 1');
  const badLine = gw + 2; // 1-based line number of the unknown key
  const before = s.stderr().length;
  s.reload(lines.join('\n'));
  const said = await waitFor(() => {
    const out = s.stderr().slice(before);
    return (out.includes('frobnicate_the_widgets') || out.includes(`:${badLine}:`)) && out;
  }, { timeoutMs: 3000, what: 'scrim to report the broken config on stderr' });
  assert.ok(said.length > 0);
  assert.ok(s.alive(), 'scrim must survive a broken config');
  const r = await chat(s, TEST_KEY, 'old config');
  assert.equal(r.status, 200, show(r));
  assert.equal(r.json.choices[0].message.content, 'echo: old config');
  const health = await request(s.adminPort, { path: '/healthz' });
  assert.equal(health.status, 200);
});

test('11b. SIGHUP with a good config: a new key works, the removed key is refused', async () => {
  const s = await start();
  const newKey = 'sk-scrim-rotated-9876543210';
  assert.equal((await chat(s, newKey)).status, 401, 'the new key must not work before the reload');
  const next = await configFor({ providerUrl: provider.url, port: s.port, adminPort: s.adminPort, keys: { rotated: newKey } });
  s.reload(next);
  await waitFor(async () => (await chat(s, newKey)).status === 200, { timeoutMs: 3000, what: 'the new key to be accepted' });
  const old = await chat(s, TEST_KEY);
  assert.equal(old.status, 401, `the removed key must be refused after reload: ${show(old)}`);
  assert.ok(s.alive());
});

test('11c. SIGHUP changing a provider setting applies to new requests (timeout 30s -> 1s)', async () => {
  const s = await start();
  const slowReq = () => request(s.port, {
    method: 'POST', path: '/v1/chat/completions', headers: { ...auth(), 'x-fake-delay-ms': '1500' }, body: chatBody('slowish'),
  });
  assert.equal((await slowReq()).status, 200);
  s.reload(await configFor({ providerUrl: provider.url, port: s.port, adminPort: s.adminPort, provider: { timeout: '1s' } }));
  await sleep(300);
  const r = await slowReq();
  assert.equal(r.status, 504, `after the reload the 1 s timeout must apply: ${show(r)}`);
});

test('11d. SIGTERM during an active stream: the stream completes, scrim exits 0', async () => {
  const s = await start();
  const body = JSON.stringify(chatBody('drain me', { stream: true }));
  let signalled = false;
  const result = await new Promise((resolve, reject) => {
    const req = http.request({
      host: '127.0.0.1', port: s.port, method: 'POST', path: '/v1/chat/completions', agent: false,
      headers: {
        ...auth(), 'content-type': 'application/json', 'content-length': Buffer.byteLength(body),
        'x-fake-chunks': '15', 'x-fake-chunk-delay-ms': '100',
      },
    }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d) => {
        text += d;
        if (!signalled && chatStreamContent(text) !== '') {
          signalled = true;
          s.proc.kill('SIGTERM');
        }
      });
      res.on('end', () => resolve({ status: res.statusCode, text }));
      res.on('error', reject);
      res.on('aborted', () => reject(new Error(`stream cut after SIGTERM; got so far: ${text.slice(-300)}`)));
    });
    req.on('error', reject);
    req.end(body);
  });
  assert.ok(signalled, 'SIGTERM was sent mid-stream');
  assert.equal(result.status, 200);
  assert.equal(chatStreamContent(result.text), streamedText('echo: drain me', 15));
  assert.ok(result.text.includes('data: [DONE]'), 'the stream must finish properly');
  const { code, signal } = await Promise.race([s.exited, sleep(10_000).then(() => ({ code: 'timeout' }))]);
  assert.equal(signal ?? null, null, `scrim died of ${signal}`);
  assert.equal(code, 0, `scrim exit code after SIGTERM: ${code}; stderr:\n${s.stderr().slice(-2000)}`);
});

test('11e. after SIGTERM scrim stops accepting while a stream drains', async () => {
  const s = await start();
  const body = JSON.stringify(chatBody('long drain', { stream: true }));
  let stream;
  const firstChunk = new Promise((resolveFirst, rejectFirst) => {
    stream = new Promise((resolve, reject) => {
      const req = http.request({
        host: '127.0.0.1', port: s.port, method: 'POST', path: '/v1/chat/completions', agent: false,
        headers: {
          ...auth(), 'content-type': 'application/json', 'content-length': Buffer.byteLength(body),
          'x-fake-chunks': '20', 'x-fake-chunk-delay-ms': '100',
        },
      }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d) => { text += d; if (chatStreamContent(text) !== '') resolveFirst(); });
        res.on('end', () => resolve(text));
        res.on('error', reject);
      });
      req.on('error', (e) => { reject(e); rejectFirst(e); });
      req.end(body);
    });
  });
  await firstChunk;
  s.proc.kill('SIGTERM');
  await sleep(300);
  assert.ok(s.alive(), 'scrim must wait for the stream in flight');
  const refused = await new Promise((resolve) => {
    const c = net.connect({ host: '127.0.0.1', port: s.port });
    c.on('connect', () => {
      // accepted: see whether it answers a request at all
      c.end(`GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${TEST_KEY}\r\n\r\n`);
      let got = '';
      c.on('data', (d) => { got += d; });
      c.on('close', () => resolve({ accepted: true, got }));
      c.setTimeout(2000, () => { c.destroy(); resolve({ accepted: true, got }); });
    });
    c.on('error', (e) => resolve({ accepted: false, code: e.code }));
  });
  assert.ok(!refused.accepted || !/^HTTP\/1\.[01] 200/.test(refused.got),
    `a new request was served during the drain: ${JSON.stringify(refused)}`);
  const text = await stream;
  assert.equal(chatStreamContent(text), streamedText('echo: long drain', 20));
  const { code } = await s.exited;
  assert.equal(code, 0);
});
