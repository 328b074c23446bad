// PDF in `scrim index add`: a two-page PDF written here by hand (no tool
// needed) is indexed through poppler, found by search with the page it is
// on, and shown to the gateway's context like any document; a damaged PDF
// fails that file only, with its name and the reason. A build without
// poppler-glib says so instead of skipping PDFs silently.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { execFile, tempDir, SCRIM_BIN } from './lib.mjs';

/**
 * A minimal PDF 1.4: one page per entry of `pages` (each a list of text
 * lines), Helvetica, with a correct cross-reference table.
 */
export function makePdf(pages) {
  const esc = (s) => s.replace(/[\\()]/g, (c) => `\\${c}`);
  const objs = [];
  const pageIds = pages.map((_, i) => 4 + i * 2);
  objs[1] = '<< /Type /Catalog /Pages 2 0 R >>';
  objs[2] = `<< /Type /Pages /Kids [${pageIds.map((id) => `${id} 0 R`).join(' ')}] /Count ${pages.length} >>`;
  objs[3] = '<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>';
  pages.forEach((lines, i) => {
    const stream = `BT /F1 12 Tf 72 720 Td 16 TL ${lines.map((l) => `(${esc(l)}) Tj T*`).join(' ')} ET\n`;
    objs[pageIds[i]] = '<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] '
      + `/Contents ${pageIds[i] + 1} 0 R /Resources << /Font << /F1 3 0 R >> >> >>`;
    objs[pageIds[i] + 1] = `<< /Length ${Buffer.byteLength(stream)} >>\nstream\n${stream}endstream`;
  });
  let out = '%PDF-1.4\n';
  const offsets = [];
  for (let id = 1; id < objs.length; id++) {
    offsets[id] = Buffer.byteLength(out);
    out += `${id} 0 obj\n${objs[id]}\nendobj\n`;
  }
  const xref = Buffer.byteLength(out);
  out += `xref\n0 ${objs.length}\n0000000000 65535 f \n`;
  for (let id = 1; id < objs.length; id++) out += `${String(offsets[id]).padStart(10, '0')} 00000 n \n`;
  out += `trailer\n<< /Size ${objs.length} /Root 1 0 R >>\nstartxref\n${xref}\n%%EOF\n`;
  return Buffer.from(out, 'latin1');
}

let dir;
let docs;
let db;
let withPdf;

async function scrimIndex(...args) {
  try {
    const r = await execFile(SCRIM_BIN, ['index', ...args, '--db', db], { timeout: 60_000 });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (e) {
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

before(async () => {
  dir = tempDir('scrim-pdf-');
  docs = path.join(dir, 'docs');
  fs.mkdirSync(docs);
  db = path.join(dir, 'test.db');
  fs.writeFileSync(path.join(docs, 'report.pdf'), makePdf([
    ['Quarterly facilities report', 'The cafeteria reopens after the kitchen refit.'],
    ['Plant room', 'The aurora turbine maintenance window is every Tuesday night.', 'Ask the duty engineer (x4410).'],
  ]));
  fs.writeFileSync(path.join(docs, 'notes.md'), '# Notes\n\nNothing about machines here.\n');
  withPdf = /^poppler-glib \d/m.test((await execFile(SCRIM_BIN, ['version'])).stdout);
});

after(() => fs.rmSync(dir, { recursive: true, force: true }));

test('a PDF is indexed and found, with the page it is on', async (t) => {
  if (!withPdf) {
    const r = await scrimIndex('add', path.join(docs, 'report.pdf'));
    assert.match(r.stderr, /report\.pdf: skipped: PDF support was not built/);
    t.skip('this scrim was built without poppler-glib');
    return;
  }
  const r = await scrimIndex('add', docs);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /2 indexed/);
  const s = await scrimIndex('search', '--json', '-k', '1', 'when is the aurora turbine maintenance window');
  assert.equal(s.code, 0, s.stderr);
  const hit = JSON.parse(s.stdout).hits[0];
  assert.match(hit.file, /report\.pdf$/);
  assert.match(hit.text, /aurora turbine maintenance window is every Tuesday night/);
  assert.match(hit.title, /^pages? (1-)?2$/);
  const st = JSON.parse((await scrimIndex('stats', '--json')).stdout);
  assert.equal(st.files, 2);
  // Unchanged: not read again.
  const again = await scrimIndex('add', docs);
  assert.match(again.stdout, /0 indexed .* 2 unchanged/);
});

test('a damaged PDF fails that file only, saying which and why', async (t) => {
  if (!withPdf) { t.skip('no PDF support in this build'); return; }
  const bad = path.join(docs, 'broken.pdf');
  fs.writeFileSync(bad, Buffer.from('%PDF-1.4\nthis is not really a PDF at all\n'));
  const r = await scrimIndex('add', docs);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /broken\.pdf: /);
  const s = await scrimIndex('search', '-k', '1', 'aurora turbine');
  assert.equal(s.code, 0, s.stderr);
  assert.match(s.stdout, /report\.pdf/);
  fs.rmSync(bad);
});
