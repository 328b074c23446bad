// Clock jumps (RELIABILITY.md §8 L4, "`faketime` clock jumps: limiter
// windows and audit epochs stay correct"): scrim runs under libfaketime
// (Debian package `faketime`), whose offset the test moves while scrim
// runs.
//
// How the clock is moved: LD_PRELOAD of libfaketimeMT.so.1 with
// FAKETIME_TIMESTAMP_FILE naming a file that holds a relative offset
// ("+120", "-600"; seconds) and FAKETIME_NO_CACHE=1, so libfaketime reads
// the file again on every clock call. FAKETIME itself stays unset: it
// would win over the file. The file is replaced by a rename, so a read
// never sees it half written.
//
// Two gateways:
//   1. the limiter, with only the wall clock moved
//      (FAKETIME_DONT_FAKE_MONOTONIC=1: an NTP step or `date -s` moves
//      CLOCK_REALTIME, never CLOCK_MONOTONIC). scrim names its limit
//      windows and stamps the request log from the wall clock
//      (src/limits.c); Redis keeps its own clock for TTLs, which the jumps
//      do not touch. Asserted: after a jump forward past the minute, an
//      exhausted rpm limit lets requests through again; after a jump back,
//      the requests already logged still count (no fresh window, a
//      Retry-After of at most a minute) and stop counting a minute of the
//      new clock later (no lockout for the length of the jump). The audit
//      log of these requests verifies, its record times follow the jumps,
//      and its epochs (on the monotonic clock) do not move.
//   2. the audit epochs, with both clocks moved (libfaketime's default):
//      an epoch ends after 15 minutes of CLOCK_MONOTONIC (src/audit.c), so
//      jumps of 16 minutes roll it. Forward three epochs, back 43 minutes,
//      forward again: `scrim audit verify` accepts the whole file, seq
//      counts up by one, the epoch never goes down nor skips, each request
//      is sealed in the epoch its jump opened, and a jump back opens none.
//
// The ASan build wants its runtime first in the library list; with
// LD_PRELOAD it is not, so ASAN_OPTIONS gets verify_asan_link_order=0
// (the check is about interposition, which libfaketime does not do to
// ASan's functions). Skipped when libfaketime is not installed.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { startFakeProvider } from '../fake_provider/provider.mjs';
import {
  startScrim, startRedis, configFor, execFile, request, auth, chatBody, errorOf, waitFor, show, sleep,
  tempDir, SCRIM_BIN, TEST_KEY,
} from './lib.mjs';

const FAKETIME_LIB = '/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1';
const SKIP = fs.existsSync(FAKETIME_LIB) ? false : `libfaketime not installed (${FAKETIME_LIB}; apt-get install faketime)`;
const SANITIZER_RE = /AddressSanitizer|LeakSanitizer|runtime error:|UndefinedBehaviorSanitizer/;

let provider;
let redis;
const gateways = [];
const dirs = [];

/**
 * A clock file for libfaketime in `dir`; set(s) moves scrim's clock to
 * real time + s seconds. env(monotonic) is what scrim needs.
 */
function fakeClock(dir) {
  const file = path.join(dir, 'faketime.rc');
  const set = (s) => {
    const tmp = `${file}.tmp`;
    fs.writeFileSync(tmp, `${s >= 0 ? '+' : ''}${Math.trunc(s)}\n`);
    fs.renameSync(tmp, file);
  };
  set(0);
  const env = ({ monotonic }) => ({
    LD_PRELOAD: FAKETIME_LIB,
    FAKETIME_TIMESTAMP_FILE: file,
    FAKETIME_NO_CACHE: '1',
    ...(monotonic ? {} : { FAKETIME_DONT_FAKE_MONOTONIC: '1' }),
    NO_FAKE_STAT: '1', // file times stay real (the audit log, the key file)
    ASAN_OPTIONS: [process.env.ASAN_OPTIONS, 'verify_asan_link_order=0'].filter(Boolean).join(':'),
  });
  return { file, set, env };
}

async function gateway(opts, clockEnv) {
  const state = tempDir('scrim-clock-state-');
  dirs.push(state);
  const config = await configFor({ providerUrl: provider.url, ...opts, gateway: { state_dir: state, ...(opts.gateway || {}) } });
  const g = await startScrim({ config, env: clockEnv });
  g.state = state;
  gateways.push(g);
  return g;
}

function chat(port, key, text) {
  return request(port, { method: 'POST', path: '/v1/chat/completions', headers: auth(key), body: chatBody(text, { max_tokens: 5 }) });
}

function auditRecords(state) {
  const f = path.join(state, 'audit.jsonl');
  if (!fs.existsSync(f)) return [];
  return fs.readFileSync(f, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
}

/** The audit record of a request id, once the writer has put it in the file. */
async function recordOf(state, id) {
  let rec;
  await waitFor(() => (rec = auditRecords(state).find((r) => r.request_id === id)),
    { timeoutMs: 10_000, what: `the audit record of ${id} (the file has ${auditRecords(state).length} records)` });
  return rec;
}

async function verify(state) {
  const r = await execFile(SCRIM_BIN, ['audit', 'verify', '--key', path.join(state, 'audit.key'), path.join(state, 'audit.jsonl')])
    .catch((e) => e);
  return { code: r.code || 0, out: `${r.stdout || ''}${r.stderr || ''}` };
}

/** The chain's own rules, checked here record by record. */
function assertChainShape(recs) {
  for (let i = 0; i < recs.length; i++) {
    assert.equal(recs[i].seq, i + 1, `seq counts up by one: record ${i} is ${JSON.stringify(recs[i]).slice(0, 300)}`);
    if (i > 0) {
      const d = recs[i].epoch - recs[i - 1].epoch;
      assert.ok(d === 0 || d === 1, `epoch steps by 0 or 1, not ${d}, at seq ${recs[i].seq}`);
    }
  }
}

/** The record's time, as an offset in seconds from the real clock at `realMs`. */
const skewS = (rec, realMs) => (Date.parse(rec.time) - realMs) / 1000;

async function stopClean(g) {
  const code = await g.stop();
  assert.equal(code, 0, `scrim exits 0 on SIGTERM; stderr:\n${g.stderr().slice(-3000)}`);
  assert.doesNotMatch(g.stderr(), SANITIZER_RE, 'no sanitizer report');
  assert.doesNotMatch(g.stderr(), /libfaketime/i, 'libfaketime said nothing');
}

before(async () => {
  if (SKIP) return;
  provider = await startFakeProvider();
  redis = await startRedis();
});

/**
 * libfaketime keeps its shared clock in /dev/shm under the pid of the
 * process that loaded it; it removes it at a normal exit, not when a
 * process is killed.
 */
function dropFaketimeShm(pid) {
  for (const f of [`/dev/shm/faketime_shm_${pid}`, `/dev/shm/sem.faketime_sem_${pid}`]) {
    fs.rmSync(f, { force: true });
  }
}

after(async () => {
  for (const g of gateways) {
    await g.kill();
    dropFaketimeShm(g.pid);
  }
  if (redis) await redis.stop();
  if (provider) await provider.close();
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

// ---------------------------------------------------------------- 1. limiter

test('1. rpm limit across wall-clock jumps: forward past the window frees it; back neither frees it nor locks the key out', { skip: SKIP, timeout: 60_000 }, async () => {
  const dir = tempDir('scrim-clock-');
  dirs.push(dir);
  const clock = fakeClock(dir);
  const g = await gateway({ redis: { url: redis.url, fail_mode: 'closed', timeout: '1s' } }, clock.env({ monotonic: false }));
  const out = await execFile(SCRIM_BIN, ['keys', 'create', '--name', 'clock', '--rpm', '3', '-c', g.configPath]);
  const key = out.stdout.match(/^key: (\S+)$/m)[1];

  const burst = async (what, n = 3) => {
    const ids = [];
    for (let i = 0; i < n; i++) {
      const r = await chat(g.port, key, `${what} ${i}`);
      assert.equal(r.status, 200, `${what}: request ${i + 1} of the limit of 3 is served: ${show(r)}`);
      ids.push(r.headers['x-request-id']);
    }
    const over = await chat(g.port, key, `${what} over`);
    assert.equal(over.status, 429, `${what}: the 4th request within the minute is refused: ${show(over)}`);
    assert.match(errorOf(over).message, /\brequests\b/);
    return { ids, over };
  };

  // The clock as it is.
  const t0 = await burst('real clock');

  // Forward 2 minutes: the minute of those 3 requests is over.
  clock.set(120);
  const fwd = await burst('after +2 min');
  const rec = await recordOf(g.state, fwd.ids[0]);
  const sk = skewS(rec, Date.now());
  assert.ok(sk > 100 && sk < 140, `scrim's clock really moved: its record says ${rec.time}, ${sk} s from now`);

  // Back 12 minutes (to real - 10 min): the 3 requests just logged are in
  // scrim's future now. They must still count (no fresh window)...
  clock.set(-600);
  const back = await chat(g.port, key, 'after -12 min');
  assert.equal(back.status, 429, `a jump back hands out no fresh window: ${show(back)}`);
  assert.match(errorOf(back).message, /\brequests\b/);
  const ra = Number(back.headers['retry-after']);
  assert.ok(Number.isInteger(ra) && ra >= 1 && ra <= 60, `Retry-After is at most the window (60 s), not the jump: ${show(back)}`);
  const reset = back.headers['x-ratelimit-reset-requests'];
  assert.match(reset, /^(\d+s|\d+ms|1m0s)$/, `x-ratelimit-reset-requests at most a minute: ${reset}`);

  // ...and stop counting a minute of the new clock later, instead of
  // until the clock catches up with them (12 minutes).
  clock.set(-600 + 61);
  const later = await burst('a minute after the jump back');
  const recLater = await recordOf(g.state, later.ids[0]);
  const skLater = skewS(recLater, Date.now());
  assert.ok(skLater > -560 && skLater < -520, `record time follows the jump back: ${recLater.time}, ${skLater} s`);

  // Back to the real clock (a jump forward of 9 minutes): a fresh minute.
  clock.set(0);
  await burst('real clock again');

  await stopClean(g);
  const v = await verify(g.state);
  assert.equal(v.code, 0, `audit verify accepts the log written across the jumps:\n${v.out}`);
  const recs = auditRecords(g.state);
  assertChainShape(recs);
  // The wall clock moved the record times (one goes back), not the epochs:
  // they run on CLOCK_MONOTONIC, which the jumps left alone.
  const times = recs.map((r) => Date.parse(r.time));
  assert.ok(times.some((t, i) => i > 0 && t < times[i - 1] - 500_000), 'a record is stamped earlier than the one before it (the jump back)');
  assert.deepEqual([...new Set(recs.map((r) => r.epoch))], [0], 'wall-clock jumps do not change the epoch');
  const reqs = recs.filter((r) => r.type === 'request');
  assert.equal(reqs.filter((r) => r.status === 200).length, 12);
  assert.equal(reqs.filter((r) => r.status === 429).length, 5);
});

// ---------------------------------------------------------------- 2. audit epochs

test('2. audit epochs roll by time across clock jumps (both clocks): forward 3 epochs, back 43 min, forward again; the chain verifies', { skip: SKIP, timeout: 60_000 }, async () => {
  const dir = tempDir('scrim-clock-');
  dirs.push(dir);
  const clock = fakeClock(dir);
  const g = await gateway({}, clock.env({ monotonic: true }));

  // [offset in minutes, the epoch the request's record must be sealed in]
  const phases = [
    [0, 0],
    [16, 1], [32, 2], [48, 3], // each jump passes an epoch's 15 minutes
    [5, 3], [6, 3], // back 43 minutes: the epoch stays, none opens
    [70, 4], // forward past 48 + 15: the next epoch
  ];
  const sent = [];
  for (const [min, epoch] of phases) {
    // CLOCK_MONOTONIC never goes back on a real system; here it does.
    // The audit writer naps 2 ms after a write, unwoken by new records:
    // a jump back in the middle of that nap would stretch it to the
    // jump's length. Let it go idle first (its record is in the file).
    await sleep(100);
    clock.set(min * 60);
    const r = await chat(g.port, TEST_KEY, `epoch phase ${min}`);
    assert.equal(r.status, 200, `offset ${min} min: ${show(r)}`);
    const id = r.headers['x-request-id'];
    const rec = await recordOf(g.state, id);
    const sk = skewS(rec, Date.now());
    assert.ok(Math.abs(sk - min * 60) < 30, `offset ${min} min: the record time follows (${rec.time}, ${sk} s)`);
    sent.push({ min, epoch, id, rec });
  }
  await stopClean(g);

  const v = await verify(g.state);
  assert.equal(v.code, 0, `audit verify accepts the whole file:\n${v.out}`);
  assert.match(v.out, /epoch 4\b/, `the chain ends in epoch 4:\n${v.out}`);
  const recs = auditRecords(g.state);
  assertChainShape(recs);
  for (const s of sent) {
    assert.equal(s.rec.epoch, s.epoch, `the request at +${s.min} min is sealed in epoch ${s.epoch}: ${JSON.stringify(s.rec).slice(0, 200)}`);
  }
  // One timed key change for each epoch, and the records stay in order.
  const timed = recs.filter((r) => r.type === 'checkpoint' && r.event === 'epoch');
  assert.deepEqual(timed.map((r) => r.epoch), [1, 2, 3, 4], `"epoch" checkpoints: ${JSON.stringify(timed.map((r) => r.epoch))}`);
  const order = recs.filter((r) => r.type === 'request').map((r) => r.request_id);
  assert.deepEqual(order, sent.map((s) => s.id), 'requests are in the file in the order they were made');
});
