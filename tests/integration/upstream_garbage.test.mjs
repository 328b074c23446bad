// A provider that answers with garbage: not HTTP, a bad status line,
// truncated bodies, bad or truncated chunks, corrupt gzip, an endless
// header, a stream cut mid-chunk, SSE events that are not JSON, a reset.
// It is a raw TCP server that reads the (scrubbed) request and answers as
// the request's x-garbage header says, for plain and streamed requests.
//
// Asserted for each: a clear answer (502 with an OpenAI-shaped error, or,
// once the provider's 200 head has gone out, a body that visibly ends
// early: no [DONE] and no clean last chunk, as nginx does), never a hang; the request that reached the
// broken provider was scrubbed; every answer has an audit record saying
// upstream_error or upstream_reset; scrim keeps serving and exits 0 with
// no sanitizer report.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import zlib from 'node:zlib';
import { startFakeProvider } from '../fake_provider/provider.mjs';
import {
  startScrim, configFor, rawRequest, request, auth, chatBody, errorOf, tempDir, sleep, show, TEST_KEY,
} from './lib.mjs';

const SANITIZER_RE = /AddressSanitizer|LeakSanitizer|runtime error:|UndefinedBehaviorSanitizer/;
const EMAIL = 'maria.gonzalez@example.com';

const sse = (obj) => `data: ${JSON.stringify(obj)}\n\n`;
const delta = (text) => sse({ id: 'x', object: 'chat.completion.chunk', choices: [{ index: 0, delta: { content: text } }] });
const chunk = (s) => `${Buffer.byteLength(s).toString(16)}\r\n${s}\r\n`;
const SSE_HEAD = 'HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n';
const JSON_OK = JSON.stringify({ id: 'x', object: 'chat.completion', choices: [{ index: 0, message: { role: 'assistant', content: 'fine' }, finish_reason: 'stop' }] });

/**
 * What the broken provider sends for each x-garbage value: a list of
 * pieces (strings or Buffers) written with a short pause between them,
 * then `end` (close), `reset` (RST) or `hang` (leave it open).
 */
const MODES = {
  'not-http': { send: ['SSH-2.0-OpenSSH_9.2\r\n', 'garbage garbage\r\n\r\n'], then: 'end' },
  'bad-status': { send: ['HTTP/1.1 abc Whatever\r\nContent-Length: 2\r\n\r\n{}'], then: 'end' },
  'binary': { send: [Buffer.from([0, 1, 2, 0xff, 0xfe, 13, 10, 13, 10, 0x80, 0x81])], then: 'end' },
  'head-then-close': { send: ['HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n'], then: 'end' },
  'truncated-length': { send: [`HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: ${JSON_OK.length + 200}\r\n\r\n`, JSON_OK], then: 'end' },
  'bad-chunk-size': { send: ['HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n', 'zz\r\nhello\r\n0\r\n\r\n'], then: 'end' },
  'truncated-chunk': { send: ['HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n', `${(JSON_OK.length + 50).toString(16)}\r\n${JSON_OK}`], then: 'end' },
  'corrupt-gzip': { send: [`HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: 20\r\n\r\n`, Buffer.concat([zlib.gzipSync(JSON_OK).subarray(0, 10), Buffer.alloc(10, 0x41)])], then: 'end' },
  'endless-header': { send: ['HTTP/1.1 200 OK\r\nX-Long: ', ...Array.from({ length: 40 }, () => 'a'.repeat(64 * 1024))], then: 'end' },
  'reset-after-head': { send: ['HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{"id":'], then: 'reset' },
  // Streams: the head and some events go out before the break.
  'sse-cut-mid-chunk': { send: [SSE_HEAD, chunk(delta('echo: one ')), chunk(delta('two ')), `${(200).toString(16)}\r\ndata: {"choi`], then: 'end' },
  'sse-bad-chunk': { send: [SSE_HEAD, chunk(delta('echo: one ')), 'qq\r\n'], then: 'end' },
  'sse-not-json': { send: [SSE_HEAD, chunk(delta('echo: one ')), chunk('data: {not json at all <EMAIL_ffffff\n\n'), chunk('data: \u0000\u0001binary\n\n'), chunk('event: weird\ndata: [DONE\n\n')], then: 'end' },
  'sse-reset': { send: [SSE_HEAD, chunk(delta('echo: one ')), chunk(delta('two '))], then: 'reset' },
  'sse-then-garbage-framing': { send: [SSE_HEAD, chunk(delta('echo: one ')), 'this is not a chunk\r\n\r\n'], then: 'end' },
};

// Not garbage: a gzip answer, which scrim asks for and must decode.
const GZ = zlib.gzipSync(JSON_OK);
const GOOD = {
  'gzip-ok': { send: [`HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: ${GZ.length}\r\n\r\n`, GZ], then: 'end' },
};

let provider; // a healthy one, to show scrim still serves
let broken;
let scrim;
let state;

/** The raw provider: reads a request head (+ body by Content-Length), answers per x-garbage. */
async function startBroken() {
  const st = { requests: [] };
  st.server = net.createServer((s) => {
    let buf = Buffer.alloc(0);
    s.on('error', () => {});
    s.on('data', async (d) => {
      buf = Buffer.concat([buf, d]);
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      const head = buf.subarray(0, end).toString('latin1');
      const len = Number((/\r\ncontent-length: *(\d+)/i.exec(head) || [])[1] || 0);
      if (buf.length < end + 4 + len) return;
      s.removeAllListeners('data');
      const raw = buf.toString('latin1');
      st.requests.push(raw);
      const name = (/\r\nx-garbage: *(\S+)/i.exec(head) || [])[1];
      const mode = MODES[name] || GOOD[name];
      if (!mode) { s.end('HTTP/1.1 500 Nope\r\nContent-Length: 0\r\n\r\n'); return; }
      for (const p of mode.send) {
        if (s.destroyed) return;
        s.write(p);
        await sleep(20);
      }
      if (mode.then === 'reset') s.resetAndDestroy();
      else if (mode.then === 'end') s.end();
    });
  });
  await new Promise((resolve) => st.server.listen(0, '127.0.0.1', resolve));
  st.url = `http://127.0.0.1:${st.server.address().port}`;
  return st;
}

before(async () => {
  provider = await startFakeProvider();
  broken = await startBroken();
  state = tempDir('scrim-garbage-');
  scrim = await startScrim({
    config: await configFor({
      providerUrl: provider.url,
      gateway: { state_dir: state },
      extra: [
        '[provider broken]', `base_url = ${broken.url}`, 'api_key_env = FAKE_PROVIDER_KEY', 'auth_header = bearer',
        'connect_timeout = 2s', 'timeout = 5s', '',
        '[route broken]', 'prefix = /broken/', 'strip = /broken', 'provider = broken', '',
      ].join('\n'),
    }),
  });
  // [route all] comes before [route broken] in the file; /broken/ does not match /v1/.
});

after(async () => {
  if (scrim) await scrim.kill();
  broken?.server.close();
  if (provider) await provider.close();
});

const answers = []; // {mode, stream, id}

for (const [name, mode] of Object.entries(MODES)) {
  for (const stream of name.startsWith('sse-') ? [true] : [false, true]) {
    // (the broken provider answers the same whether asked to stream or not)
    test(`upstream ${name}${stream ? ' (client asked for a stream)' : ''}: a clear answer, no hang`, async () => {
      const body = JSON.stringify(chatBody(`${name}: mail ${EMAIL}`, stream ? { stream: true } : {}));
      const r = await rawRequest(scrim.port,
        `POST /broken/v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${TEST_KEY}\r\nContent-Type: application/json\r\n` +
        `x-garbage: ${name}\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
        { timeoutMs: 15_000 });
      assert.ok(r.closed, `no answer or close within 15 s (upstream timeout is 5 s): ${show(r)}`);
      assert.ok(r.status, `no HTTP answer at all: ${JSON.stringify(r.raw.slice(0, 200))}`);
      // A non-stream answer is held until complete, so one that breaks
      // is a clean 502, never a 200 that ends early.
      if (!String(mode.send[0]).includes('text/event-stream')) {
        assert.ok(r.status !== 200, `a broken non-stream answer went out as 200: ${show(r)}`);
      }
      if (r.status === 200) {
        // A stream's 200 head went out before its body broke (as
        // nginx does): the body must visibly end early.
        assert.ok(mode.send[0].startsWith('HTTP/1.1 200 OK'), `200 for an answer that had no valid head: ${show(r)}`);
        assert.ok(!r.body.includes('[DONE]'), `a broken stream looks finished: ${r.body.slice(-200)}`);
        const errorEvent = /(^|\n)event: error\n/.test(r.body);
        assert.ok(!r.complete || errorEvent, `the stream ended cleanly; the client cannot tell it was cut: ${JSON.stringify(r.raw.slice(-200))}`);
      } else {
        assert.ok(r.status === 502 || r.status === 504, show(r));
        errorOf(r);
      }
      assert.ok(r.headers['x-request-id'], show(r));
      answers.push({ mode: name, stream, status: r.status, id: r.headers['x-request-id'] });
      const sent = broken.requests[broken.requests.length - 1];
      assert.ok(sent && sent.includes(name) && !sent.includes(EMAIL), `the broken provider got an unscrubbed request: ${sent}`);
    });
  }
}

test('a gzip answer: asked for once (the client\'s own Accept-Encoding dropped), decoded', async () => {
  const r = await request(scrim.port, {
    method: 'POST', path: '/broken/v1/chat/completions',
    headers: { ...auth(), 'x-garbage': 'gzip-ok', 'accept-encoding': 'identity' }, body: chatBody('zip it'),
  });
  assert.equal(r.status, 200, show(r));
  assert.equal(r.json?.choices?.[0]?.message?.content, 'fine', show(r));
  assert.ok(!r.headers['content-encoding'], show(r));
  const sent = broken.requests[broken.requests.length - 1];
  const ae = sent.split('\r\n').filter((l) => /^accept-encoding:/i.test(l));
  assert.equal(ae.length, 1, sent);
  assert.match(ae[0], /^Accept-Encoding: .*\bgzip\b/, sent);
});

test('a provider that closes each kept-alive connection once idle: the next requests still get through', async () => {
  // gzip-ok answers with a keep-alive head, then closes: the connection
  // curl keeps for reuse is dead by the next request.
  for (let i = 0; i < 3; i++) {
    const r = await request(scrim.port, {
      method: 'POST', path: '/broken/v1/chat/completions',
      headers: { ...auth(), 'x-garbage': 'gzip-ok' }, body: chatBody(`again ${i}`),
    });
    assert.equal(r.status, 200, `request ${i}: ${show(r)}`);
    await sleep(100);
  }
});

test('after all of it: scrim serves, every answer has its audit record (upstream_error or upstream_reset)', async (t) => {
  t.diagnostic(answers.map((a) => `${a.mode}${a.stream ? ' (stream)' : ''}: ${a.status}`).join('; '));
  assert.ok(scrim.alive());
  const ok = await request(scrim.port, { method: 'POST', path: '/v1/chat/completions', headers: auth(), body: chatBody('still here') });
  assert.equal(ok.status, 200, show(ok));
  let recs = [];
  for (let i = 0; i < 40; i++) {
    recs = fs.readFileSync(path.join(state, 'audit.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((x) => x.type === 'request');
    if (answers.every((a) => recs.some((x) => x.request_id === a.id))) break;
    await sleep(100);
  }
  for (const a of answers) {
    const rec = recs.find((x) => x.request_id === a.id);
    assert.ok(rec, `no audit record for ${a.mode}`);
    assert.ok(['upstream_error', 'upstream_reset'].includes(rec.decision), `${a.mode}${a.stream ? ' (stream)' : ''}: decision ${rec.decision}, reason ${rec.reason}`);
  }
});

test('scrim exits 0 on SIGTERM with no sanitizer report', async () => {
  const code = await scrim.stop();
  const err = scrim.stderr();
  scrim = null;
  assert.ok(!SANITIZER_RE.test(err), err.slice(-4000));
  assert.equal(code, 0, `exit code ${code}; stderr tail:\n${err.slice(-3000)}`);
});
