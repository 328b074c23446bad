// Slow clients beyond the single slowloris of strict.test.mjs (13.19):
// a crowd of slowloris connections while others are served, a body that
// crawls (minimum body rate), and a reader that stops reading a long
// stream (back-pressure, then send_timeout). Each must end with a clear
// answer or a close, never reach the provider unfinished, never starve
// other clients, and not grow scrim's memory with what it cannot send.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import { startFakeProvider } from '../fake_provider/provider.mjs';
import {
  startScrim, configFor, rawRequest, request, auth, chatBody, errorOf, waitFor, sleep, show, TEST_KEY,
} from './lib.mjs';

const SANITIZER_RE = /AddressSanitizer|LeakSanitizer|runtime error:|UndefinedBehaviorSanitizer/;

let provider;
let scrim;

before(async () => {
  provider = await startFakeProvider();
  scrim = await startScrim({
    config: await configFor({
      providerUrl: provider.url,
      gateway: { header_timeout: '1s', body_timeout: '1s', body_min_rate: '4k', send_timeout: '1s', max_connections: 2000 },
    }),
  });
});

after(async () => {
  if (scrim) await scrim.kill();
  if (provider) await provider.close();
});

const rssKiB = () => Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${scrim.pid}/status`, 'utf8'))[1]);

test('300 slowloris connections at once: each gets 408 or a close, while other clients are served', async (t) => {
  const head = `GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${TEST_KEY}\r\nX-Slow: `;
  const drip = Array.from({ length: 30 }, () => 'z');
  const lorises = Array.from({ length: 300 }, () => rawRequest(scrim.port, [head, ...drip], { delayMs: 200, timeoutMs: 10_000 }));
  await sleep(200);
  // Meanwhile, ordinary requests go through.
  const served = [];
  for (let i = 0; i < 10; i++) {
    const r = await request(scrim.port, { method: 'POST', path: '/v1/chat/completions', headers: auth(), body: chatBody(`meanwhile ${i}`) });
    served.push(r.status);
  }
  assert.deepEqual(served, Array(10).fill(200));
  const rs = await Promise.all(lorises);
  const by = {};
  for (const r of rs) by[r.status ?? (r.closed ? 'closed' : 'open')] = (by[r.status ?? (r.closed ? 'closed' : 'open')] || 0) + 1;
  t.diagnostic(`slowloris: ${JSON.stringify(by)}; meanwhile: ${served.join(' ')}`);
  assert.equal(by.open || 0, 0, `some slowloris connections were never closed: ${JSON.stringify(by)}`);
  for (const r of rs.filter((x) => x.status !== undefined)) {
    assert.equal(r.status, 408, show(r));
    assert.equal(errorOf(r).code, 'request_timeout');
  }
  assert.ok((by[408] || 0) > 0, JSON.stringify(by));
  assert.ok(scrim.alive());
});

test('a body that crawls (1 byte every 100 ms, body_min_rate 4k): 408 or a close, and nothing reaches the provider', async (t) => {
  provider.reset();
  const m = `crawl${crypto.randomBytes(4).toString('hex')}`;
  const body = JSON.stringify(chatBody(`${m} slowly`));
  const headRaw = `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${TEST_KEY}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n`;
  const r = await rawRequest(scrim.port, [headRaw, ...body.split('')], { delayMs: 100, timeoutMs: 30_000 });
  t.diagnostic(`crawling body: ${r.status ?? 'no answer'}, closed=${r.closed}`);
  assert.ok(r.closed, `the crawling body was never cut off: ${show(r)}`);
  if (r.status !== undefined) {
    assert.equal(r.status, 408, show(r));
    assert.equal(errorOf(r).code, 'request_timeout');
  }
  assert.ok(!provider.requests.some((x) => x.body.includes(m)), 'a crawling request reached the provider');
  const ok = await request(scrim.port, { method: 'POST', path: '/v1/chat/completions', headers: auth(), body: chatBody('after the crawl') });
  assert.equal(ok.status, 200, show(ok));
});

test('a client that stops reading a long stream is dropped (send_timeout), the upstream transfer is cancelled, memory stays bounded', async (t) => {
  provider.reset();
  const m = `stall${crypto.randomBytes(4).toString('hex')}`;
  const body = JSON.stringify(chatBody(`${m} long`, { stream: true }));
  const before = rssKiB();
  const sock = net.connect({ port: scrim.port, host: '127.0.0.1' });
  await new Promise((resolve) => sock.on('connect', resolve));
  sock.on('error', () => {});
  // About 25 MB of events; the client takes the first bytes, then stops reading.
  sock.write(`POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${TEST_KEY}\r\nContent-Type: application/json\r\n` +
    `x-fake-chunks: 150000\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
  await new Promise((resolve) => sock.once('data', () => { sock.pause(); resolve(); }));
  const rec = await waitFor(() => provider.requests.find((x) => x.body.includes(m)), { timeoutMs: 5000, what: 'the stream to start upstream' });
  await waitFor(() => rec.aborted, { timeoutMs: 20_000, intervalMs: 100, what: 'the upstream transfer to be cancelled' });
  assert.equal(rec.finished, false, 'the provider finished the stream: nothing held it back');
  const grown = rssKiB() - before;
  t.diagnostic(`stalled reader: upstream cancelled, scrim RSS ${before} -> ${before + grown} KiB`);
  assert.ok(grown < 32 * 1024, `scrim grew by ${grown} KiB holding an unread stream`);
  const closed = await new Promise((resolve) => {
    if (sock.destroyed) { resolve(true); return; }
    sock.on('close', () => resolve(true));
    sock.resume(); // drain what the kernel holds; the end must come
    setTimeout(() => resolve(false), 10_000);
  });
  assert.ok(closed, 'scrim never closed the stalled client');
  sock.destroy();
  const ok = await request(scrim.port, { method: 'POST', path: '/v1/chat/completions', headers: auth(), body: chatBody('after the stall') });
  assert.equal(ok.status, 200, show(ok));
});

test('scrim exits 0 on SIGTERM with no sanitizer report', async () => {
  const code = await scrim.stop();
  const err = scrim.stderr();
  scrim = null;
  assert.ok(!SANITIZER_RE.test(err), err.slice(-4000));
  assert.equal(code, 0, `exit code ${code}; stderr tail:\n${err.slice(-3000)}`);
});
