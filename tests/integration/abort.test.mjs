// Streams that end badly: the client goes away mid-stream, the provider
// resets mid-stream.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import crypto from 'node:crypto';
import { startFakeProvider } from '../fake_provider/provider.mjs';
import {
  startScrim, configFor, rawRequest, request, auth, chatBody, chatStreamContent, waitFor, show, TEST_KEY,
} from './lib.mjs';

let provider;
let scrim;

before(async () => {
  provider = await startFakeProvider();
  scrim = await startScrim({ config: await configFor({ providerUrl: provider.url }) });
});

after(async () => {
  if (scrim) await scrim.stop();
  if (provider) await provider.close();
});

/** Start a long slow stream and destroy the client after its first content chunk. */
function streamAndHangUp(m) {
  return new Promise((resolve, reject) => {
    const body = JSON.stringify(chatBody(`abort ${m}`, { stream: true }));
    const req = http.request({
      host: '127.0.0.1', port: scrim.port, method: 'POST', path: '/v1/chat/completions', agent: false,
      headers: {
        ...auth(), 'content-type': 'application/json', 'content-length': Buffer.byteLength(body),
        'x-fake-chunks': '200', 'x-fake-chunk-delay-ms': '100',
      },
    }, (res) => {
      if (res.statusCode !== 200) {
        reject(new Error(`status ${res.statusCode}`));
        return;
      }
      res.on('data', (d) => {
        if (chatStreamContent(d.toString()) !== '') {
          const t = Date.now();
          req.destroy();
          resolve(t);
        }
      });
      res.on('error', () => {});
    });
    req.on('error', () => {});
    req.setTimeout(10_000, () => { req.destroy(); reject(new Error('no chunk within 10 s')); });
    req.end(body);
  });
}

test('6. client disconnects mid-stream: the upstream request is aborted within 2 s and scrim keeps serving', async () => {
  const m = `ab${crypto.randomBytes(5).toString('hex')}`;
  const tHangUp = await streamAndHangUp(m);
  const rec = provider.requests.find((r) => r.body.includes(m));
  assert.ok(rec, 'the provider never got the stream request');
  await waitFor(() => rec.aborted, { timeoutMs: 2000, what: 'the upstream stream to be aborted' });
  assert.ok(rec.endTime - tHangUp <= 2000, `upstream aborted ${rec.endTime - tHangUp} ms after the client left`);
  assert.equal(rec.finished, false, 'the provider must not have finished the 20 s stream');

  const ok = await request(scrim.port, { method: 'POST', path: '/v1/chat/completions', headers: auth(), body: chatBody('still here') });
  assert.equal(ok.status, 200, show(ok));
  assert.equal(ok.json.choices[0].message.content, 'echo: still here');
});

test('6b. ten clients hanging up at once mid-stream: all upstream requests aborted, scrim serves the next', async () => {
  const ms = Array.from({ length: 10 }, () => `ab${crypto.randomBytes(5).toString('hex')}`);
  await Promise.all(ms.map((m) => streamAndHangUp(m)));
  await waitFor(() => ms.every((m) => provider.requests.find((r) => r.body.includes(m))?.aborted),
    { timeoutMs: 2000, what: 'all 10 upstream streams to be aborted' });
  const ok = await request(scrim.port, { method: 'POST', path: '/v1/chat/completions', headers: auth(), body: chatBody('after ten') });
  assert.equal(ok.status, 200, show(ok));
});

test('6c. upstream reset mid-stream: the client stream ends without [DONE] and without a clean last chunk', async () => {
  const body = JSON.stringify(chatBody('a b c d e f g h', { stream: true }));
  const r = await rawRequest(scrim.port,
    `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${TEST_KEY}\r\nContent-Type: application/json\r\n` +
    `x-fake-reset-after: 4\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
    { timeoutMs: 5000 });
  assert.equal(r.status, 200, show(r));
  assert.ok(r.closed, 'scrim must end the client connection after an upstream reset');
  assert.ok(r.elapsedMs < 4000, `took ${r.elapsedMs} ms to notice the reset`);
  // What arrived before the reset was forwarded...
  assert.ok(chatStreamContent(r.body).startsWith('echo: '), `body: ${r.body.slice(0, 300)}`);
  // ...but the client must be able to tell it was cut: no [DONE], and either no
  // terminating zero-length chunk or an SSE error event.
  assert.ok(!r.body.includes('[DONE]'), 'a reset stream must not look finished');
  const cleanEnd = r.complete;
  const errorEvent = /(^|\n)event: error\n/.test(r.body);
  assert.ok(!cleanEnd || errorEvent, 'stream ended with a clean final chunk and no error event: the client cannot tell it was cut');

  const ok = await request(scrim.port, { method: 'POST', path: '/v1/chat/completions', headers: auth(), body: chatBody('after reset') });
  assert.equal(ok.status, 200, show(ok));
});
