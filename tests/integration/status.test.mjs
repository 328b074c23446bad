// The admin port an operator looks at: /metrics in Prometheus text format
// after real traffic, and the status page rendered by a real browser
// (headless Chromium), checked in its DOM and kept as a screenshot.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { startFakeProvider } from '../fake_provider/provider.mjs';
import { startScrim, configFor, execFile, request, auth, chatBody, tempDir, TEST_KEY } from './lib.mjs';

let provider;
let scrim;

before(async () => {
  provider = await startFakeProvider();
  scrim = await startScrim({ config: await configFor({ providerUrl: provider.url }) });
  // Traffic with personal data, so counters and redactions move.
  for (let i = 0; i < 3; i++) {
    const r = await request(scrim.port, {
      method: 'POST', path: '/v1/chat/completions',
      headers: { ...auth(TEST_KEY), 'content-type': 'application/json' },
      body: chatBody('write to maria.gonzalez@example.com about card 4111 1111 1111 1111'),
    });
    assert.equal(r.status, 200);
  }
});

after(async () => {
  await scrim?.stop();
  await provider?.close();
});

test('/metrics: Prometheus text with requests, latency histograms and redactions by type', async () => {
  const r = await request(scrim.adminPort, { method: 'GET', path: '/metrics' });
  assert.equal(r.status, 200);
  assert.match(r.headers['content-type'], /^text\/plain/);
  const body = r.body.toString();
  assert.match(body, /^# TYPE scrim_requests_total counter$/m);
  assert.match(body, /^scrim_requests_total\{route="all",provider="fake",code="200"\} 3$/m);
  assert.match(body, /^scrim_request_duration_seconds_bucket\{route="all",le="\+Inf"\} 3$/m);
  assert.match(body, /^scrim_redactions_total\{type="EMAIL"\} 3$/m);
  assert.match(body, /^scrim_redactions_total\{type="CREDIT_CARD"\} 3$/m);
  assert.match(body, /^scrim_connections_open \d+$/m);
  // Labels hold ids and types only: no value, no key.
  assert.ok(!body.includes('maria.gonzalez'), 'a PII value leaked into /metrics');
  assert.ok(!body.includes(TEST_KEY), 'the client key leaked into /metrics');
});

test('status page renders in headless Chromium with live counters and the key table', async (t) => {
  const chromium = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => fs.existsSync(p));
  if (!chromium) {
    t.skip('chromium is not installed (scripts/deps.sh installs it for the suite)');
    return;
  }
  const dir = tempDir('scrim-chromium-');
  const url = `http://127.0.0.1:${scrim.adminPort}/status`;
  const flags = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    `--user-data-dir=${path.join(dir, 'profile')}`, '--virtual-time-budget=4000'];
  const { stdout } = await execFile(chromium, [...flags, '--dump-dom', url], { timeout: 60_000, maxBuffer: 8 << 20 });
  // The page's script fetched status.json and filled the cards and table.
  assert.match(stdout, /<b>3<\/b><span>requests<\/span>/, `cards not rendered: ${stdout.slice(0, 800)}`);
  assert.match(stdout, /<b>6<\/b><span>values redacted<\/span>/);
  assert.match(stdout, /<td>test<\/td><td>3<\/td>/);
  assert.match(stdout, /id="sub">version 0\.\d+\.\d+ · up \d+ s/, 'status line not filled in');
  const shot = path.join(dir, 'status.png');
  await execFile(chromium, [...flags, '--window-size=1000,700', `--screenshot=${shot}`, url], { timeout: 60_000 });
  const png = fs.readFileSync(shot);
  assert.ok(png.length > 5000, 'screenshot is empty');
  assert.equal(png.subarray(1, 4).toString(), 'PNG');
  // Kept for a person to look at (CI artifacts, or by hand).
  fs.copyFileSync(shot, path.join(process.env.SCRIM_ARTIFACTS || dir, 'status.png'));
});
