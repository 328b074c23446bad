// Holds N concurrent streaming chat completions open through a gateway and
// samples the gateway's memory while they are all open.
//
//   node bench/streams.mjs --url http://127.0.0.1:PORT/v1/chat/completions \
//        --key sk-scrim-... --pid GATEWAY_PID [--n 1000] [--chunks 50]
//        [--delay-ms 200] [--header 'Name: value']... [--timeout-s 120]
//
// Every request asks for `"stream": true` and carries x-fake-chunks and
// x-fake-chunk-delay-ms, which tests/fake_provider/provider.mjs honours, so
// each answer is a slow SSE stream (chunks x delay long). The script waits
// until every stream has delivered its first chunk, samples VmRSS and VmHWM
// of --pid (and its open file descriptors), then lets all streams run to
// their end and counts those that ended with `data: [DONE]`.
//
// Prints progress on stderr and, last, one JSON line on stdout:
//   {"n":1000,"first_chunk_all":true,"open_ms":..,"rss_kb_open":..,
//    "hwm_kb_open":..,"fds_open":..,"rss_kb_end":..,"hwm_kb_end":..,
//    "done":1000,"non200":0,"errors":0,"incomplete":0,...}
// Exit status 0 when every stream completed with [DONE], 1 otherwise.

import http from 'node:http';
import fs from 'node:fs';

function parseArgs(argv) {
  const o = { n: 1000, chunks: 50, delayMs: 200, headers: {}, timeoutS: 120 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--url') o.url = next();
    else if (a === '--key') o.key = next();
    else if (a === '--pid') o.pid = Number(next());
    else if (a === '--n') o.n = Number(next());
    else if (a === '--chunks') o.chunks = Number(next());
    else if (a === '--delay-ms') o.delayMs = Number(next());
    else if (a === '--timeout-s') o.timeoutS = Number(next());
    else if (a === '--header') {
      const h = next();
      const at = h.indexOf(':');
      if (at < 1) throw new Error(`bad --header ${h}`);
      o.headers[h.slice(0, at).trim()] = h.slice(at + 1).trim();
    } else throw new Error(`unknown argument ${a}`);
  }
  if (!o.url || !o.key || !o.pid) throw new Error('--url, --key and --pid are required');
  return o;
}

/** VmRSS, VmHWM (kB) and the number of open fds of a process. */
function sample(pid) {
  const out = { rss_kb: null, hwm_kb: null, fds: null };
  try {
    const st = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const rss = st.match(/^VmRSS:\s+(\d+) kB/m);
    const hwm = st.match(/^VmHWM:\s+(\d+) kB/m);
    if (rss) out.rss_kb = Number(rss[1]);
    if (hwm) out.hwm_kb = Number(hwm[1]);
  } catch { /* process gone: leave nulls */ }
  try {
    out.fds = fs.readdirSync(`/proc/${pid}/fd`).length;
  } catch { /* not ours to read, or gone */ }
  return out;
}

const o = parseArgs(process.argv.slice(2));
const body = JSON.stringify({
  model: 'gpt-4o-mini',
  stream: true,
  messages: [
    { role: 'system', content: 'You are a helpful assistant.' },
    { role: 'user', content: 'Write a long answer about streaming responses.' },
  ],
});
const agent = new http.Agent({ keepAlive: false, maxSockets: Infinity });
const url = new URL(o.url);

const state = {
  firstChunk: 0, done: 0, non200: 0, errors: 0, incomplete: 0, finished: 0,
  statuses: {}, errorKinds: {},
};
let onFirstChunk = () => {};
let onAllFinished = () => {};
let maxRss = 0;

function one() {
  return new Promise((resolve) => {
    let gotFirst = false;
    let settled = false;
    const finish = (kind) => {
      if (settled) return;
      settled = true;
      state.finished++;
      if (kind === 'done') state.done++;
      else if (kind === 'incomplete') state.incomplete++;
      if (state.finished === o.n) onAllFinished();
      resolve();
    };
    const req = http.request({
      host: url.hostname, port: url.port, path: url.pathname + url.search,
      method: 'POST', agent,
      headers: {
        'content-type': 'application/json',
        'content-length': Buffer.byteLength(body),
        authorization: `Bearer ${o.key}`,
        accept: 'text/event-stream',
        'x-fake-chunks': String(o.chunks),
        'x-fake-chunk-delay-ms': String(o.delayMs),
        ...o.headers,
      },
    }, (res) => {
      state.statuses[res.statusCode] = (state.statuses[res.statusCode] || 0) + 1;
      if (res.statusCode !== 200) state.non200++;
      let tail = '';
      res.setEncoding('utf8');
      res.on('data', (d) => {
        if (!gotFirst) {
          gotFirst = true;
          state.firstChunk++;
          if (state.firstChunk === o.n) onFirstChunk();
        }
        tail = (tail + d).slice(-64);
      });
      res.on('end', () => {
        finish(res.statusCode === 200 && /data: \[DONE\]\s*$/.test(tail) ? 'done' : 'incomplete');
      });
      res.on('error', (e) => {
        state.errors++;
        state.errorKinds[e.code || e.message] = (state.errorKinds[e.code || e.message] || 0) + 1;
        finish('error');
      });
    });
    req.on('error', (e) => {
      state.errors++;
      state.errorKinds[e.code || e.message] = (state.errorKinds[e.code || e.message] || 0) + 1;
      finish('error');
    });
    req.end(body);
  });
}

const t0 = Date.now();
const result = { n: o.n, chunks: o.chunks, delay_ms: o.delayMs };
const before = sample(o.pid);
result.rss_kb_before = before.rss_kb;
result.hwm_kb_before = before.hwm_kb;

const sampler = setInterval(() => {
  const s = sample(o.pid);
  if (s.rss_kb > maxRss) maxRss = s.rss_kb;
}, 100);

const allFirst = new Promise((resolve) => { onFirstChunk = resolve; });
const allFinished = new Promise((resolve) => { onAllFinished = resolve; });
const deadline = (ms) => new Promise((resolve) => setTimeout(() => resolve('timeout'), ms).unref());

for (let i = 0; i < o.n; i++) one();

// Every stream open (or finished early, which also ends the wait).
const firstOr = await Promise.race([
  allFirst.then(() => 'first'),
  allFinished.then(() => 'finished'),
  deadline(o.timeoutS * 1000),
]);
result.first_chunk_all = firstOr === 'first';
result.first_chunk_count = state.firstChunk;
result.open_ms = Date.now() - t0;
// Sample while all are open: give the gateway a moment to settle.
await new Promise((r) => setTimeout(r, 500));
const open = sample(o.pid);
result.rss_kb_open = open.rss_kb;
result.hwm_kb_open = open.hwm_kb;
result.fds_open = open.fds;
process.stderr.write(`streams: ${state.firstChunk}/${o.n} streaming after ${result.open_ms} ms; ` +
  `gateway VmRSS ${open.rss_kb} kB, VmHWM ${open.hwm_kb} kB, ${open.fds} fds\n`);

const endOr = await Promise.race([allFinished.then(() => 'finished'), deadline(o.timeoutS * 1000)]);
clearInterval(sampler);
const end = sample(o.pid);
result.finished_all = endOr === 'finished';
result.total_ms = Date.now() - t0;
result.rss_kb_end = end.rss_kb;
result.hwm_kb_end = end.hwm_kb;
result.rss_kb_max_sampled = Math.max(maxRss, open.rss_kb || 0, end.rss_kb || 0);
result.done = state.done;
result.non200 = state.non200;
result.errors = state.errors;
result.incomplete = state.incomplete;
result.unfinished = o.n - state.finished;
result.statuses = state.statuses;
result.error_kinds = state.errorKinds;
process.stderr.write(`streams: ${state.done}/${o.n} ended with [DONE] after ${result.total_ms} ms ` +
  `(non-200 ${state.non200}, errors ${state.errors}, incomplete ${state.incomplete}, ` +
  `unfinished ${result.unfinished})\n`);
process.stdout.write(JSON.stringify(result) + '\n');
agent.destroy();
process.exit(state.done === o.n ? 0 : 1);
