#!/usr/bin/env node
// score.mjs - run `scrim scrub --rules DIR --jsonl` over the labelled corpus
// and score what it found, per entity type.
//
//   node tests/corpus/score.mjs [--corpus FILE] [--bin PATH] [--rules DIR]
//        [--min-recall R] [--min-recall-soft R] [--soft-types T1,T2]
//        [--max-fp F] [--min-untouched U] [--strict-type]
//        [--json FILE] [--misses N] [--quiet] [--holdout]
//
// Without --corpus the corpus is generated in memory (generate.mjs, default
// seed; --holdout: the held-out templates). The binary is --bin, else $SCRIM_BIN, else build/scrim.
//
// Measures:
//   recall     a labelled value counts as caught only when ONE entity span
//              covers it whole (entity.start <= start && entity.end >= end);
//              masking part of a value is a miss. Any entity type counts (the
//              value is scrubbed either way); the "typed" column is the share
//              of caught values whose covering entity has the labelled type.
//              --strict-type makes recall itself require the labelled type.
//   fp rate    the share of negative lines (no labels) with any entity.
//   untouched  bytes outside every label that lie in no entity span, over
//              all bytes outside labels (positive and negative lines).
// Floors (all optional): --min-recall for every type except the soft ones
// (--soft-types, default PERSON,ADDRESS), --min-recall-soft for those,
// --max-fp and --min-untouched; any floor missed makes the exit status 1.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { generate, generateHoldout } from './generate.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
export const REPO = path.resolve(here, '..', '..');
export const SOFT_TYPES = ['PERSON', 'ADDRESS'];

/** Run scrim over the samples; resolves one entity list per sample. */
export function runScrub(samples, { bin, rules = path.join(REPO, 'rules'), timeoutMs = 120_000 } = {}) {
  bin = bin || process.env.SCRIM_BIN || path.join(REPO, 'build', 'scrim');
  return new Promise((resolve, reject) => {
    const p = spawn(bin, ['scrub', '--rules', rules, '--jsonl'], { stdio: ['pipe', 'pipe', 'pipe'] });
    const out = [];
    let err = '';
    p.stdout.on('data', (d) => out.push(d));
    p.stderr.on('data', (d) => { err += d; });
    const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
    p.on('error', (e) => { clearTimeout(timer); reject(e); });
    p.on('close', (code, signal) => {
      clearTimeout(timer);
      if (code !== 0) {
        reject(new Error(`scrim scrub exited ${code ?? signal}: ${err.slice(0, 2000)}`));
        return;
      }
      const lines = Buffer.concat(out).toString('utf8').split('\n').filter((l) => l.length > 0);
      if (lines.length !== samples.length) {
        reject(new Error(`scrim wrote ${lines.length} lines for ${samples.length} inputs: ${err.slice(0, 2000)}`));
        return;
      }
      resolve(lines.map((l) => JSON.parse(l)));
    });
    p.stdin.on('error', () => {}); // reported through close
    p.stdin.end(samples.map((s) => JSON.stringify({ text: s.text })).join('\n') + '\n');
  });
}

/** Score entity lists (from runScrub) against the samples' labels. */
export function score(samples, results, { strictType = false } = {}) {
  const types = new Map();
  const T = (t) => {
    if (!types.has(t)) types.set(t, { type: t, values: 0, caught: 0, typed: 0, partial: 0, fpLines: 0, misses: [] });
    return types.get(t);
  };
  let negLines = 0, fpLines = 0, outside = 0, touched = 0, values = 0, caught = 0;
  const fps = [];

  samples.forEach((s, i) => {
    const ents = results[i].entities;
    const n = Buffer.byteLength(s.text);
    const inLabel = new Uint8Array(n);
    for (const l of s.labels) inLabel.fill(1, l.start, l.end);
    const inEnt = new Uint8Array(n);
    for (const e of ents) inEnt.fill(1, e.start, e.end);
    for (let b = 0; b < n; b++) {
      if (!inLabel[b]) {
        outside++;
        if (inEnt[b]) touched++;
      }
    }
    if (s.labels.length === 0) {
      negLines++;
      if (ents.length > 0) {
        fpLines++;
        fps.push({ text: s.text, entities: ents });
        for (const t of new Set(ents.map((e) => e.type))) T(t).fpLines++;
      }
      return;
    }
    for (const l of s.labels) {
      const t = T(l.type);
      t.values++;
      values++;
      const cover = ents.filter((e) => e.start <= l.start && e.end >= l.end);
      const same = cover.some((e) => e.type === l.type);
      const ok = strictType ? same : cover.length > 0;
      if (ok) {
        t.caught++;
        caught++;
        if (same) t.typed++;
      } else {
        if (ents.some((e) => e.start < l.end && e.end > l.start)) t.partial++;
        t.misses.push({ text: s.text, label: l, value: Buffer.from(s.text).subarray(l.start, l.end).toString(), entities: ents });
      }
    }
  });

  const rows = [...types.values()].sort((a, b) => a.type.localeCompare(b.type)).map((t) => ({
    ...t,
    recall: t.values ? t.caught / t.values : null,
    typedShare: t.caught ? t.typed / t.caught : null,
  }));
  return {
    rows,
    values,
    caught,
    recall: values ? caught / values : 1,
    lines: samples.length,
    negLines,
    fpLines,
    fpRate: negLines ? fpLines / negLines : 0,
    outsideBytes: outside,
    touchedBytes: touched,
    untouched: outside ? 1 - touched / outside : 1,
    fps,
  };
}

/** Which floors a summary misses; [] when it meets them all. */
export function checkFloors(sum, { minRecall, minRecallSoft, softTypes = SOFT_TYPES, maxFp, minUntouched } = {}) {
  const fails = [];
  for (const r of sum.rows) {
    if (r.values === 0) continue;
    const floor = softTypes.includes(r.type) ? minRecallSoft : minRecall;
    if (floor != null && r.recall < floor) fails.push(`${r.type} recall ${pct(r.recall)} < ${pct(floor)}`);
  }
  if (maxFp != null && sum.fpRate > maxFp) fails.push(`false-positive rate ${pct(sum.fpRate, 2)} > ${pct(maxFp, 2)}`);
  if (minUntouched != null && sum.untouched < minUntouched) fails.push(`untouched ${pct(sum.untouched, 2)} < ${pct(minUntouched, 2)}`);
  return fails;
}

export const pct = (x, d = 1) => (x == null ? '-' : `${(100 * x).toFixed(d)}%`);

/** The per-type table, as text. */
export function formatTable(sum) {
  const head = ['type', 'values', 'caught', 'recall', 'typed', 'partial', 'fp lines'];
  const body = sum.rows.map((r) => [r.type, r.values, r.caught, pct(r.recall), pct(r.typedShare), r.partial, r.fpLines]);
  body.push(['ALL', sum.values, sum.caught, pct(sum.recall, 2), '', sum.rows.reduce((n, r) => n + r.partial, 0), sum.fpLines]);
  const w = head.map((h, i) => Math.max(h.length, ...body.map((row) => String(row[i]).length)));
  const fmt = (row) => row.map((c, i) => (i === 0 ? String(c).padEnd(w[i]) : String(c).padStart(w[i]))).join('  ');
  return [
    fmt(head),
    w.map((n) => '-'.repeat(n)).join('  '),
    ...body.slice(0, -1).map(fmt),
    w.map((n) => '-'.repeat(n)).join('  '),
    fmt(body[body.length - 1]),
    '',
    `negative lines: ${sum.negLines}, with any entity: ${sum.fpLines} (false-positive rate ${pct(sum.fpRate, 2)})`,
    `unlabelled bytes untouched: ${sum.outsideBytes - sum.touchedBytes} of ${sum.outsideBytes} (${pct(sum.untouched, 3)})`,
  ].join('\n');
}

/** The machine-readable summary (no sample texts). */
export function summaryJson(sum) {
  return {
    lines: sum.lines,
    values: sum.values,
    caught: sum.caught,
    recall: round(sum.recall),
    negative_lines: sum.negLines,
    fp_lines: sum.fpLines,
    fp_rate: round(sum.fpRate),
    untouched: round(sum.untouched),
    types: Object.fromEntries(sum.rows.map((r) => [r.type, {
      values: r.values, caught: r.caught, recall: round(r.recall), typed: round(r.typedShare), partial: r.partial, fp_lines: r.fpLines,
    }])),
  };
}
const round = (x) => (x == null ? null : Math.round(x * 1e5) / 1e5);

const show = (s) => JSON.stringify(s).slice(0, 400);

/** The header comment of this file, as help text. */
function usage() {
  const lines = fs.readFileSync(fileURLToPath(import.meta.url), 'utf8').split('\n').slice(1);
  const end = lines.findIndex((l) => !l.startsWith('//'));
  return lines.slice(0, end).map((l) => l.replace(/^\/\/ ?/, '')).join('\n') + '\n';
}

async function main(argv) {
  const o = { softTypes: SOFT_TYPES, misses: 0 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => { if (i + 1 >= argv.length) throw new Error(`${a} needs a value`); return argv[++i]; };
    const num = () => { const v = Number(next()); if (!Number.isFinite(v)) throw new Error(`${a}: not a number`); return v; };
    if (a === '--corpus') o.corpus = next();
    else if (a === '--bin') o.bin = next();
    else if (a === '--rules') o.rules = next();
    else if (a === '--min-recall') o.minRecall = num();
    else if (a === '--min-recall-soft') o.minRecallSoft = num();
    else if (a === '--soft-types') o.softTypes = next().split(',').filter(Boolean);
    else if (a === '--max-fp') o.maxFp = num();
    else if (a === '--min-untouched') o.minUntouched = num();
    else if (a === '--strict-type') o.strictType = true;
    else if (a === '--holdout') o.holdout = true;
    else if (a === '--json') o.json = next();
    else if (a === '--misses') o.misses = num();
    else if (a === '--quiet') o.quiet = true;
    else if (a === '-h' || a === '--help') {
      process.stdout.write(usage());
      return 0;
    } else throw new Error(`unknown argument ${a}`);
  }
  const samples = o.corpus
    ? fs.readFileSync(o.corpus, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l))
    : o.holdout ? generateHoldout() : generate();
  const t0 = Date.now();
  const results = await runScrub(samples, { bin: o.bin, rules: o.rules });
  const ms = Date.now() - t0;
  const sum = score(samples, results, { strictType: o.strictType });
  const js = { ...summaryJson(sum), scrub_ms: ms };
  if (!o.quiet) {
    console.log(formatTable(sum));
    console.log('');
    console.log(JSON.stringify(js));
  }
  if (o.json) fs.writeFileSync(o.json, JSON.stringify(js, null, 2) + '\n');
  if (o.misses > 0) {
    for (const r of sum.rows) {
      for (const m of r.misses.slice(0, o.misses)) {
        console.log(`MISS ${r.type} ${JSON.stringify(m.value)} in ${show(m.text)} -> ${JSON.stringify(m.entities.map((e) => [e.rule, e.start, e.end]))}`);
      }
    }
    for (const f of sum.fps.slice(0, o.misses * 4)) {
      const b = Buffer.from(f.text);
      console.log(`FP ${show(f.text)} -> ${f.entities.map((e) => `${e.rule}:${JSON.stringify(b.subarray(e.start, e.end).toString())}`).join(' ')}`);
    }
  }
  const fails = checkFloors(sum, o);
  for (const f of fails) console.error(`below floor: ${f}`);
  return fails.length ? 1 : 0;
}

if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) {
  main(process.argv.slice(2)).then((c) => { process.exitCode = c; }, (e) => {
    console.error(`score.mjs: ${e.message}`);
    process.exitCode = 2;
  });
}
