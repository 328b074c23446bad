// The command line: check, keys generate, version, --help.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { SCRIM_BIN, REPO, configFor, tempDir, sha256hex } from './lib.mjs';

const dir = tempDir('scrim-cli-');
after(() => fs.rmSync(dir, { recursive: true, force: true }));

/** Run scrim with args; resolves {code, signal, stdout, stderr} (never rejects on exit code). */
function run(args, { env = {}, timeoutMs = 10_000 } = {}) {
  return new Promise((resolve, reject) => {
    const p = spawn(SCRIM_BIN, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => { stdout += d; });
    p.stderr.on('data', (d) => { stderr += d; });
    const t = setTimeout(() => { p.kill('SIGKILL'); }, timeoutMs);
    p.on('error', reject);
    p.on('close', (code, signal) => { clearTimeout(t); resolve({ code, signal, stdout, stderr }); });
  });
}

function write(name, text) {
  const f = path.join(dir, name);
  fs.writeFileSync(f, text);
  return f;
}

/** A valid config as an array of lines. */
async function goodLines() {
  return (await configFor({ providerUrl: 'http://127.0.0.1:9' })).split('\n');
}

test('14a. scrim check on conf/scrim.conf exits 0', async () => {
  const r = await run(['check', '-c', path.join(REPO, 'conf', 'scrim.conf')]);
  assert.equal(r.code, 0, `stdout:\n${r.stdout}\nstderr:\n${r.stderr}`);
});

test('14b. scrim check on a generated test config exits 0', async () => {
  const f = write('good.conf', (await goodLines()).join('\n'));
  const r = await run(['check', '-c', f]);
  assert.equal(r.code, 0, r.stderr);
});

test('14c. scrim check on a config with an unknown key fails and names FILE:LINE', async () => {
  const lines = await goodLines();
  const at = lines.indexOf('[provider fake]') + 1;
  lines.splice(at, 0, 'bogus_setting = 42');
  const f = write('unknown-key.conf', lines.join('\n'));
  const r = await run(['check', '-c', f]);
  assert.notEqual(r.code, 0, 'check must fail');
  assert.equal(r.signal, null, `check died of ${r.signal}`);
  assert.ok(r.stderr.includes(`:${at + 1}:`), `stderr must name line ${at + 1}: ${r.stderr}`);
  assert.ok(r.stderr.includes(`${f}:${at + 1}:`), `stderr must read FILE:LINE: ${r.stderr}`);
});

test('14d. scrim check on a route naming an unknown provider fails', async () => {
  const lines = await goodLines();
  const at = lines.indexOf('[route all]');
  const p = lines.findIndex((l, i) => i > at && l.startsWith('provider ='));
  lines[p] = 'provider = nosuchprovider';
  const f = write('unknown-provider.conf', lines.join('\n'));
  const r = await run(['check', '-c', f]);
  assert.notEqual(r.code, 0, 'check must fail');
  assert.match(r.stderr, /nosuchprovider/);
  assert.match(r.stderr, /:\d+:/, 'stderr names a line');
});

test('14e. scrim check on other broken configs fails (bad duration, bad section, missing file)', async () => {
  const lines = await goodLines();
  const bad1 = lines.map((l) => (l.startsWith('timeout =') ? 'timeout = soon' : l));
  const r1 = await run(['check', '-c', write('bad-duration.conf', bad1.join('\n'))]);
  assert.notEqual(r1.code, 0, 'a duration without a unit must be refused');
  const r2 = await run(['check', '-c', write('bad-section.conf', `[nonsense\n${lines.join('\n')}`)]);
  assert.notEqual(r2.code, 0, 'an unterminated section header must be refused');
  assert.match(r2.stderr, /:1:/);
  const r3 = await run(['check', '-c', path.join(dir, 'does-not-exist.conf')]);
  assert.notEqual(r3.code, 0);
  assert.match(r3.stderr, /does-not-exist\.conf/);
  const r4 = await run(['check', '-c', write('undef-var.conf', lines.map((l) => (l.startsWith('base_url =') ? 'base_url = ${SCRIM_TEST_SURELY_UNSET_VAR}' : l)).join('\n'))],
    { env: { SCRIM_TEST_SURELY_UNSET_VAR: undefined } });
  assert.notEqual(r4.code, 0, 'an unset ${VAR} without fallback must be refused');
});

test('14f. scrim serve with a broken config exits non-zero at once', async () => {
  const lines = await goodLines();
  lines.splice(1, 0, 'this line is not a key value pair');
  const r = await run(['serve', '-c', write('broken-serve.conf', lines.join('\n'))], { timeoutMs: 5000 });
  assert.equal(r.signal, null, 'serve must exit by itself, not hang');
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /:2:/);
});

test('14g. scrim keys generate NAME prints a key and its [keys] line', async () => {
  const r = await run(['keys', 'generate', 'alice']);
  assert.equal(r.code, 0, r.stderr);
  const out = r.stdout;
  const m = out.match(/^\s*alice\s*=\s*sha256:([0-9a-f]{64})\s*$/m);
  assert.ok(m, `no "alice = sha256:HEX" line in:\n${out}`);
  const tokens = out.split(/\s+/).filter((t) => t.length >= 16 && !t.startsWith('sha256:'));
  const key = tokens.find((t) => sha256hex(t) === m[1]);
  assert.ok(key, `no printed token hashes to the [keys] line:\n${out}`);
  assert.ok(key.length >= 24, 'a key needs enough entropy');
  const again = await run(['keys', 'generate', 'alice']);
  assert.ok(!again.stdout.includes(key), 'two generated keys must differ');
});

test('14h. scrim version prints a version', async () => {
  const r = await run(['version']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /scrim/i);
  assert.match(r.stdout, /\d+\.\d+/);
  // The commit it was built from, so anyone can rebuild and compare.
  assert.match(r.stdout, /\(commit ([0-9a-f]{40}(-dirty)?|unknown)\)/);
});

for (const cmd of [[], ['serve'], ['check'], ['keys'], ['keys', 'generate'], ['keys', 'create'], ['keys', 'usage'],
  ['version'], ['ca'], ['ca', 'init'], ['ca', 'show'], ['scrub'], ['audit'], ['audit', 'verify'], ['audit', 'forget'],
  ['index'], ['index', 'add'], ['index', 'search']]) {
  test(`14i. scrim ${[...cmd, '--help'].join(' ')} prints usage and exits 0`, async () => {
    const r = await run([...cmd, '--help']);
    assert.equal(r.code, 0, `exit ${r.code}; stderr: ${r.stderr}`);
    const text = r.stdout + r.stderr;
    assert.match(text, /usage/i, `no usage text: ${text}`);
    if (cmd.length) assert.ok(text.includes(cmd[0]), `help does not mention ${cmd[0]}: ${text}`);
  });
}

test('14j. an unknown command fails with a message', async () => {
  const r = await run(['frobnicate']);
  assert.notEqual(r.code, 0);
  assert.ok(r.stderr.length > 0, 'say something on stderr');
});
