#!/usr/bin/env node
// Closed-loop HTTPS load generator for bench/proxy_bench.sh: N keep-alive
// connections, each sending the next request as soon as the previous
// answer is complete, either straight to a TLS server or through an HTTP
// proxy with CONNECT (one CONNECT and one TLS handshake per connection,
// then keep-alive). wrk cannot go through a proxy, hence this.
//
//   node load.mjs --target 127.0.0.1:PROXY --connect api.openai.com:443 \
//     --proxy-key sk-scrim-... --tls --sni api.openai.com --ca proxy-ca.pem \
//     --key sk-scrim-... --connections 16 --duration 5 --warmup 1
//
// Prints one line: LOAD {"rps":..,"p50_us":..,"p90_us":..,"p99_us":..,
// "max_us":..,"requests":..,"non2xx":..,"bad_body":..,"errors":..,
// "statuses":{..},"client_cpu_pct":..}. Latency is the time from writing a
// request to the end of its answer; requests whose answer ends during the
// `duration` seconds after `warmup` count. `client_cpu_pct` is this
// process's CPU time in % of one CPU during the measurement, to show
// whether the client itself is the limit; `client_cpu_total_ms` is its CPU
// time over its whole life (warm-up and start included). --check sends one request and
// prints the answer instead.

import fs from 'node:fs';
import { chatBody, requestBytes, ResponseParser, openConnection, pct, Samples, parseArgs, hostPort } from './common.mjs';

const o = parseArgs(process.argv.slice(2), {
  target: '', connect: '', 'proxy-key': '', tls: false, sni: 'api.openai.com', ca: '',
  host: '', path: '/v1/chat/completions', key: '', 'body-size': 4096,
  connections: 1, duration: 5, warmup: 1, expect: 'chat.completion', check: false,
});
if (!o.target) throw new Error('--target is required');

const target = hostPort(o.target);
const connOpts = {
  target,
  connect: o.connect || null,
  proxyAuth: o['proxy-key'] ? 'Basic ' + Buffer.from(`u:${o['proxy-key']}`).toString('base64') : null,
  tls: o.tls ? { servername: o.sni, ca: o.ca ? fs.readFileSync(o.ca, 'utf8') : undefined } : null,
};
const headers = { 'Content-Type': 'application/json', Accept: 'application/json', 'User-Agent': 'scrim-proxy-bench/1' };
if (o.key) headers.Authorization = `Bearer ${o.key}`;
const host = o.host || (o.connect ? o.connect.replace(/:443$/, '') : o.tls ? o.sni : o.target);
const REQ = requestBytes({ path: o.path, host, headers, body: chatBody(o['body-size']) });
const expect = o.expect ? Buffer.from(o.expect) : null;

if (o.check) {
  const { sock } = await openConnection(connOpts);
  const p = new ResponseParser();
  const res = await new Promise((resolve, reject) => {
    sock.on('data', (d) => { try { const r = p.feed(d); if (r.length) resolve(r[0]); } catch (e) { reject(e); } });
    sock.on('error', reject);
    sock.on('close', () => reject(new Error('closed before the answer')));
    sock.write(REQ);
  });
  sock.destroy();
  console.log(JSON.stringify({ status: res.status, headers: res.headers, body: res.body.toString('utf8') }));
  process.exit(0);
}

const lat = new Samples();
const statuses = {};
let non2xx = 0, badBody = 0, errors = 0, stopping = false;
const firstError = [];
const tStart = performance.now();
const tMeasure = tStart + o.warmup * 1000;
const tEnd = tMeasure + o.duration * 1000;
let cpuAtMeasure = null;
let cpuAtEnd = null;

function runConnection() {
  return new Promise((resolveConn) => {
    let sock = null, parser = null, sent = 0;
    const send = () => {
      if (performance.now() >= tEnd) { stopping = true; sock.destroy(); resolveConn(); return; }
      sent = performance.now();
      sock.write(REQ);
    };
    const onResponse = (r) => {
      const now = performance.now();
      if (now >= tMeasure && now <= tEnd) {
        lat.push((now - sent) * 1000);
        statuses[r.status] = (statuses[r.status] || 0) + 1;
        if (r.status < 200 || r.status > 299) non2xx++;
        else if (expect && r.body.indexOf(expect) < 0) badBody++;
      }
      if (r.close) { sock.destroy(); reopen(); return; }
      send();
    };
    const fail = (e) => {
      if (performance.now() >= tMeasure && performance.now() <= tEnd) errors++;
      if (firstError.length < 3) firstError.push(String(e && e.message || e));
      if (sock) sock.destroy();
      if (performance.now() >= tEnd) { resolveConn(); return; }
      setTimeout(reopen, 10);
    };
    async function reopen() {
      if (performance.now() >= tEnd) { resolveConn(); return; }
      try {
        const c = await openConnection(connOpts);
        sock = c.sock;
      } catch (e) { fail(e); return; }
      parser = new ResponseParser();
      let dead = false;
      sock.on('data', (d) => {
        let done;
        try { done = parser.feed(d); } catch (e) { dead = true; fail(e); return; }
        for (const r of done) onResponse(r);
      });
      sock.on('error', (e) => { if (!dead && !stopping) { dead = true; fail(e); } });
      sock.on('close', () => { if (!dead && !stopping && performance.now() < tEnd) { dead = true; fail(new Error('closed by the peer')); } });
      send();
    }
    reopen();
  });
}

setTimeout(() => { cpuAtMeasure = process.cpuUsage(); }, Math.max(0, tMeasure - performance.now()));
setTimeout(() => { cpuAtEnd = process.cpuUsage(); }, Math.max(0, tEnd - performance.now()));
await Promise.all(Array.from({ length: o.connections }, runConnection));
const cpuNow = process.cpuUsage();
cpuAtEnd = cpuAtEnd || cpuNow;
const cpuEnd = cpuAtMeasure
  ? { user: cpuAtEnd.user - cpuAtMeasure.user, system: cpuAtEnd.system - cpuAtMeasure.system }
  : { user: 0, system: 0 };
const s = lat.sorted();
const r1 = (x) => Math.round(x);
const out = {
  rps: Math.round((s.length / o.duration) * 10) / 10,
  p50_us: r1(pct(s, 50)), p90_us: r1(pct(s, 90)), p99_us: r1(pct(s, 99)), max_us: r1(s.length ? s[s.length - 1] : NaN),
  requests: s.length, non2xx, bad_body: badBody, errors, statuses,
  client_cpu_pct: Math.round(((cpuEnd.user + cpuEnd.system) / 1000 / (o.duration * 1000)) * 1000) / 10,
  client_cpu_total_ms: Math.round((cpuNow.user + cpuNow.system) / 1000),
};
if (firstError.length) out.first_errors = firstError;
console.log('LOAD ' + JSON.stringify(out));
process.exit(0);
