// Client errors scrim answers itself (nothing reaches the provider), and
// upstream failures (down, too slow, no provider key).

import { test, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { startFakeProvider } from '../fake_provider/provider.mjs';
import {
  startScrim, configFor, freePort, rawRequest, request, auth, chatBody, errorOf, show, TEST_KEY,
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

beforeEach(() => provider.reset());

/** scrim answered it without asking the provider. */
function assertNothingUpstream() {
  assert.equal(provider.requests.length, 0, `provider got ${provider.requests.length} request(s): ${provider.requests.map((r) => `${r.method} ${r.path}`).join(', ')}`);
}

function assertError(r, status, code) {
  assert.equal(r.status, status, show(r));
  const e = errorOf(r);
  assert.equal(e.code, code, show(r));
  assert.ok(r.headers['x-request-id'], `error response without x-request-id: ${show(r)}`);
  return e;
}

const post = (p, headers, body) => request(scrim.port, { method: 'POST', path: p, headers, body });

test('7a. a header block over max_header_size (16k) gets 431 headers_too_large', async () => {
  const r = await rawRequest(scrim.port,
    `GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${TEST_KEY}\r\nX-Big: ${'a'.repeat(20 * 1024)}\r\nConnection: close\r\n\r\n`,
    { timeoutMs: 3000 });
  assertError(r, 431, 'headers_too_large');
  assertNothingUpstream();
});

test('7b. Content-Length over max_body_size gets 413 at once, without sending the body', async () => {
  const r = await rawRequest(scrim.port,
    `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${TEST_KEY}\r\nContent-Type: application/json\r\nContent-Length: ${9 * 1024 * 1024}\r\n\r\n`,
    { timeoutMs: 3000, waitClose: false });
  assertError(r, 413, 'body_too_large');
  assert.ok(r.elapsedMs < 1000, `413 took ${r.elapsedMs} ms`);
  assertNothingUpstream();
});

test('7c. a malformed request line gets 400 bad_request and a close', async () => {
  const r = await rawRequest(scrim.port, 'THIS IS NOT HTTP\r\nHost: x\r\n\r\n', { timeoutMs: 3000 });
  assertError(r, 400, 'bad_request');
  assert.ok(r.closed, 'connection must be closed after a malformed request');
  assertNothingUpstream();
});

test('7d. an unknown route gets 404 route_not_found', async () => {
  const r = await post('/nope', auth(), chatBody('x'));
  assertError(r, 404, 'route_not_found');
  const g = await request(scrim.port, { path: '/nope/deeper?x=1', headers: auth() });
  assertError(g, 404, 'route_not_found');
  assertNothingUpstream();
});

test('7e. a wrong key, a missing key and a wrong x-api-key get 401 invalid_api_key', async () => {
  assertError(await post('/v1/chat/completions', { authorization: 'Bearer sk-wrong-key' }, chatBody('x')), 401, 'invalid_api_key');
  assertError(await post('/v1/chat/completions', {}, chatBody('x')), 401, 'invalid_api_key');
  assertError(await post('/anthropic/v1/messages', { 'x-api-key': 'sk-wrong-key', 'anthropic-version': '2023-06-01' },
    { model: 'c', max_tokens: 5, messages: [{ role: 'user', content: 'x' }] }), 401, 'invalid_api_key');
  assertError(await post('/v1/chat/completions', { authorization: `Basic ${Buffer.from(`u:${TEST_KEY}`).toString('base64')}` }, chatBody('x')), 401, 'invalid_api_key');
  assertError(await request(scrim.port, { path: '/v1/models', headers: { authorization: `Bearer ${TEST_KEY}x` } }), 401, 'invalid_api_key');
  assertNothingUpstream();
  // and the right key still works
  const ok = await post('/v1/chat/completions', auth(), chatBody('ok'));
  assert.equal(ok.status, 200, show(ok));
});

// An empty body is not tested here on purpose: some OpenAI endpoints take a
// POST without a body (e.g. POST /v1/responses/{id}/cancel).
test('7f. a body that is not JSON gets 400 invalid_json', async () => {
  assertError(await post('/v1/chat/completions', auth(), '{"model": "m", "messages": [}'), 400, 'invalid_json');
  assertError(await post('/v1/chat/completions', auth(), '{"a":1} trailing'), 400, 'invalid_json');
  assertError(await post('/v1/chat/completions', auth(), '{"a":1}{"b":2}'), 400, 'invalid_json');
  assertError(await post('/v1/chat/completions', auth(), "{'single': 'quotes'}"), 400, 'invalid_json');
  assertNothingUpstream();
});

test('7g. JSON nested 100 deep gets 400 invalid_json; 30 deep is forwarded', async () => {
  const deep = (n) => `{"model":"m","messages":[{"role":"user","content":"x"}],"extra":${'['.repeat(n)}${']'.repeat(n)}}`;
  assertError(await post('/v1/chat/completions', auth(), deep(100)), 400, 'invalid_json');
  assertError(await post('/v1/chat/completions', auth(), `${'['.repeat(100000)}${']'.repeat(100000)}`), 400, 'invalid_json');
  assertNothingUpstream();
  const ok = await post('/v1/chat/completions', auth(), deep(30));
  assert.equal(ok.status, 200, show(ok));
  assert.equal(provider.requests.length, 1);
});

test('8a. provider down (closed port) gets 502 upstream_connect_failed', async () => {
  const closedPort = await freePort();
  const down = await startScrim({ config: await configFor({ providerUrl: `http://127.0.0.1:${closedPort}` }) });
  try {
    const t0 = Date.now();
    const r = await request(down.port, { method: 'POST', path: '/v1/chat/completions', headers: auth(), body: chatBody('x') });
    assertError(r, 502, 'upstream_connect_failed');
    assert.ok(Date.now() - t0 < 3000, `502 took ${Date.now() - t0} ms`);
    const s = await request(down.port, { method: 'POST', path: '/v1/chat/completions', headers: auth(), body: chatBody('x', { stream: true }) });
    assertError(s, 502, 'upstream_connect_failed');
  } finally {
    await down.stop();
  }
});

test('8b. a provider slower than its timeout (1s) gets 504 upstream_timeout quickly', async () => {
  const slow = await startScrim({ config: await configFor({ providerUrl: provider.url, provider: { timeout: '1s' } }) });
  try {
    const t0 = Date.now();
    const r = await request(slow.port, {
      method: 'POST', path: '/v1/chat/completions', headers: { ...auth(), 'x-fake-delay-ms': '3000' }, body: chatBody('slow'),
    });
    const took = Date.now() - t0;
    assertError(r, 504, 'upstream_timeout');
    assert.ok(took >= 900 && took < 2000, `504 after ${took} ms, expected about 1 s`);
    // the provider saw the request, and saw it abandoned
    assert.equal(provider.requests.length, 1);
    // a fast request still works on the same scrim
    const ok = await request(slow.port, { method: 'POST', path: '/v1/chat/completions', headers: auth(), body: chatBody('fast') });
    assert.equal(ok.status, 200, show(ok));
  } finally {
    await slow.stop();
  }
});

test('8c. a provider whose key variable is unset gets 502 provider_key_missing', async () => {
  const nokey = await startScrim({
    config: await configFor({ providerUrl: provider.url }),
    env: { FAKE_PROVIDER_KEY: undefined },
  });
  try {
    const r = await request(nokey.port, { method: 'POST', path: '/v1/chat/completions', headers: auth(), body: chatBody('x') });
    assertError(r, 502, 'provider_key_missing');
    assertNothingUpstream();
  } finally {
    await nokey.stop();
  }
});
