// 10,000 generated malformed requests (tests/integration/malformed_gen.mjs:
// mutations of valid ones, seeded and reproducible) sent over raw sockets
// to one scrim with proxy mode, keys and the audit log on. Every request
// carries personal data in its body. Asserted: scrim never crashes and
// still serves afterwards; every answer is a well-formed HTTP/1.1 response
// (or a clean close), none hangs; nothing scrim forwards carries the
// personal data (the bytes reaching the provider are tapped and searched);
// logs and the audit log hold none of it either; the audit chain verifies;
// scrim exits 0 with no sanitizer report (LeakSanitizer in the ASan build).
//
// MALFORMED_SEED (default 8) and MALFORMED_COUNT (default 10000) choose the
// run; MALFORMED_REPORT=FILE writes the counts as JSON, MALFORMED_LOG=FILE
// one line per case (index, template, mutation, half-close, statuses).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { startFakeProvider } from '../fake_provider/provider.mjs';
import {
  startScrim, configFor, request, auth, chatBody, execFile, tempDir, freePort, show, sleep,
  SCRIM_BIN, REPO, TEST_KEY, PROVIDER_KEY,
} from './lib.mjs';
import { generateCase, PII, PII_VALUES } from './malformed_gen.mjs';

const SEED = Number(process.env.MALFORMED_SEED || 8);
const COUNT = Number(process.env.MALFORMED_COUNT || 10000);
const CONCURRENCY = 64;
const CASE_TIMEOUT_MS = 8000; // header/body/idle timeouts are 1 s, lingering 2 s
const SANITIZER_RE = /AddressSanitizer|LeakSanitizer|runtime error:|UndefinedBehaviorSanitizer/;

let provider;
let scrim;
let state;
const taps = [];

/**
 * A TCP relay in front of the provider that searches every byte scrim
 * sends upstream for the personal data (across read boundaries).
 */
async function startTap(targetPort) {
  const tap = { bytes: 0, connections: 0, leaks: [] };
  const longest = Math.max(...PII_VALUES.map((v) => v.length));
  tap.server = net.createServer((c) => {
    tap.connections++;
    const u = net.connect({ port: targetPort, host: '127.0.0.1' });
    let tail = Buffer.alloc(0);
    c.on('data', (d) => {
      tap.bytes += d.length;
      const win = Buffer.concat([tail, d]);
      for (const v of PII_VALUES) {
        const i = win.indexOf(v);
        if (i >= 0 && i + v.length > tail.length) {
          tap.leaks.push({ value: v, context: win.subarray(Math.max(0, i - 300), i + v.length + 100).toString('latin1') });
        }
      }
      tail = win.subarray(Math.max(0, win.length - longest + 1));
      u.write(d);
    });
    u.on('data', (d) => c.write(d));
    c.on('end', () => u.end());
    u.on('end', () => c.end());
    c.on('error', () => u.destroy());
    u.on('error', () => c.destroy());
    c.on('close', () => u.destroy());
    u.on('close', () => c.destroy());
  });
  await new Promise((resolve) => tap.server.listen(0, '127.0.0.1', resolve));
  tap.port = tap.server.address().port;
  tap.url = `http://127.0.0.1:${tap.port}`;
  taps.push(tap);
  return tap;
}

before(async () => {
  provider = await startFakeProvider();
  const openaiTap = await startTap(provider.port);
  const anthropicTap = await startTap(provider.port); // one [provider] per origin
  // The tap sees personal data split across writes (a check of the check).
  await new Promise((resolve) => {
    const s = net.connect({ port: openaiTap.port, host: '127.0.0.1' }, async () => {
      s.write(`GET /x HTTP/1.1\r\nHost: x\r\nX-Probe: ${PII.iban.slice(0, 9)}`);
      await sleep(50);
      s.end(`${PII.iban.slice(9)}\r\nConnection: close\r\n\r\n`);
    });
    s.on('close', resolve);
    s.on('error', resolve);
    s.resume();
  });
  assert.equal(openaiTap.leaks.length, 1, 'the tap must see a value split across two writes');
  openaiTap.leaks.length = 0;
  state = tempDir('scrim-malformed-');
  await execFile(SCRIM_BIN, ['ca', 'init', '--dir', state]);
  const nowhere = await freePort();
  scrim = await startScrim({
    config: await configFor({
      providerUrl: openaiTap.url,
      anthropicProvider: { base_url: anthropicTap.url },
      gateway: {
        state_dir: state, log_level: 'debug', header_timeout: '1s', body_timeout: '1s',
        idle_timeout: '1s', max_body_size: '64k', max_connections: 4000,
      },
      extra: [
        '[proxy]', 'mode = on', 'intercept = api.openai.com', 'default = deny', 'ports = 443', 'auth = keys',
        `resolve = api.openai.com:443:127.0.0.1:${nowhere}`, '',
        '[audit]', 'fsync = interval', '',
      ].join('\n'),
    }),
  });
});

after(async () => {
  if (scrim) await scrim.kill();
  for (const t of taps) t.server.close();
  if (provider) await provider.close();
});

// ---------------------------------------------------------------- sending

/** Send one case; resolves {raw, closed, error, timedOut}. */
function send(c) {
  return new Promise((resolve) => {
    const sock = net.connect({ port: scrim.port, host: '127.0.0.1' });
    const chunks = [];
    let done = false;
    let error = null;
    const finish = (timedOut) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      resolve({ raw: Buffer.concat(chunks), error, timedOut });
    };
    const timer = setTimeout(() => finish(true), CASE_TIMEOUT_MS);
    sock.on('data', (d) => chunks.push(d));
    sock.on('error', (e) => { error = e.code || e.message; });
    sock.on('close', () => finish(false));
    sock.on('connect', async () => {
      const n = c.pieces;
      const step = Math.max(1, Math.ceil(c.bytes.length / n));
      for (let at = 0; at < c.bytes.length; at += step) {
        if (done || sock.destroyed) return;
        sock.write(c.bytes.subarray(at, at + step));
        if (n > 1) await sleep(2);
      }
      if (c.fin && !done && !sock.destroyed) sock.end();
    });
  });
}

// ---------------------------------------------------------------- checking

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/**
 * Parse `buf` strictly as the HTTP/1.1 responses of one connection.
 * `methods` are the requests' methods in order (a HEAD answer has no
 * body; CONNECT's 2xx starts a tunnel). Returns
 * {responses: [{status, headers}], problem (null when well-formed),
 * incomplete (the last one was cut)}.
 */
function parseStrict(buf, methods) {
  const responses = [];
  let off = 0;
  let finals = 0;
  while (off < buf.length) {
    const end = buf.indexOf('\r\n\r\n', off);
    if (end < 0) return { responses, problem: 'a response head without its end', incomplete: true };
    const lines = buf.subarray(off, end).toString('latin1').split('\r\n');
    const m = /^HTTP\/1\.1 (\d{3}) [\x20-\x7e]*$/.exec(lines[0]);
    if (!m) return { responses, problem: `bad status line ${JSON.stringify(lines[0].slice(0, 80))}` };
    const status = Number(m[1]);
    const headers = {};
    for (const l of lines.slice(1)) {
      const i = l.indexOf(':');
      if (i <= 0 || !TOKEN.test(l.slice(0, i)) || /[\x00-\x08\x0a-\x1f\x7f]/.test(l)) {
        return { responses, problem: `bad header line ${JSON.stringify(l.slice(0, 80))}` };
      }
      const name = l.slice(0, i).toLowerCase();
      if (headers[name] !== undefined && (name === 'content-length' || name === 'transfer-encoding')) {
        return { responses, problem: `two ${name} headers` };
      }
      headers[name] = l.slice(i + 1).trim();
    }
    off = end + 4;
    const r = { status, headers };
    responses.push(r);
    if (status >= 100 && status < 200) continue;
    const method = methods[finals++];
    r.method = method;
    const noBody = status === 204 || status === 304 || method === 'HEAD';
    if (noBody) continue;
    if (method === 'CONNECT' && status >= 200 && status < 300) {
      r.tunnel = true;
      return { responses, problem: null }; // what follows is the tunnel
    }
    const te = headers['transfer-encoding'];
    if (te !== undefined) {
      if (te.toLowerCase() !== 'chunked') return { responses, problem: `transfer-encoding ${te}` };
      if (headers['content-length'] !== undefined) return { responses, problem: 'content-length with transfer-encoding' };
      for (;;) {
        const le = buf.indexOf('\r\n', off);
        if (le < 0) return { responses, problem: 'a chunked body cut short', incomplete: true };
        const sz = buf.subarray(off, le).toString('latin1');
        if (!/^[0-9a-f]+$/i.test(sz)) return { responses, problem: `bad chunk size ${JSON.stringify(sz.slice(0, 40))}` };
        const n = parseInt(sz, 16);
        if (n === 0) {
          if (buf.length < le + 4) return { responses, problem: 'a chunked body cut short', incomplete: true };
          if (buf.subarray(le + 2, le + 4).toString('latin1') !== '\r\n') return { responses, problem: 'trailers after the last chunk' };
          off = le + 4;
          break;
        }
        if (buf.length < le + 2 + n + 2) return { responses, problem: 'a chunked body cut short', incomplete: true };
        if (buf.subarray(le + 2 + n, le + 4 + n).toString('latin1') !== '\r\n') return { responses, problem: 'chunk data without its CRLF' };
        off = le + 4 + n;
      }
    } else if (headers['content-length'] !== undefined) {
      if (!/^\d+$/.test(headers['content-length'])) return { responses, problem: `content-length ${headers['content-length']}` };
      const n = Number(headers['content-length']);
      if (buf.length < off + n) return { responses, problem: 'a body shorter than its content-length', incomplete: true };
      r.body = buf.subarray(off, off + n).toString('utf8');
      off += n;
    } else {
      r.body = buf.subarray(off).toString('utf8'); // close-delimited (HTTP/1.0 streams)
      off = buf.length;
    }
  }
  return { responses, problem: null };
}

/** Every string inside a JSON value, depth first. */
function* strings(v) {
  if (typeof v === 'string') yield v;
  else if (Array.isArray(v)) for (const x of v) yield* strings(x);
  else if (v && typeof v === 'object') for (const [k, x] of Object.entries(v)) { yield k; yield* strings(x); }
}

// ---------------------------------------------------------------- the run

let summary;
const answeredIds = []; // {id, status, i, c} of every final answer

test(`malformed requests (seed ${SEED}, ${COUNT} cases): well-formed answers or clean closes, no hang, no crash`, async (t) => {
  const ctx = { key: TEST_KEY, providerHostPort: `127.0.0.1:${taps[0].port}` };
  const byStatus = {};
  const byMutation = {};
  const outcomes = { answered: 0, closedWithoutAnswer: 0, resetWithoutAnswer: 0, cutByOwnHalfClose: 0, pipelinedAnswers: 0 };
  const failures = [];
  const caseLog = process.env.MALFORMED_LOG ? [] : null;
  const t0 = Date.now();
  let next = 0;
  const worker = async () => {
    while (next < COUNT) {
      const i = next++;
      const c = generateCase(SEED, i, ctx);
      const res = await send(c);
      const where = `case ${i} (${c.template} / ${c.mutation}; node tests/integration/malformed_gen.mjs --seed ${SEED} --case ${i} --port ${taps[0].port})`;
      if (res.timedOut) {
        failures.push(`${where}: no answer and no close after ${CASE_TIMEOUT_MS} ms; got ${JSON.stringify(res.raw.toString('latin1').slice(0, 200))}`);
        if (caseLog) caseLog.push(`${i}\t${c.template}\t${c.mutation}\t${c.fin ? 'fin' : '-'}\tHANG`);
        continue;
      }
      let key;
      if (res.raw.length === 0) {
        if (res.error) { outcomes.resetWithoutAnswer++; key = `reset (${res.error})`; } else { outcomes.closedWithoutAnswer++; key = 'closed'; }
      } else {
        const p = parseStrict(res.raw, c.methods);
        if (p.problem && !(p.incomplete && c.fin)) {
          failures.push(`${where}: ${p.problem}; got ${JSON.stringify(res.raw.toString('latin1').slice(0, 300))}`);
          if (caseLog) caseLog.push(`${i}\t${c.template}\t${c.mutation}\t${c.fin ? 'fin' : '-'}\tBAD`);
          continue;
        }
        if (p.problem) outcomes.cutByOwnHalfClose++;
        const finals = p.responses.filter((r) => r.status >= 200 || r.status < 100);
        if (finals.length === 0 && !p.problem && c.fin) outcomes.cutByOwnHalfClose++; // 100 Continue, then our FIN
        else if (finals.length === 0 && !p.problem) {
          failures.push(`${where}: only interim responses, then a close; got ${JSON.stringify(res.raw.toString('latin1').slice(0, 300))}`);
          continue;
        }
        for (const r of p.responses) {
          if (r.status >= 200 && r.headers['x-request-id']) answeredIds.push({ id: r.headers['x-request-id'], status: r.status, i, c });
          if (!r.tunnel && r.status >= 200 && !r.headers['x-request-id']) {
            failures.push(`${where}: a ${r.status} without x-request-id`);
          }
          // scrim's own errors are OpenAI-shaped; a provider's (marked by
          // the fake provider's header) pass through as the provider wrote them.
          if (r.status >= 400 && r.method !== 'HEAD' && r.body !== undefined && r.headers['content-type'] === 'application/json' &&
              r.headers['x-fake-provider'] === undefined) {
            let e;
            try { e = JSON.parse(r.body).error; } catch { /* checked below */ }
            if (!e || typeof e.code !== 'string' || typeof e.message !== 'string' || typeof e.type !== 'string') {
              failures.push(`${where}: a ${r.status} whose body is not an OpenAI-shaped error: ${r.body.slice(0, 200)}`);
            }
          }
        }
        outcomes.answered++;
        if (finals.length > 1) outcomes.pipelinedAnswers++;
        key = finals.length ? finals.map((r) => r.status).join('+') : 'cut';
      }
      if (caseLog) caseLog.push(`${i}\t${c.template}\t${c.mutation}\t${c.fin ? 'fin' : '-'}\t${key}`);
      byStatus[key] = (byStatus[key] || 0) + 1;
      const bm = byMutation[c.mutation] || (byMutation[c.mutation] = {});
      bm[key] = (bm[key] || 0) + 1;
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  const seconds = (Date.now() - t0) / 1000;
  if (caseLog) fs.writeFileSync(process.env.MALFORMED_LOG, caseLog.sort((a, b) => parseInt(a, 10) - parseInt(b, 10)).join('\n') + '\n');

  summary = { seed: SEED, count: COUNT, seconds, byStatus, outcomes, byMutation, failures: failures.length };
  t.diagnostic(`${COUNT} cases in ${seconds.toFixed(1)} s; first status: ${JSON.stringify(byStatus)}`);
  t.diagnostic(`outcomes: ${JSON.stringify(outcomes)}`);
  assert.ok(scrim.alive(), `scrim died during the run; stderr tail:\n${scrim.stderr().slice(-3000)}`);
  assert.deepEqual(failures.slice(0, 20), [], `${failures.length} bad outcome(s)`);
  // The run was not all refusals: some requests went through the whole pipeline.
  assert.ok((byStatus[200] || 0) > 100, `only ${byStatus[200] || 0} requests were served`);
});

test('scrim still serves after the run: /healthz, and a request with personal data is scrubbed', async () => {
  const h = await request(scrim.adminPort, { path: '/healthz' });
  assert.equal(h.status, 200, show(h));
  const r = await request(scrim.port, { method: 'POST', path: '/v1/chat/completions', headers: auth(), body: chatBody(`after the run: ${PII.email}`) });
  assert.equal(r.status, 200, show(r));
  assert.equal(r.json.choices[0].message.content, `echo: after the run: ${PII.email}`, 'restored in the answer');
  const rec = provider.requests.find((x) => x.body.includes('after the run'));
  assert.ok(rec && !rec.body.includes(PII.email), 'scrubbed upstream');
});

/**
 * Which of `texts` `scrim scrub` (same rules) leaves holding a personal
 * data value: those are texts the rules do not see as personal data at
 * all (a mutation glued a letter to a card number, say), not texts the
 * gateway failed to scrub.
 */
async function leftByRules(texts) {
  const input = texts.map((x) => JSON.stringify({ text: x })).join('\n') + '\n';
  const out = await new Promise((resolve, reject) => {
    const p = spawn(SCRIM_BIN, ['scrub', '--rules', path.join(REPO, 'rules'), '--jsonl'], { stdio: ['pipe', 'pipe', 'inherit'] });
    let o = '';
    p.stdout.setEncoding('utf8');
    p.stdout.on('data', (d) => { o += d; });
    p.on('error', reject);
    p.on('close', (code) => (code === 0 ? resolve(o) : reject(new Error(`scrim scrub exited ${code}`))));
    p.stdin.end(input);
  });
  const lines = out.trim().split('\n').map((l) => JSON.parse(l).text);
  return texts.map((x, i) => PII_VALUES.some((v) => x.includes(v) && lines[i].includes(v)));
}

test('nothing that reached the provider carries personal data the rules would have replaced', async () => {
  // Every string of every forwarded body that holds a value, decoded.
  const suspects = [];
  for (const rec of provider.requests) {
    let parsed;
    try { parsed = JSON.parse(rec.body); } catch { parsed = rec.body; }
    for (const s of strings(parsed)) if (PII_VALUES.some((v) => s.includes(v))) suspects.push({ text: s, path: rec.path });
  }
  const problems = [];
  // The raw bytes: each value seen on the wire must be one of those strings
  // (not in a header, a path, or a body the provider could not read).
  for (const leak of taps.flatMap((tp) => tp.leaks)) {
    if (!suspects.some((x) => x.text.includes(leak.value))) problems.push(`on the wire, outside any body string: ${JSON.stringify(leak.context)}`);
  }
  const left = suspects.length ? await leftByRules(suspects.map((x) => x.text)) : [];
  suspects.forEach((x, i) => {
    if (!left[i]) problems.push(`forwarded unscrubbed, though the rules replace it: ${x.path} ${JSON.stringify(x.text.slice(0, 300))}`);
  });
  const upstream = provider.requests.length;
  if (summary) {
    summary.upstream = { requests: upstream, bytes: taps.reduce((a, tp) => a + tp.bytes, 0), connections: taps.reduce((a, tp) => a + tp.connections, 0) };
    summary.piiOutsideRules = suspects.filter((_, i) => left[i]).map((x) => x.text);
  }
  assert.ok(upstream > 0);
  assert.deepEqual(problems.slice(0, 5), [], `${problems.length} upstream request(s) carried personal data`);
});

test('no personal data or key in scrim\'s logs or state directory; the audit chain verifies', async () => {
  const files = [];
  const walk = (d) => { for (const e of fs.readdirSync(d, { withFileTypes: true })) { const p = path.join(d, e.name); if (e.isDirectory()) walk(p); else files.push(p); } };
  walk(state);
  const haystacks = files.map((f) => [f, fs.readFileSync(f).toString('latin1')]);
  haystacks.push(['stderr', scrim.stderr()]);
  for (const [f, text] of haystacks) {
    for (const v of [...PII_VALUES, TEST_KEY, PROVIDER_KEY, 'Dear team']) assert.ok(!text.includes(v), `${JSON.stringify(v)} found in ${f}`);
  }
  // Let the writer flush (fsync = interval), then check the chain.
  await sleep(1500);
  const audit = path.join(state, 'audit.jsonl');
  const records = fs.readFileSync(audit, 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((r) => r.type === 'request');
  const byStatus = {};
  for (const r of records) byStatus[r.status] = (byStatus[r.status] || 0) + 1;
  const ids = new Set(records.map((r) => r.request_id));
  // A CONNECT refusal has its record; a CONNECT that opened an
  // intercepted tunnel has none of its own (the requests inside do).
  const opened = (a) => a.c.method === 'CONNECT' && a.status >= 200 && a.status < 300;
  const missing = answeredIds.filter((a) => !ids.has(a.id) && !opened(a));
  const connectOnly = answeredIds.filter((a) => !ids.has(a.id) && opened(a));
  if (summary) summary.audit = { records: records.length, byStatus, answers: answeredIds.length, answersWithoutRecord: missing.length, connectAnswersWithoutRecord: connectOnly.length };
  assert.deepEqual(missing.slice(0, 10).map((a) => `case ${a.i} (${a.c.template} / ${a.c.mutation}): ${a.status} ${a.id}`), [],
    `${missing.length} of ${answeredIds.length} answers have no audit record`);
  const { stdout } = await execFile(SCRIM_BIN, ['audit', 'verify', '--key', path.join(state, 'audit.key'), audit]);
  assert.match(stdout, /^OK: \d+ records/m);
});

test('scrim exits 0 on SIGTERM with no sanitizer report (no leak)', async () => {
  const code = await scrim.stop();
  const err = scrim.stderr();
  scrim = null;
  assert.ok(!SANITIZER_RE.test(err), err.slice(-4000));
  assert.equal(code, 0, `exit code ${code}; stderr tail:\n${err.slice(-3000)}`);
  if (summary && process.env.MALFORMED_REPORT) fs.writeFileSync(process.env.MALFORMED_REPORT, JSON.stringify(summary, null, 2));
});
