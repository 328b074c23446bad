// Many streams at once.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startFakeProvider, streamedText } from '../fake_provider/provider.mjs';
import { startScrim, configFor, request, auth, chatBody, chatStreamContent, parseSSE } from './lib.mjs';

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

test('12. 200 concurrent streaming clients (no keep-alive) all get their full content', async () => {
  const N = 200;
  const CHUNKS = 30;
  const t0 = Date.now();
  const results = await Promise.allSettled(Array.from({ length: N }, (_, i) => request(scrim.port, {
    method: 'POST', path: '/v1/chat/completions', agent: false, timeoutMs: 30_000,
    headers: { ...auth(), connection: 'close', 'x-fake-chunks': String(CHUNKS), 'x-fake-chunk-delay-ms': '20' },
    body: chatBody(`client ${i}`, { stream: true }),
  })));
  const failures = [];
  results.forEach((r, i) => {
    if (r.status === 'rejected') { failures.push(`#${i}: ${r.reason.message}`); return; }
    const v = r.value;
    if (v.status !== 200) { failures.push(`#${i}: status ${v.status} ${v.body.slice(0, 200)}`); return; }
    const want = streamedText(`echo: client ${i}`, CHUNKS);
    const got = chatStreamContent(v.body);
    if (got !== want) failures.push(`#${i}: content ${JSON.stringify(got.slice(0, 80))}...`);
    else if (!v.body.includes('data: [DONE]')) failures.push(`#${i}: no [DONE]`);
  });
  assert.deepEqual(failures.slice(0, 10), [], `${failures.length} of ${N} streams failed`);
  // They really ran at the same time: 200 streams of ~0.6 s each in well under 200 x 0.6 s.
  const took = Date.now() - t0;
  assert.ok(took < 20_000, `200 concurrent streams took ${took} ms`);
  assert.equal(provider.requests.filter((r) => r.path === '/v1/chat/completions').length, N);
  const ok = await request(scrim.port, { method: 'POST', path: '/v1/chat/completions', headers: auth(), body: chatBody('after') });
  assert.equal(ok.status, 200);
});

test('12b. one long stream (5000 chunks) arrives complete and in order', async () => {
  const CHUNKS = 5000;
  const r = await request(scrim.port, {
    method: 'POST', path: '/v1/chat/completions', timeoutMs: 30_000,
    headers: { ...auth(), 'x-fake-chunks': String(CHUNKS) },
    body: chatBody('long one', { stream: true }),
  });
  assert.equal(r.status, 200);
  const events = parseSSE(r.body);
  // role chunk + content chunks + finish chunk + [DONE]
  assert.equal(events.length, CHUNKS + 3, `got ${events.length} events`);
  assert.equal(chatStreamContent(r.body), streamedText('echo: long one', CHUNKS));
  assert.equal(events[events.length - 1].data, '[DONE]');
});
