// Scrubbing end to end: personal data in every API shape reaches the
// provider only as placeholders and comes back to the client as it was
// written, in whole answers and in streams cut at every byte; everything
// else is forwarded byte for byte; requests that cannot be scrubbed fail
// closed; block and local rules; scrub = off; nothing personal in the logs.
//
// Real clients throughout: the openai and @anthropic-ai/sdk packages, curl
// and node's http client, against fake providers (../fake_provider) that
// record what they receive and echo it (x-fake-echo, x-fake-split-bytes,
// x-fake-transform, x-fake-tool-call).
//
// Tests marked document gateway bugs found while writing this file:
// they assert the correct behaviour, fail today, and do not fail the suite.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import { startFakeProvider, embeddingFor, PLACEHOLDER_RE } from '../fake_provider/provider.mjs';
import {
  startScrim, configFor, execFile, request, auth, chatBody, parseSSE, chatStreamContent, errorOf,
  tempDir, REPO, SCRIM_BIN, TEST_KEY, show,
} from './lib.mjs';

const OTHER_KEY = 'sk-scrim-other-9876543210';

// ---------------------------------------------------------------- data

/** The personal values these tests plant, and the type scrim must give each. */
const V = {
  email: 'maria.gonzalez@example.com',
  phone: '+1 415 555 2671',
  card: '4111 1111 1111 1111',
  iban: 'DE89 3704 0044 0532 0130 00',
  ssn: '123-45-6789',
  aws: 'AKIAIOSFODNN7EXAMPLE',
  github: 'ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789',
  ipv4: '203.0.113.7',
  name: 'Maria Gonzalez',
};
const TYPE = {
  email: 'EMAIL', phone: 'PHONE', card: 'CREDIT_CARD', iban: 'IBAN', ssn: 'US_SSN',
  aws: 'AWS_ACCESS_KEY', github: 'GITHUB_TOKEN', ipv4: 'IP_ADDRESS', name: 'PERSON',
};
/** Each value in a sentence that gives it its context. */
const SAY = {
  email: `mail me at ${V.email}`,
  phone: `my phone is ${V.phone}`,
  card: `card ${V.card}`,
  iban: `IBAN ${V.iban}`,
  ssn: `SSN ${V.ssn}`,
  aws: `aws key ${V.aws}`,
  github: `token ${V.github}`,
  ipv4: `server ${V.ipv4}`,
  name: `my name is ${V.name}`,
};
/** Base64 that holds what rules would catch if it were scanned as text: /card/ and +AWS key+. */
const TRAP_B64 = 'iVBORw0KGgoAAAANSUhEUgAAAAEAAAAB/5500000000000004/+AKIAQWERTYUIOPASDFGH+CAYAAAAfFcSJAAAADUlEQVR42mNk';

const ALL = Object.keys(V);
const say = (...keys) => keys.map((k) => SAY[k]).join('; ') + '.';

/** Every personal value any test here sends: none may appear in a log. */
const planted = new Set(Object.values(V));
const plant = (...vals) => { for (const v of vals) planted.add(v); return vals[0]; };

const PH_SPLIT = /(<[A-Z][A-Z0-9_]*_[0-9a-f]{6,16}>)/;
const placeholdersIn = (s) => [...String(s).matchAll(PLACEHOLDER_RE)].map((m) => m[0]);
const escapeRe = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

// ---------------------------------------------------------------- fixtures

let provider;      // the routed fake provider (OpenAI and Anthropic shapes)
let scrim;         // repo rules, log_level debug, two client keys
let localFake;     // the fake behind [gateway] local_provider
let policyScrim;   // repo rules + block, local and catastrophic test rules
let offScrim;      // scrub = off
let rulesDir;
const logs = [];   // [name, () => stderr] of every scrim started here

before(async () => {
  provider = await startFakeProvider();
  localFake = await startFakeProvider();
  scrim = await startScrim({
    config: await configFor({
      providerUrl: provider.url,
      keys: { test: TEST_KEY, other: OTHER_KEY },
      gateway: { log_level: 'debug' },
    }),
  });
  logs.push(['main', () => scrim.stderr()]);

  rulesDir = tempDir('scrim-rules-');
  for (const f of fs.readdirSync(path.join(REPO, 'rules'))) {
    if (f.endsWith('.rules')) fs.copyFileSync(path.join(REPO, 'rules', f), path.join(rulesDir, f));
  }
  fs.writeFileSync(path.join(rulesDir, 'zz-scrub-test.rules'), [
    '# Rules for tests/integration/scrub.test.mjs',
    '',
    '[rule test.block_topsecret]',
    'type = CLASSIFIED',
    'pattern = \\bTOPSECRET\\b',
    'anchor = literals TOPSECRET',
    'action = block',
    'match = this is [[TOPSECRET]] material',
    'nomatch = topsecret in lower case',
    '',
    '[rule test.local_confidential]',
    'type = CONFIDENTIAL',
    'pattern = \\bCONFIDENTIAL\\b',
    'anchor = literals CONFIDENTIAL',
    'action = local',
    'match = [[CONFIDENTIAL]] report',
    '',
    '# Exponential backtracking on "aaaa...ab": must hit the match limit.',
    '[rule test.catastrophic]',
    'type = RUNAWAY',
    'pattern = ^(a+)+$',
    'anchor = any',
    'match = [[aaaa]]',
    '',
  ].join('\n'));
  policyScrim = await startScrim({
    config: await configFor({
      providerUrl: provider.url,
      gateway: { log_level: 'debug', rules_dir: rulesDir, local_provider: 'localfake' },
      extra: `[provider localfake]\nbase_url = ${localFake.url}/v1\nauth_header = none\nconnect_timeout = 2s\ntimeout = 30s\n`,
    }),
  });
  logs.push(['policy', () => policyScrim.stderr()]);

  offScrim = await startScrim({
    config: await configFor({ providerUrl: provider.url, gateway: { log_level: 'debug', scrub: 'off' } }),
  });
  logs.push(['scrub=off', () => offScrim.stderr()]);
});

after(async () => {
  for (const s of [scrim, policyScrim, offScrim]) if (s) await s.stop();
  if (provider) await provider.close();
  if (localFake) await localFake.close();
  if (rulesDir) fs.rmSync(rulesDir, { recursive: true, force: true });
});

// ---------------------------------------------------------------- clients

/** A fetch that records the body of every request the SDK sends. */
function capturing(sent) {
  return async (url, init) => {
    sent.push(init?.body);
    return fetch(url, init);
  };
}

function openai({ key = TEST_KEY, sent, headers, gw = scrim } = {}) {
  return new OpenAI({
    baseURL: `${gw.url}/v1`, apiKey: key, maxRetries: 0, timeout: 20_000,
    ...(sent ? { fetch: capturing(sent) } : {}), defaultHeaders: headers,
  });
}

function anthropic({ key = TEST_KEY, sent, headers, gw = scrim } = {}) {
  return new Anthropic({
    baseURL: `${gw.url}/anthropic`, apiKey: key, maxRetries: 0, timeout: 20_000,
    ...(sent ? { fetch: capturing(sent) } : {}), defaultHeaders: headers,
  });
}

/** curl -sS -D - [args]: {status, headers, body}. */
async function curl(args) {
  const { stdout } = await execFile('curl', ['-sS', '-D', '-', '--max-time', '20', ...args], { maxBuffer: 16 << 20 });
  const i = stdout.indexOf('\r\n\r\n');
  assert.ok(i > 0, `curl output has no header block: ${stdout.slice(0, 300)}`);
  const head = stdout.slice(0, i).split('\r\n');
  const headers = {};
  for (const l of head.slice(1)) {
    const c = l.indexOf(':');
    if (c > 0) headers[l.slice(0, c).trim().toLowerCase()] = l.slice(c + 1).trim();
  }
  return { status: Number(head[0].split(' ')[1]), headers, body: stdout.slice(i + 4) };
}

/** curl -N a JSON body to scrim at path p with extra headers. */
function curlPost(gw, p, body, headers = {}) {
  const args = ['-N', '-H', `Authorization: Bearer ${TEST_KEY}`, '-H', 'content-type: application/json'];
  for (const [k, v] of Object.entries(headers)) args.push('-H', `${k}: ${v}`);
  args.push('--data-binary', typeof body === 'string' ? body : JSON.stringify(body), `${gw.url}${p}`);
  return curl(args);
}

/** POST through node's http client. */
function post(gw, p, body, headers = {}) {
  return request(gw.port, { method: 'POST', path: p, headers: { ...auth(), ...headers }, body });
}

/** The text of an Anthropic SSE stream (text deltas) and its tool input JSON. */
function anthropicStream(text) {
  let out = '';
  let json = '';
  for (const e of parseSSE(text)) {
    let j;
    try { j = JSON.parse(e.data); } catch { continue; }
    if (j.type === 'content_block_delta' && j.delta.type === 'text_delta') out += j.delta.text;
    if (j.type === 'content_block_delta' && j.delta.type === 'input_json_delta') json += j.delta.partial_json;
  }
  return { text: out, json };
}

/** Text deltas and the tool-call argument pieces of an OpenAI chat SSE stream, per choice. */
function chatStream(text) {
  const content = {};
  const args = {};
  for (const e of parseSSE(text)) {
    if (e.data === '[DONE]') continue;
    let j;
    try { j = JSON.parse(e.data); } catch { continue; }
    for (const c of j.choices || []) {
      if (typeof c.delta?.content === 'string') content[c.index] = (content[c.index] ?? '') + c.delta.content;
      for (const tc of c.delta?.tool_calls || []) {
        if (typeof tc.function?.arguments === 'string') args[c.index] = (args[c.index] ?? '') + tc.function.arguments;
      }
    }
  }
  return { content, args };
}

// ---------------------------------------------------------------- checks

/**
 * Line the body the provider got up with the one the client sent: same
 * structure, keys in the same order, same numbers; strings equal except
 * where placeholders stand. Returns Map(placeholder -> original value).
 */
function align(orig, got, map = new Map(), where = '$') {
  if (typeof orig === 'string') {
    assert.equal(typeof got, 'string', `${where}: a string became ${JSON.stringify(got)}`);
    if (orig === got) return map;
    const parts = got.split(PH_SPLIT);
    assert.ok(parts.length > 1, `${where}: changed without a placeholder:\n  sent: ${JSON.stringify(orig)}\n  got:  ${JSON.stringify(got)}`);
    let re = '^';
    const phs = [];
    parts.forEach((p, i) => {
      if (i % 2) { re += '([\\s\\S]+?)'; phs.push(p); } else re += escapeRe(p);
    });
    const m = new RegExp(`${re}$`).exec(orig);
    assert.ok(m, `${where}: the scrubbed string does not line up with the original:\n  sent: ${JSON.stringify(orig)}\n  got:  ${JSON.stringify(got)}`);
    phs.forEach((ph, i) => {
      if (map.has(ph)) assert.equal(map.get(ph), m[i + 1], `${where}: ${ph} stands for two different values`);
      map.set(ph, m[i + 1]);
    });
    return map;
  }
  if (Array.isArray(orig)) {
    assert.ok(Array.isArray(got), `${where}: an array became ${JSON.stringify(got)}`);
    assert.equal(got.length, orig.length, `${where}: array length changed`);
    orig.forEach((x, i) => align(x, got[i], map, `${where}[${i}]`));
    return map;
  }
  if (orig && typeof orig === 'object') {
    assert.ok(got && typeof got === 'object' && !Array.isArray(got), `${where}: an object became ${JSON.stringify(got)}`);
    assert.deepEqual(Object.keys(got), Object.keys(orig), `${where}: keys or their order changed`);
    for (const k of Object.keys(orig)) align(orig[k], got[k], map, `${where}.${k}`);
    return map;
  }
  assert.equal(got, orig, `${where}: a ${typeof orig} changed`);
  return map;
}

/**
 * The provider's raw body holds none of the values of `keys` (raw or
 * decoded), each value stands behind a placeholder of its type, nothing
 * else was replaced, and the rest lines up with what the client sent.
 */
function assertScrubbed(sentText, recBody, keys = ALL) {
  const orig = JSON.parse(sentText);
  const got = JSON.parse(recBody);
  const decoded = JSON.stringify(got);
  for (const k of keys) {
    assert.ok(sentText.includes(V[k]) || JSON.stringify(orig).includes(V[k]), `test bug: the ${k} value is not in the request`);
    assert.ok(!recBody.includes(V[k]) && !decoded.includes(V[k]), `the ${k} value ${V[k]} reached the provider: ${recBody}`);
  }
  assert.ok(placeholdersIn(recBody).length >= keys.length, `expected placeholders at the provider: ${recBody}`);
  const map = align(orig, got);
  for (const k of keys) {
    const hit = [...map].find(([, v]) => v === V[k]);
    assert.ok(hit, `no placeholder stands for the whole ${k} value ${V[k]}; map: ${JSON.stringify([...map])}`);
    assert.match(hit[0], new RegExp(`^<${TYPE[k]}_[0-9a-f]{6,}>$`), `the ${k} value got a placeholder of the wrong type`);
  }
  const values = Object.values(V);
  for (const [ph, v] of map) assert.ok(values.includes(v), `harmless text ${JSON.stringify(v)} was replaced by ${ph}`);
  return map;
}

/** The one request the fake recorded since the last reset. */
function onlyRecord(fake = provider) {
  assert.equal(fake.requests.length, 1, `expected exactly one upstream request, got ${fake.requests.length}`);
  return fake.requests[0];
}

// ================================================================ 0. the fake's knobs

test('0. the fake provider cuts replies into N-byte events and garbles placeholders as asked (direct, without scrim)', async () => {
  const direct = (body, headers) => request(provider.port, { method: 'POST', path: '/v1/chat/completions', headers, body });
  const text = 'mail <EMAIL_7f3a9c> to ключ <US_SSN_00aa11>';
  const want = {
    '': `echo: ${text}`,
    lower: 'echo: mail <email_7f3a9c> to ключ <us_ssn_00aa11>',
    nobrackets: 'echo: mail EMAIL_7f3a9c to ключ US_SSN_00aa11',
    markdown: 'echo: mail <EMAIL\\_7f3a9c> to ключ <US\\_SSN\\_00aa11>',
    htmlescape: 'echo: mail &lt;EMAIL_7f3a9c&gt; to ключ &lt;US_SSN_00aa11&gt;',
    bold: 'echo: mail **<EMAIL_7f3a9c>** to ключ **<US_SSN_00aa11>**',
    'lower,nobrackets,markdown': 'echo: mail email\\_7f3a9c to ключ us\\_ssn\\_00aa11',
  };
  for (const [t, w] of Object.entries(want)) {
    const r = await direct(chatBody(text, { stream: true }), { 'x-fake-split-bytes': '3', ...(t ? { 'x-fake-transform': t } : {}) });
    const pieces = parseSSE(r.body).filter((e) => e.data !== '[DONE]').map((e) => JSON.parse(e.data).choices[0].delta.content).filter((c) => c);
    assert.equal(pieces.join(''), w, `transform '${t}'`);
    for (const p of pieces) assert.ok(Buffer.byteLength(p) <= 3 || [...p].length === 1, `piece ${JSON.stringify(p)} is longer than 3 bytes`);
  }
  const bad = await direct(chatBody(text), { 'x-fake-transform': 'shout' });
  assert.equal(bad.status, 400);
  const raw = JSON.stringify(chatBody(text));
  assert.equal((await direct(raw, { 'x-fake-echo': 'body' })).json.choices[0].message.content, raw);
  const tool = await direct(chatBody(text), { 'x-fake-tool-call': 'save' });
  assert.deepEqual(JSON.parse(tool.json.choices[0].message.tool_calls[0].function.arguments), { text: `echo: ${text}` });
  const two = await direct(chatBody(text, { stream: true, n: 2 }), { 'x-fake-split-bytes': '4' });
  assert.deepEqual(chatStream(two.body).content, { 0: `echo: ${text}`, 1: `echo: ${text}` });
});

// ================================================================ 1. API shapes

test('1a. OpenAI chat, string content (system + user): placeholders upstream, originals back (openai SDK)', async () => {
  const sent = [];
  provider.reset();
  const params = {
    model: 'gpt-4o-mini', temperature: 0.7,
    messages: [
      { role: 'system', content: `Record: ${say('name', 'email', 'phone')}` },
      { role: 'user', content: `Please check: ${say('card', 'iban', 'ssn', 'aws', 'github', 'ipv4')}` },
    ],
  };
  const c = await openai({ sent, headers: { 'x-fake-echo': 'body' } }).chat.completions.create(params);
  const rec = onlyRecord();
  assertScrubbed(sent[0], rec.body);
  assert.equal(c.choices[0].message.content, sent[0], 'the echoed body comes back with every original value in place');
});

test('1b. OpenAI chat, array content parts {type:"text"} beside an image: scrubbed per part, image untouched', async () => {
  const sent = [];
  provider.reset();
  const url = `data:image/png;base64,${TRAP_B64}`;
  const params = {
    model: 'gpt-4o',
    messages: [{
      role: 'user',
      content: [
        { type: 'text', text: say('name', 'email', 'phone') },
        { type: 'image_url', image_url: { url, detail: 'low' } },
        { type: 'text', text: say('card', 'iban', 'ssn') },
        { type: 'text', text: say('aws', 'github', 'ipv4') },
      ],
    }],
  };
  const c = await openai({ sent, headers: { 'x-fake-echo': 'body' } }).chat.completions.create(params);
  const rec = onlyRecord();
  assertScrubbed(sent[0], rec.body);
  assert.equal(JSON.parse(rec.body).messages[0].content[1].image_url.url, url, 'the data: URL is not scanned');
  assert.equal(c.choices[0].message.content, sent[0]);
});

test('1c. OpenAI chat with tools: assistant tool_calls arguments (JSON in a string) and tool results scrubbed; ids untouched', async () => {
  const sent = [];
  provider.reset();
  const callId = 'call-203.0.113.9'; // would be an IP address if ids were scanned
  const params = {
    model: 'gpt-4o',
    tools: [{ type: 'function', function: { name: 'lookup_customer', description: 'Find a customer', parameters: { type: 'object', properties: { email: { type: 'string' } } } } }],
    messages: [
      { role: 'user', content: `Look me up, ${say('name')}` },
      {
        role: 'assistant', content: null,
        tool_calls: [{ id: callId, type: 'function', function: { name: 'lookup_customer', arguments: JSON.stringify({ email: V.email, phone: V.phone, note: say('ssn') }) } }],
      },
      { role: 'tool', tool_call_id: callId, content: `Found: ${say('card', 'iban')}` },
      { role: 'tool', tool_call_id: callId, content: [{ type: 'text', text: `Keys: ${say('aws', 'github')}` }] },
      { role: 'user', content: `And the ${say('ipv4')}` },
    ],
  };
  const c = await openai({ sent, headers: { 'x-fake-echo': 'body' } }).chat.completions.create(params);
  const rec = onlyRecord();
  assertScrubbed(sent[0], rec.body);
  const got = JSON.parse(rec.body);
  assert.equal(got.messages[1].tool_calls[0].id, callId, 'tool_calls[].id is a protocol field');
  assert.equal(got.messages[2].tool_call_id, callId, 'tool_call_id is a protocol field');
  const args = JSON.parse(got.messages[1].tool_calls[0].function.arguments);
  assert.match(args.email, /^<EMAIL_[0-9a-f]{6,}>$/, 'the arguments string is still JSON, with placeholders inside');
  assert.equal(c.choices[0].message.content, sent[0]);
});

test('1d. legacy completions: prompt as a string and as an array', async () => {
  for (const prompt of [say(...ALL), [say('name', 'email', 'phone'), say('card', 'iban', 'ssn'), say('aws', 'github', 'ipv4')]]) {
    const sent = [];
    provider.reset();
    const c = await openai({ sent, headers: { 'x-fake-echo': 'body' } }).completions.create({ model: 'gpt-3.5-turbo-instruct', prompt, max_tokens: 50 });
    const rec = onlyRecord();
    assert.equal(rec.path, '/v1/completions');
    assertScrubbed(sent[0], rec.body);
    assert.equal(c.choices[0].text, sent[0]);
  }
});

test('1e. embeddings: input as a string and as an array', async () => {
  for (const input of [say(...ALL), ALL.map((k) => SAY[k])]) {
    const sent = [];
    provider.reset();
    const e = await openai({ sent }).embeddings.create({ model: 'text-embedding-3-small', input, encoding_format: 'float' });
    const rec = onlyRecord();
    assertScrubbed(sent[0], rec.body);
    const upstreamInput = JSON.parse(rec.body).input;
    const inputs = Array.isArray(upstreamInput) ? upstreamInput : [upstreamInput];
    assert.equal(e.data.length, inputs.length);
    // the vectors are the provider's, computed from the scrubbed text
    inputs.forEach((x, i) => assert.deepEqual(e.data[i].embedding, embeddingFor(x)));
  }
});

test('1f. Responses API: input as a string, and instructions', async () => {
  const sent = [];
  provider.reset();
  const r = await openai({ sent, headers: { 'x-fake-echo': 'body' } }).responses.create({
    model: 'gpt-4o', instructions: `You help ${say('name')} Their contacts: ${say('email', 'phone')}`,
    input: say('card', 'iban', 'ssn', 'aws', 'github', 'ipv4'),
  });
  const rec = onlyRecord();
  assert.equal(rec.path, '/v1/responses');
  assertScrubbed(sent[0], rec.body);
  assert.equal(r.output_text, sent[0]);
});

test('1g. Responses API: message arrays with input_text parts, function_call and function_call_output items', async () => {
  const sent = [];
  provider.reset();
  const callId = 'call-203.0.113.9';
  const r = await openai({ sent, headers: { 'x-fake-echo': 'body' } }).responses.create({
    model: 'gpt-4o',
    input: [
      { role: 'developer', content: [{ type: 'input_text', text: say('name') }] },
      { role: 'user', content: [{ type: 'input_text', text: say('email', 'phone') }, { type: 'input_text', text: say('card') }] },
      { type: 'function_call', call_id: callId, name: 'lookup', arguments: JSON.stringify({ q: say('iban') }) },
      { type: 'function_call_output', call_id: callId, output: say('ssn', 'aws') },
      { type: 'message', role: 'user', content: [{ type: 'input_text', text: say('github', 'ipv4') }] },
    ],
  });
  const rec = onlyRecord();
  assertScrubbed(sent[0], rec.body);
  const got = JSON.parse(rec.body);
  assert.equal(got.input[2].call_id, callId);
  assert.equal(got.input[3].call_id, callId);
  assert.equal(r.output_text, sent[0]);
});

test('1h. Anthropic messages (@anthropic-ai/sdk): system string, content blocks, tool_use.input object, tool_result content', async () => {
  const sent = [];
  provider.reset();
  const msg = await anthropic({ sent, headers: { 'x-fake-echo': 'body' } }).messages.create({
    model: 'claude-3-5-sonnet-latest', max_tokens: 256,
    system: `Help desk notes. Caller: ${say('name', 'email')}`,
    messages: [
      { role: 'user', content: [{ type: 'text', text: say('phone') }, { type: 'text', text: say('card') }] },
      {
        role: 'assistant',
        content: [
          { type: 'text', text: 'Looking that up.' },
          { type: 'tool_use', id: 'toolu_01', name: 'lookup', input: { query: say('iban'), customer: { ssn_note: say('ssn'), tags: ['vip', say('aws')] } } },
          { type: 'tool_use', id: 'toolu_02', name: 'lookup', input: { query: 'second' } },
        ],
      },
      {
        role: 'user',
        content: [
          { type: 'tool_result', tool_use_id: 'toolu_01', content: say('github') },
          { type: 'tool_result', tool_use_id: 'toolu_02', content: [{ type: 'text', text: say('ipv4') }] },
          { type: 'text', text: 'thanks' },
        ],
      },
    ],
  });
  const rec = onlyRecord();
  assert.equal(rec.path, '/v1/messages');
  assertScrubbed(sent[0], rec.body);
  assert.equal(msg.content[0].text, sent[0]);
});

test('1i. Anthropic messages: system as text blocks, streaming through the SDK', async () => {
  const sent = [];
  provider.reset();
  const stream = await anthropic({ sent, headers: { 'x-fake-echo': 'body', 'x-fake-split-bytes': '3' } }).messages.create({
    model: 'claude-3-5-sonnet-latest', max_tokens: 256, stream: true,
    system: [{ type: 'text', text: say('name', 'email', 'phone') }, { type: 'text', text: say('card'), cache_control: { type: 'ephemeral' } }],
    messages: [{ role: 'user', content: say('iban', 'ssn', 'aws', 'github', 'ipv4') }],
  });
  let text = '';
  for await (const ev of stream) if (ev.type === 'content_block_delta' && ev.delta.type === 'text_delta') text += ev.delta.text;
  assertScrubbed(sent[0], onlyRecord().body);
  assert.equal(text, sent[0], 'the streamed echo of the whole body, cut in 3-byte pieces, comes back exactly');
});

test('1j. OpenAI chat with tools, streamed in 2-byte pieces: the whole conversation comes back exactly (curl -N)', async () => {
  provider.reset();
  const body = JSON.stringify({
    model: 'gpt-4o', stream: true,
    messages: [
      { role: 'system', content: say('name', 'email') },
      { role: 'assistant', content: null, tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'f', arguments: JSON.stringify({ p: V.phone, c: say('card') }) } }] },
      { role: 'tool', tool_call_id: 'call_1', content: say('iban', 'ssn') },
      { role: 'user', content: say('aws', 'github', 'ipv4') },
    ],
  });
  const r = await curlPost(scrim, '/v1/chat/completions', body, { 'x-fake-echo': 'body', 'x-fake-split-bytes': '2' });
  assert.equal(r.status, 200, show(r));
  assertScrubbed(body, onlyRecord().body);
  assert.equal(chatStreamContent(r.body), body);
});

test('1k. values written with JSON escapes (\\u0040, \\u002d, \\/) are found all the same', async () => {
  provider.reset();
  const raw = '{"model":"gpt-4o","messages":[{"role":"user","content":"mail maria.gonzalez\\u0040example.com, SSN 123\\u002d45\\u002d6789, server 203\\u002e0.113.7, key AKIAIOSFODNN7EXAMPLE\\/x"}]}';
  const r = await post(scrim, '/v1/chat/completions', raw);
  assert.equal(r.status, 200, show(r));
  const rec = onlyRecord();
  const content = JSON.parse(rec.body).messages[0].content;
  for (const k of ['email', 'ssn', 'ipv4', 'aws']) assert.ok(!content.includes(V[k]), `${k} reached the provider: ${content}`);
  assert.equal(placeholdersIn(content).length, 4, content);
  assert.equal(r.json.choices[0].message.content, `echo: ${JSON.parse(raw).messages[0].content}`);
});

// ================================================================ 2. everything else byte for byte

test('2a. a body without personal data reaches the provider byte for byte (numbers, spacing, key order, escapes, unicode)', async () => {
  provider.reset();
  const raw = '{ "temperature":0.7, "model" : "gpt-4o-mini","top_p":1.0,"max_tokens":1e3,"seed":-0,\n' +
    '  "logit_bias":{"50256":-100,"1":0.50},"frequency_penalty":-1.25E-2,\n' +
    '  "messages":[{"role":"system","content":"Tu es un assistant. R\\u00e9ponds en fran\\u00e7ais \\/ escaped slash, tab\\tquote\\" 🎉"},\n' +
    '   {"role":"user","content":"日本語のテキスト — ünïcödé, order 415-555-2671 shipped, version 1.2.3.4 released, 3.14159, 2024-01-15"}],\n' +
    '  "stop":["\\n\\n"],"metadata":{"z":"last","a":"first"},"n":1,"stream":false}';
  const r = await post(scrim, '/v1/chat/completions', raw);
  assert.equal(r.status, 200, show(r));
  assert.equal(r.headers['x-scrim-redactions'], '0');
  assert.equal(onlyRecord().body, raw, 'forwarded unchanged');
});

test('2b. with personal data in one string, every other byte is unchanged', async () => {
  provider.reset();
  const head = '{"model":"gpt-4o-mini",  "temperature":0.7,"top_p":1.0,"max_tokens":1e3,\n "messages":[{"role":"system","content":"caf\\u00e9 \\/ 🎉 — 日本語"},' +
    '{"role":"user","content":"';
  const tail = '"}],"metadata":{"z":1,"a":[1.50,-0.0,9007199254740993,1E+2,0.1e-3]}}';
  const raw = `${head}write to ${V.email} about SSN ${V.ssn}${tail}`;
  const r = await post(scrim, '/v1/chat/completions', raw);
  assert.equal(r.status, 200, show(r));
  const rec = onlyRecord();
  const phs = placeholdersIn(rec.body);
  assert.equal(phs.length, 2, rec.body);
  assert.match(phs[0], /^<EMAIL_/);
  assert.match(phs[1], /^<US_SSN_/);
  assert.equal(rec.body, `${head}write to ${phs[0]} about SSN ${phs[1]}${tail}`, 'only the two values changed');
  assert.ok(rec.body.includes('"temperature":0.7,'), 'a number stays as written');
});

test('2c. base64 images are not altered: chat image_url data: URL, Anthropic image source data, a long base64 run', async () => {
  const longB64 = `${TRAP_B64}`.repeat(8);
  const bodies = [
    ['/v1/chat/completions', { model: 'gpt-4o', messages: [{ role: 'user', content: [{ type: 'text', text: 'describe' }, { type: 'image_url', image_url: { url: `data:image/png;base64,${TRAP_B64}` } }] }] }],
    ['/v1/chat/completions', { model: 'gpt-4o', messages: [{ role: 'user', content: [{ type: 'input_audio', input_audio: { data: longB64, format: 'wav' } }] }] }],
    ['/anthropic/v1/messages', { model: 'claude-3-5-sonnet-latest', max_tokens: 10, messages: [{ role: 'user', content: [{ type: 'image', source: { type: 'base64', media_type: 'image/png', data: TRAP_B64 } }, { type: 'text', text: 'describe' }] }] }],
  ];
  for (const [p, body] of bodies) {
    provider.reset();
    const raw = JSON.stringify(body);
    const r = await post(scrim, p, raw);
    assert.equal(r.status, 200, `${p}: ${show(r)}`);
    assert.equal(onlyRecord().body, raw, `${p}: base64 data was altered`);
    assert.equal(r.headers['x-scrim-redactions'], '0');
  }
  // Control: the same bytes as plain text are caught (so the checks above can fail).
  provider.reset();
  const r = await post(scrim, '/v1/chat/completions', chatBody(`look: ${TRAP_B64}`));
  assert.equal(r.status, 200, show(r));
  assert.ok(placeholdersIn(onlyRecord().body).length >= 1, 'the trap string is scanned as text');
});

test('2d. Responses API data: URLs (input_image.image_url, input_file.file_data) are not altered', {
}, async () => {
  for (const content of [
    [{ type: 'input_text', text: 'describe' }, { type: 'input_image', image_url: `data:image/png;base64,${TRAP_B64}` }],
    [{ type: 'input_file', filename: 'scan.pdf', file_data: `data:application/pdf;base64,${TRAP_B64}` }],
  ]) {
    provider.reset();
    const raw = JSON.stringify({ model: 'gpt-4o', input: [{ role: 'user', content }] });
    const r = await post(scrim, '/v1/responses', raw);
    assert.equal(r.status, 200, show(r));
    assert.equal(onlyRecord().body, raw, `data: URL altered: ${provider.requests[0].body}`);
  }
});

test('2e. valid JSON numbers beyond int64 / double range are forwarded as written', {
}, async () => {
  for (const num of ['18446744073709551615', '1e400']) {
    provider.reset();
    const raw = `{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"response_format":{"type":"json_schema","json_schema":{"name":"n","schema":{"type":"integer","maximum":${num}}}}}`;
    const r = await post(scrim, '/v1/chat/completions', raw);
    assert.equal(r.status, 200, `${num}: ${show(r)}`);
    assert.equal(onlyRecord().body, raw);
  }
});

// ================================================================ 3. streaming restore

/** A reply that starts and ends with placeholders, repeats one, holds two side by side and multi-byte text. */
const STREAM_TEXT = `${V.email} wrote: my name is José Álvarez; phone ${V.phone}, card ${V.card} — IBAN ${V.iban} ` +
  `(SSN ${V.ssn}) ключ ${V.aws}/${V.github}; Email and phone are words too; again ${V.email} from ${V.ipv4}`;
const STREAM_VALUES = [V.email, 'José Álvarez', V.phone, V.card, V.iban, V.ssn, V.aws, V.github, V.ipv4];
plant('José Álvarez');
const SPLITS = [1, 2, 3, 5, 7];
/** The transforms every stream must survive; htmlescape is tested apart (a known bug). */
const TRANSFORMS = ['', 'lower', 'nobrackets', 'markdown', 'lower,nobrackets', 'lower,nobrackets,markdown', 'bold'];

/** What the client must assemble for the echo of `text` under transform t. */
function expectedEcho(text, t, values = STREAM_VALUES) {
  let s = `echo: ${text}`;
  if (t.split(',').includes('bold')) for (const v of values) s = s.split(v).join(`**${v}**`);
  return s;
}

/** The last upstream request holds no planted value and has the placeholders. */
function assertStreamRequestScrubbed(fake = provider) {
  const rec = fake.requests[fake.requests.length - 1];
  for (const v of STREAM_VALUES) assert.ok(!rec.body.includes(v), `${v} reached the provider: ${rec.body}`);
  assert.ok(placeholdersIn(rec.body).length >= STREAM_VALUES.length, rec.body);
}

for (const n of SPLITS) {
  test(`3a. OpenAI chat stream cut into ${n}-byte events, every transform: openai SDK and curl -N assemble the original`, async () => {
    for (const t of TRANSFORMS) {
      const headers = { 'x-fake-split-bytes': String(n), ...(t ? { 'x-fake-transform': t } : {}) };
      const want = expectedEcho(STREAM_TEXT, t);

      const stream = await openai({ headers }).chat.completions.create({ model: 'gpt-4o-mini', stream: true, messages: [{ role: 'user', content: STREAM_TEXT }] });
      let text = '';
      let events = 0;
      for await (const chunk of stream) {
        events++;
        for (const ch of chunk.choices) if (ch.delta?.content) text += ch.delta.content;
      }
      assert.equal(text, want, `openai SDK, ${n}-byte pieces, transform '${t}'`);
      assert.ok(events > Buffer.byteLength(want) / n / 2, `the stream was not cut up: ${events} events`);
      assertStreamRequestScrubbed();

      const r = await curlPost(scrim, '/v1/chat/completions', chatBody(STREAM_TEXT, { stream: true }), headers);
      assert.equal(r.status, 200, show(r));
      assert.match(r.headers['content-type'] || '', /text\/event-stream/);
      assert.equal(chatStreamContent(r.body), want, `curl -N, ${n}-byte pieces, transform '${t}'`);
      assert.ok(!PH_SPLIT.test(r.body), 'no placeholder reaches the client');
      assert.equal(parseSSE(r.body).at(-1).data, '[DONE]');
    }
  });

  test(`3b. Anthropic stream cut into ${n}-byte events, every transform: @anthropic-ai/sdk and curl -N assemble the original`, async () => {
    for (const t of TRANSFORMS) {
      const headers = { 'x-fake-split-bytes': String(n), ...(t ? { 'x-fake-transform': t } : {}) };
      const want = expectedEcho(STREAM_TEXT, t);
      const body = { model: 'claude-3-5-sonnet-latest', max_tokens: 512, messages: [{ role: 'user', content: STREAM_TEXT }] };

      const stream = await anthropic({ headers }).messages.create({ ...body, stream: true });
      let text = '';
      const types = [];
      for await (const ev of stream) {
        types.push(ev.type);
        if (ev.type === 'content_block_delta' && ev.delta.type === 'text_delta') text += ev.delta.text;
      }
      assert.equal(text, want, `@anthropic-ai/sdk, ${n}-byte pieces, transform '${t}'`);
      assert.equal(types.at(-1), 'message_stop');
      assertStreamRequestScrubbed();

      const r = await curlPost(scrim, '/anthropic/v1/messages', { ...body, stream: true }, { ...headers, 'anthropic-version': '2023-06-01' });
      assert.equal(r.status, 200, show(r));
      assert.equal(anthropicStream(r.body).text, want, `curl -N, ${n}-byte pieces, transform '${t}'`);
    }
  });
}

test('3c. legacy completions and Responses API streams (deltas) in 1, 3 and 7-byte events', async () => {
  for (const n of [1, 3, 7]) {
    for (const t of ['', 'lower,nobrackets', 'markdown']) {
      const headers = { 'x-fake-split-bytes': String(n), ...(t ? { 'x-fake-transform': t } : {}) };
      const want = expectedEcho(STREAM_TEXT, t);
      const client = openai({ headers });
      let text = '';
      for await (const c of await client.completions.create({ model: 'gpt-3.5-turbo-instruct', prompt: STREAM_TEXT, stream: true })) text += c.choices[0]?.text ?? '';
      assert.equal(text, want, `completions, ${n}-byte pieces, '${t}'`);
      let deltas = '';
      for await (const ev of await client.responses.create({ model: 'gpt-4o', input: STREAM_TEXT, stream: true })) {
        if (ev.type === 'response.output_text.delta') deltas += ev.delta;
      }
      assert.equal(deltas, want, `responses deltas, ${n}-byte pieces, '${t}'`);
      assertStreamRequestScrubbed();
    }
  }
});

test('3d. non-streamed answers restore every transform too (chat, Anthropic, Responses)', async () => {
  for (const t of [...TRANSFORMS, 'htmlescape', 'htmlescape,lower,markdown']) {
    const headers = t ? { 'x-fake-transform': t } : {};
    const want = expectedEcho(STREAM_TEXT, t);
    const c = await openai({ headers }).chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: STREAM_TEXT }] });
    assert.equal(c.choices[0].message.content, want, `chat, '${t}'`);
    const m = await anthropic({ headers }).messages.create({ model: 'claude-3-5-sonnet-latest', max_tokens: 512, messages: [{ role: 'user', content: STREAM_TEXT }] });
    assert.equal(m.content[0].text, want, `anthropic, '${t}'`);
    const r = await openai({ headers }).responses.create({ model: 'gpt-4o', input: STREAM_TEXT });
    assert.equal(r.output_text, want, `responses, '${t}'`);
  }
});

/** A value that needs escaping in JSON: a backslash inside a password. */
const PASSWORD = plant('Tr0ub\\4dor&3x');

test('3e. tool-call arguments (JSON text) are restored with JSON escaping, whole and streamed (chat and Anthropic)', async () => {
  const text = `${say('email', 'name')} password: ${PASSWORD} (SSN ${V.ssn})`;
  const want = `echo: ${text}`;
  for (const n of [0, 1, 3, 7]) {
    for (const t of ['', 'lower', 'nobrackets']) {
      const headers = { 'x-fake-tool-call': 'save_note', ...(n ? { 'x-fake-split-bytes': String(n) } : {}), ...(t ? { 'x-fake-transform': t } : {}) };
      const where = `${n ? `${n}-byte pieces` : 'whole'}, '${t}'`;
      // OpenAI chat
      const chat = await post(scrim, '/v1/chat/completions', chatBody(text, { stream: n > 0 }), headers);
      assert.equal(chat.status, 200, show(chat));
      const rec = provider.requests.at(-1);
      assert.ok(!rec.body.includes(V.email) && !rec.body.includes('Tr0ub'), `values reached the provider: ${rec.body}`);
      const args = n ? chatStream(chat.body).args[0] : chat.json.choices[0].message.tool_calls[0].function.arguments;
      let parsed;
      assert.doesNotThrow(() => { parsed = JSON.parse(args); }, `chat arguments are not JSON after restore (${where}): ${args}`);
      assert.equal(parsed.text, want, `chat arguments (${where})`);
      // Anthropic
      const a = await post(scrim, '/anthropic/v1/messages', { model: 'claude-3-5-sonnet-latest', max_tokens: 100, stream: n > 0, messages: [{ role: 'user', content: text }] }, { ...headers, 'anthropic-version': '2023-06-01' });
      assert.equal(a.status, 200, show(a));
      let input;
      if (n) {
        const json = anthropicStream(a.body).json;
        assert.doesNotThrow(() => { input = JSON.parse(json); }, `partial_json pieces do not join to JSON (${where}): ${json}`);
      } else {
        input = a.json.content[0].input;
      }
      assert.equal(input.text, want, `anthropic tool_use input (${where})`);
    }
  }
});

test('3f. HTML-escaped placeholders (&lt;…&gt;) cut across stream events are restored without a stray &gt;', {
}, async () => {
  const failures = [];
  for (const n of SPLITS) {
    const headers = { 'x-fake-split-bytes': String(n), 'x-fake-transform': 'htmlescape' };
    const r = await post(scrim, '/v1/chat/completions', chatBody(STREAM_TEXT, { stream: true }), headers);
    const got = chatStreamContent(r.body);
    if (got !== expectedEcho(STREAM_TEXT, '')) failures.push(`chat ${n}: ${JSON.stringify(got)}`);
    const a = await post(scrim, '/anthropic/v1/messages', { model: 'c', max_tokens: 5, stream: true, messages: [{ role: 'user', content: STREAM_TEXT }] }, { ...headers, 'anthropic-version': '2023-06-01' });
    const at = anthropicStream(a.body).text;
    if (at !== expectedEcho(STREAM_TEXT, '')) failures.push(`anthropic ${n}: ${JSON.stringify(at)}`);
  }
  assert.deepEqual(failures, []);
});

test('3g. Responses stream: output_text.done and response.completed carry the whole restored text, once', {
}, async () => {
  const input = `write to ${V.email} by email`;
  const want = `echo: ${input}`;
  const r = await post(scrim, '/v1/responses', { model: 'gpt-4o', stream: true, input });
  assert.equal(r.status, 200, show(r));
  const events = parseSSE(r.body).map((e) => JSON.parse(e.data));
  const count = (type) => events.filter((e) => e.type === type).length;
  for (const type of ['response.output_text.done', 'response.content_part.done', 'response.output_item.done', 'response.completed']) {
    assert.equal(count(type), 1, `${type} sent ${count(type)} times`);
  }
  assert.equal(events.find((e) => e.type === 'response.output_text.done').text, want);
  assert.equal(events.find((e) => e.type === 'response.completed').response.output[0].content[0].text, want);
  const seqs = events.map((e) => e.sequence_number);
  assert.equal(new Set(seqs).size, seqs.length, `duplicate sequence_number: ${seqs}`);
  const st = openai().responses.stream({ model: 'gpt-4o', input });
  for await (const ev of st) void ev;
  assert.equal((await st.finalResponse()).output_text, want, 'openai SDK finalResponse().output_text');
});

test('3h. chat stream with n = 2: interleaved choices are restored each on its own', {
}, async () => {
  const text = `mail ${V.email} and again ${V.email} end`;
  const r = await post(scrim, '/v1/chat/completions', chatBody(text, { stream: true, n: 2 }), { 'x-fake-split-bytes': '3' });
  assert.equal(r.status, 200, show(r));
  const { content } = chatStream(r.body);
  assert.deepEqual(content, { 0: `echo: ${text}`, 1: `echo: ${text}` });
});

test('3i. markdown-escaped placeholders (\\_) inside tool-call arguments are restored', {
}, async () => {
  const text = say('email', 'ssn');
  const r = await post(scrim, '/v1/chat/completions', chatBody(text), { 'x-fake-tool-call': 'note', 'x-fake-transform': 'markdown' });
  assert.equal(r.status, 200, show(r));
  assert.equal(JSON.parse(r.json.choices[0].message.tool_calls[0].function.arguments).text, `echo: ${text}`);
});

// ================================================================ 4. stable placeholders

test('4a. multi-turn: the same value gets the same placeholder in every request of a key, another key gets another', async () => {
  const first = `${say('name', 'email')} Also ${say('card')}`;
  const turn = async (key, messages) => {
    provider.reset();
    const c = await openai({ key }).chat.completions.create({ model: 'gpt-4o', messages });
    return { answer: c.choices[0].message.content, rec: onlyRecord() };
  };
  const t1 = await turn(TEST_KEY, [{ role: 'user', content: first }]);
  assert.equal(t1.answer, `echo: ${first}`);
  const p1 = placeholdersIn(t1.rec.body);
  assert.equal(p1.length, 3, t1.rec.body);

  // Turn two carries turn one and the assistant's (restored) answer.
  const t2 = await turn(TEST_KEY, [
    { role: 'user', content: first },
    { role: 'assistant', content: t1.answer },
    { role: 'user', content: `Is ${V.email} right? And ${say('ssn')}` },
  ]);
  const m2 = JSON.parse(t2.rec.body).messages;
  assert.deepEqual(placeholdersIn(m2[0].content), p1, 'same values, same placeholders, across requests');
  assert.deepEqual(placeholdersIn(m2[1].content), p1, 'the answer sent back in turn two gets the same placeholders');
  assert.equal(placeholdersIn(m2[2].content)[0], p1[1], 'the email has one placeholder');
  assert.notEqual(placeholdersIn(m2[2].content)[1], p1[1], 'another value gets another placeholder');
  assert.equal(t2.answer, `echo: Is ${V.email} right? And ${say('ssn')}`);

  // The other key: same values, different placeholders, same originals back.
  const t3 = await turn(OTHER_KEY, [{ role: 'user', content: first }]);
  const p3 = placeholdersIn(t3.rec.body);
  assert.equal(p3.length, 3);
  for (let i = 0; i < 3; i++) {
    assert.equal(p3[i].replace(/_[0-9a-f]+>$/, ''), p1[i].replace(/_[0-9a-f]+>$/, ''), 'same type');
    assert.notEqual(p3[i], p1[i], `key "other" got key "test"'s placeholder ${p1[i]}`);
  }
  assert.equal(t3.answer, `echo: ${first}`);
});

test('4b. only this request\'s placeholders are restored: a placeholder typed by the client stays as typed', async () => {
  provider.reset();
  await openai().chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: say('email') }] });
  const ph = placeholdersIn(onlyRecord().body)[0];
  assert.ok(ph, 'a placeholder for the email');
  for (const key of [TEST_KEY, OTHER_KEY]) {
    // A request that does not carry the value but quotes its placeholder.
    const c = await openai({ key }).chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: `what is ${ph}?` }] });
    assert.equal(c.choices[0].message.content, `echo: what is ${ph}?`, `${key === TEST_KEY ? 'same' : 'other'} key: a placeholder from another request was restored`);
    assert.ok(!c.choices[0].message.content.includes(V.email));
  }
});

test('4c. with scrub_secret_file, placeholders stay the same across restarts and instances; another secret gives others', async () => {
  const dir = tempDir('scrim-secret-');
  const a = path.join(dir, 'a.secret');
  const b = path.join(dir, 'b.secret');
  fs.writeFileSync(a, `${'5c'.repeat(32)}\n`);
  fs.writeFileSync(b, `${'a7'.repeat(32)}\n`);
  const placeholderWith = async (secret) => {
    const gw = await startScrim({ config: await configFor({ providerUrl: provider.url, gateway: { scrub_secret_file: secret } }) });
    try {
      provider.reset();
      const r = await post(gw, '/v1/chat/completions', chatBody(say('email', 'ssn')));
      assert.equal(r.status, 200, show(r));
      assert.equal(r.json.choices[0].message.content, `echo: ${say('email', 'ssn')}`);
      return placeholdersIn(onlyRecord().body);
    } finally {
      const code = await gw.stop();
      const err = gw.stderr();
      logs.push([`secret ${path.basename(secret)}`, () => err]);
      assert.equal(code, 0, `scrim exited with ${code}: ${err.slice(-2000)}`);
    }
  };
  try {
    const one = await placeholderWith(a);
    const two = await placeholderWith(a);
    const three = await placeholderWith(b);
    assert.equal(one.length, 2);
    assert.deepEqual(two, one, 'same secret, same placeholders after a restart');
    assert.notEqual(three[0], one[0], 'another secret, another placeholder');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

// ================================================================ 5. counts and failing closed

test('5a. x-scrim-redactions counts the spans replaced, whole and streamed, OpenAI and Anthropic', async () => {
  const cases = [
    [chatBody('nothing personal here, 42 and 3.14'), 0],
    [chatBody(say('email')), 1],
    [chatBody(`${say('email')} again ${V.email}, ${say('phone')}`), 3],
    [{ model: 'gpt-4o', messages: [{ role: 'system', content: say('name', 'ssn') }, { role: 'user', content: [{ type: 'text', text: say('card') }, { type: 'text', text: say('iban', 'ipv4') }] }] }, 5],
    [chatBody(say(...ALL), { stream: true }), ALL.length],
  ];
  for (const [body, n] of cases) {
    const r = await post(scrim, '/v1/chat/completions', body);
    assert.equal(r.status, 200, show(r));
    assert.equal(r.headers['x-scrim-redactions'], String(n), `${JSON.stringify(body).slice(0, 120)}: ${show(r)}`);
  }
  const a = await post(scrim, '/anthropic/v1/messages', { model: 'c', max_tokens: 5, stream: true, system: say('email'), messages: [{ role: 'user', content: say('aws', 'github') }] }, { 'anthropic-version': '2023-06-01' });
  assert.equal(a.headers['x-scrim-redactions'], '3', show(a));
  const e = await post(scrim, '/v1/embeddings', { model: 'text-embedding-3-small', input: [say('email'), say('ipv4')] });
  assert.equal(e.headers['x-scrim-redactions'], '2', show(e));
});

const RUNAWAY = `${'a'.repeat(40)}b`;

test('5b. a rule that hits PCRE2\'s match limit: 503 scrub_failed, nothing forwarded, wherever the string is', async () => {
  // The test rules are valid: scrim check loads them and runs their examples.
  await execFile(SCRIM_BIN, ['check', '-c', policyScrim.configPath], { env: { ...process.env, FAKE_PROVIDER_KEY: 'x' } });
  const bodies = [
    ['/v1/chat/completions', chatBody(RUNAWAY)],
    ['/v1/chat/completions', { model: 'gpt-4o', stream: true, messages: [{ role: 'system', content: RUNAWAY }, { role: 'user', content: say('email') }] }],
    ['/v1/chat/completions', { model: 'gpt-4o', messages: [{ role: 'tool', tool_call_id: 'c', content: [{ type: 'text', text: RUNAWAY }] }, { role: 'user', content: say('ssn') }] }],
    ['/anthropic/v1/messages', { model: 'c', max_tokens: 5, messages: [{ role: 'user', content: [{ type: 'tool_result', tool_use_id: 't', content: RUNAWAY }] }] }],
  ];
  for (const [p, body] of bodies) {
    provider.reset();
    localFake.reset();
    const r = await post(policyScrim, p, body, { 'anthropic-version': '2023-06-01' });
    assert.equal(r.status, 503, `${p}: ${show(r)}`);
    assert.equal(errorOf(r).code, 'scrub_failed');
    assert.ok(!r.body.includes(RUNAWAY) && !r.body.includes(V.email), 'the error does not quote the input');
    assert.equal(provider.requests.length, 0, 'nothing reached the provider');
    assert.equal(localFake.requests.length, 0, 'nothing reached the local provider');
  }
  // Strings the rule can finish on are fine, before and after.
  provider.reset();
  const ok = await post(policyScrim, '/v1/chat/completions', chatBody(`aaaa and ${say('email')}`));
  assert.equal(ok.status, 200, show(ok));
  assert.equal(ok.json.choices[0].message.content, `echo: aaaa and ${say('email')}`);
  assert.equal(onlyRecord().body.includes(V.email), false);
});

test('5c. multipart bodies: 415 unsupported_media_type, nothing forwarded', async () => {
  for (const p of ['/v1/audio/transcriptions', '/v1/files']) {
    provider.reset();
    const body = `--XyZ\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n${SAY.email}\r\n--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\nContent-Type: text/plain\r\n\r\n${SAY.ssn}\r\n--XyZ--\r\n`;
    const r = await post(scrim, p, body, { 'content-type': 'multipart/form-data; boundary=XyZ' });
    assert.equal(r.status, 415, `${p}: ${show(r)}`);
    assert.equal(errorOf(r).code, 'unsupported_media_type');
    assert.equal(provider.requests.length, 0);
  }
  // And through curl -F, as clients upload files.
  provider.reset();
  const c = await curl(['-H', `Authorization: Bearer ${TEST_KEY}`, '-F', 'model=whisper-1', '-F', `prompt=${SAY.email}`, `${scrim.url}/v1/audio/transcriptions`]);
  assert.equal(c.status, 415, show(c));
  assert.equal(provider.requests.length, 0);
});

test('5d. invalid UTF-8 and lone surrogates in JSON strings: 400 invalid_json, nothing forwarded; a valid pair passes', async () => {
  const head = Buffer.from('{"model":"gpt-4o","messages":[{"role":"user","content":"mail maria.gonzalez@example.com ');
  const tail = Buffer.from('"}]}');
  const bad = [
    ['0xff byte', Buffer.concat([head, Buffer.from([0xff]), tail])],
    ['truncated sequence', Buffer.concat([head, Buffer.from([0xe6, 0x97]), tail])],
    ['overlong "/"', Buffer.concat([head, Buffer.from([0xc0, 0xaf]), tail])],
    ['UTF-8 encoded surrogate', Buffer.concat([head, Buffer.from([0xed, 0xa0, 0x80]), tail])],
    ['0xff in a key', Buffer.from([...Buffer.from('{"model":"gpt-4o","k'), 0xff, ...Buffer.from('":1,"messages":[]}')])],
    ['lone \\ud800', Buffer.concat([head, Buffer.from('\\ud800'), tail])],
    ['lone \\udc00', Buffer.concat([head, Buffer.from('\\udc00'), tail])],
    ['\\ud800 then \\u0041', Buffer.concat([head, Buffer.from('\\ud800\\u0041'), tail])],
    ['reversed pair', Buffer.concat([head, Buffer.from('\\ude00\\ud83d'), tail])],
  ];
  for (const [what, body] of bad) {
    provider.reset();
    const r = await post(scrim, '/v1/chat/completions', body);
    assert.equal(r.status, 400, `${what}: ${show(r)}`);
    assert.equal(errorOf(r).code, 'invalid_json', what);
    assert.equal(provider.requests.length, 0, `${what}: forwarded`);
  }
  provider.reset();
  const good = Buffer.concat([head, Buffer.from('\\ud83d\\ude00 é'), tail]);
  const r = await post(scrim, '/v1/chat/completions', good);
  assert.equal(r.status, 200, show(r));
  const content = JSON.parse(onlyRecord().body).messages[0].content;
  assert.ok(content.endsWith(' 😀 é') && !content.includes(V.email), content);
  assert.equal(r.json.choices[0].message.content, `echo: mail ${V.email} 😀 é`);
});

test('5e. a block rule: 403 blocked_by_policy naming the rule, nothing forwarded (any field, streaming too)', async () => {
  const bodies = [
    ['/v1/chat/completions', chatBody(`this is TOPSECRET, ${say('email')}`)],
    ['/v1/chat/completions', { model: 'gpt-4o', stream: true, messages: [{ role: 'system', content: 'TOPSECRET briefing' }, { role: 'user', content: say('ssn') }] }],
    ['/v1/chat/completions', chatBody('CONFIDENTIAL and TOPSECRET')], // block wins over local
    ['/v1/responses', { model: 'gpt-4o', instructions: 'TOPSECRET', input: 'hello' }],
    ['/anthropic/v1/messages', { model: 'c', max_tokens: 5, messages: [{ role: 'assistant', content: [{ type: 'tool_use', id: 't', name: 'f', input: { q: 'TOPSECRET plan' } }] }] }],
  ];
  for (const [p, body] of bodies) {
    provider.reset();
    localFake.reset();
    const r = await post(policyScrim, p, body, { 'anthropic-version': '2023-06-01' });
    assert.equal(r.status, 403, `${p} ${JSON.stringify(body).slice(0, 100)}: ${show(r)}`);
    const err = errorOf(r);
    assert.equal(err.code, 'blocked_by_policy');
    assert.match(err.message, /test\.block_topsecret/, 'the error names the rule');
    assert.equal(provider.requests.length, 0, 'nothing reached the provider');
    assert.equal(localFake.requests.length, 0, 'nothing reached the local provider');
  }
  // The rule is case-sensitive: lower case passes (so the check above can fail).
  provider.reset();
  const ok = await post(policyScrim, '/v1/chat/completions', chatBody('topsecret in lower case'));
  assert.equal(ok.status, 200, show(ok));
  assert.equal(provider.requests.length, 1);
});

test('5f. a local rule: the whole request goes, unscrubbed and byte for byte, to local_provider; the routed provider gets nothing', async () => {
  provider.reset();
  localFake.reset();
  const raw = JSON.stringify({ model: 'gpt-4o', temperature: 0.7, messages: [{ role: 'system', content: say('name', 'email') }, { role: 'user', content: `CONFIDENTIAL report: ${say('ssn', 'card')}` }] });
  const r = await post(policyScrim, '/v1/chat/completions', raw);
  assert.equal(r.status, 200, show(r));
  assert.equal(provider.requests.length, 0, `the routed provider got ${provider.requests.length} requests`);
  const rec = onlyRecord(localFake);
  assert.equal(rec.path, '/v1/chat/completions');
  assert.equal(rec.body, raw, 'the local provider gets the request as the client wrote it');
  assert.equal(r.json.choices[0].message.content, `echo: CONFIDENTIAL report: ${say('ssn', 'card')}`);

  // Streaming through the openai SDK, too.
  localFake.reset();
  let text = '';
  const stream = await openai({ gw: policyScrim }).chat.completions.create({ model: 'gpt-4o', stream: true, messages: [{ role: 'user', content: `CONFIDENTIAL ${say('phone')}` }] });
  for await (const c of stream) text += c.choices[0]?.delta?.content ?? '';
  assert.equal(text, `echo: CONFIDENTIAL ${say('phone')}`);
  assert.ok(onlyRecord(localFake).body.includes(V.phone));
  assert.equal(provider.requests.length, 0);
});

test('5g. a request sent whole to local_provider reports x-scrim-redactions: 0', {
}, async () => {
  const r = await post(policyScrim, '/v1/chat/completions', chatBody(`CONFIDENTIAL ${say('email', 'ssn')}`));
  assert.equal(r.status, 200, show(r));
  assert.ok(localFake.requests.at(-1).body.includes(V.email));
  assert.equal(r.headers['x-scrim-redactions'], '0');
});

test('5h. scrub = off: bodies are forwarded as they are, personal data included, multipart too', async () => {
  provider.reset();
  const raw = JSON.stringify({ model: 'gpt-4o', temperature: 0.7, messages: [{ role: 'user', content: say(...ALL) }] });
  const r = await post(offScrim, '/v1/chat/completions', raw);
  assert.equal(r.status, 200, show(r));
  assert.equal(onlyRecord().body, raw);
  assert.ok(r.headers['x-scrim-redactions'] === undefined || r.headers['x-scrim-redactions'] === '0', show(r));
  assert.equal(r.json.choices[0].message.content, `echo: ${say(...ALL)}`);
  provider.reset();
  const mp = '--B\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n\r\nhello\r\n--B--\r\n';
  const m = await post(offScrim, '/v1/files', mp, { 'content-type': 'multipart/form-data; boundary=B' });
  assert.notEqual(m.status, 415, show(m));
  assert.equal(onlyRecord().body, mp);
});

test('5i. user content in fields named like protocol fields is scanned (tool_use.input.data/id/status, text document source.data)', {
}, async () => {
  provider.reset();
  const body = {
    model: 'claude-3-5-sonnet-latest', max_tokens: 10,
    messages: [
      { role: 'user', content: [{ type: 'document', source: { type: 'text', media_type: 'text/plain', data: `Patient file: ${say('name', 'ssn')}` } }, { type: 'text', text: 'summarise' }] },
      { role: 'assistant', content: [{ type: 'tool_use', id: 'toolu_1', name: 'crm', input: { id: V.email, status: say('phone'), data: say('card'), type: say('iban') } }] },
      { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'toolu_1', content: 'ok' }] },
    ],
  };
  const r = await post(scrim, '/anthropic/v1/messages', body, { 'anthropic-version': '2023-06-01' });
  assert.equal(r.status, 200, show(r));
  const rec = onlyRecord();
  const leaked = ['name', 'ssn', 'email', 'phone', 'card', 'iban'].filter((k) => rec.body.includes(V[k]));
  assert.deepEqual(leaked, [], `reached the provider: ${rec.body}`);
});

// ================================================================ 6. logs

test('6. no scrim log (log_level debug) holds a personal value, after all of the above', () => {
  assert.ok(logs.length >= 6, `expected the logs of every scrim started here, got ${logs.length}`);
  const reqLines = scrim.stderr().split('\n').filter((l) => / req [0-9a-f]+ key=/.test(l));
  assert.ok(reqLines.length >= 60, `the main gateway logged only ${reqLines.length} requests: did the tests run?`);
  assert.match(scrim.stderr(), / debug /, 'debug lines are on');
  for (const [name, stderr] of logs) {
    const log = stderr();
    for (const v of planted) {
      assert.ok(!log.includes(v), `${name} log holds ${JSON.stringify(v)}`);
      const compact = v.replace(/[\s-]/g, '');
      if (compact.length >= 9 && /\d{9}/.test(compact)) assert.ok(!log.includes(compact), `${name} log holds ${compact}`);
    }
    assert.ok(!log.includes(TEST_KEY) && !log.includes(OTHER_KEY), `${name} log holds a client key`);
    assert.ok(!log.includes('echo: '), `${name} log holds answer text`);
    assert.ok(!log.includes('TOPSECRET') && !log.includes(RUNAWAY), `${name} log holds request text`);
  }
});

test('7. every gateway started here stops cleanly on SIGTERM (a sanitizer build reports leaks and UB as a failed exit)', async () => {
  for (const [name, gw] of [['main', scrim], ['policy', policyScrim], ['scrub=off', offScrim]]) {
    const code = await gw.stop();
    const log = gw.stderr();
    assert.ok(!/AddressSanitizer|LeakSanitizer|runtime error:/.test(log), `${name}: sanitizer report:\n${log.slice(-3000)}`);
    assert.equal(code, 0, `${name} exited with ${code}:\n${log.slice(-2000)}`);
  }
});
