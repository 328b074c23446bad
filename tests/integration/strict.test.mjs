// HTTP strictness on the client side, one test per row of RELIABILITY.md,
// over raw sockets. Nothing malformed may ever reach the provider.

import { test, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { startFakeProvider } from '../fake_provider/provider.mjs';
import {
  startScrim, configFor, rawRequest, request, auth, chatBody, errorOf, show, TEST_KEY,
} from './lib.mjs';

let provider;
let scrim;

before(async () => {
  provider = await startFakeProvider();
  scrim = await startScrim({
    config: await configFor({ providerUrl: provider.url, gateway: { header_timeout: '1s', max_body_size: '64k' } }),
  });
});

after(async () => {
  if (scrim) await scrim.stop();
  if (provider) await provider.close();
});

beforeEach(() => provider.reset());

const BODY = JSON.stringify(chatBody('strict'));
const AUTH = `Authorization: Bearer ${TEST_KEY}\r\n`;
const POST = 'POST /v1/chat/completions HTTP/1.1\r\n';
const chunked = (s, size = 7) => {
  let out = '';
  for (let i = 0; i < s.length; i += size) {
    const part = s.slice(i, i + size);
    out += `${Buffer.byteLength(part).toString(16)}\r\n${part}\r\n`;
  }
  return `${out}0\r\n\r\n`;
};

/**
 * Send `raw`, expect `status` (and `code` when given). With close: true the
 * connection must also be closed by scrim. Always: nothing reached the provider.
 */
async function expectReject(raw, status, { close = false, code, timeoutMs = 3000, single = false, ...opts } = {}) {
  const r = await rawRequest(scrim.port, raw, { timeoutMs, waitClose: close || single, ...opts });
  assert.equal(r.status, status, show(r));
  const e = errorOf(r);
  if (code) assert.equal(e.code, code, show(r));
  if (close) assert.ok(r.closed, `connection must be closed after ${status}: ${show(r)}`);
  if (single) assert.equal(r.responses.length, 1, `smuggled request answered: ${r.raw.slice(0, 800)}`);
  assert.equal(provider.requests.length, 0, `malformed request reached the provider: ${JSON.stringify(provider.requests.map((x) => [x.path, x.body.slice(0, 80)]))}`);
  return r;
}

test('13.0 control: a well-formed chunked POST and two pipelined requests are served', async () => {
  const r = await rawRequest(scrim.port,
    `${POST}Host: x\r\n${AUTH}Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n${chunked(BODY)}`);
  assert.equal(r.status, 200, show(r));
  assert.equal(r.json.choices[0].message.content, 'echo: strict');
  assert.equal(provider.requests[0].body, BODY, 'the de-chunked body reaches the provider');
  const two = await rawRequest(scrim.port,
    `GET /v1/models HTTP/1.1\r\nHost: x\r\n${AUTH}\r\n${POST}Host: x\r\n${AUTH}Content-Type: application/json\r\nContent-Length: ${BODY.length}\r\nConnection: close\r\n\r\n${BODY}`);
  assert.equal(two.responses.length, 2, show(two));
  assert.equal(two.responses[0].status, 200);
  assert.equal(two.responses[0].json.object, 'list');
  assert.equal(two.responses[1].status, 200);
  assert.equal(two.responses[1].json.choices[0].message.content, 'echo: strict');
});

test('13.0b pipelined past what scrim reads ahead (64 KiB) while a request is busy: reading pauses, then all seven are served in order', async () => {
  // The first request waits 400 ms at the provider; meanwhile six more
  // arrive with 30 KB bodies, 180 KB in all. scrim stops reading at
  // 64 KiB of unread input and must resume once the first answer is out.
  const req = (tag, extra = '', body = JSON.stringify(chatBody(tag))) =>
    `${POST}Host: x\r\n${AUTH}Content-Type: application/json\r\n${extra}Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
  const big = (i) => JSON.stringify(chatBody(`p${i} ${'x'.repeat(30000)}`));
  const rest = [1, 2, 3, 4, 5, 6].map((i) => req(`p${i}`, i === 6 ? 'Connection: close\r\n' : '', big(i))).join('');
  const r = await rawRequest(scrim.port, [req('p0', 'x-fake-delay-ms: 400\r\n'), rest], { delayMs: 100, timeoutMs: 8000 });
  assert.equal(r.responses.length, 7, show(r));
  r.responses.forEach((x, i) => {
    assert.equal(x.status, 200, show(r));
    assert.ok(x.json.choices[0].message.content.startsWith(`echo: p${i}`), `answer ${i} out of order`);
  });
  assert.ok(r.closed, 'closed after the last (Connection: close)');
  assert.equal(provider.requests.length, 7);
});

test('13.1 Content-Length together with Transfer-Encoding: 400 and close, the smuggled request is not served', async () => {
  const smuggled = `GET /v1/models HTTP/1.1\r\nHost: x\r\n${AUTH}\r\n`;
  const body = `0\r\n\r\n${smuggled}`;
  await expectReject(`${POST}Host: x\r\n${AUTH}Content-Type: application/json\r\nContent-Length: ${body.length}\r\nTransfer-Encoding: chunked\r\n\r\n${body}`,
    400, { close: true, single: true, code: 'bad_request' });
});

test('13.2 Transfer-Encoding: chunked, gzip: 400', async () => {
  await expectReject(`${POST}Host: x\r\n${AUTH}Transfer-Encoding: chunked, gzip\r\n\r\n${chunked(BODY)}`, 400, { code: 'bad_request' });
});

test('13.3 Transfer-Encoding: xchunked: 400', async () => {
  await expectReject(`${POST}Host: x\r\n${AUTH}Transfer-Encoding: xchunked\r\n\r\n${chunked(BODY)}`, 400, { code: 'bad_request' });
});

test('13.4 two different Content-Length headers: 400', async () => {
  await expectReject(`${POST}Host: x\r\n${AUTH}Content-Length: ${BODY.length}\r\nContent-Length: ${BODY.length + 1}\r\n\r\n${BODY} `, 400, { code: 'bad_request' });
});

test('13.5 Content-Length: +N (signed): 400', async () => {
  await expectReject(`${POST}Host: x\r\n${AUTH}Content-Length: +${BODY.length}\r\n\r\n${BODY}`, 400, { code: 'bad_request' });
});

test('13.6 "Transfer-Encoding : chunked" (space before the colon): 400, no desync', async () => {
  const smuggled = `GET /v1/models HTTP/1.1\r\nHost: x\r\n${AUTH}\r\n`;
  await expectReject(`${POST}Host: x\r\n${AUTH}Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n${smuggled}`, 400, { close: true, single: true, code: 'bad_request' });
});

test('13.7 obs-fold continuation line: 400', async () => {
  await expectReject(`GET /v1/models HTTP/1.1\r\nHost: x\r\n${AUTH}X-Folded: first\r\n  second\r\n\r\n`, 400, { code: 'bad_request' });
});

test('13.8 chunk size "zz": 400 and close, no hang', async () => {
  const r = await expectReject(`${POST}Host: x\r\n${AUTH}Transfer-Encoding: chunked\r\n\r\nzz\r\n${BODY}\r\n0\r\n\r\n`, 400, { close: true, code: 'bad_request' });
  assert.ok(r.elapsedMs < 2000, `took ${r.elapsedMs} ms`);
});

test('13.9 chunk size of 18 hex digits (overflow): 400 and close, no hang', async () => {
  const r = await expectReject(`${POST}Host: x\r\n${AUTH}Transfer-Encoding: chunked\r\n\r\nfffffffffffffffff1\r\n${BODY}`, 400, { close: true, code: 'bad_request' });
  assert.ok(r.elapsedMs < 2000, `took ${r.elapsedMs} ms`);
});

test('13.10 HTTP/1.1 without Host: 400', async () => {
  await expectReject(`GET /v1/models HTTP/1.1\r\n${AUTH}\r\n`, 400, { code: 'bad_request' });
});

test('13.11 two Host headers: 400', async () => {
  await expectReject(`GET /v1/models HTTP/1.1\r\nHost: a\r\nHost: b\r\n${AUTH}\r\n`, 400, { code: 'bad_request' });
});

test('13.12 NUL byte in a header value: 400', async () => {
  await expectReject(Buffer.from(`GET /v1/models HTTP/1.1\r\nHost: x\r\n${AUTH}X-Nul: a\u0000b\r\n\r\n`, 'latin1'), 400, { code: 'bad_request' });
});

test('13.13 a 64 KiB header: 431', async () => {
  await expectReject(`GET /v1/models HTTP/1.1\r\nHost: x\r\n${AUTH}X-Big: ${'b'.repeat(64 * 1024)}\r\n\r\n`, 431, { code: 'headers_too_large' });
});

test('13.14 1000 headers: 431', async () => {
  let h = '';
  for (let i = 0; i < 1000; i++) h += `X-H${i}: v\r\n`;
  await expectReject(`GET /v1/models HTTP/1.1\r\nHost: x\r\n${AUTH}${h}\r\n`, 431, { code: 'headers_too_large' });
});

test('13.15 a 64 KiB URI: 414', async () => {
  await expectReject(`GET /v1/models?q=${'u'.repeat(64 * 1024)} HTTP/1.1\r\nHost: x\r\n${AUTH}\r\n`, 414, { code: 'uri_too_long' });
});

test('13.16 Content-Length: 2000000000: 413 at once', async () => {
  const r = await expectReject(`${POST}Host: x\r\n${AUTH}Content-Type: application/json\r\nContent-Length: 2000000000\r\n\r\n{"model":`, 413, { code: 'body_too_large' });
  assert.ok(r.firstByteMs !== null && r.firstByteMs < 1000, `413 after ${r.firstByteMs} ms`);
});

test('13.17 HTTP/9.9: 505', async () => {
  await expectReject(`GET /v1/models HTTP/9.9\r\nHost: x\r\n${AUTH}\r\n`, 505, { code: 'http_version_not_supported' });
});

test('13.18 bare LF line endings: 400', async () => {
  await expectReject(`GET /v1/models HTTP/1.1\nHost: x\nAuthorization: Bearer ${TEST_KEY}\n\n`, 400, { code: 'bad_request' });
});

test('13.19 slowloris (one header byte every 300 ms, header_timeout 1s): 408 within about 1.5 s', async () => {
  const head = `GET /v1/models HTTP/1.1\r\nHost: x\r\n${AUTH}X-Slow: `;
  const drip = Array.from({ length: 40 }, () => 'z');
  const r = await expectReject([head, ...drip], 408, { close: true, code: 'request_timeout', delayMs: 300, timeoutMs: 5000 });
  assert.ok(r.firstByteMs !== null, 'no answer');
  assert.ok(r.firstByteMs >= 900 && r.firstByteMs <= 1600, `408 after ${r.firstByteMs} ms, expected about 1 s`);
});

test('13.20 a chunked body passing max_body_size (64k): 413 and close', async () => {
  const head = `${POST}Host: x\r\n${AUTH}Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n`;
  const piece = `2000\r\n${'x'.repeat(0x2000)}\r\n`; // 8 KiB chunks
  const pieces = [head, ...Array.from({ length: 12 }, () => piece)]; // 96 KiB, never terminated
  await expectReject(pieces, 413, { close: true, code: 'body_too_large', delayMs: 20, timeoutMs: 4000 });
});

test('13.21 a truncated body and then the client hangs up: scrim survives, the next request works', async () => {
  const r = await rawRequest(scrim.port,
    `${POST}Host: x\r\n${AUTH}Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"model":`,
    { closeAfterSend: true });
  assert.equal(r.status, undefined, 'nothing to answer yet');
  const c = await rawRequest(scrim.port,
    `${POST}Host: x\r\n${AUTH}Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nabc`,
    { closeAfterSend: true });
  assert.equal(c.status, undefined);
  await new Promise((res) => setTimeout(res, 100));
  assert.ok(scrim.alive(), 'scrim crashed');
  const ok = await request(scrim.port, { method: 'POST', path: '/v1/chat/completions', headers: auth(), body: chatBody('next') });
  assert.equal(ok.status, 200, show(ok));
  assert.equal(provider.requests.length, 1, 'only the good request reached the provider');
});

test('13.21b a method no provider API uses (lowercase post, BREW): 501, nothing forwarded', async () => {
  for (const m of ['post', 'BREW', 'PROPFIND']) {
    await expectReject(`${m} /v1/chat/completions HTTP/1.1\r\nHost: x\r\n${AUTH}Content-Type: application/json\r\nContent-Length: ${BODY.length}\r\nConnection: close\r\n\r\n${BODY}`,
      501, { code: 'method_not_implemented', close: true });
  }
});

test('13.22 after all of the above, scrim is alive and serving', async () => {
  assert.ok(scrim.alive());
  const ok = await request(scrim.port, { path: '/v1/models', headers: auth() });
  assert.equal(ok.status, 200, show(ok));
});
