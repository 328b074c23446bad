// A SIGHUP storm under load: 200 SIGHUPs in a few seconds while clients
// send streaming and non-streaming requests with personal data, keep-alive
// and not. The config alternates between two good versions and, now and
// then, a broken one (refused, the old one stays); the audit log is
// rotated (renamed) in the middle, as logrotate does. Asserted: every
// request gets a complete, correct answer (restored placeholders, whole
// streams with [DONE]); nothing unscrubbed goes upstream; every answer has
// its audit record and the chain verifies across the rotation; scrim exits
// 0 with no sanitizer report.
//
// HUP_STORM_SIGNALS (default 200) and HUP_STORM_INTERVAL_MS (default 15)
// shape the storm.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { startFakeProvider } from '../fake_provider/provider.mjs';
import {
  startScrim, configFor, request, auth, chatBody, chatStreamContent, execFile, tempDir, sleep, show,
  SCRIM_BIN, TEST_KEY,
} from './lib.mjs';

const SIGNALS = Number(process.env.HUP_STORM_SIGNALS || 200);
const INTERVAL_MS = Number(process.env.HUP_STORM_INTERVAL_MS || 15);
const CLIENTS = 12;
const SANITIZER_RE = /AddressSanitizer|LeakSanitizer|runtime error:|UndefinedBehaviorSanitizer/;
const EMAIL = 'maria.gonzalez@example.com';
const CARD = '4111 1111 1111 1111';

let provider;
let scrim;
let state;
let configs; // [good A, good B, broken]
let results = []; // of every request sent during the storm

before(async () => {
  provider = await startFakeProvider();
  state = tempDir('scrim-hup-');
  const base = { providerUrl: provider.url };
  const a = await configFor({ ...base, gateway: { state_dir: state } });
  const ports = configFor.lastPorts;
  const b = await configFor({
    ...base, ...ports,
    keys: { test: TEST_KEY, other: 'sk-scrim-other-000000000000' },
    gateway: { state_dir: state, log_level: 'debug' },
    provider: { timeout: '25s' },
  });
  const lines = a.split('\n');
  lines.splice(lines.indexOf('[gateway]') + 1, 0, 'no_such_key = 1');
  configs = [a, b, lines.join('\n')];
  scrim = await startScrim({ config: a });
});

after(async () => {
  if (scrim) await scrim.kill();
  if (provider) await provider.close();
});

/** Replace the config file at once (a reload never reads half a file). */
function writeConfig(text) {
  fs.writeFileSync(`${scrim.configPath}.new`, text);
  fs.renameSync(`${scrim.configPath}.new`, scrim.configPath);
}

/** One request of client `w`, number `n`: streamed every other time. */
async function one(w, n, agent) {
  const stream = (w + n) % 2 === 0;
  const text = `client ${w} request ${n}: mail ${EMAIL}, card ${CARD}`;
  const r = await request(scrim.port, {
    method: 'POST', path: '/v1/chat/completions', agent, timeoutMs: 60_000,
    headers: { ...auth(), ...(stream ? { 'x-fake-chunks': '12', 'x-fake-chunk-delay-ms': '5' } : {}) },
    body: chatBody(text, stream ? { stream: true } : {}),
  });
  if (r.status !== 200) return { ok: false, why: `status ${show(r)}` };
  if (stream) {
    // The provider cut the scrubbed text into 12 chunks, adding filler
    // words when it had fewer: the restored text, then the fillers.
    const got = chatStreamContent(r.body);
    const want = `echo: ${text}`;
    if (!got.startsWith(want) || !/^( filler\d+)*$/.test(got.slice(want.length))) {
      return { ok: false, why: `stream content ${JSON.stringify(got.slice(0, 160))}` };
    }
    if (!r.body.includes('data: [DONE]')) return { ok: false, why: 'stream without [DONE]' };
  } else if (r.json?.choices?.[0]?.message?.content !== `echo: ${text}`) {
    return { ok: false, why: `content ${show(r)}` };
  }
  return { ok: true, id: r.headers['x-request-id'], stream };
}

test(`${SIGNALS} SIGHUPs under streaming and non-streaming load: every request answered in full`, async (t) => {
  let storming = true;

  const errors = [];
  const clients = Array.from({ length: CLIENTS }, async (_, w) => {
    // Half the clients keep their connection alive across reloads.
    const agent = w % 2 === 0 ? new http.Agent({ keepAlive: true, maxSockets: 1 }) : false;
    try {
      for (let n = 0; storming || n < 3; n++) {
        try {
          const r = await one(w, n, agent);
          results.push(r);
        } catch (e) {
          errors.push(`client ${w} request ${n}: ${e.message}`);
        }
      }
    } finally {
      if (agent) agent.destroy();
    }
  });
  await sleep(300); // load first
  const audit = path.join(state, 'audit.jsonl');
  let sent = 0;
  for (let i = 0; i < SIGNALS; i++) {
    // A, B, A, B... and every 10th a broken file.
    writeConfig(configs[i % 10 === 9 ? 2 : i % 2]);
    if (i === Math.floor(SIGNALS / 2)) fs.renameSync(audit, `${audit}.1`); // logrotate
    scrim.proc.kill('SIGHUP');
    sent++;
    await sleep(INTERVAL_MS);
  }
  writeConfig(configs[0]);
  scrim.proc.kill('SIGHUP');
  sent++;
  storming = false;
  await Promise.all(clients);

  const err = scrim.stderr();
  const applied = (err.match(/reload: \S+ applied/g) || []).length;
  const refused = (err.match(/reload: \S+ has errors/g) || []).length;
  const streams = results.filter((r) => r.stream).length;
  t.diagnostic(`${sent} SIGHUPs: ${applied} reloads applied, ${refused} refused; ${results.length} requests ` +
    `(${streams} streamed), ${results.filter((r) => !r.ok).length + errors.length} failed`);
  assert.ok(scrim.alive(), `scrim died; stderr tail:\n${err.slice(-3000)}`);
  const bad = results.filter((r) => !r.ok).map((r) => r.why);
  assert.deepEqual([...errors, ...bad].slice(0, 10), [], `${errors.length + bad.length} request(s) failed`);
  assert.ok(results.length >= CLIENTS * 3);
  // A reload takes tens of ms (rules compile), so signals queue up and are
  // handled in a row, each reading the file as it is then: a broken file
  // in place for one interval can be refused several times. Signals of
  // one kind can also merge while pending; most must have been handled.
  assert.ok(applied + refused >= sent / 2, `${applied + refused} reloads for ${sent} signals`);
  assert.ok(refused >= 1, 'the broken file was refused at least once');

});

test('after the storm: healthy, personal data never went upstream, every answer has its audit record', async () => {
  const h = await request(scrim.adminPort, { path: '/healthz' });
  assert.equal(h.status, 200, show(h));
  for (const rec of provider.requests) {
    assert.ok(!rec.body.includes(EMAIL) && !rec.body.includes(CARD), `unscrubbed upstream: ${rec.body.slice(0, 300)}`);
  }
  const audit = path.join(state, 'audit.jsonl');
  let ids = new Set();
  for (let i = 0; i < 40; i++) {
    const recs = [`${audit}.1`, audit].flatMap((f) => fs.readFileSync(f, 'utf8').trim().split('\n').map((l) => JSON.parse(l)));
    ids = new Set(recs.filter((r) => r.type === 'request').map((r) => r.request_id));
    if (results.every((r) => ids.has(r.id))) break;
    await sleep(100); // fsync = interval
  }
  const missing = results.filter((r) => !ids.has(r.id));
  assert.equal(missing.length, 0, `${missing.length} of ${results.length} answers have no audit record`);
  const { stdout } = await execFile(SCRIM_BIN, ['audit', 'verify', '--key', path.join(state, 'audit.key'), `${audit}.1`, audit]);
  assert.match(stdout, /^OK: \d+ records in 2 files/m);
});

test('scrim exits 0 on SIGTERM with no sanitizer report', async () => {
  const code = await scrim.stop();
  const err = scrim.stderr();
  scrim = null;
  assert.ok(!SANITIZER_RE.test(err), err.slice(-4000));
  assert.equal(code, 0, `exit code ${code}; stderr tail:\n${err.slice(-3000)}`);
});
