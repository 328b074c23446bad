// The happy paths: OpenAI and Anthropic APIs through scrim, with curl and the
// official SDKs, streaming and not; keep-alive; provider errors passing
// through; what reaches the provider; what scrim logs.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import http from 'node:http';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import { startFakeProvider, splitChunks, streamedText, embeddingFor, openaiErrorBody, anthropicErrorBody, FAKE_MODELS } from '../fake_provider/provider.mjs';
import {
  startScrim, configFor, execFile, rawRequest, request, auth, chatBody, parseSSE, chatStreamContent,
  TEST_KEY, PROVIDER_KEY, show,
} from './lib.mjs';

let provider;
let scrim;
const markers = []; // prompt words that must never show up in scrim's logs

/** A unique word to put in a prompt (and to find the provider's record by). */
function marker() {
  const m = `zq${crypto.randomBytes(6).toString('hex')}`;
  markers.push(m);
  return m;
}

/** The one request the provider recorded whose body holds `m`. */
function recordWith(m) {
  const recs = provider.requests.filter((r) => r.body.includes(m));
  assert.equal(recs.length, 1, `expected exactly one upstream request carrying ${m}, got ${recs.length}`);
  return recs[0];
}

/** The provider got our provider key, never the client's. */
function assertUpstreamAuth(rec, kind = 'bearer') {
  if (kind === 'bearer') {
    assert.equal(rec.headers.authorization, `Bearer ${PROVIDER_KEY}`, 'provider must receive the provider key as Bearer');
    assert.equal(rec.headers['x-api-key'], undefined, 'no x-api-key upstream for a bearer provider');
  } else {
    assert.equal(rec.headers['x-api-key'], PROVIDER_KEY, 'provider must receive the provider key in x-api-key');
    assert.equal(rec.headers.authorization, undefined, 'no Authorization upstream for an x-api-key provider');
  }
  const everything = JSON.stringify({ h: rec.rawHeaders, b: rec.body, p: rec.path });
  assert.ok(!everything.includes(TEST_KEY), `client key leaked upstream: ${everything.slice(0, 600)}`);
}

function openai() {
  return new OpenAI({ baseURL: `${scrim.url}/v1`, apiKey: TEST_KEY, maxRetries: 0, timeout: 15_000 });
}

function anthropic() {
  return new Anthropic({ baseURL: `${scrim.url}/anthropic`, apiKey: TEST_KEY, maxRetries: 0, timeout: 15_000 });
}

/** curl -D - : splits headers from body; returns {status, headers, body}. */
async function curl(args) {
  const { stdout } = await execFile('curl', ['-sS', '-D', '-', '--max-time', '20', ...args], { maxBuffer: 16 << 20 });
  const i = stdout.indexOf('\r\n\r\n');
  assert.ok(i > 0, `curl output has no header block: ${stdout.slice(0, 300)}`);
  const head = stdout.slice(0, i).split('\r\n');
  const status = Number(head[0].split(' ')[1]);
  const headers = {};
  for (const l of head.slice(1)) {
    const c = l.indexOf(':');
    if (c > 0) headers[l.slice(0, c).trim().toLowerCase()] = l.slice(c + 1).trim();
  }
  return { status, headers, body: stdout.slice(i + 4) };
}

before(async () => {
  provider = await startFakeProvider();
  // debug level: even the most verbose logs must hold no key and no prompt.
  const config = await configFor({ providerUrl: provider.url, gateway: { log_level: 'debug' } });
  scrim = await startScrim({ config });
});

after(async () => {
  if (scrim) await scrim.stop();
  if (provider) await provider.close();
});

test('1a. non-streaming chat with curl: echo answer, provider key upstream, no client key', async () => {
  const m = marker();
  const r = await curl([
    '-H', `Authorization: Bearer ${TEST_KEY}`, '-H', 'content-type: application/json',
    '--data-binary', JSON.stringify(chatBody(`hello ${m}`)), `${scrim.url}/v1/chat/completions`,
  ]);
  assert.equal(r.status, 200, show(r));
  assert.ok(r.headers['x-request-id'], 'response must carry x-request-id');
  const j = JSON.parse(r.body);
  assert.equal(j.object, 'chat.completion');
  assert.equal(j.choices[0].message.content, `echo: hello ${m}`);
  const rec = recordWith(m);
  assert.equal(rec.method, 'POST');
  assert.equal(rec.path, '/v1/chat/completions');
  assertUpstreamAuth(rec);
  assert.deepEqual(JSON.parse(rec.body), chatBody(`hello ${m}`), 'the body reaches the provider unchanged');
});

test('1b. non-streaming chat with the openai SDK', async () => {
  const m = marker();
  const c = await openai().chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'system', content: 'be brief' }, { role: 'user', content: `hi ${m}` }] });
  assert.equal(c.choices[0].message.content, `echo: hi ${m}`);
  assert.equal(c.choices[0].finish_reason, 'stop');
  assert.ok(c.usage.total_tokens > 0);
  const rec = recordWith(m);
  assert.equal(rec.path, '/v1/chat/completions');
  assertUpstreamAuth(rec);
});

test('1c. a client key sent in both Authorization and x-api-key reaches neither provider', async () => {
  const both = { authorization: `Bearer ${TEST_KEY}`, 'x-api-key': TEST_KEY };
  const m = marker();
  const r = await request(scrim.port, { method: 'POST', path: '/v1/chat/completions', headers: both, body: chatBody(`both ${m}`) });
  assert.equal(r.status, 200, show(r));
  assertUpstreamAuth(recordWith(m), 'bearer');
  const m2 = marker();
  const a = await request(scrim.port, {
    method: 'POST', path: '/anthropic/v1/messages', headers: both,
    body: { model: 'c', max_tokens: 5, messages: [{ role: 'user', content: `both ${m2}` }] },
  });
  assert.equal(a.status, 200, show(a));
  assertUpstreamAuth(recordWith(m2), 'x-api-key');
});

test('2a. streaming chat with curl -N: every chunk arrives and joins to the echo', async () => {
  const m = marker();
  const text = `stream these few words ${m}`;
  const r = await curl([
    '-N', '-H', `Authorization: Bearer ${TEST_KEY}`, '-H', 'content-type: application/json',
    '--data-binary', JSON.stringify(chatBody(text, { stream: true })), `${scrim.url}/v1/chat/completions`,
  ]);
  assert.equal(r.status, 200, show(r));
  assert.match(r.headers['content-type'] || '', /text\/event-stream/);
  assert.ok(r.headers['x-request-id']);
  const events = parseSSE(r.body);
  const expected = splitChunks(`echo: ${text}`);
  const contentEvents = events.filter((e) => e.data !== '[DONE]' && (JSON.parse(e.data).choices[0]?.delta?.content ?? '') !== '');
  assert.equal(contentEvents.length, expected.length, 'one event per upstream chunk');
  assert.equal(chatStreamContent(r.body), `echo: ${text}`);
  assert.equal(events[events.length - 1].data, '[DONE]');
  assertUpstreamAuth(recordWith(m));
});

test('2b. streaming chat with the openai SDK, with usage', async () => {
  const m = marker();
  const stream = await openai().chat.completions.create({
    model: 'gpt-4o-mini', stream: true, stream_options: { include_usage: true },
    messages: [{ role: 'user', content: `one two three ${m}` }],
  });
  let content = '';
  let finish = null;
  let usage = null;
  let n = 0;
  for await (const chunk of stream) {
    n++;
    if (chunk.usage) usage = chunk.usage;
    for (const ch of chunk.choices) {
      if (ch.delta?.content) content += ch.delta.content;
      if (ch.finish_reason) finish = ch.finish_reason;
    }
  }
  assert.equal(content, `echo: one two three ${m}`);
  assert.equal(finish, 'stop');
  assert.ok(usage && usage.completion_tokens === 5, `usage chunk: ${JSON.stringify(usage)}`);
  assert.ok(n >= 7, `expected >= 7 chunks, got ${n}`);
});

test('2c. streaming is not buffered: first chunk arrives long before the end (10 chunks, 100 ms apart)', async () => {
  const m = marker();
  const r = await request(scrim.port, {
    method: 'POST', path: '/v1/chat/completions',
    headers: { ...auth(), 'x-fake-chunk-delay-ms': '100', 'x-fake-chunks': '10' },
    body: chatBody(`slow ${m}`, { stream: true }),
  });
  assert.equal(r.status, 200, show(r));
  assert.equal(chatStreamContent(r.body), streamedText(`echo: slow ${m}`, 10));
  const firstContent = r.chunks.find((c) => chatStreamContent(c.data) !== '');
  assert.ok(firstContent, 'no content chunk');
  const total = r.tEnd - r.t0;
  const first = firstContent.t - r.t0;
  assert.ok(total >= 1000, `the stream should take >= 1 s upstream, took ${total} ms`);
  assert.ok(first < 500, `first content chunk after ${first} ms (stream took ${total} ms): buffered?`);
  assert.ok(r.tEnd - firstContent.t >= 700, `first chunk only ${r.tEnd - firstContent.t} ms before the end: buffered?`);
  const distinctTimes = new Set(r.chunks.map((c) => Math.floor((c.t - r.t0) / 50))).size;
  assert.ok(distinctTimes >= 8, `chunks arrived in only ${distinctTimes} bursts`);
});

test('3a. Anthropic messages with @anthropic-ai/sdk, not streaming', async () => {
  const m = marker();
  const msg = await anthropic().messages.create({
    model: 'claude-3-5-sonnet-latest', max_tokens: 64, system: 'be brief',
    messages: [{ role: 'user', content: `bonjour ${m}` }],
  });
  assert.equal(msg.type, 'message');
  assert.equal(msg.content[0].text, `echo: bonjour ${m}`);
  assert.equal(msg.stop_reason, 'end_turn');
  const rec = recordWith(m);
  assert.equal(rec.path, '/v1/messages');
  assertUpstreamAuth(rec, 'x-api-key');
  assert.equal(rec.headers['anthropic-version'], '2023-06-01');
});

test('3b. Anthropic messages with @anthropic-ai/sdk, streaming', async () => {
  const m = marker();
  const stream = await anthropic().messages.create({
    model: 'claude-3-5-sonnet-latest', max_tokens: 64, stream: true,
    messages: [{ role: 'user', content: [{ type: 'text', text: `stream me ${m}` }] }],
  });
  const types = [];
  let text = '';
  for await (const ev of stream) {
    types.push(ev.type);
    if (ev.type === 'content_block_delta' && ev.delta.type === 'text_delta') text += ev.delta.text;
  }
  assert.equal(text, `echo: stream me ${m}`);
  assert.equal(types[0], 'message_start');
  assert.equal(types[types.length - 1], 'message_stop');
  assert.ok(types.includes('message_delta'));
  const rec = recordWith(m);
  assertUpstreamAuth(rec, 'x-api-key');
  assert.equal(rec.headers['anthropic-version'], '2023-06-01');
});

test('3c. Anthropic with curl, client key in x-api-key and no anthropic-version: scrim adds the configured header', async () => {
  const m = marker();
  const r = await curl([
    '-H', `x-api-key: ${TEST_KEY}`, '-H', 'content-type: application/json',
    '--data-binary', JSON.stringify({ model: 'claude-x', max_tokens: 10, messages: [{ role: 'user', content: `plain ${m}` }] }),
    `${scrim.url}/anthropic/v1/messages`,
  ]);
  assert.equal(r.status, 200, show(r));
  assert.equal(JSON.parse(r.body).content[0].text, `echo: plain ${m}`);
  const rec = recordWith(m);
  assert.equal(rec.path, '/v1/messages');
  assert.equal(rec.headers['anthropic-version'], '2023-06-01');
  assertUpstreamAuth(rec, 'x-api-key');
});

test('4a. embeddings through the SDK (string and array input)', async () => {
  const client = openai();
  const one = await client.embeddings.create({ model: 'text-embedding-3-small', input: 'embed me' });
  assert.equal(one.data.length, 1);
  assert.deepEqual(one.data[0].embedding, embeddingFor('embed me'));
  const two = await client.embeddings.create({ model: 'text-embedding-3-small', input: ['a', 'b'] });
  assert.equal(two.data.length, 2);
  assert.deepEqual(two.data[1].embedding, embeddingFor('b'));
  const rec = provider.requests.filter((r) => r.path === '/v1/embeddings');
  assert.equal(rec.length, 2);
  assertUpstreamAuth(rec[0]);
});

test('4b. legacy completions through the SDK', async () => {
  const m = marker();
  const c = await openai().completions.create({ model: 'gpt-3.5-turbo-instruct', prompt: `complete ${m}` });
  assert.equal(c.choices[0].text, `echo: complete ${m}`);
  assert.equal(recordWith(m).path, '/v1/completions');
});

test('4c. Responses API through the SDK, plain and streaming', async () => {
  const client = openai();
  const m = marker();
  const r = await client.responses.create({ model: 'gpt-4o', input: `respond ${m}` });
  assert.equal(r.output_text, `echo: respond ${m}`);
  assert.equal(recordWith(m).path, '/v1/responses');

  const m2 = marker();
  const stream = await client.responses.create({ model: 'gpt-4o', stream: true, input: [{ role: 'user', content: `streamed ${m2}` }] });
  let text = '';
  let last;
  for await (const ev of stream) {
    last = ev.type;
    if (ev.type === 'response.output_text.delta') text += ev.delta;
  }
  assert.equal(text, `echo: streamed ${m2}`);
  assert.equal(last, 'response.completed');
});

test('4d. GET /v1/models and /v1/models/:id through the SDK', async () => {
  const client = openai();
  const ids = [];
  for await (const model of client.models.list()) ids.push(model.id);
  assert.deepEqual(ids, FAKE_MODELS);
  const one = await client.models.retrieve('gpt-4o');
  assert.equal(one.id, 'gpt-4o');
  const recs = provider.requests.filter((r) => r.method === 'GET' && r.path.startsWith('/v1/models'));
  assert.ok(recs.some((r) => r.path === '/v1/models'));
  assert.ok(recs.some((r) => r.path === '/v1/models/gpt-4o'));
  for (const rec of recs) assertUpstreamAuth(rec);
});

test('5. keep-alive: several requests, a stream, then a POST, all on one client socket', async () => {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const sockets = new Set();
  const ports = new Set();
  try {
    const seq = [
      { method: 'GET', path: '/v1/models', headers: auth() },
      { method: 'POST', path: '/v1/chat/completions', headers: auth(), body: chatBody('first') },
      { method: 'POST', path: '/v1/chat/completions', headers: auth(), body: chatBody('streamed one', { stream: true }) },
      { method: 'POST', path: '/v1/chat/completions', headers: auth(), body: chatBody('after the stream') },
      { method: 'POST', path: '/v1/embeddings', headers: auth(), body: { model: 'e', input: 'x' } },
      { method: 'GET', path: '/v1/models/gpt-4o', headers: auth() },
    ];
    const results = [];
    for (const s of seq) {
      const r = await request(scrim.port, { ...s, agent });
      sockets.add(r.socket);
      ports.add(r.socket.localPort);
      results.push(r);
      assert.equal(r.status, 200, `${s.method} ${s.path}: ${show(r)}`);
      assert.notEqual((r.headers.connection || '').toLowerCase(), 'close', `${s.method} ${s.path} closed the connection`);
    }
    assert.equal(results[1].json.choices[0].message.content, 'echo: first');
    assert.equal(chatStreamContent(results[2].body), 'echo: streamed one');
    assert.equal(results[3].json.choices[0].message.content, 'echo: after the stream');
    assert.equal(ports.size, 1, `requests used ${ports.size} client sockets`);
    assert.equal(sockets.size, 1, `requests used ${sockets.size} client sockets`);
    const ids = new Set(results.map((r) => r.headers['x-request-id']));
    assert.equal(ids.size, results.length, 'every response has its own x-request-id');
  } finally {
    agent.destroy();
  }
});

test('5b. whole answers carry their length, streams are chunked (HTTP/1.1); an HTTP/1.0 client gets no chunks and a close', async () => {
  const body = JSON.stringify(chatBody('old client'));
  const head = (v, b = body) => `POST /v1/chat/completions HTTP/${v}\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${TEST_KEY}\r\n` +
    `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(b)}\r\n`;
  const r11 = await rawRequest(scrim.port, `${head('1.1')}Connection: close\r\n\r\n${body}`);
  assert.equal(r11.status, 200, show(r11));
  assert.match(r11.statusLine, /^HTTP\/1\.1 200/);
  assert.equal(r11.headers['transfer-encoding'], undefined, show(r11));
  assert.equal(Number(r11.headers['content-length']), Buffer.byteLength(r11.body), show(r11));
  assert.equal(r11.json?.choices?.[0]?.message?.content, 'echo: old client');

  // A stream is sent as it arrives: its length is not known up front.
  const sbody = JSON.stringify(chatBody('streamed', { stream: true }));
  const rs = await rawRequest(scrim.port, `${head('1.1', sbody)}Connection: close\r\n\r\n${sbody}`);
  assert.equal(rs.status, 200, show(rs));
  assert.equal((rs.headers['transfer-encoding'] || '').toLowerCase(), 'chunked', show(rs));
  assert.equal(rs.headers['content-length'], undefined, show(rs));
  assert.match(rs.body, /data: \[DONE\]/);

  const r10 = await rawRequest(scrim.port, `${head('1.0')}\r\n${body}`);
  assert.equal(r10.status, 200, show(r10));
  assert.ok(!/chunked/i.test(r10.headers['transfer-encoding'] || ''), `HTTP/1.0 client got chunked: ${show(r10)}`);
  assert.ok(r10.closed, 'an HTTP/1.0 connection without keep-alive is closed after the answer');
  assert.equal(JSON.parse(r10.body).choices[0].message.content, 'echo: old client');

  const rs10 = await rawRequest(scrim.port, `${head('1.0', sbody)}\r\n${sbody}`);
  assert.equal(rs10.status, 200, show(rs10));
  assert.ok(!/chunked/i.test(rs10.headers['transfer-encoding'] || ''), `HTTP/1.0 client got chunked: ${show(rs10)}`);
  assert.ok(rs10.closed, 'the server must close an HTTP/1.0 connection to end a stream');
  assert.match(rs10.body, /data: \[DONE\]/);
});

test('9a. provider error statuses pass through with their body (429 OpenAI, 529 Anthropic)', async () => {
  const r = await request(scrim.port, {
    method: 'POST', path: '/v1/chat/completions', headers: { ...auth(), 'x-fake-status': '429' }, body: chatBody('limit me'),
  });
  assert.equal(r.status, 429, show(r));
  assert.deepEqual(r.json, openaiErrorBody(429));
  assert.ok(r.headers['x-request-id']);

  const a = await request(scrim.port, {
    method: 'POST', path: '/anthropic/v1/messages', headers: { ...auth(), 'x-fake-status': '529', 'anthropic-version': '2023-06-01' },
    body: { model: 'c', max_tokens: 5, messages: [{ role: 'user', content: 'x' }] },
  });
  assert.equal(a.status, 529, show(a));
  assert.deepEqual(a.json, anthropicErrorBody(529));
});

test('9b. a provider 500 reaches the openai SDK as an APIError with status 500', async () => {
  await assert.rejects(
    openai().chat.completions.create({ model: 'm', messages: [{ role: 'user', content: 'x' }] }, { headers: { 'x-fake-status': '500' } }),
    (e) => {
      assert.equal(e.status, 500, String(e));
      assert.equal(e.error?.code ?? e.code, openaiErrorBody(500).error.code);
      return true;
    },
  );
});

test('logs hold no client key, no provider key and no prompt text', async () => {
  const log = scrim.stderr();
  assert.ok(markers.length >= 8, 'earlier tests ran');
  assert.ok(!log.includes(TEST_KEY), 'client key in scrim logs');
  assert.ok(!log.includes(PROVIDER_KEY), 'provider key in scrim logs');
  for (const m of markers) assert.ok(!log.includes(m), `prompt text ${m} in scrim logs`);
  assert.ok(!log.includes('echo: '), 'response text in scrim logs');
});
