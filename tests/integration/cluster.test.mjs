// Virtual keys on Redis Cluster (docs/limits.md, "Redis Cluster"): scrim
// against a one-node cluster that holds all 16384 slots. Keys are made,
// listed, shown, used, limited, rotated and revoked through `scrim keys`
// and through the admin API, requests go through the gateway (one of them
// over its rpm), and the audit log is copied to a Redis stream.
//
// A one-node cluster redirects nothing, but it refuses a multi-key
// command or a script whose declared keys are in different slots
// (CROSSSLOT). It does not refuse everything a multi-shard cluster would:
// a script sent without a "#!lua" line runs in Redis 7's compatibility
// mode, where keys it did not declare may be in any slot of the node. So
// the test also watches MONITOR and checks, for every command scrim (or
// `scrim keys`) sent, that its keys are in one slot, and for every script
// that each key it touched was declared, which is what lets a cluster
// send it to the one node that has them.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import { startFakeProvider } from '../fake_provider/provider.mjs';
import {
  startScrim, startRedis, configFor, execFile, request, auth, chatBody, errorOf, waitFor, show,
  sha256hex, SCRIM_BIN,
} from './lib.mjs';

const ADMIN_TOKEN = `adm-${crypto.randomBytes(12).toString('hex')}`;
const STREAM = 'scrim:audit';
const SANITIZER_RE = /AddressSanitizer|LeakSanitizer|runtime error:|UndefinedBehaviorSanitizer/;

let provider;
let redis;
let scrim;
let monitor; // {proc, text()}

// ---------------------------------------------------------------- slots

/** CRC16/XMODEM, as Redis Cluster hashes keys. */
function crc16(buf) {
  let crc = 0;
  for (const b of buf) {
    crc ^= b << 8;
    for (let i = 0; i < 8; i++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  }
  return crc;
}

/** The key's slot: only what is inside the first {...} counts, if not empty. */
function slotOf(key) {
  let k = Buffer.from(key, 'latin1');
  const open = k.indexOf(0x7b);
  if (open >= 0) {
    const close = k.indexOf(0x7d, open + 1);
    if (close > open + 1) k = k.subarray(open + 1, close);
  }
  return crc16(k) % 16384;
}

/** One MONITOR line -> {client, args}, undoing redis' quoting. */
function parseMonitorLine(line) {
  const m = /^\d+\.\d+ \[\d+ ([^\]]+)\] (.*)$/.exec(line);
  if (!m) return null;
  const args = [];
  const s = m[2];
  let i = 0;
  while (i < s.length) {
    if (s[i] === ' ') { i++; continue; }
    assert.equal(s[i], '"', `MONITOR line not understood: ${line.slice(0, 200)}`);
    let a = '';
    for (i++; i < s.length && s[i] !== '"'; i++) {
      if (s[i] !== '\\') { a += s[i]; continue; }
      const c = s[++i];
      if (c === 'x') { a += String.fromCharCode(parseInt(s.slice(i + 1, i + 3), 16)); i += 2; }
      else a += { n: '\n', r: '\r', t: '\t', a: '\x07', b: '\b' }[c] ?? c;
    }
    i++;
    args.push(a);
  }
  return { client: m[1], args };
}

// Which arguments of a command are keys. Every command scrim and the test
// send is listed: an unknown one fails the test, so a new command cannot
// slip past the layout check.
const NO_KEYS = new Set(['PING', 'AUTH', 'HELLO', 'INFO', 'CLUSTER', 'COMMAND', 'CLIENT', 'SCAN', 'MONITOR', 'SCRIPT']);
const FIRST_KEY = new Set(['GET', 'SET', 'SADD', 'SREM', 'SMEMBERS', 'SISMEMBER', 'HSET', 'HGET', 'HGETALL', 'HMGET',
  'HDEL', 'HEXISTS', 'ZADD', 'ZREM', 'ZCARD', 'ZRANGE', 'ZRANGEBYSCORE', 'ZCOUNT', 'ZREMRANGEBYSCORE', 'PEXPIRE', 'INCR', 'INCRBY',
  'DECR', 'XADD', 'XRANGE', 'XLEN', 'TYPE', 'TTL', 'PTTL']);
const ALL_KEYS = new Set(['EXISTS', 'DEL', 'UNLINK', 'MGET']);

function keysOf(args) {
  const cmd = args[0].toUpperCase();
  if (NO_KEYS.has(cmd)) return [];
  if (FIRST_KEY.has(cmd)) return [args[1]];
  if (ALL_KEYS.has(cmd)) return args.slice(1);
  if (cmd === 'EVAL' || cmd === 'EVALSHA') return args.slice(3, 3 + Number(args[2]));
  throw new Error(`the layout check does not know ${cmd}: add it to cluster.test.mjs`);
}

/**
 * Every command MONITOR saw, grouped: a client's command, then the
 * commands a script it ran sent ("lua" lines follow their EVAL). Returns
 * the problems found, as text, and what was checked.
 */
function checkLayout(text) {
  const problems = [];
  let commands = 0;
  let scripts = 0;
  let cur = null;
  const flush = () => {
    if (cur === null) return;
    const declared = keysOf(cur.args);
    // Test 0's deliberate cross-slot commands, on scrim:test:* keys.
    if ([...declared, ...cur.inner.flatMap(keysOf)].some((k) => k.startsWith('scrim:test:'))) return;
    const slots = new Set(declared.map(slotOf));
    const what = `${cur.args[0]} ${declared.join(' ')}`.slice(0, 300);
    if (slots.size > 1) problems.push(`keys in ${slots.size} slots: ${what}`);
    for (const inner of cur.inner) {
      for (const k of keysOf(inner)) {
        if (!declared.includes(k)) problems.push(`script touched ${k}, not declared: ${what} -> ${inner[0]} ${k}`);
      }
    }
    if (cur.inner.length) scripts++;
    commands++;
  };
  for (const line of text.split('\n')) {
    if (!line.trim() || line === 'OK') continue;
    const c = parseMonitorLine(line);
    if (c === null) continue;
    if (c.client === 'lua') {
      assert.ok(cur, `a script's command with no script before it: ${line}`);
      cur.inner.push(c.args);
      continue;
    }
    flush();
    cur = { args: c.args, inner: [] };
  }
  flush();
  return { problems, commands, scripts };
}

// ---------------------------------------------------------------- helpers

async function keysCmd(...args) {
  const { stdout } = await execFile(SCRIM_BIN, ['keys', ...args, '-c', scrim.configPath]);
  return stdout;
}

function chat(key, text) {
  return request(scrim.port, {
    method: 'POST', path: '/v1/chat/completions', headers: auth(key), body: chatBody(text, { max_tokens: 5 }),
  });
}

function admin(method, p, body) {
  return request(scrim.adminPort, { method, path: p, headers: { authorization: `Bearer ${ADMIN_TOKEN}` }, body });
}

/** A 429 over the rpm limit, OpenAI-shaped, naming the limit. */
function assertOverRpm(r, id) {
  assert.equal(r.status, 429, show(r));
  const e = errorOf(r);
  assert.equal(e.code, 'rate_limit_exceeded', show(r));
  assert.match(e.message, /\brequests\b/, show(r));
  assert.ok(e.message.includes(id), show(r));
  assert.ok(Number(r.headers['retry-after']) >= 1, show(r));
}

before(async () => {
  provider = await startFakeProvider();
  redis = await startRedis({ cluster: true });
  // Everything from here on is watched, scrim's connections included.
  monitor = { proc: spawn('redis-cli', ['-h', '127.0.0.1', '-p', String(redis.port), 'MONITOR'], { stdio: ['ignore', 'pipe', 'pipe'] }) };
  let text = '';
  monitor.proc.stdout.setEncoding('utf8');
  monitor.proc.stdout.on('data', (d) => { text += d; });
  monitor.text = () => text;
  await waitFor(() => text.startsWith('OK'), { timeoutMs: 5000, what: 'MONITOR to start' });
  const config = await configFor({
    providerUrl: provider.url,
    redis: { url: redis.url, admin_token_env: 'SCRIM_ADMIN_TOKEN', fail_mode: 'closed', timeout: '1s' },
    prices: { 'fake-*': '1 2' },
    extra: `\n[audit]\nredis_stream = ${STREAM}\n`,
  });
  scrim = await startScrim({ config, env: { SCRIM_ADMIN_TOKEN: ADMIN_TOKEN } });
});

after(async () => {
  if (scrim) assert.equal(await scrim.stop(), 0, scrim.stderr());
  monitor?.proc.kill();
  await redis?.stop();
  await provider?.close();
});

// ---------------------------------------------------------------- tests

test('0. the Redis is a cluster of one node with every slot, and refuses cross-slot commands', async () => {
  assert.match(await redis.cli('INFO', 'cluster'), /^cluster_enabled:1\s*$/m);
  const info = await redis.cli('CLUSTER', 'INFO');
  assert.match(info, /^cluster_state:ok\s*$/m);
  assert.match(info, /^cluster_slots_assigned:16384\s*$/m);
  assert.match(await redis.cli('MSET', 'scrim:test:a', '1', 'scrim:test:b', '2'), /CROSSSLOT/);
  assert.match(await redis.cli('EVAL', "return redis.call('GET', KEYS[2])", '2', 'scrim:test:a', 'scrim:test:b'), /CROSSSLOT/);
  // A script with a "#!lua" line is held to one slot for the keys it did
  // not declare too; one without (as scrim sends them, for Redis 6) is
  // not: MONITOR checks those below.
  assert.match(await redis.cli('EVAL', "#!lua\nredis.call('GET', 'scrim:test:a') return redis.call('GET', 'scrim:test:b')", '0'),
    /do not hash to the same slot/);
  assert.notEqual(slotOf('scrim:test:a'), slotOf('scrim:test:b'), 'the two test keys are in different slots');
  assert.equal(slotOf('123456789'), 12739, 'CRC16 as Redis Cluster computes it');
  assert.equal(slotOf('{user1000}.following'), slotOf('{user1000}.followers'));
  assert.equal(slotOf('{user1000}.following'), Number(await redis.cli('CLUSTER', 'KEYSLOT', '{user1000}.following')));
});

test('1. scrim keys: create, list, show, requests up to the rpm limit and a 429, usage', async () => {
  const out = await keysCmd('create', '--name', 'cl-cli', '--rpm', '3', '--models', 'fake-*');
  const key = out.match(/^key: (\S+)$/m)?.[1];
  const id = out.match(/^id:\s+(\S+)$/m)?.[1];
  assert.ok(key && id, out);
  assert.match(await keysCmd('list'), new RegExp(`^${id}\\s+cl-cli\\s+3\\b.*\\bactive\\b`, 'm'));
  assert.match(await keysCmd('show', id), /\bactive\b/);
  for (let i = 0; i < 3; i++) {
    const r = await chat(key, `cli ${i}`);
    assert.equal(r.status, 200, show(r));
    assert.equal(r.headers['x-ratelimit-remaining-requests'], String(2 - i), show(r));
  }
  assertOverRpm(await chat(key, 'cli over'), id);
  const m = await chat(key, 'cli model');
  assert.equal(m.status, 429, 'still over the limit');
  let usage;
  await waitFor(async () => { usage = await keysCmd('usage', id); return /in flight:\s+0$/m.test(usage); },
    { timeoutMs: 3000, what: 'nothing in flight' });
  assert.match(usage, /requests, last 60 s:\s+3$/m);
  assert.match(usage, /tokens, this minute:\s+[1-9]\d*$/m);
  assert.match(usage, /USD, this month \(UTC\):\s+0\.0000[1-9]/m);
});

test('2. scrim keys: rotate (old key refused, new one works, one entry in the list), then revoke', async () => {
  const made = await keysCmd('create', '--name', 'cl-rot', '--rpm', '50');
  const old = made.match(/^key: (\S+)$/m)[1];
  const id = made.match(/^id:\s+(\S+)$/m)[1];
  assert.equal((await chat(old, 'before rotate')).status, 200);
  const out = await keysCmd('rotate', id);
  const fresh = out.match(/^key: (\S+)$/m)?.[1];
  assert.ok(fresh && fresh !== old, out);
  const o = await chat(old, 'old after rotate');
  assert.equal(o.status, 401, show(o));
  assert.match(errorOf(o).message, /revoked/i);
  const n = await chat(fresh, 'new after rotate');
  assert.equal(n.status, 200, show(n));
  assert.equal(n.headers['x-ratelimit-limit-requests'], '50', 'the limits came along');
  assert.equal((await keysCmd('list')).split('\n').filter((l) => l.startsWith(`${id} `)).length, 1);
  assert.match(await keysCmd('show', id), /\bactive\b/);
  assert.match(await keysCmd('revoke', id), /revoked/);
  const r = await chat(fresh, 'after revoke');
  assert.equal(r.status, 401, show(r));
  assert.match(errorOf(r).message, /revoked/i);
  assert.match(await keysCmd('show', id), /\brevoked\b/);
});

test('3. the admin API: create, list, show, usage, a 429, rotate, revoke, unknown id', async () => {
  const made = await admin('POST', '/admin/keys', { name: 'cl-api', rpm: 2, models: ['fake-*'] });
  assert.equal(made.status, 201, show(made));
  const { key } = made.json;
  const { id } = made.json.record;
  assert.equal(made.json.record.rpm, '2');
  assert.equal(sha256hex(key).length, 64);
  const list = await admin('GET', '/admin/keys');
  assert.equal(list.status, 200, show(list));
  assert.ok(list.json.keys.some((k) => k.id === id && k.name === 'cl-api'), show(list));
  assert.ok(list.json.keys.some((k) => k.name === 'cl-cli'), 'keys made by `scrim keys` are listed too');
  const one = await admin('GET', `/admin/keys/${id}`);
  assert.equal(one.status, 200, show(one));
  assert.equal(one.json.name, 'cl-api');
  assert.equal(one.json.revoked, '0');
  assert.equal((await chat(key, 'api 1')).status, 200);
  assert.equal((await chat(key, 'api 2')).status, 200);
  assertOverRpm(await chat(key, 'api over'), id);
  let u;
  await waitFor(async () => { u = await admin('GET', `/admin/keys/${id}/usage`); return u.json?.in_flight === 0; },
    { timeoutMs: 3000, what: 'nothing in flight' });
  assert.equal(u.status, 200, show(u));
  assert.equal(u.json.requests_last_minute, 2, show(u));
  assert.ok(u.json.tokens_this_minute > 0 && u.json.tokens_today > 0 && u.json.usd_this_month > 0, show(u));

  const rot = await admin('POST', `/admin/keys/${id}/rotate`);
  assert.equal(rot.status, 201, show(rot));
  const fresh = rot.json.key;
  assert.ok(fresh && fresh !== key);
  assert.equal(rot.json.record.id, id);
  assert.equal(rot.json.record.revoked, '0');
  assert.equal(rot.json.record.rpm, '2');
  assert.equal((await chat(key, 'api old')).status, 401);
  const n = await chat(fresh, 'api new');
  assert.equal(n.status, 200, show(n));
  const u2 = await admin('GET', `/admin/keys/${id}/usage`);
  assert.equal(u2.json.requests_last_minute, 1, `usage follows the id to the new key: ${show(u2)}`);

  const rev = await admin('POST', `/admin/keys/${id}/revoke`);
  assert.equal(rev.status, 200, show(rev));
  assert.equal(rev.json.revoked, '1');
  assert.equal((await chat(fresh, 'api revoked')).status, 401);
  const after = await admin('GET', `/admin/keys/${id}`);
  assert.equal(after.json.revoked, '1');
  const none = await admin('GET', '/admin/keys/key_0000000000');
  assert.equal(none.status, 404, show(none));
  assert.match(errorOf(none).message, /no such key/);
});

test('4. list skips index entries whose key is gone, on the command line and the admin API', async () => {
  const ghost = 'key_00deadbeef';
  await redis.cli('SADD', 'scrim:keys', ghost, 'key_00nomap000');
  await redis.cli('SET', `scrim:id:${ghost}`, sha256hex('a key nobody has'));
  const cli = await keysCmd('list');
  assert.doesNotMatch(cli, /key_00deadbeef|key_00nomap000/);
  assert.match(cli, /cl-cli/);
  const api = await admin('GET', '/admin/keys');
  assert.equal(api.status, 200, show(api));
  assert.ok(!api.json.keys.some((k) => k.id === ghost || k.id === 'key_00nomap000'), show(api));
  assert.ok(api.json.keys.some((k) => k.name === 'cl-api'), show(api));
  const one = await admin('GET', `/admin/keys/${ghost}`);
  assert.equal(one.status, 404, show(one));
  const rev = await admin('POST', `/admin/keys/${ghost}/revoke`);
  assert.equal(rev.status, 404, `revoking a gone key makes no record: ${show(rev)}`);
  assert.equal(await redis.cli('EXISTS', `scrim:{${sha256hex('a key nobody has')}}:key`), '0');
  await redis.cli('SREM', 'scrim:keys', ghost, 'key_00nomap000');
});

test('4b. a rotation cut short after revoking the old key (the id not moved yet) is finished by rotating again', async () => {
  const made = await keysCmd('create', '--name', 'cl-cut', '--rpm', '9');
  const old = made.match(/^key: (\S+)$/m)[1];
  const id = made.match(/^id:\s+(\S+)$/m)[1];
  // What a rotation leaves when it dies between its second and third
  // step: a new record nobody has the key of, and the old key revoked.
  const orphan = sha256hex(`never printed ${id}`);
  await redis.cli('HSET', `scrim:{${orphan}}:key`, 'id', id, 'name', 'cl-cut', 'revoked', '0', 'rpm', '9');
  await redis.cli('HSET', `scrim:{${sha256hex(old)}}:key`, 'revoked', '1');
  assert.equal((await chat(old, 'cut')).status, 401, 'the old key stays refused');
  assert.match(await keysCmd('show', id), /\brevoked\b/);
  const fresh = (await keysCmd('rotate', id)).match(/^key: (\S+)$/m)[1];
  const r = await chat(fresh, 'after the second rotation');
  assert.equal(r.status, 200, show(r));
  assert.equal(r.headers['x-ratelimit-limit-requests'], '9');
  assert.equal(await redis.cli('GET', `scrim:id:${id}`), sha256hex(fresh));
  assert.equal((await chat(old, 'cut again')).status, 401);
});

test('5. the audit log reaches the Redis stream'
, async () => {
  await waitFor(async () => Number(await redis.cli('XLEN', STREAM)) >= 10, { timeoutMs: 5000, what: 'audit lines in the stream' });
  const out = await redis.cli('--raw', 'XRANGE', STREAM, '-', '+');
  assert.match(out, /"key_name":"cl-cli"/);
  assert.match(out, /"key_name":"cl-api"/);
});

test('6. every command and script scrim sent touched one slot, and scripts declared their keys', async () => {
  // Settles are sent after the answer: let the last ones through.
  await new Promise((r) => setTimeout(r, 300));
  const text = monitor.text();
  const { problems, commands, scripts } = checkLayout(text);
  assert.ok(commands > 50 && scripts > 10, `MONITOR saw ${commands} commands, ${scripts} scripts`);
  assert.deepEqual(problems.slice(0, 20), [], `${problems.length} commands cross slots`);
  assert.doesNotMatch(scrim.stderr(), /CROSSSLOT|same slot|redis error|MOVED|ASK /);
  assert.doesNotMatch(scrim.stderr(), SANITIZER_RE);
});
