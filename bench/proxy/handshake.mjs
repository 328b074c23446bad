#!/usr/bin/env node
// Handshake timings through intercepting proxies, for bench/proxy_bench.sh.
//
//   node handshake.mjs --spec contenders.json --count 40 --tag RUNID
//
// contenders.json: [{"name": "scrim", "target": "127.0.0.1:PORT",
//   "ca": "ca.pem", "proxyKey": "sk-scrim-..."}, ..., {"name": "direct",
//   "target": "127.0.0.1:PORT", "ca": "testca.pem", "direct": true,
//   "sni": "api.openai.com"}]
//
// For i = 1..count and each contender in turn (the order rotates with i,
// so no contender always goes first after a pause): a new TCP connection
// to the proxy, `CONNECT hI.TAG.mint.test:443`, a full TLS handshake (no
// session resumption) with that name as SNI, checked against the proxy's
// CA, and close; then the same name twice more. The first is the first
// CONNECT to that name (the proxy mints a leaf certificate for it), the
// other two find the certificate in the proxy's cache. A `direct`
// contender does plain TLS handshakes to the server (no CONNECT), the
// machine's reference handshake.
//
// Prints one line per contender: HANDSHAKE {"name":..,"leaf":"EC
// prime256v1"|"RSA 2048","connect_ms":P,"fresh_ms":P,"cached_ms":P,
// "mint_ms":P,"n":..,"errors":..} where P = {"p50":..,"p90":..};
// connect_ms = TCP connect + the CONNECT answer; fresh_ms / cached_ms =
// the TLS handshake after it; mint_ms = fresh minus cached for the same
// name, taken moments apart (so a busy machine mostly cancels out).

import fs from 'node:fs';
import { openConnection, pct, parseArgs, hostPort } from './common.mjs';

const o = parseArgs(process.argv.slice(2), { spec: '', count: 40, tag: 'x', gap: 10 });
const spec = JSON.parse(fs.readFileSync(o.spec, 'utf8'));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const st = spec.map((c) => ({
  ...c,
  target: hostPort(c.target),
  caPem: fs.readFileSync(c.ca, 'utf8'),
  proxyAuth: c.proxyKey ? 'Basic ' + Buffer.from(`u:${c.proxyKey}`).toString('base64') : null,
  connect: [], fresh: [], cached: [], mint: [], errors: 0, firstErrors: [], leaf: null,
}));

async function handshake(c, name) {
  const r = await openConnection({
    target: c.target, connect: c.direct ? null : `${name}:443`, proxyAuth: c.proxyAuth,
    tls: { servername: c.direct ? c.sni : name, ca: c.caPem },
  });
  if (!c.leaf) {
    const cert = r.sock.getPeerCertificate();
    c.leaf = cert.asn1Curve ? `EC ${cert.asn1Curve}` : cert.bits ? `RSA ${cert.bits}` : 'unknown';
  }
  r.sock.destroy();
  return { connect: r.tConnect, tls: r.tTls - r.tConnect };
}

for (let i = 1; i <= o.count; i++) {
  for (let k = 0; k < st.length; k++) {
    const c = st[(i + k) % st.length];
    const name = `h${i}.${o.tag}.mint.test`;
    try {
      const a = await handshake(c, name);
      await sleep(o.gap);
      const b = await handshake(c, name);
      await sleep(o.gap);
      const d = await handshake(c, name);
      c.connect.push(a.connect, b.connect, d.connect);
      c.fresh.push(a.tls);
      const cached = Math.min(b.tls, d.tls);
      c.cached.push(b.tls, d.tls);
      c.mint.push(a.tls - cached);
    } catch (e) {
      c.errors++;
      if (c.firstErrors.length < 3) c.firstErrors.push(`${name}: ${e.message}`);
    }
    await sleep(o.gap);
  }
}

const r3 = (x) => Math.round(x * 1000) / 1000;
const P = (a) => { a.sort((x, y) => x - y); return { p50: r3(pct(a, 50)), p90: r3(pct(a, 90)) }; };
for (const c of st) {
  const out = {
    name: c.name, leaf: c.leaf, n: c.fresh.length, errors: c.errors,
    connect_ms: P(c.connect), fresh_ms: P(c.fresh), cached_ms: P(c.cached), mint_ms: P(c.mint),
  };
  if (c.firstErrors.length) out.first_errors = c.firstErrors;
  console.log('HANDSHAKE ' + JSON.stringify(out));
}
