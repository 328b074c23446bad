#!/usr/bin/env node
// Open-loop, fixed-rate HTTP load generator for bench/audit_latency.sh
// (wrk has no fixed rate). Request i is due at start + i / rate whatever
// the answers before it are doing; it goes out on an idle keep-alive
// connection from a pool, or a new one while the pool is below --pool, or
// waits for one (counted in `queued`).
//
//   node rate.mjs --target 127.0.0.1:PORT --key sk-scrim-... \
//     --rate 1000 --duration 20 --warmup 2
//
// Prints one line: RATE {"rate":..,"duration":..,"sent_rps":..,"p50_us":..,
// "p90_us":..,"p99_us":..,"p999_us":..,"max_us":..,"requests":..,
// "errors":..,"non2xx":..,"late_pct":..,"sched_p99_us":..,"queued":..,
// "connections":..,"client_cpu_total_ms":..}
// Latency = from writing the request to the end of its answer, for the
// requests due in the `duration` seconds after `warmup`. The timer that
// sends them fires about every millisecond, so a request goes out up to
// ~1 ms after it is due: `sched_p99_us` is that lag's p99 and `late_pct`
// the share more than 2 ms late (a client that cannot keep up shows there).

import { chatBody, requestBytes, ResponseParser, openConnection, pct, Samples, parseArgs, hostPort } from './common.mjs';

const o = parseArgs(process.argv.slice(2), {
  target: '', path: '/v1/chat/completions', key: '', 'body-size': 4096,
  rate: 1000, duration: 20, warmup: 2, pool: 256, prewarm: 16, expect: 'chat.completion',
});
const target = hostPort(o.target);
const headers = { 'Content-Type': 'application/json', Accept: 'application/json', 'User-Agent': 'scrim-rate-bench/1' };
if (o.key) headers.Authorization = `Bearer ${o.key}`;
const REQ = requestBytes({ path: o.path, host: o.target, headers, body: chatBody(o['body-size']) });
const expect = Buffer.from(o.expect);

const lat = new Samples(), lag = new Samples();
let errors = 0, non2xx = 0, late = 0, queued = 0, opened = 0, open = 0, sentMeasured = 0, badBody = 0;
const firstErrors = [];
const idle = [];
const waiting = []; // due requests with no connection yet: {due}
const total = Math.round(o.rate * (o.warmup + o.duration));
const interval = 1000 / o.rate;
let next = 0, outstanding = 0;
let t0 = 0;

const inWindow = (due) => due >= t0 + o.warmup * 1000 && due < t0 + (o.warmup + o.duration) * 1000;

function record(job, r, now) {
  if (!inWindow(job.due)) return;
  lat.push((now - job.sent) * 1000);
  if (r.status < 200 || r.status > 299) non2xx++;
  else if (r.body.indexOf(expect) < 0) badBody++;
}

async function newConnection() {
  open++;
  opened++;
  let c;
  try {
    c = await openConnection({ target });
  } catch (e) {
    open--;
    throw e;
  }
  const conn = { sock: c.sock, parser: new ResponseParser(), job: null, dead: false };
  const fail = (e) => {
    if (conn.dead) return;
    conn.dead = true;
    open--;
    const i = idle.indexOf(conn);
    if (i >= 0) idle.splice(i, 1);
    if (conn.job) {
      if (inWindow(conn.job.due)) errors++;
      if (firstErrors.length < 3) firstErrors.push(String(e && e.message || e));
      conn.job = null;
      outstanding--;
      maybeDone();
    }
    conn.sock.destroy();
  };
  conn.sock.on('data', (d) => {
    let done;
    try { done = conn.parser.feed(d); } catch (e) { fail(e); return; }
    for (const r of done) {
      const now = performance.now();
      const job = conn.job;
      conn.job = null;
      if (job) { record(job, r, now); outstanding--; }
      if (r.close) { fail(new Error('closed')); break; }
      release(conn);
    }
    maybeDone();
  });
  conn.sock.on('error', fail);
  conn.sock.on('close', () => fail(new Error('closed by the peer')));
  return conn;
}

function send(conn, job) {
  job.sent = performance.now();
  conn.job = job;
  if (inWindow(job.due)) {
    sentMeasured++;
    const l = job.sent - job.due;
    lag.push(l * 1000);
    if (l > 2) late++;
  }
  conn.sock.write(REQ);
}

function release(conn) {
  if (conn.dead) return;
  const job = waiting.shift();
  if (job) send(conn, job);
  else idle.push(conn);
}

function dispatch(job) {
  outstanding++;
  const conn = idle.pop();
  if (conn) { send(conn, job); return; }
  if (open < o.pool) {
    newConnection().then((c) => release(c), (e) => {
      errors += inWindow(job.due) ? 1 : 0;
      if (firstErrors.length < 3) firstErrors.push(e.message);
      outstanding--;
      maybeDone();
    });
  }
  waiting.push(job);
  if (inWindow(job.due)) queued++;
}

let finish;
const finished = new Promise((r) => { finish = r; });
function maybeDone() {
  if (next >= total && outstanding === 0) finish();
}

function tick() {
  const now = performance.now();
  while (next < total && t0 + next * interval <= now) {
    dispatch({ due: t0 + next * interval });
    next++;
  }
  if (next < total) setTimeout(tick, Math.max(0, t0 + next * interval - performance.now()));
  else maybeDone();
}

// Open a few connections first so the start is not a connect storm.
for (let i = 0; i < Math.min(o.prewarm, o.pool); i++) idle.push(await newConnection());
t0 = performance.now() + 5;
setTimeout(tick, 5);
await Promise.race([finished, new Promise((r) => setTimeout(r, (o.warmup + o.duration) * 1000 + 30000))]);

const s = lat.sorted(), g = lag.sorted();
const cpu = process.cpuUsage();
const out = {
  rate: o.rate, duration: o.duration,
  sent_rps: Math.round((sentMeasured / o.duration) * 10) / 10,
  p50_us: Math.round(pct(s, 50)), p90_us: Math.round(pct(s, 90)), p99_us: Math.round(pct(s, 99)),
  p999_us: Math.round(pct(s, 99.9)), max_us: Math.round(s.length ? s[s.length - 1] : NaN),
  requests: s.length, errors, non2xx, bad_body: badBody,
  late_pct: Math.round((late / Math.max(1, sentMeasured)) * 1000) / 10,
  sched_p99_us: Math.round(pct(g, 99)), queued, connections: opened,
  client_cpu_total_ms: Math.round((cpu.user + cpu.system) / 1000),
};
if (outstanding) out.unanswered = outstanding;
if (firstErrors.length) out.first_errors = firstErrors;
console.log('RATE ' + JSON.stringify(out));
process.exit(0);
