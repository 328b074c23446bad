// Fake LLM provider for scrim's integration tests and benchmarks.
//
// A real HTTP(S) server (node built-ins only) that answers like OpenAI's and
// Anthropic's APIs: JSON and SSE streams, deterministic content ("echo: " +
// the last user text), plus fault modes driven by request headers:
//
//   x-fake-status: N           answer N with a provider-shaped error body
//   x-fake-delay-ms: N         wait N ms before sending the response headers
//   x-fake-chunk-delay-ms: N   wait N ms between stream events (default 0)
//   x-fake-chunks: N           stream exactly N content chunks (filler words
//                              are appended, or words merged, to get N)
//   x-fake-reset-after: N      destroy the socket after N stream events
//   x-fake-split-bytes: N      stream the reply in pieces of at most N bytes
//                              of UTF-8 (never inside a character), one
//                              event each; wins over x-fake-chunks
//   x-fake-transform: T[,T..]  rewrite the placeholders scrim puts in
//                              requests (<EMAIL_7f3a9c>) in the reply the
//                              way models do: lower (<email_7f3a9c>),
//                              nobrackets (EMAIL_7f3a9c), markdown
//                              (<EMAIL\_7f3a9c>), htmlescape
//                              (&lt;EMAIL_7f3a9c&gt;), bold (**<...>**)
//   x-fake-echo: body          reply with the raw request body as received,
//                              instead of "echo: " + the last user text
//   x-fake-tool-call: NAME     (chat and Anthropic messages) answer with a
//                              call of tool NAME whose arguments are
//                              {"text": <the reply text>}, streamed as
//                              argument pieces when streaming
//
// Chat completions honour `n` (n choices, interleaved when streaming).
//
// Embeddings: by default EMBEDDING_DIMS floats from a hash of the whole
// input. A model named fake-bow-N (fake-bow: 96) gets a bag of words
// instead: N dimensions, each lower-cased word adds +1 or -1 at a place
// hashed from it (not normalised), so texts that share words are near,
// as with a real embedding model, and vector search can be tested.
//
// Every request is recorded ({method, path, headers, body, aborted, time});
// the record is also available over HTTP at GET /__fake/requests, and
// POST /__fake/reset clears it.
//
// As a module:  const p = await startFakeProvider({tls: {cert, key}});
// Standalone:   node provider.mjs --port N [--host H] [--tls-cert F --tls-key F]
//               [--max-records N]     (prints "listening PORT" on stdout)

import http from 'node:http';
import https from 'node:https';
import crypto from 'node:crypto';
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';

export const FAKE_MODELS = ['fake-model', 'gpt-4o-mini', 'gpt-4o', 'text-embedding-3-small', 'claude-3-5-sonnet-latest'];
export const EMBEDDING_DIMS = 8;
const MODEL_CREATED = 1700000000;

// ---------------------------------------------------------------- content

/** Count "tokens" deterministically: whitespace-separated words. */
export function countTokens(text) {
  if (!text) return 0;
  const m = String(text).match(/\S+/g);
  return m ? m.length : 0;
}

/**
 * Split a reply into stream chunks. By default one chunk per word (each word
 * keeps the whitespace after it, so the chunks join back to the text). With
 * `n`, exactly n chunks: filler words " filler0", " filler1", ... are
 * appended when the text has fewer words, words are merged when it has more.
 */
export function splitChunks(text, n) {
  let pieces = String(text).match(/\S+\s*|\s+/g) || [''];
  if (n === undefined || n === null || !(n > 0)) return pieces;
  if (pieces.length < n) {
    pieces = pieces.slice();
    for (let i = 0; pieces.length < n; i++) pieces.push(` filler${i}`);
    return pieces;
  }
  if (pieces.length > n) {
    // merge words so that every one of the n chunks carries some text
    const out = [];
    const base = Math.floor(pieces.length / n);
    let extra = pieces.length % n;
    let at = 0;
    for (let i = 0; i < n; i++) {
      const take = base + (extra > 0 ? 1 : 0);
      if (extra > 0) extra--;
      out.push(pieces.slice(at, at + take).join(''));
      at += take;
    }
    return out;
  }
  return pieces;
}

/** The full streamed text for a reply `text` cut into `n` chunks. */
export function streamedText(text, n) {
  return splitChunks(text, n).join('');
}

/**
 * Split text into pieces of at most n bytes of UTF-8, never inside a
 * character (a character longer than n bytes is a piece of its own).
 */
export function splitBytes(text, n) {
  const out = [];
  let cur = '';
  let curBytes = 0;
  for (const ch of String(text)) {
    const b = Buffer.byteLength(ch);
    if (curBytes > 0 && curBytes + b > n) {
      out.push(cur);
      cur = '';
      curBytes = 0;
    }
    cur += ch;
    curBytes += b;
  }
  if (cur !== '' || out.length === 0) out.push(cur);
  return out;
}

/** Placeholders as scrim writes them into requests: <TYPE_hex>. */
export const PLACEHOLDER_RE = /<([A-Z][A-Z0-9_]*_[0-9a-f]{6,16})>/g;

/** The placeholder rewrites x-fake-transform knows. */
export const TRANSFORMS = ['lower', 'nobrackets', 'markdown', 'htmlescape', 'bold'];

/** Parse an x-fake-transform value ("lower,nobrackets"); throws on unknown names. */
export function parseTransforms(spec) {
  if (spec === undefined || spec === null || spec === '') return [];
  const steps = String(spec).split(',').map((x) => x.trim().toLowerCase()).filter(Boolean);
  for (const st of steps) {
    if (!TRANSFORMS.includes(st)) throw new Error(`unknown x-fake-transform '${st}' (known: ${TRANSFORMS.join(', ')})`);
  }
  return steps;
}

/**
 * Rewrite every placeholder in text the way models garble them; spec is a
 * list or comma-separated string of TRANSFORMS, combined.
 */
export function transformPlaceholders(text, spec) {
  const steps = Array.isArray(spec) ? spec : parseTransforms(spec);
  if (steps.length === 0) return text;
  return String(text).replace(PLACEHOLDER_RE, (_m, core) => {
    let c = core;
    let open = '<';
    let close = '>';
    let wrap = '';
    for (const st of steps) {
      if (st === 'lower') c = c.toLowerCase();
      else if (st === 'markdown') c = c.replace(/_/g, '\\_');
      else if (st === 'bold') wrap = '**';
      else if (st === 'htmlescape' && open) { open = '&lt;'; close = '&gt;'; }
      else if (st === 'nobrackets') { open = ''; close = ''; }
    }
    return wrap + open + c + close + wrap;
  });
}

/** The reply text for a request: the echo, or the raw body (x-fake-echo), transformed. */
function replyText(req, echo) {
  const mode = req.headers['x-fake-echo'];
  const text = mode === 'body' ? String(req.fakeRawBody ?? '') : echo;
  return transformPlaceholders(text, req.headers['x-fake-transform']);
}

/** The stream pieces of a reply: x-fake-split-bytes, else x-fake-chunks, else words. */
function replyPieces(req, text) {
  const n = intHeader(req, 'x-fake-split-bytes');
  if (n) return splitBytes(text, n);
  return splitChunks(text, intHeader(req, 'x-fake-chunks'));
}

/** Deterministic embedding: EMBEDDING_DIMS floats in [-1, 1) from SHA-256. */
export function embeddingFor(input) {
  const key = typeof input === 'string' ? input : JSON.stringify(input);
  const h = crypto.createHash('sha256').update(key).digest();
  const out = [];
  for (let i = 0; i < EMBEDDING_DIMS; i++) {
    // two bytes per value, mapped to [-1, 1) and made exact in float32
    out.push(Math.fround(h.readUInt16BE(i * 2) / 32768 - 1));
  }
  return out;
}

function textOfContent(content) {
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) {
    return content
      .filter((p) => p && typeof p === 'object' && typeof p.text === 'string' &&
        (p.type === undefined || p.type === 'text' || p.type === 'input_text' || p.type === 'output_text'))
      .map((p) => p.text)
      .join('');
  }
  return '';
}

function lastUserText(messages) {
  if (!Array.isArray(messages)) return '';
  for (let i = messages.length - 1; i >= 0; i--) {
    const m = messages[i];
    if (m && m.role === 'user') return textOfContent(m.content);
  }
  return '';
}

function allText(messages, system) {
  const parts = [];
  if (system !== undefined) parts.push(textOfContent(system));
  if (Array.isArray(messages)) for (const m of messages) if (m) parts.push(textOfContent(m.content));
  return parts.join(' ');
}

function responsesInputText(input) {
  if (typeof input === 'string') return input;
  if (Array.isArray(input)) {
    for (let i = input.length - 1; i >= 0; i--) {
      const item = input[i];
      if (item && (item.role === 'user' || (item.type === 'message' && item.role === 'user'))) {
        return textOfContent(item.content);
      }
    }
  }
  return '';
}

function responsesAllText(input, instructions) {
  const parts = [];
  if (typeof instructions === 'string') parts.push(instructions);
  if (typeof input === 'string') parts.push(input);
  else if (Array.isArray(input)) for (const it of input) if (it) parts.push(textOfContent(it.content));
  return parts.join(' ');
}

function promptText(prompt) {
  if (typeof prompt === 'string') return prompt;
  if (Array.isArray(prompt)) return prompt.filter((p) => typeof p === 'string').join('\n');
  return '';
}

const rid = (prefix) => prefix + crypto.randomBytes(12).toString('hex');
const nowSec = () => Math.floor(Date.now() / 1000);

// ---------------------------------------------------------------- errors

const OPENAI_ERROR = {
  400: ['invalid_request_error', 'invalid_request'],
  401: ['invalid_request_error', 'invalid_api_key'],
  403: ['invalid_request_error', 'permission_denied'],
  404: ['invalid_request_error', 'not_found'],
  408: ['timeout', 'timeout'],
  413: ['invalid_request_error', 'request_too_large'],
  422: ['invalid_request_error', 'unprocessable_entity'],
  429: ['requests', 'rate_limit_exceeded'],
  500: ['server_error', 'internal_error'],
  502: ['server_error', 'bad_gateway'],
  503: ['server_error', 'service_unavailable'],
  504: ['server_error', 'gateway_timeout'],
};
const ANTHROPIC_ERROR = {
  400: 'invalid_request_error',
  401: 'authentication_error',
  403: 'permission_error',
  404: 'not_found_error',
  413: 'request_too_large',
  429: 'rate_limit_error',
  500: 'api_error',
  529: 'overloaded_error',
};

export function openaiErrorBody(status, message, code) {
  const [type, defCode] = OPENAI_ERROR[status] || [status >= 500 ? 'server_error' : 'invalid_request_error', `http_${status}`];
  return { error: { message: message || `fake provider error ${status}`, type, param: null, code: code || defCode } };
}

export function anthropicErrorBody(status, message) {
  const type = ANTHROPIC_ERROR[status] || (status >= 500 ? 'api_error' : 'invalid_request_error');
  return { type: 'error', error: { type, message: message || `fake provider error ${status}` } };
}

// ---------------------------------------------------------------- server

function intHeader(req, name) {
  const v = req.headers[name];
  if (v === undefined) return undefined;
  const n = Number.parseInt(String(v), 10);
  return Number.isFinite(n) && n >= 0 ? n : undefined;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const tick = () => new Promise((r) => setImmediate(r));

function sendJSON(res, status, obj, extraHeaders) {
  if (res.destroyed || res.headersSent) return;
  const body = JSON.stringify(obj);
  const headers = {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(body),
    'x-fake-provider': '1',
  };
  if (extraHeaders) Object.assign(headers, extraHeaders);
  res.writeHead(status, headers);
  res.end(body);
}

/**
 * Writes SSE events one by one: honours x-fake-chunk-delay-ms (yielding to
 * the event loop between events when 0), back-pressure, client disconnects
 * and x-fake-reset-after.
 */
class SSEWriter {
  constructor(req, res) {
    this.req = req;
    this.res = res;
    this.delay = intHeader(req, 'x-fake-chunk-delay-ms') || 0;
    this.resetAfter = intHeader(req, 'x-fake-reset-after');
    this.sent = 0;
    this.gone = false;
    res.on('close', () => { this.gone = true; });
  }

  start() {
    this.res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache',
      'x-fake-provider': '1',
    });
    this.res.flushHeaders();
  }

  /** Returns false when the stream must stop (client gone or reset). */
  async event(data, eventName) {
    if (this.gone) return false;
    if (this.sent > 0) {
      if (this.delay > 0) await sleep(this.delay);
      else await tick();
      if (this.gone) return false;
    }
    const payload = typeof data === 'string' ? data : JSON.stringify(data);
    const text = (eventName ? `event: ${eventName}\n` : '') + `data: ${payload}\n\n`;
    const ok = this.res.write(text);
    this.sent++;
    if (this.resetAfter !== undefined && this.sent >= this.resetAfter) {
      // Let the bytes written so far leave, then cut the connection without
      // the terminating chunk: an upstream reset mid-stream.
      const sock = this.req.socket;
      await new Promise((r) => setTimeout(r, 20));
      this.gone = true;
      sock.destroy();
      return false;
    }
    if (!ok && !this.gone) {
      await new Promise((resolve) => {
        const done = () => { this.res.off('drain', done); this.res.off('close', done); resolve(); };
        this.res.on('drain', done);
        this.res.on('close', done);
      });
    }
    return !this.gone;
  }

  end() {
    if (!this.gone) this.res.end();
  }
}

// --- OpenAI ---------------------------------------------------------------

async function openaiChat(req, res, body) {
  const model = body.model || 'fake-model';
  const text = replyText(req, 'echo: ' + lastUserText(body.messages));
  const promptTokens = countTokens(allText(body.messages));
  const nChunks = intHeader(req, 'x-fake-chunks');
  const nChoices = Number.isInteger(body.n) && body.n > 1 ? Math.min(body.n, 8) : 1;
  const tool = req.headers['x-fake-tool-call'];
  const toolId = (i) => `call_fake${i}`;
  const args = tool ? JSON.stringify({ text }) : undefined;
  if (!body.stream) {
    const content = nChunks ? streamedText(text, nChunks) : text;
    const completionTokens = countTokens(content) * nChoices;
    const choices = [];
    for (let i = 0; i < nChoices; i++) {
      const message = tool
        ? { role: 'assistant', content: null, refusal: null, tool_calls: [{ id: toolId(i), type: 'function', function: { name: tool, arguments: args } }] }
        : { role: 'assistant', content, refusal: null };
      choices.push({ index: i, message, logprobs: null, finish_reason: tool ? 'tool_calls' : 'stop' });
    }
    return sendJSON(res, 200, {
      id: rid('chatcmpl-'),
      object: 'chat.completion',
      created: nowSec(),
      model,
      choices,
      usage: { prompt_tokens: promptTokens, completion_tokens: completionTokens, total_tokens: promptTokens + completionTokens },
      system_fingerprint: 'fp_fake',
    });
  }
  const includeUsage = !!(body.stream_options && body.stream_options.include_usage);
  const id = rid('chatcmpl-');
  const created = nowSec();
  const chunk = (delta, finish, index = 0) => {
    const c = {
      id, object: 'chat.completion.chunk', created, model, system_fingerprint: 'fp_fake',
      choices: [{ index, delta, logprobs: null, finish_reason: finish }],
    };
    if (includeUsage) c.usage = null;
    return c;
  };
  const pieces = tool ? replyPieces(req, args) : replyPieces(req, text);
  const w = new SSEWriter(req, res);
  w.start();
  for (let i = 0; i < nChoices; i++) {
    const first = tool
      ? { role: 'assistant', content: null, tool_calls: [{ index: 0, id: toolId(i), type: 'function', function: { name: tool, arguments: '' } }] }
      : { role: 'assistant', content: '', refusal: null };
    if (!(await w.event(chunk(first, null, i)))) return;
  }
  // With n > 1, the choices' pieces interleave, as OpenAI sends them.
  for (const p of pieces) {
    for (let i = 0; i < nChoices; i++) {
      const delta = tool ? { tool_calls: [{ index: 0, function: { arguments: p } }] } : { content: p };
      if (!(await w.event(chunk(delta, null, i)))) return;
    }
  }
  for (let i = 0; i < nChoices; i++) {
    if (!(await w.event(chunk({}, tool ? 'tool_calls' : 'stop', i)))) return;
  }
  if (includeUsage) {
    const completionTokens = countTokens(pieces.join('')) * nChoices;
    const u = {
      id, object: 'chat.completion.chunk', created, model, system_fingerprint: 'fp_fake', choices: [],
      usage: { prompt_tokens: promptTokens, completion_tokens: completionTokens, total_tokens: promptTokens + completionTokens },
    };
    if (!(await w.event(u))) return;
  }
  if (!(await w.event('[DONE]'))) return;
  w.end();
}

async function openaiCompletions(req, res, body) {
  const model = body.model || 'fake-model';
  const text = replyText(req, 'echo: ' + promptText(body.prompt));
  const promptTokens = countTokens(promptText(body.prompt));
  const nChunks = intHeader(req, 'x-fake-chunks');
  if (!body.stream) {
    const content = nChunks ? streamedText(text, nChunks) : text;
    const completionTokens = countTokens(content);
    return sendJSON(res, 200, {
      id: rid('cmpl-'),
      object: 'text_completion',
      created: nowSec(),
      model,
      choices: [{ text: content, index: 0, logprobs: null, finish_reason: 'stop' }],
      usage: { prompt_tokens: promptTokens, completion_tokens: completionTokens, total_tokens: promptTokens + completionTokens },
    });
  }
  const id = rid('cmpl-');
  const created = nowSec();
  const pieces = replyPieces(req, text);
  const w = new SSEWriter(req, res);
  w.start();
  for (const p of pieces) {
    const c = { id, object: 'text_completion', created, model, choices: [{ text: p, index: 0, logprobs: null, finish_reason: null }] };
    if (!(await w.event(c))) return;
  }
  const fin = { id, object: 'text_completion', created, model, choices: [{ text: '', index: 0, logprobs: null, finish_reason: 'stop' }] };
  if (!(await w.event(fin))) return;
  if (!(await w.event('[DONE]'))) return;
  w.end();
}

/** The fake-bow-N bag-of-words embedding of a text (see the header). */
export function bowEmbedding(text, dims = 96) {
  const v = new Array(dims).fill(0);
  for (const w of String(text).toLowerCase().match(/[a-z0-9]+/g) || []) {
    const h = crypto.createHash('sha256').update(w).digest();
    v[h.readUInt32BE(0) % dims] += h[4] & 1 ? 1 : -1;
  }
  return v;
}

function openaiEmbeddings(req, res, body) {
  const model = body.model || 'text-embedding-3-small';
  const bow = /^fake-bow(?:-(\d+))?$/.exec(model);
  if (bow && !(Array.isArray(body.input) || typeof body.input === 'string')) {
    return sendJSON(res, 400, openaiErrorBody(400, "'input' is required", 'invalid_input'));
  }
  let inputs;
  if (typeof body.input === 'string') inputs = [body.input];
  else if (Array.isArray(body.input) && body.input.length > 0 && body.input.every((x) => typeof x === 'number')) inputs = [body.input];
  else if (Array.isArray(body.input)) inputs = body.input;
  else return sendJSON(res, 400, openaiErrorBody(400, "'input' is required", 'invalid_input'));
  const b64 = body.encoding_format === 'base64';
  let tokens = 0;
  const data = inputs.map((inp, index) => {
    tokens += typeof inp === 'string' ? countTokens(inp) : Array.isArray(inp) ? inp.length : 0;
    const vec = bow ? bowEmbedding(inp, Number(bow[1] || 96)) : embeddingFor(inp);
    let embedding = vec;
    if (b64) {
      const buf = Buffer.alloc(vec.length * 4);
      vec.forEach((v, i) => buf.writeFloatLE(v, i * 4));
      embedding = buf.toString('base64');
    }
    return { object: 'embedding', index, embedding };
  });
  sendJSON(res, 200, { object: 'list', data, model, usage: { prompt_tokens: tokens, total_tokens: tokens } });
}

async function openaiResponses(req, res, body) {
  const model = body.model || 'fake-model';
  const text = replyText(req, 'echo: ' + responsesInputText(body.input));
  const inputTokens = countTokens(responsesAllText(body.input, body.instructions));
  const nChunks = intHeader(req, 'x-fake-chunks');
  const id = rid('resp_');
  const msgId = rid('msg_');
  const created = nowSec();
  const base = (status, outText) => {
    const outputTokens = countTokens(outText);
    return {
      id, object: 'response', created_at: created, status, error: null, incomplete_details: null,
      instructions: body.instructions ?? null, model,
      output: outText === null ? [] : [{
        type: 'message', id: msgId, status: 'completed', role: 'assistant',
        content: [{ type: 'output_text', text: outText, annotations: [] }],
      }],
      parallel_tool_calls: true, tool_choice: 'auto', tools: [],
      usage: outText === null ? null : {
        input_tokens: inputTokens, input_tokens_details: { cached_tokens: 0 },
        output_tokens: outputTokens, output_tokens_details: { reasoning_tokens: 0 },
        total_tokens: inputTokens + outputTokens,
      },
    };
  };
  if (!body.stream) {
    const content = nChunks ? streamedText(text, nChunks) : text;
    const r = base('completed', content);
    r.output_text = content;
    return sendJSON(res, 200, r);
  }
  const pieces = replyPieces(req, text);
  const full = pieces.join('');
  let seq = 0;
  const ev = (type, fields) => ({ type, sequence_number: seq++, ...fields });
  const w = new SSEWriter(req, res);
  w.start();
  const send = (type, fields) => w.event(ev(type, fields), type);
  if (!(await send('response.created', { response: base('in_progress', null) }))) return;
  if (!(await send('response.in_progress', { response: base('in_progress', null) }))) return;
  const item = { type: 'message', id: msgId, status: 'in_progress', role: 'assistant', content: [] };
  if (!(await send('response.output_item.added', { output_index: 0, item }))) return;
  if (!(await send('response.content_part.added', { item_id: msgId, output_index: 0, content_index: 0, part: { type: 'output_text', text: '', annotations: [] } }))) return;
  for (const p of pieces) {
    if (!(await send('response.output_text.delta', { item_id: msgId, output_index: 0, content_index: 0, delta: p }))) return;
  }
  if (!(await send('response.output_text.done', { item_id: msgId, output_index: 0, content_index: 0, text: full }))) return;
  if (!(await send('response.content_part.done', { item_id: msgId, output_index: 0, content_index: 0, part: { type: 'output_text', text: full, annotations: [] } }))) return;
  const doneItem = { type: 'message', id: msgId, status: 'completed', role: 'assistant', content: [{ type: 'output_text', text: full, annotations: [] }] };
  if (!(await send('response.output_item.done', { output_index: 0, item: doneItem }))) return;
  if (!(await send('response.completed', { response: base('completed', full) }))) return;
  w.end();
}

function modelObject(id) {
  return { id, object: 'model', created: MODEL_CREATED, owned_by: 'fake-provider' };
}

// --- Anthropic ------------------------------------------------------------

async function anthropicMessages(req, res, body) {
  if (!req.headers['anthropic-version']) {
    return sendJSON(res, 400, anthropicErrorBody(400, 'anthropic-version: header is required'));
  }
  const model = body.model || 'claude-fake';
  const text = replyText(req, 'echo: ' + lastUserText(body.messages));
  const inputTokens = countTokens(allText(body.messages, body.system));
  const nChunks = intHeader(req, 'x-fake-chunks');
  const tool = req.headers['x-fake-tool-call'];
  const toolId = 'toolu_fake0';
  const id = rid('msg_');
  if (!body.stream) {
    const content = nChunks ? streamedText(text, nChunks) : text;
    return sendJSON(res, 200, {
      id, type: 'message', role: 'assistant', model,
      content: [tool ? { type: 'tool_use', id: toolId, name: tool, input: { text } } : { type: 'text', text: content }],
      stop_reason: tool ? 'tool_use' : 'end_turn', stop_sequence: null,
      usage: { input_tokens: inputTokens, output_tokens: countTokens(content) },
    });
  }
  const pieces = tool ? replyPieces(req, JSON.stringify({ text })) : replyPieces(req, text);
  const w = new SSEWriter(req, res);
  w.start();
  const send = (type, fields) => w.event({ type, ...fields }, type);
  if (!(await send('message_start', {
    message: {
      id, type: 'message', role: 'assistant', model, content: [],
      stop_reason: null, stop_sequence: null,
      usage: { input_tokens: inputTokens, output_tokens: 1 },
    },
  }))) return;
  const block = tool ? { type: 'tool_use', id: toolId, name: tool, input: {} } : { type: 'text', text: '' };
  if (!(await send('content_block_start', { index: 0, content_block: block }))) return;
  if (!(await send('ping', {}))) return;
  for (const p of pieces) {
    const delta = tool ? { type: 'input_json_delta', partial_json: p } : { type: 'text_delta', text: p };
    if (!(await send('content_block_delta', { index: 0, delta }))) return;
  }
  if (!(await send('content_block_stop', { index: 0 }))) return;
  if (!(await send('message_delta', {
    delta: { stop_reason: tool ? 'tool_use' : 'end_turn', stop_sequence: null },
    usage: { output_tokens: countTokens(pieces.join('')) },
  }))) return;
  if (!(await send('message_stop', {}))) return;
  w.end();
}

// --- dispatch -------------------------------------------------------------

function routeOf(method, path) {
  // "/v1/chat/completions" and "/chat/completions" are the same endpoint.
  let p = path;
  if (p === '/v1') p = '/';
  else if (p.startsWith('/v1/')) p = p.slice(3);
  if (p.length > 1 && p.endsWith('/')) p = p.slice(0, -1);
  if (method === 'POST') {
    if (p === '/chat/completions') return { kind: 'chat' };
    if (p === '/completions') return { kind: 'completions' };
    if (p === '/embeddings') return { kind: 'embeddings' };
    if (p === '/responses') return { kind: 'responses' };
    if (p === '/messages') return { kind: 'messages', anthropic: true };
  }
  if (method === 'GET') {
    if (p === '/models') return { kind: 'models' };
    if (p.startsWith('/models/')) return { kind: 'model', id: decodeURIComponent(p.slice(8)) };
  }
  if (p === '/messages') return { kind: 'method', anthropic: true };
  return null;
}

async function handle(state, req, res, rec, bodyStr) {
  const url = req.url || '/';
  const qi = url.indexOf('?');
  const path = qi === -1 ? url : url.slice(0, qi);
  const route = routeOf(req.method, path);
  const anthropic = !!(route && route.anthropic);
  const errBody = (status, msg, code) => (anthropic ? anthropicErrorBody(status, msg) : openaiErrorBody(status, msg, code));

  const delay = intHeader(req, 'x-fake-delay-ms');
  if (delay) {
    await sleep(delay);
    if (res.destroyed || rec.aborted) return;
  }

  const forced = intHeader(req, 'x-fake-status');
  if (forced && forced >= 200 && forced <= 599) {
    const extra = forced === 429 ? { 'retry-after': '1', 'x-ratelimit-remaining-requests': '0' } : undefined;
    return sendJSON(res, forced, errBody(forced), extra);
  }

  if (!route) return sendJSON(res, 404, openaiErrorBody(404, `Unknown request URL: ${req.method} ${path}`, 'unknown_url'));
  if (route.kind === 'method') return sendJSON(res, 405, errBody(405, `method ${req.method} not allowed`));

  if (route.kind === 'models') {
    return sendJSON(res, 200, { object: 'list', data: FAKE_MODELS.map(modelObject) });
  }
  if (route.kind === 'model') {
    if (!FAKE_MODELS.includes(route.id)) {
      return sendJSON(res, 404, openaiErrorBody(404, `The model '${route.id}' does not exist`, 'model_not_found'));
    }
    return sendJSON(res, 200, modelObject(route.id));
  }

  req.fakeRawBody = bodyStr;
  try {
    parseTransforms(req.headers['x-fake-transform']);
  } catch (e) {
    return sendJSON(res, 400, errBody(400, e.message, 'bad_fake_header'));
  }

  let body;
  try {
    body = JSON.parse(bodyStr);
    if (!body || typeof body !== 'object' || Array.isArray(body)) throw new Error('not an object');
  } catch {
    return sendJSON(res, 400, errBody(400, 'We could not parse the JSON body of your request.', 'invalid_json'));
  }
  switch (route.kind) {
    case 'chat': return openaiChat(req, res, body);
    case 'completions': return openaiCompletions(req, res, body);
    case 'embeddings': return openaiEmbeddings(req, res, body);
    case 'responses': return openaiResponses(req, res, body);
    case 'messages': return anthropicMessages(req, res, body);
    default: return sendJSON(res, 404, openaiErrorBody(404, 'not found'));
  }
}

function onRequest(state, req, res) {
  const url = req.url || '/';
  if (url.startsWith('/__fake/')) return control(state, req, res);

  const rec = {
    method: req.method,
    path: url,
    headers: req.headers,
    rawHeaders: req.rawHeaders,
    httpVersion: req.httpVersion,
    body: '',
    aborted: false,
    finished: false,
    time: Date.now(),
    endTime: null,
  };
  if (state.record) {
    state.requests.push(rec);
    if (state.requests.length > state.maxRecords) state.requests.splice(0, state.requests.length - Math.floor(state.maxRecords / 2));
  }
  res.on('finish', () => { rec.finished = true; rec.endTime = Date.now(); });
  res.on('close', () => {
    if (!rec.finished) { rec.aborted = true; rec.endTime = Date.now(); }
  });

  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('error', () => {});
  req.on('end', () => {
    rec.body = chunks.length === 1 ? chunks[0].toString('utf8') : Buffer.concat(chunks).toString('utf8');
    handle(state, req, res, rec, rec.body).catch((err) => {
      if (!res.headersSent) sendJSON(res, 500, openaiErrorBody(500, `fake provider bug: ${err && err.message}`));
      else res.destroy();
    });
  });
}

function control(state, req, res) {
  const path = req.url.split('?')[0];
  req.resume();
  req.on('end', () => {
    if (req.method === 'GET' && path === '/__fake/requests') return sendJSON(res, 200, state.requests);
    if (req.method === 'POST' && path === '/__fake/reset') { state.requests.length = 0; return sendJSON(res, 200, { ok: true }); }
    if (req.method === 'GET' && path === '/__fake/health') return sendJSON(res, 200, { ok: true });
    return sendJSON(res, 404, openaiErrorBody(404, 'unknown control path'));
  });
}

/**
 * Start the fake provider on 127.0.0.1 (port 0 unless given).
 * @param {{tls?: {cert: string, key: string}, port?: number, host?: string,
 *          record?: boolean, maxRecords?: number}} [opts]
 */
export async function startFakeProvider({ tls, port = 0, host = '127.0.0.1', record = true, maxRecords = Infinity } = {}) {
  const state = { requests: [], record, maxRecords };
  const handler = (req, res) => onRequest(state, req, res);
  const server = tls ? https.createServer({ cert: tls.cert, key: tls.key }, handler) : http.createServer(handler);
  // Long keep-alive so an upstream connection pool is not cut under it.
  server.keepAliveTimeout = 65_000;
  server.headersTimeout = 66_000;
  server.requestTimeout = 0;
  server.maxHeadersCount = 0;
  const sockets = new Set();
  server.on('connection', (s) => {
    sockets.add(s);
    s.setNoDelay(true);
    s.on('close', () => sockets.delete(s));
  });
  server.on('tlsClientError', () => {});
  server.on('clientError', (err, socket) => { socket.destroy(); });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => { server.off('error', reject); resolve(); });
  });
  const actual = server.address().port;
  const scheme = tls ? 'https' : 'http';
  return {
    url: `${scheme}://${host}:${actual}`,
    port: actual,
    requests: state.requests,
    server,
    /** Number of TCP (or TLS) connections accepted so far and still open. */
    openConnections: () => sockets.size,
    reset() { state.requests.length = 0; },
    close() {
      return new Promise((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
        if (server.closeAllConnections) server.closeAllConnections();
      });
    },
  };
}

// ---------------------------------------------------------------- CLI

function parseArgs(argv) {
  const o = { port: 0, host: '127.0.0.1', maxRecords: 10000 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--port') o.port = Number(next());
    else if (a === '--host') o.host = next();
    else if (a === '--tls-cert') o.cert = next();
    else if (a === '--tls-key') o.key = next();
    else if (a === '--max-records') o.maxRecords = Number(next());
    else if (a === '--no-record') o.maxRecords = 0;
    else if (a === '-h' || a === '--help') o.help = true;
    else throw new Error(`unknown argument ${a}`);
  }
  return o;
}

const isMain = process.argv[1] && fs.realpathSync(process.argv[1]) === fs.realpathSync(fileURLToPath(import.meta.url));
if (isMain) {
  let o;
  try {
    o = parseArgs(process.argv.slice(2));
  } catch (e) {
    process.stderr.write(`provider.mjs: ${e.message}\n`);
    process.exit(2);
  }
  if (o.help) {
    process.stdout.write('usage: node provider.mjs [--port N] [--host H] [--tls-cert FILE --tls-key FILE] [--max-records N | --no-record]\n');
    process.exit(0);
  }
  if (!!o.cert !== !!o.key) {
    process.stderr.write('provider.mjs: --tls-cert and --tls-key go together\n');
    process.exit(2);
  }
  const tls = o.cert ? { cert: fs.readFileSync(o.cert, 'utf8'), key: fs.readFileSync(o.key, 'utf8') } : undefined;
  const p = await startFakeProvider({ tls, port: o.port, host: o.host, record: o.maxRecords > 0, maxRecords: o.maxRecords });
  process.stdout.write(`listening ${p.port}\n`);
  const stop = () => { p.close().then(() => process.exit(0)); };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}
