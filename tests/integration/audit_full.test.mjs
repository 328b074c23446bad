// The audit disk fills up under load, then frees up again: a real ENOSPC
// (a small tmpfs, mounted in a private mount namespace for scrim alone),
// not /dev/full. For on_failure = block and on_failure = continue:
//
//   block      while the disk is full, new requests get 503
//              audit_unavailable; once it frees up, 200 again
//   continue   every request is served all along
//
// and in both, no record is lost: every answer served has its record once
// the disk has room again (they wait in the queue), nothing is dropped,
// the chain verifies, and scrim exits 0 with no sanitizer report.
//
// Needs root (mount namespaces); skipped otherwise.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { startFakeProvider } from '../fake_provider/provider.mjs';
import {
  startScrim, configFor, execFile, request, auth, chatBody, errorOf, tempDir, sleep, waitFor, show,
  SCRIM_BIN,
} from './lib.mjs';

const SANITIZER_RE = /AddressSanitizer|LeakSanitizer|runtime error:|UndefinedBehaviorSanitizer/;
const TMPFS_SIZE = 4 * 1024 * 1024;

let provider;
let canMount = false;

before(async () => {
  provider = await startFakeProvider({ record: false });
  try {
    const d = tempDir('scrim-mnt-probe-');
    execFileSync('unshare', ['-m', '--propagation', 'private', 'sh', '-c', `mount -t tmpfs -o size=64k tmpfs ${d}`], { stdio: 'ignore' });
    fs.rmdirSync(d);
    canMount = true;
  } catch { /* not root, or no namespaces here */ }
});

after(async () => {
  if (provider) await provider.close();
});

/** scrim in its own mount namespace, with a tmpfs of TMPFS_SIZE at `dir`. */
async function scrimWithSmallDisk(dir, onFailure) {
  const work = tempDir('scrim-full-');
  const inner = path.join(work, 'inner.sh');
  fs.writeFileSync(inner, `#!/bin/sh\nmount -t tmpfs -o size=${TMPFS_SIZE},mode=0700 tmpfs '${dir}' || exit 97\nexec '${SCRIM_BIN}' "$@"\n`, { mode: 0o755 });
  const outer = path.join(work, 'scrim-in-ns.sh');
  fs.writeFileSync(outer, `#!/bin/sh\nexec unshare -m --propagation private '${inner}' "$@"\n`, { mode: 0o755 });
  const state = tempDir('scrim-full-state-');
  const s = await startScrim({
    bin: outer,
    config: await configFor({
      providerUrl: provider.url,
      gateway: { state_dir: state },
      extra: `\n[audit]\nfile = ${dir}/audit.jsonl\nkey_file = ${state}/audit.key\nfsync = always\non_failure = ${onFailure}\n`,
    }),
  });
  // What scrim sees at `dir`, from outside its namespace.
  s.disk = `/proc/${s.pid}/root${dir}`;
  s.keyFile = path.join(state, 'audit.key');
  return s;
}

async function metric(s, name) {
  const m = await request(s.adminPort, { path: '/metrics' });
  const line = m.body.split('\n').find((l) => l.startsWith(name));
  return line ? Number(line.split(' ').pop()) : NaN;
}

for (const onFailure of ['block', 'continue']) {
  test(`audit disk full under load, then freed (on_failure = ${onFailure}): ${onFailure === 'block' ? '503 while full' : 'served all along'}, no record lost, the chain verifies`, async (t) => {
    if (!canMount) { t.skip('needs root and mount namespaces'); return; }
    const dir = tempDir('scrim-full-disk-');
    const s = await scrimWithSmallDisk(dir, onFailure);
    let running = true;
    try {
      // Leave the log a few KiB: a filler takes the rest.
      const used = fs.statSync(`${s.disk}/audit.jsonl`).size;
      fs.writeFileSync(`${s.disk}/filler`, Buffer.alloc(TMPFS_SIZE - used - 8 * 1024 - 4096));
      let phase = 'filling';
      const results = [];
      const load = Array.from({ length: 4 }, async (_, w) => {
        const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
        for (let n = 0; running; n++) {
          const stream = (n + w) % 2 === 0;
          const startedIn = phase;
          try {
            const r = await request(s.port, {
              method: 'POST', path: '/v1/chat/completions', agent, timeoutMs: 15_000,
              headers: { ...auth(), ...(stream ? { 'x-fake-chunks': '4' } : {}) },
              body: chatBody(`disk ${w}/${n}`, stream ? { stream: true } : {}),
            });
            const res = { phase: startedIn, endPhase: phase, status: r.status, id: r.headers['x-request-id'] };
            if (r.status === 503) res.code = errorOf(r).code;
            if (r.status === 200 && !(stream ? r.body.includes('[DONE]') : r.json?.choices)) res.status = 'incomplete';
            results.push(res);
          } catch (e) {
            results.push({ phase: startedIn, endPhase: phase, status: 'error', why: e.message });
          }
          await sleep(20);
        }
        agent.destroy();
      });
      await waitFor(async () => (await metric(s, 'scrim_audit_healthy')) === 0, { timeoutMs: 15_000, intervalMs: 50, what: 'the audit disk to fill up' });
      phase = 'full';
      await sleep(1500);
      const failedWhileFull = await metric(s, 'scrim_audit_write_failures_total');
      fs.rmSync(`${s.disk}/filler`);
      phase = 'freed';
      await waitFor(async () => (await metric(s, 'scrim_audit_healthy')) === 1, { timeoutMs: 10_000, intervalMs: 50, what: 'the audit log to be written again' });
      await sleep(1000);
      phase = 'after';
      await sleep(1000);
      running = false;
      await Promise.all(load);

      const by = {};
      for (const r of results) {
        const k = `${r.phase}: ${r.status}${r.code ? ` ${r.code}` : ''}`;
        by[k] = (by[k] || 0) + 1;
      }
      const dropped = await metric(s, 'scrim_audit_records_total{result="dropped"}');
      t.diagnostic(`${JSON.stringify(by)}; write failures while full: ${failedWhileFull}; dropped: ${dropped}`);
      const bad = results.filter((r) => !(r.status === 200 || (onFailure === 'block' && r.status === 503 && r.code === 'audit_unavailable')));
      assert.deepEqual(bad.slice(0, 5), [], `${bad.length} unexpected answers`);
      assert.ok(failedWhileFull > 0, 'the disk never failed a write');
      if (onFailure === 'block') {
        assert.ok(results.some((r) => r.phase === 'full' && r.status === 503), 'no 503 while the disk was full');
      } else {
        assert.equal(results.filter((r) => r.status !== 200).length, 0, 'continue: everything is served');
      }
      const after = results.filter((r) => r.phase === 'after' && r.endPhase === 'after');
      assert.ok(after.length > 0 && after.every((r) => r.status === 200), `not all served once the disk had room: ${JSON.stringify(after.slice(0, 3))}`);
      assert.equal(dropped, 0, 'records were dropped');

      // Every answer served has its record (the queued ones came out once there was room).
      const copy = path.join(tempDir('scrim-full-copy-'), 'audit.jsonl');
      let ids = new Set();
      await waitFor(() => {
        fs.copyFileSync(`${s.disk}/audit.jsonl`, copy);
        ids = new Set(fs.readFileSync(copy, 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((x) => x.type === 'request').map((x) => x.request_id));
        return results.filter((r) => r.status === 200).every((r) => ids.has(r.id));
      }, { timeoutMs: 5000, intervalMs: 100, what: 'every served request to have its audit record' }).catch((e) => {
        const missing = results.filter((r) => r.status === 200 && !ids.has(r.id));
        throw new Error(`${e.message}: ${missing.length} of ${results.filter((r) => r.status === 200).length} missing`);
      });
      const v = await execFile(SCRIM_BIN, ['audit', 'verify', '--key', s.keyFile, copy]).catch((e) => e);
      assert.match(`${v.stdout}`, /^OK: \d+ records/m, `${v.stdout}${v.stderr}`);
    } finally {
      running = false;
      const code = await s.stop();
      const err = s.stderr();
      assert.ok(!SANITIZER_RE.test(err), err.slice(-4000));
      assert.equal(code, 0, `exit code ${code}; stderr tail:\n${err.slice(-3000)}`);
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
}
