#!/usr/bin/env node
// Summaries for bench/proxy_bench.sh and bench/audit_latency.sh, from their
// raw JSON lines.
//
//   node summarize.mjs proxy RAW.jsonl    # interception: load + handshakes
//   node summarize.mjs audit RAW.jsonl    # audit on/off at a fixed rate
//
// Medians are taken over the interleaved rounds. "Added" latency is a
// target's minus the direct baseline's in the same round, and ratios are
// taken per round (two numbers measured a few seconds apart), then the
// median of those: on a shared, noisy machine that is the figure to trust.

import fs from 'node:fs';

const [kind, file] = process.argv.slice(2);
const rows = fs.readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));

const median = (a) => {
  const s = a.filter((x) => Number.isFinite(x)).sort((x, y) => x - y);
  if (!s.length) return NaN;
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const ms = (us, d = 2) => (Number.isFinite(us) ? (us / 1000).toFixed(d) : 'n/a');
const fx = (x, d = 2) => (Number.isFinite(x) ? x.toFixed(d) : 'n/a');
const sx = (x, d = 2) => (Number.isFinite(x) ? (x >= 0 ? '+' : '') + x.toFixed(d) : 'n/a');
const pad = (s, n) => String(s).padStart(n);
const padr = (s, n) => String(s).padEnd(n);

function proxy() {
  const load = rows.filter((r) => r.kind === 'load');
  const conns = [...new Set(load.map((r) => r.conns))];
  const targets = [...new Set(load.map((r) => r.target))];
  const order = ['direct', 'scrim', 'mitmproxy', 'squid'].filter((t) => targets.includes(t));
  const get = (t, c, round) => load.find((r) => r.target === t && r.conns === c && r.round === round);
  const rounds = (c) => [...new Set(load.filter((r) => r.conns === c).map((r) => r.round))];

  console.log('## summary');
  console.log();
  console.log('Throughput and latency through CONNECT + TLS interception: POST of a 4,096-byte');
  console.log('chat body, keep-alive connections (one CONNECT + handshake each, then requests');
  console.log('back to back). Median over the rounds; latency in ms; +p50/+p99 = added over');
  console.log('direct in the same round; other = CPU taken by processes outside the benchmark');
  console.log('(% of one CPU, median over the rounds); client = the load generator\'s own CPU.');
  console.log();
  console.log(`${padr('target', 10)} ${pad('conns', 5)} ${pad('req/s', 8)} ${pad('p50', 8)} ${pad('p99', 8)} ${pad('+p50', 8)} ${pad('+p99', 8)} ${pad('errors', 7)} ${pad('non-2xx', 7)} ${pad('other', 6)} ${pad('client', 7)}`);
  const summary = {};
  for (const c of conns) {
    for (const t of order) {
      const rs = rounds(c).map((r) => [get(t, c, r), get('direct', c, r)]).filter(([x]) => x);
      const s = {
        rps: median(rs.map(([x]) => x.r.rps)),
        p50: median(rs.map(([x]) => x.r.p50_us)),
        p99: median(rs.map(([x]) => x.r.p99_us)),
        add50: median(rs.map(([x, d]) => (d ? x.r.p50_us - d.r.p50_us : NaN))),
        add99: median(rs.map(([x, d]) => (d ? x.r.p99_us - d.r.p99_us : NaN))),
        errors: rs.reduce((a, [x]) => a + x.r.errors, 0),
        non2xx: rs.reduce((a, [x]) => a + x.r.non2xx + (x.r.bad_body || 0), 0),
        other: median(rs.map(([x]) => x.other_pct)),
        client: median(rs.map(([x]) => x.r.client_cpu_pct)),
      };
      summary[`${t},${c}`] = s;
      const isDirect = t === 'direct';
      console.log(`${padr(t, 10)} ${pad(c, 5)} ${pad(Math.round(s.rps), 8)} ${pad(ms(s.p50), 8)} ${pad(ms(s.p99), 8)} ${pad(isDirect ? '' : ms(s.add50), 8)} ${pad(isDirect ? '' : ms(s.add99), 8)} ${pad(s.errors, 7)} ${pad(s.non2xx, 7)} ${pad(Math.round(s.other) + '%', 6)} ${pad(Math.round(s.client) + '%', 7)}`);
    }
  }

  console.log();
  console.log('Per-round ratios, scrim against each other proxy (median over the rounds;');
  console.log('req/s: > 1 is better for scrim; added p50/p99: < 1 is better for scrim):');
  console.log();
  console.log(`${padr('against', 10)} ${pad('conns', 5)} ${pad('req/s', 7)} ${pad('+p50', 7)} ${pad('+p99', 7)}   rounds (req/s ratio)`);
  const ratio = {};
  for (const c of conns) {
    for (const o of order.filter((t) => t !== 'direct' && t !== 'scrim')) {
      const per = rounds(c).map((r) => {
        const s = get('scrim', c, r), x = get(o, c, r), d = get('direct', c, r);
        if (!s || !x || !d) return null;
        return {
          rps: s.r.rps / x.r.rps,
          a50: (s.r.p50_us - d.r.p50_us) / (x.r.p50_us - d.r.p50_us),
          a99: (s.r.p99_us - d.r.p99_us) / (x.r.p99_us - d.r.p99_us),
        };
      }).filter(Boolean);
      const q = { rps: median(per.map((p) => p.rps)), a50: median(per.map((p) => p.a50)), a99: median(per.map((p) => p.a99)), per };
      ratio[`${o},${c}`] = q;
      console.log(`${padr(o, 10)} ${pad(c, 5)} ${pad(fx(q.rps), 7)} ${pad(fx(q.a50), 7)} ${pad(fx(q.a99), 7)}   ${per.map((p) => fx(p.rps)).join(' ')}`);
    }
  }

  // Is the client the limit? The direct baseline goes through the same
  // client with the provider on the same CPU.
  console.log();
  for (const c of conns) {
    const d = summary[`direct,${c}`];
    const best = Math.max(...order.filter((t) => t !== 'direct').map((t) => summary[`${t},${c}`].rps));
    if (d) console.log(`client check, ${c} connection(s): the same client reaches ${Math.round(d.rps)} req/s direct, ${fx(d.rps / best, 1)}x the fastest proxy's ${Math.round(best)}`);
  }

  const hs = rows.filter((r) => r.kind === 'handshake').map((r) => r.r);
  if (hs.length) {
    const noise = rows.find((r) => r.kind === 'handshake_noise');
    console.log();
    console.log(`Handshakes: per name, a new connection + CONNECT + full TLS handshake (no`);
    console.log(`resumption) to a name the proxy has not seen (fresh: the proxy mints a leaf`);
    console.log(`certificate), then twice more to the same name (cached). mint = fresh minus`);
    console.log(`cached for the same name, taken moments apart. In ms; p50 (p90) over the names.`);
    console.log(`direct = plain TLS handshakes straight to the provider (no CONNECT), the`);
    console.log(`machine's reference; its "mint" shows what the method reads when nothing is`);
    console.log(`minted (first connection after a pause).${noise ? ` Other processes (the client included): ${noise.other_pct}% of a CPU.` : ''}`);
    console.log();
    console.log(`${padr('target', 10)} ${padr('leaf key', 14)} ${pad('names', 5)} ${pad('CONNECT', 14)} ${pad('fresh TLS', 14)} ${pad('cached TLS', 14)} ${pad('mint', 14)} ${pad('errors', 6)}`);
    const f = (p) => `${fx(p.p50)} (${fx(p.p90)})`;
    for (const h of hs) {
      console.log(`${padr(h.name, 10)} ${padr(h.leaf || '?', 14)} ${pad(h.n, 5)} ${pad(h.name === 'direct' ? '' : f(h.connect_ms), 14)} ${pad(f(h.fresh_ms), 14)} ${pad(f(h.cached_ms), 14)} ${pad(f(h.mint_ms), 14)} ${pad(h.errors, 6)}`);
    }
    const hd = hs.find((h) => h.name === 'direct');
    if (hd) {
      console.log();
      console.log('Handshake with a cached certificate, added over the direct handshake (p50):');
      for (const h of hs.filter((x) => x.name !== 'direct')) {
        console.log(`  ${padr(h.name, 10)} ${sx(h.cached_ms.p50 - hd.cached_ms.p50)} ms TLS, ${sx(h.connect_ms.p50 - hd.connect_ms.p50)} ms for the CONNECT round trip`);
      }
    }
  }

  if (order.includes('squid')) {
    console.log();
    console.log('Targets from the issue (scrim, scrubbing included, against Squid, per-round ratios):');
    for (const c of conns) {
      const q = ratio[`squid,${c}`];
      const s = summary[`scrim,${c}`], x = summary[`squid,${c}`];
      if (!q) continue;
      const v = (ok) => (ok ? 'MET    ' : 'NOT MET');
      console.log(`  ${c} connection(s): throughput >= Squid's    ${v(q.rps >= 1)}  scrim ${Math.round(s.rps)} req/s, squid ${Math.round(x.rps)} req/s (${fx(q.rps)}x)`);
      console.log(`  ${c} connection(s): added p99 <= Squid's     ${v(q.a99 <= 1)}  scrim +${ms(s.add99)} ms, squid +${ms(x.add99)} ms (${fx(q.a99)}x)`);
    }
  }
  const bad = load.filter((r) => r.r.errors || r.r.non2xx || r.r.bad_body);
  for (const b of bad) console.log(`WARNING: ${b.target} c=${b.conns} round ${b.round}: ${b.r.errors} errors, ${b.r.non2xx} non-2xx, ${b.r.bad_body || 0} wrong bodies${b.r.first_errors ? ' (' + b.r.first_errors.join('; ') + ')' : ''}`);
}

function audit() {
  const rs = rows.filter((r) => r.kind === 'rate');
  const targets = [...new Set(rs.map((r) => r.target))];
  const order = ['direct', 'audit-off', 'audit-on'].filter((t) => targets.includes(t));
  const roundsOf = [...new Set(rs.map((r) => r.round))];
  const get = (t, round) => rs.find((r) => r.target === t && r.round === round);
  console.log('## summary');
  console.log();
  const any = rs[0];
  console.log(`Fixed rate ${any ? any.r.rate : '?'} req/s, open loop, ${any ? any.r.duration : '?'} s per run; latency in ms from`);
  console.log('writing a request to the end of its answer; +p50/+p99 = added over direct in the');
  console.log('same round. Median over the rounds; other = CPU taken by processes outside the');
  console.log('benchmark (% of one CPU).');
  console.log();
  console.log(`${padr('target', 10)} ${pad('sent/s', 7)} ${pad('p50', 7)} ${pad('p90', 7)} ${pad('p99', 7)} ${pad('p99.9', 7)} ${pad('+p50', 7)} ${pad('+p99', 7)} ${pad('late', 6)} ${pad('errors', 6)} ${pad('non-2xx', 7)} ${pad('other', 6)}`);
  const sum = {};
  for (const t of order) {
    const pr = roundsOf.map((r) => [get(t, r), get('direct', r)]).filter(([x]) => x);
    const s = {
      sent: median(pr.map(([x]) => x.r.sent_rps)),
      p50: median(pr.map(([x]) => x.r.p50_us)), p90: median(pr.map(([x]) => x.r.p90_us)),
      p99: median(pr.map(([x]) => x.r.p99_us)), p999: median(pr.map(([x]) => x.r.p999_us)),
      add50: median(pr.map(([x, d]) => (d ? x.r.p50_us - d.r.p50_us : NaN))),
      add99: median(pr.map(([x, d]) => (d ? x.r.p99_us - d.r.p99_us : NaN))),
      late: median(pr.map(([x]) => x.r.late_pct)),
      errors: pr.reduce((a, [x]) => a + x.r.errors, 0),
      non2xx: pr.reduce((a, [x]) => a + x.r.non2xx, 0),
      other: median(pr.map(([x]) => x.other_pct)),
    };
    sum[t] = s;
    const d = t === 'direct';
    console.log(`${padr(t, 10)} ${pad(Math.round(s.sent), 7)} ${pad(ms(s.p50, 3), 7)} ${pad(ms(s.p90, 3), 7)} ${pad(ms(s.p99, 3), 7)} ${pad(ms(s.p999, 3), 7)} ${pad(d ? '' : ms(s.add50, 3), 7)} ${pad(d ? '' : ms(s.add99, 3), 7)} ${pad(fx(s.late, 1) + '%', 6)} ${pad(s.errors, 6)} ${pad(s.non2xx, 7)} ${pad(Math.round(s.other) + '%', 6)}`);
  }
  console.log();
  console.log('Per round, in ms: p50 and p99 of direct / audit off / audit on, and on minus off:');
  const diffs = [], diffs50 = [];
  const offDiffs = []; // per configuration: max - min of its p99 over the rounds
  const sg = (x) => `${x >= 0 ? '+' : ''}${ms(x, 3)}`;
  for (const r of roundsOf) {
    const d = get('direct', r), off = get('audit-off', r), on = get('audit-on', r);
    if (!off || !on) continue;
    diffs.push(on.r.p99_us - off.r.p99_us);
    diffs50.push(on.r.p50_us - off.r.p50_us);
    console.log(`  round ${r}: p50 ${d ? ms(d.r.p50_us, 3) : 'n/a'} / ${ms(off.r.p50_us, 3)} / ${ms(on.r.p50_us, 3)} ${sg(on.r.p50_us - off.r.p50_us)}` +
      `   p99 ${d ? ms(d.r.p99_us, 3) : 'n/a'} / ${ms(off.r.p99_us, 3)} / ${ms(on.r.p99_us, 3)} ${sg(on.r.p99_us - off.r.p99_us)}` +
      `   (other ${off.other_pct}% / ${on.other_pct}%)`);
  }
  // noise: how much the same configuration moves between rounds
  for (const t of ['audit-off', 'audit-on']) {
    const v = roundsOf.map((r) => get(t, r)).filter(Boolean).map((x) => x.r.p99_us);
    if (v.length > 1) offDiffs.push(Math.max(...v) - Math.min(...v));
  }
  const md = median(diffs);
  const spread = offDiffs.length ? Math.max(...offDiffs) : NaN;
  console.log();
  console.log(`audit on minus off, median over ${diffs.length} round(s): p50 ${sg(median(diffs50))} ms, p99 ${sg(md)} ms`);
  console.log(`noise: the same configuration's p99 moved by up to ${ms(spread, 3)} ms between rounds`);
  const pos = diffs.filter((x) => x > 0).length;
  // Met when what audit adds to p99 (on minus off, median over the rounds)
  // is no larger than how far one configuration moves between rounds, or
  // under 0.1 ms, or negative (audit on came out faster: nothing to see).
  const met = md <= 100 || (Number.isFinite(spread) && md <= spread);
  console.log(`Target from the issue (no difference beyond noise at this rate): ${met ? 'MET' : 'NOT MET'}` +
    ` (on slower than off in ${pos} of ${diffs.length} rounds)`);
}

if (kind === 'proxy') proxy();
else if (kind === 'audit') audit();
else throw new Error('usage: summarize.mjs proxy|audit RAW.jsonl');
